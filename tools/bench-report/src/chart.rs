//! `docs/benchmarks.svg`: ours vs baselines, one panel per group.
//!
//! Each bar is one (ours, baseline) pair on one parameter, drawn from 1 to
//! `baseline time / ours time` on a log scale: above the line, ours is that
//! many times faster (or has that much more throughput); below, slower.
//! Only plotters' SVG backend is used: text goes out as `<text>` elements,
//! so no font files are needed.

use plotters::coord::combinators::{BindKeyPoints, IntoLogRange};
use plotters::prelude::*;

use crate::analysis::{self, GroupView, Ratio};
use crate::results::{Results, sig3};

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Index of the parameter on the x axis.
    pub slot: usize,
    /// Index of the series (the pair) within the group.
    pub series: usize,
    /// baseline time / ours time.
    pub speedup: f64,
}

/// One panel: a group's bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// The group.
    pub group: String,
    /// The x axis labels.
    pub parameters: Vec<String>,
    /// Series labels: `vs <baseline>` (or `<ours> vs <baseline>`).
    pub series: Vec<String>,
    /// The baseline of each series (a baseline keeps its colour in every panel).
    pub baselines: Vec<String>,
    /// The bars.
    pub bars: Vec<Bar>,
}

/// The panels of every group that has at least one ratio.
pub fn panels(results: &Results) -> Vec<Panel> {
    let mut out = Vec::new();
    for g in analysis::group_names(results) {
        let v: GroupView = analysis::view(results, &g);
        let several_ours = v.pairs.iter().any(|(o, _)| *o != v.pairs[0].0);
        let series: Vec<String> = v
            .pairs
            .iter()
            .map(|(o, b)| {
                if several_ours {
                    format!("{o} vs {b}")
                } else {
                    format!("vs {b}")
                }
            })
            .collect();
        let mut bars = Vec::new();
        let mut parameters = Vec::new();
        for p in &v.parameters {
            let mut any = false;
            for (s, (o, b)) in v.pairs.iter().enumerate() {
                if let (Some(om), Some(bm)) = (results.get(&g, o, p), results.get(&g, b, p)) {
                    bars.push(Bar {
                        slot: parameters.len(),
                        series: s,
                        speedup: Ratio::of(om, bm).speedup,
                    });
                    any = true;
                }
            }
            if any {
                parameters.push(if p.is_empty() {
                    "-".to_string()
                } else {
                    p.clone()
                });
            }
        }
        if !bars.is_empty() {
            out.push(Panel {
                group: g,
                parameters,
                series,
                baselines: v.pairs.iter().map(|(_, b)| b.clone()).collect(),
                bars,
            });
        }
    }
    out
}

/// The y range of a panel: powers of two around every bar and 1, padded.
pub fn y_range(bars: &[Bar]) -> (f64, f64) {
    let lo = bars.iter().map(|b| b.speedup).fold(1.0f64, f64::min);
    let hi = bars.iter().map(|b| b.speedup).fold(1.0f64, f64::max);
    let lo = 2f64.powf((lo / 1.25).log2().floor());
    let hi = 2f64.powf((hi * 1.25).log2().ceil());
    (lo, hi)
}

fn y_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut t = Vec::new();
    let mut v = lo;
    while v <= hi * 1.0001 {
        t.push(v);
        v *= 2.0;
    }
    t
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xd6, 0x27, 0x28),
];

const PANEL_W: u32 = 620;
const PANEL_H: u32 = 340;
const COLUMNS: usize = 2;
const TITLE_H: u32 = 50;

/// Renders the chart as SVG text.
///
/// # Errors
///
/// A plotters drawing error, as text.
pub fn render_svg(panels: &[Panel]) -> Result<String, String> {
    let mut svg = String::new();
    let rows = panels.len().div_ceil(COLUMNS).max(1);
    let size = (PANEL_W * COLUMNS as u32, TITLE_H + PANEL_H * rows as u32);
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (title, body) = root.split_vertically(TITLE_H);
        let heading = if panels.is_empty() {
            "arenabuf benchmarks: no results yet (run the benches, then cargo run -p bench-report)"
        } else {
            "arenabuf vs baselines: baseline time / arenabuf time, same run (log scale; above 1 = arenabuf faster)"
        };
        title
            .titled(heading, ("sans-serif", 18))
            .map_err(|e| e.to_string())?;
        let areas = body.split_evenly((rows, COLUMNS));
        let mut baselines: Vec<&str> = Vec::new();
        for b in panels.iter().flat_map(|p| p.baselines.iter()) {
            if !baselines.contains(&b.as_str()) {
                baselines.push(b);
            }
        }
        for (panel, area) in panels.iter().zip(areas.iter()) {
            let colors: Vec<RGBColor> = panel
                .baselines
                .iter()
                .map(|b| {
                    let i = baselines.iter().position(|x| x == b).unwrap_or(0);
                    PALETTE[i % PALETTE.len()]
                })
                .collect();
            draw_panel(panel, &colors, area).map_err(|e| format!("{}: {e}", panel.group))?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_panel<DB: DrawingBackend>(
    panel: &Panel,
    colors: &[RGBColor],
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // x in hundredths of a parameter slot (integer coordinates keep
    // plotters' default label formatting available).
    const SLOT: i32 = 100;
    let n = panel.parameters.len() as i32 * SLOT;
    let (lo, hi) = y_range(&panel.bars);
    let x_keys: Vec<i32> = (0..panel.parameters.len() as i32)
        .map(|i| i * SLOT + SLOT / 2)
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.group, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(
            (0..n).with_key_points(x_keys),
            (lo..hi).log_scale().with_key_points(y_ticks(lo, hi)),
        )?;
    let params = panel.parameters.clone();
    // Shrink the x labels when long ones would run into each other.
    let longest = params
        .iter()
        .map(|p| p.chars().count())
        .max()
        .unwrap_or(1)
        .max(1);
    let slot_px = f64::from(PANEL_W - 80) / params.len().max(1) as f64;
    let x_font = (slot_px / (longest as f64 * 0.55)).clamp(8.0, 12.0);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_style(("sans-serif", x_font))
        .x_label_formatter(&|x| {
            params
                .get((*x / SLOT) as usize)
                .cloned()
                .unwrap_or_default()
        })
        .y_label_formatter(&|y| format!("{}x", sig3(*y)))
        .y_desc("speed-up")
        .label_style(("sans-serif", 12))
        .draw()?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0, 1.0), (n, 1.0)],
        BLACK.stroke_width(1),
    )))?;
    let k = panel.series.len().max(1) as i32;
    let width = (SLOT * 8 / 10) / k;
    for (s, label) in panel.series.iter().enumerate() {
        let color = colors.get(s).copied().unwrap_or(PALETTE[0]);
        let bars: Vec<&Bar> = panel.bars.iter().filter(|b| b.series == s).collect();
        let x0 = |b: &Bar| b.slot as i32 * SLOT + SLOT / 10 + width * s as i32;
        chart
            .draw_series(bars.iter().map(|b| {
                let (y0, y1) = if b.speedup >= 1.0 {
                    (1.0, b.speedup)
                } else {
                    (b.speedup, 1.0)
                };
                Rectangle::new([(x0(b), y0), (x0(b) + width - 1, y1)], color.filled())
            }))?
            .label(label.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(bars.iter().map(|b| {
            let y = if b.speedup >= 1.0 {
                b.speedup * 1.04
            } else {
                b.speedup / 1.04
            };
            Text::new(sig3(b.speedup), (x0(b), y), ("sans-serif", 10).into_font())
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}

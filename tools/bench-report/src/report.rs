//! `docs/benchmarks.md`: the markdown report.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::analysis::{self, GroupView, Ratio, TargetCheck, Verdict};
use crate::machine::{Machine, format_utc};
use crate::results::{Measurement, Results, format_ns, sig3};
use crate::spec::{self, Bound, Metric, Target};

/// Results of one group written further apart than this are flagged as
/// probably coming from different runs.
pub const MIXED_RUN_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Everything the report is made of.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The criterion results.
    pub results: &'a Results,
    /// The machine.
    pub machine: &'a Machine,
    /// When the report is generated.
    pub generated: SystemTime,
    /// The chart's file name, relative to the report.
    pub chart: Option<&'a str>,
    /// Hand-written notes on the results (why a target is missed), included
    /// verbatim.
    pub notes: Option<&'a str>,
}

/// `bound` as text, for `target`'s ours and baseline.
pub fn describe_target(t: &Target) -> String {
    let pair = format!("`{}` / `{}`", t.ours, t.baseline);
    let cond = match t.bound {
        Bound::TimeRatioAtMost(x) => format!("{pair} time ≤ {x}"),
        Bound::ThroughputRatioAtLeast(x) => format!("{pair} throughput ≥ {x}x"),
        Bound::AllocRatioAtMost(x) => format!("{pair} heap allocations ≤ {x}x"),
        Bound::AllocsAtMost(x) => format!("`{}` heap allocations per iteration ≤ {x}", t.ours),
        Bound::NetTimeRatioAtMost { max, floor } => {
            format!("{pair} time net of `{floor}` ≤ {max}")
        }
    };
    format!("`{}`: {cond}", t.group)
}

fn show_measured(bound: Bound, measured: f64) -> String {
    match bound {
        Bound::TimeRatioAtMost(_)
        | Bound::AllocRatioAtMost(_)
        | Bound::NetTimeRatioAtMost { .. } => sig3(measured),
        Bound::ThroughputRatioAtLeast(_) => format!("{}x", sig3(measured)),
        Bound::AllocsAtMost(_) => sig3(measured),
    }
}

/// A fraction as a percentage: one decimal below 10%, none above.
fn percent(f: f64) -> String {
    let p = f * 100.0;
    if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// The verdict column.
pub fn show_verdict(v: &Verdict) -> String {
    match v {
        Verdict::Met { margin, .. } => format!("**met** ({} margin)", percent(*margin)),
        Verdict::Missed { by, .. } if by.is_finite() => format!("**missed** by {}", percent(*by)),
        Verdict::Missed { .. } => "**missed**".to_string(),
        Verdict::NotRun => "not run".to_string(),
        Verdict::NotRecorded => "not recorded (no allocation counts in the results)".to_string(),
    }
}

fn target_line(results: &Results, c: &TargetCheck) -> String {
    let t = &c.target;
    let measured = match &c.verdict {
        Verdict::Met { measured, .. } | Verdict::Missed { measured, .. } => {
            let mut s = show_measured(t.bound, *measured);
            if let Bound::AllocsAtMost(_) = t.bound {
                if let Some(b) = results
                    .get(t.group, t.baseline, &c.parameter)
                    .and_then(|m| m.allocs_per_iter)
                {
                    let _ = write!(s, " (`{}`: {})", t.baseline, sig3(b));
                }
            }
            s
        }
        _ => "–".to_string(),
    };
    let param = if c.parameter.is_empty() {
        "–".to_string()
    } else {
        format!("`{}`", c.parameter)
    };
    format!(
        "| {} | {} | {} | {} | {} |",
        t.issue,
        describe_target(t),
        param,
        measured,
        show_verdict(&c.verdict)
    )
}

fn cell(m: Option<&Measurement>) -> String {
    let Some(m) = m else {
        return "–".to_string();
    };
    let half = (m.upper_ns - m.lower_ns) / 2.0;
    let mut s = format!("{} ±{:.1}%", format_ns(m.mean_ns), half / m.mean_ns * 100.0);
    if let Some(t) = m.throughput {
        let _ = write!(s, "<br>{}", t.rate(m.mean_ns));
    }
    if let Some(a) = m.allocs_per_iter {
        let _ = write!(s, "<br>{} allocs/iter", sig3(a));
    }
    s
}

fn ratio_header(metric: Metric, ours: &str, base: &str) -> String {
    match metric {
        Metric::Time => format!("`{ours}` / `{base}` time (lower is better)"),
        Metric::Throughput => format!("`{ours}` / `{base}` throughput (higher is better)"),
    }
}

fn group_section(out: &mut String, results: &Results, v: &GroupView) {
    let issue = v
        .spec
        .map(|s| format!(" (issue {})", s.issue))
        .unwrap_or_default();
    if v.implementations.is_empty() {
        let _ = writeln!(out, "### `{}`{issue}: not run\n", v.name);
        if let Some(s) = v.spec {
            let _ = writeln!(out, "{}\n\nNo results: run `{}`.\n", s.about, s.bench);
        }
        return;
    }
    let _ = writeln!(out, "### `{}`{issue}\n", v.name);
    if let Some(s) = v.spec {
        let _ = writeln!(out, "{} Command: `{}`.\n", s.about, s.bench);
    }
    if let Some(d) = v.mixed_runs(MIXED_RUN_LIMIT) {
        let _ = writeln!(
            out,
            "> **Warning:** these results were written {} minutes apart, so they probably come from \
             different runs and their ratios are not same-run ratios. Rerun the group.\n",
            d.as_secs() / 60
        );
    }
    let mut header = String::from("| parameter |");
    let mut rule = String::from("|---|");
    for i in &v.implementations {
        let _ = write!(header, " `{i}` |");
        rule.push_str("---:|");
    }
    for (o, b) in &v.pairs {
        let _ = write!(header, " {} |", ratio_header(v.metric, o, b));
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for p in &v.parameters {
        let shown = if p.is_empty() {
            "–".to_string()
        } else {
            format!("`{p}`")
        };
        let mut row = format!("| {shown} |");
        for i in &v.implementations {
            let _ = write!(row, " {} |", cell(results.get(&v.name, i, p)));
        }
        for (o, b) in &v.pairs {
            let r = match (results.get(&v.name, o, p), results.get(&v.name, b, p)) {
                (Some(om), Some(bm)) => {
                    let x = Ratio::of(om, bm).shown(v.metric);
                    match v.metric {
                        Metric::Time => sig3(x),
                        Metric::Throughput => format!("{}x", sig3(x)),
                    }
                }
                _ => "–".to_string(),
            };
            let _ = write!(row, " {r} |");
        }
        let _ = writeln!(out, "{row}");
    }
    out.push('\n');
}

/// Renders the whole report.
pub fn render(inp: &Inputs<'_>) -> String {
    let results = inp.results;
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "<!-- Generated by tools/bench-report from criterion's results; do not edit by hand.\n     \
         Change the benches, or the groups and targets in tools/bench-report/src/spec.rs, and regenerate\n     \
         (commands below). Notes on missed targets go in docs/benchmarks-notes.md. -->\n\n",
    );
    let times: Vec<SystemTime> = results
        .measurements
        .iter()
        .filter_map(|m| m.modified)
        .collect();
    let _ = write!(out, "Generated {}", format_utc(inp.generated));
    match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => {
            let _ = writeln!(
                out,
                " from criterion results written between {} and {}.",
                format_utc(*a),
                format_utc(*b)
            );
        }
        _ => out
            .push_str(": no criterion results were found, so every group below is \"not run\".\n"),
    }
    out.push_str(
        "\nEvery ratio compares implementations measured in the same run of the same bench, one \
         after the other on the same machine, so it holds up on a noisy machine where absolute \
         times do not. Times are criterion's mean per iteration with the half-width of its 95% \
         confidence interval (criterion's console prints its slope estimate instead, which \
         can differ on a noisy run). Ours come first in each ratio (`arenabuf*`, and `arena_layer` for \
         the tower layer); the rest are baselines: `bytesmut` (`BytesMut::with_capacity` + write + freeze + drop, what servers \
         do without a pool), `arena_alligator` (the `arena-alligator` crate, same geometry), \
         `semaphore_pool` (a `tokio::sync::Semaphore` in front of a `Mutex<Vec<BytesMut>>`), and \
         the tokio_util / tower-http ways of framing and collecting bodies.\n\n",
    );

    out.push_str("## How to regenerate\n\nOn a quiet machine (nothing else running), from the repository root:\n\n```sh\n");
    for c in spec::REGENERATE {
        let _ = writeln!(out, "{c}");
    }
    out.push_str(
        "```\n\n`cargo run -p bench-report -- --help` lists the options (another criterion \
         directory, other output paths). `ARENA_BENCH_EXTREME=1` (thread count from \
         `ARENA_BENCH_EXTREME_THREADS`, default 40) adds an oversubscribed point to every \
         contention group. A group that did not run is listed as \"not run\".\n\n",
    );

    out.push_str("## Machine\n\n| | |\n|---|---|\n");
    let m = inp.machine;
    let _ = writeln!(out, "| CPU | {} |", m.cpu);
    let cores = match (m.logical_cpus, m.available_parallelism) {
        (Some(l), Some(a)) if l == a => format!("{l}"),
        (Some(l), Some(a)) => format!("{l} logical, {a} available to the process"),
        (Some(l), None) => format!("{l}"),
        (None, Some(a)) => format!("{a} available to the process"),
        (None, None) => "unknown".to_string(),
    };
    let _ = writeln!(out, "| logical CPUs | {cores} |");
    let unknown = || "unknown".to_string();
    let _ = writeln!(
        out,
        "| memory | {} |",
        m.memory.clone().unwrap_or_else(unknown)
    );
    let _ = writeln!(
        out,
        "| kernel | {} |",
        m.kernel.clone().unwrap_or_else(unknown)
    );
    let _ = writeln!(
        out,
        "| rustc | {} |",
        m.rustc.clone().unwrap_or_else(unknown)
    );
    out.push_str(
        "\nThe machine is the one the report was generated on: generate it right after the \
         benches, on the same machine.\n\n",
    );

    let checks = analysis::check_targets(results, spec::TARGETS);
    let (met, missed, unchecked) = analysis::tally(&checks);
    out.push_str("## Targets\n\n");
    let _ = writeln!(
        out,
        "The issues' targets, each checked on every parameter it applies to: **{met} met, {missed} \
         missed**, {unchecked} not run or not recorded. A miss says by how much the measured \
         ratio falls short of the bound (the bounds are never loosened to fit).\n"
    );
    out.push_str("| issue | target | parameter | measured | verdict |\n|---|---|---|---:|---|\n");
    for c in &checks {
        let _ = writeln!(out, "{}", target_line(results, c));
    }
    out.push('\n');
    match inp.notes {
        Some(n) if !n.trim().is_empty() => {
            out.push_str("### Notes\n\n");
            out.push_str(n.trim());
            out.push_str("\n\n");
        }
        _ => {}
    }

    if let Some(chart) = inp.chart {
        let _ = writeln!(
            out,
            "## Chart\n\nHow many times faster `arenabuf` is than each baseline (baseline time / \
             ours, = throughput ratio; log scale; bars above 1 are wins).\n\n![arenabuf vs \
             baselines, same-run ratios]({chart})\n"
        );
    }

    out.push_str("## Results by group\n\n");
    for g in analysis::group_names(results) {
        let v = analysis::view(results, &g);
        group_section(&mut out, results, &v);
    }

    if !results.skipped.is_empty() {
        out.push_str("## Files skipped\n\n");
        for s in &results.skipped {
            let _ = writeln!(out, "- `{}`: {}", s.path.display(), s.reason);
        }
        out.push('\n');
    }
    out
}

//! `cargo run -p bench-report`: writes `docs/benchmarks.md` and
//! `docs/benchmarks.svg` from criterion's results.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use bench_report::{chart, machine::Machine, report, results};
use clap::Parser;

/// Writes the benchmark report (markdown tables, target checks and an SVG
/// chart) from criterion's results. Run the benches first:
/// see docs/benchmarks.md or CONTRIBUTING.md for the full command list.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Criterion's output directory, holding <group>/<implementation>/<parameter>/new/estimates.json.
    /// Repeat it to merge several (a benchmark found in more than one: the newest result wins)
    /// [default: $CARGO_TARGET_DIR/criterion if that is set, else target/criterion in the workspace]
    #[arg(long)]
    criterion_dir: Vec<PathBuf>,
    /// Where to write the markdown report [default: docs/benchmarks.md in the workspace]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where to write the SVG chart; keep it beside the report, which links it
    /// [default: docs/benchmarks.svg in the workspace]
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Hand-written notes (why a target is missed), included in the report if the file exists
    /// [default: docs/benchmarks-notes.md in the workspace]
    #[arg(long)]
    notes: Option<PathBuf>,
}

/// The workspace root: this crate lives in `tools/bench-report`.
fn workspace() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).map_or(here.clone(), PathBuf::from)
}

/// Where criterion writes: `$CARGO_TARGET_DIR/criterion`, as criterion
/// itself decides, else the workspace's `target/criterion`.
fn default_criterion_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("criterion"),
        _ => workspace().join("target").join("criterion"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let dirs = if args.criterion_dir.is_empty() {
        vec![default_criterion_dir()]
    } else {
        args.criterion_dir.clone()
    };
    let docs = workspace().join("docs");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| docs.join("benchmarks.md"));
    let svg_path = args
        .svg
        .clone()
        .unwrap_or_else(|| docs.join("benchmarks.svg"));
    let notes_path = args
        .notes
        .clone()
        .unwrap_or_else(|| docs.join("benchmarks-notes.md"));
    let mut results = results::Results::default();
    for dir in &dirs {
        eprintln!("bench-report: reading {}", dir.display());
        results.merge(results::load(dir).map_err(|e| e.to_string())?);
    }
    if results.measurements.is_empty() {
        eprintln!(
            "bench-report: no criterion results found (every group will be reported as not run)"
        );
    }
    for s in &results.skipped {
        eprintln!("bench-report: skipped {s}");
    }
    let machine = Machine::detect();
    let notes = std::fs::read_to_string(&notes_path).ok();
    let svg_name = relative_link(&out, &svg_path);
    let md = report::render(&report::Inputs {
        results: &results,
        machine: &machine,
        generated: SystemTime::now(),
        chart: Some(&svg_name),
        notes: notes.as_deref(),
    });
    let svg = chart::render_svg(&chart::panels(&results))?;
    for (path, text) in [(&out, &md), (&svg_path, &svg)] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    eprintln!(
        "bench-report: {} results; wrote {} and {}",
        results.measurements.len(),
        out.display(),
        svg_path.display()
    );
    Ok(())
}

/// The chart's path as the report should link it: its file name when both
/// are in the same directory, else the path as given.
fn relative_link(report: &std::path::Path, svg: &std::path::Path) -> String {
    if report.parent() == svg.parent() {
        if let Some(name) = svg.file_name() {
            return name.to_string_lossy().into_owned();
        }
    }
    svg.display().to_string()
}

//! The report tool on a small criterion tree (`tests/fixtures/criterion`):
//! what it reads, the ratios, the target verdicts, and what it writes.
//!
//! Fixture means (ns): `fixed_roundtrip` 256: ours 30, bytesmut 50,
//! arena_alligator 100; 1024: ours 40, bytesmut 50, no arena_alligator.
//! `fixed_contention` (throughput): t1_held0 5 vs 6, t2_held0 10 vs 25,
//! t2_held75 20 vs 30. `frames_demo` (not a known group): arenabuf_reader
//! 1 ms and 2 allocs/iter vs tokio_codec 1.5 ms and 40 allocs/iter. A
//! `base/` directory holds a stale 999 ns that must be ignored, and
//! `broken/` has a malformed estimates.json.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bench_report::analysis::{self, Ratio, Verdict};
use bench_report::machine::Machine;
use bench_report::results::{self, Throughput};
use bench_report::spec::{Bound, Metric, Params, Target};
use bench_report::{chart, report};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/criterion")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[test]
fn loads_new_results_and_reports_malformed_ones() {
    let r = results::load(&fixtures()).unwrap();
    assert_eq!(r.measurements.len(), 13);
    let m = r.get("fixed_roundtrip", "arenabuf", "256").unwrap();
    assert!(
        close(m.mean_ns, 30.0),
        "base/ must be ignored, got {}",
        m.mean_ns
    );
    assert_eq!(m.throughput, Some(Throughput::Bytes(256)));
    assert!(close(m.lower_ns, 30.0 * 0.98) && close(m.upper_ns, 30.0 * 1.02));
    assert!(m.modified.is_some());
    assert_eq!(
        r.get("frames_demo", "tokio_codec", "drop")
            .unwrap()
            .allocs_per_iter,
        Some(40.0)
    );
    assert_eq!(r.skipped.len(), 1);
    assert!(
        r.skipped[0].path.ends_with("broken/arenabuf/x/new"),
        "{}",
        r.skipped[0]
    );
    assert_eq!(
        r.groups(),
        ["fixed_contention", "fixed_roundtrip", "frames_demo"]
    );
    // Parameters come back in natural order.
    let params: Vec<&str> = r
        .group("fixed_contention")
        .filter(|m| m.id.implementation == "arenabuf")
        .map(|m| m.id.parameter.as_str())
        .collect();
    assert_eq!(params, ["t1_held0", "t2_held0", "t2_held75"]);
}

#[test]
fn a_missing_directory_is_empty_results() {
    let r = results::load(Path::new("/nonexistent/criterion")).unwrap();
    assert!(r.measurements.is_empty() && r.skipped.is_empty());
}

#[test]
fn ratios_are_oriented_per_metric() {
    let r = results::load(&fixtures()).unwrap();
    let ours = r.get("fixed_roundtrip", "arenabuf", "256").unwrap();
    let base = r.get("fixed_roundtrip", "bytesmut", "256").unwrap();
    let ratio = Ratio::of(ours, base);
    assert!(close(ratio.time_ratio, 0.6));
    assert!(close(ratio.speedup, 50.0 / 30.0));
    assert!(close(ratio.shown(Metric::Time), 0.6));
    assert!(close(ratio.shown(Metric::Throughput), 50.0 / 30.0));
}

#[test]
fn known_and_unknown_groups_are_laid_out() {
    let r = results::load(&fixtures()).unwrap();
    let v = analysis::view(&r, "fixed_roundtrip");
    assert_eq!(
        v.implementations,
        ["arenabuf", "bytesmut", "arena_alligator"]
    );
    assert_eq!(v.parameters, ["256", "1024"]);
    assert_eq!(v.metric, Metric::Time);
    assert_eq!(v.pairs.len(), 2);

    let v = analysis::view(&r, "fixed_contention");
    assert_eq!(v.metric, Metric::Throughput);
    // bytesmut did not run: its pair is left out.
    assert_eq!(
        v.pairs,
        [("arenabuf".to_string(), "arena_alligator".to_string())]
    );

    let v = analysis::view(&r, "frames_demo");
    assert!(v.spec.is_none());
    assert_eq!(v.metric, Metric::Throughput); // it recorded a throughput
    assert_eq!(
        v.pairs,
        [("arenabuf_reader".to_string(), "tokio_codec".to_string())]
    );

    let v = analysis::view(&r, "async_contended");
    assert!(v.implementations.is_empty() && v.pairs.is_empty());
}

#[test]
fn targets_are_met_missed_or_not_run() {
    let r = results::load(&fixtures()).unwrap();
    let targets = [
        Target {
            issue: 2,
            group: "fixed_roundtrip",
            ours: "arenabuf",
            baseline: "bytesmut",
            params: Params::Exact(&["256", "1024", "4096"]),
            bound: Bound::TimeRatioAtMost(0.7),
        },
        Target {
            issue: 2,
            group: "fixed_contention",
            ours: "arenabuf",
            baseline: "arena_alligator",
            params: Params::Prefix(&["t2_", "t8_"]),
            bound: Bound::ThroughputRatioAtLeast(2.0),
        },
        Target {
            issue: 4,
            group: "frames_demo",
            ours: "arenabuf_reader",
            baseline: "tokio_codec",
            params: Params::All,
            bound: Bound::AllocRatioAtMost(0.1),
        },
        Target {
            issue: 4,
            group: "frames_demo",
            ours: "arenabuf_reader",
            baseline: "tokio_codec",
            params: Params::All,
            bound: Bound::AllocsAtMost(1.0),
        },
        Target {
            issue: 2,
            group: "fixed_roundtrip",
            ours: "arenabuf",
            baseline: "arena_alligator",
            params: Params::All,
            bound: Bound::TimeRatioAtMost(0.5),
        },
        Target {
            issue: 5,
            group: "http_body",
            ours: "arenabuf",
            baseline: "collect",
            params: Params::All,
            bound: Bound::ThroughputRatioAtLeast(1.0),
        },
    ];
    let checks = analysis::check_targets(&r, &targets);
    let got: Vec<(&str, &str, &Verdict)> = checks
        .iter()
        .map(|c| (c.target.group, c.parameter.as_str(), &c.verdict))
        .collect();
    assert_eq!(got.len(), 10, "{got:#?}");

    // 30 / 50 = 0.6 <= 0.7: met, 1 - 0.6/0.7 margin.
    assert_eq!(got[0].1, "256");
    let Verdict::Met { measured, margin } = got[0].2 else {
        panic!("{got:?}")
    };
    assert!(close(*measured, 0.6) && close(*margin, 1.0 - 0.6 / 0.7));
    // 40 / 50 = 0.8 > 0.7: missed by 0.8/0.7 - 1.
    assert_eq!(got[1].1, "1024");
    let Verdict::Missed { measured, by } = got[1].2 else {
        panic!("{got:?}")
    };
    assert!(close(*measured, 0.8) && close(*by, 0.8 / 0.7 - 1.0));
    // An exact parameter that never ran.
    assert_eq!((got[2].1, got[2].2), ("4096", &Verdict::NotRun));

    // Throughput: t1 is not covered by the prefixes; 25/10 = 2.5x met,
    // 30/20 = 1.5x missed by 25%.
    assert_eq!(got[3].1, "t2_held0");
    let Verdict::Met { measured, margin } = got[3].2 else {
        panic!("{got:?}")
    };
    assert!(close(*measured, 2.5) && close(*margin, 0.25));
    assert_eq!(got[4].1, "t2_held75");
    let Verdict::Missed { measured, by } = got[4].2 else {
        panic!("{got:?}")
    };
    assert!(close(*measured, 1.5) && close(*by, 0.25));

    // Heap allocations: 2 / 40 = 0.05 <= 0.1 met; 2 per iteration > 1 missed.
    let Verdict::Met { measured, .. } = got[5].2 else {
        panic!("{got:?}")
    };
    assert!(close(*measured, 0.05));
    let Verdict::Missed { measured, by } = got[6].2 else {
        panic!("{got:?}")
    };
    assert!(close(*measured, 2.0) && close(*by, 1.0));

    // `All` covers what ours ran; the baseline is missing at 1024.
    assert_eq!((got[7].1, got[8].1), ("256", "1024"));
    assert!(matches!(got[7].2, Verdict::Met { .. }));
    assert_eq!(got[8].2, &Verdict::NotRun);

    // A group that never ran: one "not run" line.
    assert_eq!(
        (got[9].0, got[9].1, got[9].2),
        ("http_body", "", &Verdict::NotRun)
    );

    assert_eq!(analysis::tally(&checks), (4, 3, 3));
}

#[test]
fn alloc_targets_without_counts_are_not_recorded() {
    let r = results::load(&fixtures()).unwrap();
    let t = Target {
        issue: 2,
        group: "fixed_roundtrip",
        ours: "arenabuf",
        baseline: "bytesmut",
        params: Params::Exact(&["256"]),
        bound: Bound::AllocsAtMost(1.0),
    };
    assert_eq!(analysis::check_param(&r, &t, "256"), Verdict::NotRecorded);
}

#[test]
fn net_targets_subtract_the_floor_measured_in_the_same_group() {
    let r = results::load(&fixtures()).unwrap();
    // At 256: bytesmut 50, arena_alligator 100, arenabuf 30 as the floor:
    // (50 - 30) / (100 - 30).
    let t = Target {
        issue: 14,
        group: "fixed_roundtrip",
        ours: "bytesmut",
        baseline: "arena_alligator",
        params: Params::Exact(&["256", "1024"]),
        bound: Bound::NetTimeRatioAtMost {
            max: 0.5,
            floor: "arenabuf",
        },
    };
    match analysis::check_param(&r, &t, "256") {
        Verdict::Met { measured, .. } => assert!(close(measured, 20.0 / 70.0), "{measured}"),
        v => panic!("{v:?}"),
    }
    // No arena_alligator at 1024; a missing floor is "not run" as well.
    assert_eq!(analysis::check_param(&r, &t, "1024"), Verdict::NotRun);
    let no_floor = Target {
        bound: Bound::NetTimeRatioAtMost {
            max: 0.5,
            floor: "channel_floor",
        },
        ..t
    };
    assert_eq!(analysis::check_param(&r, &no_floor, "256"), Verdict::NotRun);
}

fn machine() -> Machine {
    Machine {
        cpu: "Test CPU 9000".to_string(),
        logical_cpus: Some(4),
        available_parallelism: Some(2),
        memory: Some("8.0 GiB".to_string()),
        kernel: None,
        rustc: Some("rustc 1.85.0".to_string()),
    }
}

#[test]
fn the_report_has_tables_targets_machine_and_command() {
    let r = results::load(&fixtures()).unwrap();
    let m = machine();
    let md = report::render(&report::Inputs {
        results: &r,
        machine: &m,
        generated: SystemTime::UNIX_EPOCH,
        chart: Some("benchmarks.svg"),
        notes: Some("The 1024 B miss: the write dominates."),
    });
    assert!(md.starts_with("# Benchmarks\n"));
    assert!(md.contains("Generated 1970-01-01 00:00 UTC"));
    assert!(md.contains("| CPU | Test CPU 9000 |"));
    assert!(md.contains("| logical CPUs | 4 logical, 2 available to the process |"));
    assert!(md.contains("| kernel | unknown |"));
    assert!(md.contains("cargo bench --bench allocator -- --noplot\n"));
    assert!(md.contains("cargo run -p bench-report\n"));
    assert!(md.contains("![arenabuf vs baselines, same-run ratios](benchmarks.svg)"));
    assert!(md.contains("### Notes\n\nThe 1024 B miss: the write dominates."));
    // The fixed_roundtrip table: times, throughput, ratios.
    assert!(
        md.contains("| `256` | 30.0 ns ±2.0%<br>7.95 GiB/s | 50.0 ns ±2.0%<br>4.77 GiB/s | 100 ns ±2.0%<br>2.38 GiB/s | 0.600 | 0.300 |"),
        "{md}"
    );
    assert!(md.contains(
        "| `1024` | 40.0 ns ±2.0%<br>23.8 GiB/s | 50.0 ns ±2.0%<br>19.1 GiB/s | – | 0.800 | – |"
    ));
    // Throughput groups show "x" ratios, higher is better.
    assert!(md.contains("`arenabuf` / `arena_alligator` throughput (higher is better)"));
    assert!(md.contains(
        "| `t2_held0` | 10.0 ns ±2.0%<br>100 Mop/s | 25.0 ns ±2.0%<br>40.0 Mop/s | 2.50x |"
    ));
    // The unknown group and its allocation counts.
    assert!(md.contains("### `frames_demo`\n"));
    assert!(md.contains("2.00 allocs/iter"));
    // Groups that did not run are listed, not dropped.
    assert!(md.contains("### `async_contended` (issue 3): not run"));
    // The real targets: 256 met (0.6), 1024 missed by 14%.
    assert!(md.contains(
        "| 2 | `fixed_roundtrip`: `arenabuf` / `bytesmut` time ≤ 0.7 | `1024` | 0.800 | **missed** by 14% |"
    ));
    assert!(md.contains("| 3 | `async_contended`: `arenabuf_async` / `semaphore_pool` throughput ≥ 1.5x | `t64_w2_s8` | – | not run |"));
    // The malformed file is listed.
    assert!(md.contains("## Files skipped"));
}

#[test]
fn the_chart_has_one_panel_per_group_with_ratios() {
    let r = results::load(&fixtures()).unwrap();
    let panels = chart::panels(&r);
    let names: Vec<&str> = panels.iter().map(|p| p.group.as_str()).collect();
    assert_eq!(
        names,
        ["fixed_roundtrip", "fixed_contention", "frames_demo"]
    );
    let fr = &panels[0];
    assert_eq!(fr.parameters, ["256", "1024"]);
    assert_eq!(fr.series, ["vs bytesmut", "vs arena_alligator"]);
    assert_eq!(fr.baselines, ["bytesmut", "arena_alligator"]);
    let speedups: Vec<(usize, usize, f64)> = fr
        .bars
        .iter()
        .map(|b| (b.slot, b.series, b.speedup))
        .collect();
    assert_eq!(speedups.len(), 3);
    assert!(close(speedups[0].2, 50.0 / 30.0) && close(speedups[1].2, 100.0 / 30.0));
    assert_eq!((speedups[2].0, speedups[2].1), (1, 0));
    assert_eq!(chart::y_range(&fr.bars), (0.5, 8.0));

    let svg = chart::render_svg(&panels).unwrap();
    assert!(svg.starts_with("<svg"));
    for text in [
        "fixed_roundtrip",
        "fixed_contention",
        "frames_demo",
        "vs arena_alligator",
        "t2_held75",
        "2.50",
    ] {
        assert!(svg.contains(text), "{text} missing from the SVG");
    }
    let empty = chart::render_svg(&[]).unwrap();
    assert!(empty.contains("no results yet"));
}

#[test]
fn merging_directories_keeps_the_newest_result() {
    let mut a = results::load(&fixtures()).unwrap();
    let mut b = results::load(&fixtures()).unwrap();
    // Pretend `b` ran later, with a different time for one benchmark.
    let later = SystemTime::now() + std::time::Duration::from_secs(3600);
    for m in &mut b.measurements {
        m.modified = Some(later);
        if m.id.to_string() == "fixed_roundtrip/arenabuf/256" {
            m.mean_ns = 20.0;
        }
    }
    b.skipped.clear();
    let n = a.measurements.len();
    a.merge(b);
    assert_eq!(
        a.measurements.len(),
        n,
        "the same benchmarks, not duplicates"
    );
    assert!(close(
        a.get("fixed_roundtrip", "arenabuf", "256").unwrap().mean_ns,
        20.0
    ));

    // The older one does not replace the newer.
    let mut c = results::load(&fixtures()).unwrap();
    c.skipped.clear();
    a.merge(c);
    assert!(close(
        a.get("fixed_roundtrip", "arenabuf", "256").unwrap().mean_ns,
        20.0
    ));
}

#[test]
fn allocation_case_files_apply_to_their_benchmarks() {
    let r = results::load(&fixtures()).unwrap();
    let allocs = |imp: &str, p: &str| r.get("fixed_contention", imp, p).unwrap().allocs_per_iter;
    assert_eq!(allocs("arenabuf", "t1_held0"), Some(3.0));
    assert_eq!(allocs("arena_alligator", "t1_held0"), Some(0.5));
    assert_eq!(allocs("arenabuf", "t2_held0"), None);
    assert!(
        results::parse_alloc_cases(r#"{"cases": [{"id": "a/b/c", "allocations": -1}]}"#).is_err()
    );
    assert!(results::parse_alloc_cases(r#"{"cases": [{"id": "a/b/c"}]}"#).is_err());
}

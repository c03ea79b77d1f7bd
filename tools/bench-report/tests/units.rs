//! The small pieces: parsing, ordering, formatting, verdicts, dates.

use std::cmp::Ordering;

use bench_report::analysis::{Verdict, judge};
use bench_report::machine::{civil_from_days, format_utc, parse_cpuinfo, parse_meminfo};
use bench_report::results::{Throughput, format_ns, natural_cmp, parse_allocs, parse_measurement};
use bench_report::spec::{self, Bound, Params};

const EST: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":9.0,"upper_bound":11.0},"point_estimate":10.0,"standard_error":0.5}}"#;

#[test]
fn benchmark_ids_without_a_parameter_or_function() {
    let m = parse_measurement(
        r#"{"group_id":"g","function_id":"f","value_str":null,"throughput":null}"#,
        EST,
    )
    .unwrap();
    assert_eq!(
        (
            m.id.group.as_str(),
            m.id.implementation.as_str(),
            m.id.parameter.as_str()
        ),
        ("g", "f", "")
    );
    assert_eq!(m.id.to_string(), "g/f");
    assert_eq!(m.throughput, None);
    let m = parse_measurement(r#"{"group_id":"g","function_id":null,"value_str":"7","throughput":{"ElementsAndBytes":{"elements":2,"bytes":64}}}"#, EST).unwrap();
    assert_eq!(m.id.parameter, "7");
    assert_eq!(
        m.throughput,
        Some(Throughput::ElementsAndBytes {
            elements: 2,
            bytes: 64
        })
    );
    assert_eq!((m.mean_ns, m.lower_ns, m.upper_ns), (10.0, 9.0, 11.0));
}

#[test]
fn malformed_json_is_an_error_that_names_the_file() {
    let err = parse_measurement("{", EST).unwrap_err();
    assert!(err.starts_with("benchmark.json:"), "{err}");
    let bench = r#"{"group_id":"g","function_id":"f","value_str":"1","throughput":null}"#;
    let err = parse_measurement(bench, r#"{"median":{}}"#).unwrap_err();
    assert!(err.starts_with("estimates.json:"), "{err}");
    let zero = EST.replace("\"point_estimate\":10.0", "\"point_estimate\":0.0");
    assert!(
        parse_measurement(bench, &zero)
            .unwrap_err()
            .contains("not a positive number")
    );
    assert_eq!(parse_allocs(r#"{"allocs_per_iter": 1.5}"#), Ok(1.5));
    assert!(parse_allocs(r#"{"allocs_per_iter": -1}"#).is_err());
    assert!(parse_allocs(r#"{"allocs": 1}"#).is_err());
}

#[test]
fn natural_order_compares_numbers_as_numbers() {
    let mut v = vec![
        "t8_held0",
        "16384",
        "t40_held75",
        "256",
        "t2_held75",
        "1024",
        "t2_held0",
        "4096",
        "fixed_256",
        "buddy_256",
    ];
    v.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(
        v,
        [
            "256",
            "1024",
            "4096",
            "16384",
            "buddy_256",
            "fixed_256",
            "t2_held0",
            "t2_held75",
            "t8_held0",
            "t40_held75"
        ]
    );
    assert_eq!(natural_cmp("007", "7"), Ordering::Less); // equal numbers: by text
    assert_eq!(natural_cmp("", "a"), Ordering::Less);
}

#[test]
fn rates_and_times_have_units() {
    assert_eq!(Throughput::Bytes(1024).rate(1000.0), "977 MiB/s");
    assert_eq!(Throughput::Bytes(1 << 30).rate(1e9), "1.00 GiB/s");
    assert_eq!(Throughput::Elements(1).rate(10.0), "100 Mop/s");
    assert_eq!(Throughput::BytesDecimal(1000).rate(1e9), "1.00 kB/s");
    assert_eq!(format_ns(36.24), "36.2 ns");
    assert_eq!(format_ns(5_940.0), "5.94 µs");
    assert_eq!(format_ns(2.5e6), "2.50 ms");
    assert_eq!(format_ns(3.0e9), "3.00 s");
}

#[test]
fn verdicts_say_by_how_much() {
    assert_eq!(
        judge(Bound::TimeRatioAtMost(0.5), 0.25),
        Verdict::Met {
            measured: 0.25,
            margin: 0.5
        }
    );
    assert_eq!(
        judge(Bound::TimeRatioAtMost(0.5), 0.5),
        Verdict::Met {
            measured: 0.5,
            margin: 0.0
        }
    );
    assert_eq!(
        judge(Bound::TimeRatioAtMost(0.5), 0.75),
        Verdict::Missed {
            measured: 0.75,
            by: 0.5
        }
    );
    assert_eq!(
        judge(Bound::ThroughputRatioAtLeast(2.0), 3.0),
        Verdict::Met {
            measured: 3.0,
            margin: 0.5
        }
    );
    assert_eq!(
        judge(Bound::ThroughputRatioAtLeast(2.0), 1.5),
        Verdict::Missed {
            measured: 1.5,
            by: 0.25
        }
    );
    assert_eq!(
        judge(Bound::AllocsAtMost(0.0), 0.0),
        Verdict::Met {
            measured: 0.0,
            margin: 0.0
        }
    );
    let Verdict::Missed { by, .. } = judge(Bound::AllocsAtMost(0.0), 1.0) else {
        panic!()
    };
    assert!(by.is_infinite());
}

#[test]
fn net_ratios_take_the_floor_out_of_both() {
    use bench_report::analysis::net_ratio;
    // 300 ns ours, 200 ns baseline, 100 ns floor: net 200 vs 100.
    assert_eq!(net_ratio(300.0, 200.0, 100.0), 2.0);
    assert_eq!(net_ratio(150.0, 300.0, 100.0), 0.25);
    // Ours at or below the floor costs nothing net.
    assert_eq!(net_ratio(90.0, 300.0, 100.0), 0.0);
    // A baseline at the floor leaves nothing to compare with.
    assert_eq!(net_ratio(100.0, 100.0, 100.0), 0.0);
    assert_eq!(net_ratio(101.0, 100.0, 100.0), f64::INFINITY);
    assert!(matches!(
        judge(
            Bound::NetTimeRatioAtMost {
                max: 0.5,
                floor: "f"
            },
            2.0
        ),
        Verdict::Missed { by, .. } if (by - 3.0).abs() < 1e-12
    ));
}

#[test]
fn param_selectors() {
    assert!(Params::Prefix(&["t2_", "t8_"]).matches("t2_held75"));
    assert!(!Params::Prefix(&["t2_", "t8_"]).matches("t20_held0"));
    assert!(Params::Exact(&["256"]).matches("256"));
    assert!(!Params::Exact(&["256"]).matches("2560"));
    assert!(Params::All.matches("anything"));
}

#[test]
fn every_target_names_a_known_group_and_its_pairs() {
    for t in spec::TARGETS {
        let g = spec::group_spec(t.group).unwrap_or_else(|| panic!("{} is not in GROUPS", t.group));
        assert!(
            g.pairs.contains(&(t.ours, t.baseline)),
            "{t:?} is not a pair of its group"
        );
        // A time bound on a time group, a throughput bound on a throughput
        // group, so the targets table and the group table agree.
        match t.bound {
            Bound::TimeRatioAtMost(_) | Bound::NetTimeRatioAtMost { .. } => {
                assert_eq!(g.metric, spec::Metric::Time, "{t:?}")
            }
            Bound::ThroughputRatioAtLeast(_) => {
                assert_eq!(g.metric, spec::Metric::Throughput, "{t:?}")
            }
            Bound::AllocRatioAtMost(_) | Bound::AllocsAtMost(_) => {}
        }
    }
}

#[test]
fn machine_files_parse() {
    let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC   7B13 64-Core Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n";
    assert_eq!(
        parse_cpuinfo(cpuinfo),
        (Some("AMD EPYC 7B13 64-Core Processor".to_string()), Some(2))
    );
    assert_eq!(parse_cpuinfo(""), (None, None));
    assert_eq!(
        parse_meminfo("MemTotal:       24641268 kB\nMemFree: 1 kB\n").as_deref(),
        Some("23.5 GiB")
    );
    assert_eq!(parse_meminfo("nothing"), None);
}

#[test]
fn dates() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_088_200); // 2025-11-25 16:30 UTC
    assert_eq!(format_utc(t), "2025-11-25 16:30 UTC");
}

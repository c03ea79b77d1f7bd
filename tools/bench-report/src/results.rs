//! Reading criterion's output: `<dir>/**/new/{benchmark,estimates}.json`.
//!
//! Every benchmark of the project has the ID `<group>/<implementation>/<parameter>`,
//! so criterion stores it under
//! `<criterion-dir>/<group>/<implementation>/<parameter>/new/`. The IDs are
//! read back from `benchmark.json` (criterion escapes some characters in the
//! directory names, never in that file). `estimates.json` gives the mean
//! time per iteration and its 95% confidence interval.
//!
//! A bench may also record heap allocations per iteration, counted in the
//! same run, in either of two ways:
//!
//! - an `allocs.json` file beside `new/`
//!   (`<group>/<implementation>/<parameter>/allocs.json`) holding
//!   `{"allocs_per_iter": <number>}`;
//! - a file `<criterion-dir>/<name>allocs.json` (such as `io_allocs.json`)
//!   holding `{"cases": [{"id": "<group>/<implementation>/<parameter>",
//!   "allocations": <number>}, ...]}` (`allocs_per_iter` is accepted for
//!   `allocations`); other fields are ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

/// What one iteration processes, as criterion recorded it (`benchmark.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Throughput {
    /// Bits per iteration.
    Bits(u64),
    /// Bytes per iteration (binary prefixes).
    Bytes(u64),
    /// Bytes per iteration (decimal prefixes).
    BytesDecimal(u64),
    /// Elements (operations, frames, requests) per iteration.
    Elements(u64),
    /// Both; elements are the primary measure.
    ElementsAndBytes {
        /// Elements per iteration.
        elements: u64,
        /// Bytes per iteration.
        bytes: u64,
    },
}

impl Throughput {
    /// The rate at `mean_ns` per iteration, formatted with a unit
    /// (`"6.59 GiB/s"`, `"27.3 Mop/s"`).
    pub fn rate(&self, mean_ns: f64) -> String {
        let per_sec = |amount: u64| amount as f64 * 1e9 / mean_ns;
        match *self {
            Throughput::Bytes(b) | Throughput::ElementsAndBytes { bytes: b, .. } => {
                binary_bytes(per_sec(b))
            }
            Throughput::BytesDecimal(b) => decimal(per_sec(b), "B/s"),
            Throughput::Bits(b) => decimal(per_sec(b), "bit/s"),
            Throughput::Elements(e) => decimal(per_sec(e), "op/s"),
        }
    }
}

fn binary_bytes(per_sec: f64) -> String {
    const UNITS: [&str; 5] = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"];
    let mut v = per_sec;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", sig3(v), UNITS[unit])
}

fn decimal(per_sec: f64, unit: &str) -> String {
    const PREFIXES: [&str; 5] = ["", "k", "M", "G", "T"];
    let mut v = per_sec;
    let mut p = 0;
    while v >= 1000.0 && p + 1 < PREFIXES.len() {
        v /= 1000.0;
        p += 1;
    }
    format!("{} {}{}", sig3(v), PREFIXES[p], unit)
}

/// Three significant digits (at least the integer part).
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A time in nanoseconds, with a unit that keeps three significant digits.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{} s", sig3(ns / 1e9))
    } else if ns >= 1e6 {
        format!("{} ms", sig3(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} µs", sig3(ns / 1e3))
    } else {
        format!("{} ns", sig3(ns))
    }
}

/// A benchmark's ID: `<group>/<implementation>/<parameter>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BenchId {
    /// The criterion group (`fixed_roundtrip`).
    pub group: String,
    /// What was measured: ours (`arenabuf...`) or a baseline (`bytesmut`).
    pub implementation: String,
    /// The case (`256`, `t2_held75`); empty when the bench has none.
    pub parameter: String,
}

impl fmt::Display for BenchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.implementation)?;
        if !self.parameter.is_empty() {
            write!(f, "/{}", self.parameter)?;
        }
        Ok(())
    }
}

/// One benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Which benchmark.
    pub id: BenchId,
    /// Mean time per iteration, in nanoseconds.
    pub mean_ns: f64,
    /// Lower bound of the mean's 95% confidence interval, in nanoseconds.
    pub lower_ns: f64,
    /// Upper bound of the mean's 95% confidence interval, in nanoseconds.
    pub upper_ns: f64,
    /// What one iteration processes, if the bench declared it.
    pub throughput: Option<Throughput>,
    /// Heap allocations per iteration, if the bench recorded them
    /// (`allocs.json`).
    pub allocs_per_iter: Option<f64>,
    /// When criterion wrote the estimates (the end of this benchmark).
    pub modified: Option<SystemTime>,
}

/// A file that could not be read or understood.
#[derive(Debug)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for LoadError {}

#[derive(Deserialize)]
struct BenchmarkJson {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<Throughput>,
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct EstimatesJson {
    mean: Estimate,
}

#[derive(Deserialize)]
struct AllocsJson {
    allocs_per_iter: f64,
}

#[derive(Deserialize)]
struct AllocCases {
    cases: Vec<AllocCase>,
}

#[derive(Deserialize)]
struct AllocCase {
    id: String,
    #[serde(alias = "allocations")]
    allocs_per_iter: f64,
}

/// Parses a `<name>allocs.json` file of cases: `(benchmark ID, heap
/// allocations per iteration)` pairs.
///
/// # Errors
///
/// A description of what is malformed.
pub fn parse_alloc_cases(text: &str) -> Result<Vec<(String, f64)>, String> {
    let c: AllocCases = serde_json::from_str(text).map_err(|e| e.to_string())?;
    c.cases
        .into_iter()
        .map(|case| {
            if case.allocs_per_iter.is_finite() && case.allocs_per_iter >= 0.0 {
                Ok((case.id, case.allocs_per_iter))
            } else {
                Err(format!(
                    "{}: {} allocations is not a non-negative number",
                    case.id, case.allocs_per_iter
                ))
            }
        })
        .collect()
}

/// Parses one benchmark from the text of its `benchmark.json` and
/// `estimates.json`.
///
/// # Errors
///
/// A description of what is malformed (the caller adds the path).
pub fn parse_measurement(
    benchmark_json: &str,
    estimates_json: &str,
) -> Result<Measurement, String> {
    let bench: BenchmarkJson =
        serde_json::from_str(benchmark_json).map_err(|e| format!("benchmark.json: {e}"))?;
    let est: EstimatesJson =
        serde_json::from_str(estimates_json).map_err(|e| format!("estimates.json: {e}"))?;
    let mean = est.mean;
    if !(mean.point_estimate.is_finite() && mean.point_estimate > 0.0) {
        return Err(format!(
            "estimates.json: mean time {} ns is not a positive number",
            mean.point_estimate
        ));
    }
    // IDs made with `bench_function("name")` have no parameter; IDs made
    // with `BenchmarkId::from_parameter` have no function.
    let (implementation, parameter) = match (bench.function_id, bench.value_str) {
        (Some(f), Some(v)) => (f, v),
        (Some(f), None) => (f, String::new()),
        (None, Some(v)) => (String::new(), v),
        (None, None) => (String::new(), String::new()),
    };
    Ok(Measurement {
        id: BenchId {
            group: bench.group_id,
            implementation,
            parameter,
        },
        mean_ns: mean.point_estimate,
        lower_ns: mean.confidence_interval.lower_bound,
        upper_ns: mean.confidence_interval.upper_bound,
        throughput: bench.throughput,
        allocs_per_iter: None,
        modified: None,
    })
}

/// Parses an `allocs.json` file's text.
///
/// # Errors
///
/// A description of what is malformed.
pub fn parse_allocs(text: &str) -> Result<f64, String> {
    let a: AllocsJson = serde_json::from_str(text).map_err(|e| format!("allocs.json: {e}"))?;
    if a.allocs_per_iter.is_finite() && a.allocs_per_iter >= 0.0 {
        Ok(a.allocs_per_iter)
    } else {
        Err(format!(
            "allocs.json: allocs_per_iter {} is not a non-negative number",
            a.allocs_per_iter
        ))
    }
}

/// Everything found under a criterion directory.
#[derive(Debug, Default)]
pub struct Results {
    /// The benchmarks, sorted by ID.
    pub measurements: Vec<Measurement>,
    /// Files that were skipped, and why (reported, not fatal).
    pub skipped: Vec<LoadError>,
}

impl Results {
    /// The measurement of `group/implementation/parameter`, if it ran.
    pub fn get(&self, group: &str, implementation: &str, parameter: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| {
            m.id.group == group
                && m.id.implementation == implementation
                && m.id.parameter == parameter
        })
    }

    /// The measurements of one group.
    pub fn group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Measurement> + 'a {
        self.measurements
            .iter()
            .filter(move |m| m.id.group == group)
    }

    /// The groups that have results, sorted.
    pub fn groups(&self) -> Vec<&str> {
        let mut g: Vec<&str> = self
            .measurements
            .iter()
            .map(|m| m.id.group.as_str())
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    }
}

/// Loads every benchmark under `dir` (criterion's output directory).
///
/// A missing directory gives empty results (nothing has run yet); a file
/// that cannot be parsed is listed in [`Results::skipped`].
///
/// # Errors
///
/// Only when `dir` exists but cannot be read.
pub fn load(dir: &Path) -> Result<Results, LoadError> {
    let mut results = Results::default();
    if !dir.exists() {
        return Ok(results);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| LoadError {
            path: d.clone(),
            reason: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name();
            if name == "new" {
                load_one(&path, &mut results);
            } else if name != "report" && name != "base" && name != "change" {
                stack.push(path);
            }
        }
    }
    load_alloc_cases(dir, &mut results);
    results.measurements.sort_by(|a, b| {
        (&a.id.group, &a.id.implementation)
            .cmp(&(&b.id.group, &b.id.implementation))
            .then_with(|| natural_cmp(&a.id.parameter, &b.id.parameter))
    });
    results.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(results)
}

/// Applies every `<dir>/*allocs.json` case file to the measurements.
fn load_alloc_cases(dir: &Path, results: &mut Results) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with("allocs.json"))
        })
        .collect();
    files.sort();
    for path in files {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_alloc_cases(&text));
        match parsed {
            Ok(cases) => {
                for (id, allocs) in cases {
                    if let Some(m) = results
                        .measurements
                        .iter_mut()
                        .find(|m| m.id.to_string() == id)
                    {
                        m.allocs_per_iter = Some(allocs);
                    }
                }
            }
            Err(reason) => results.skipped.push(LoadError { path, reason }),
        }
    }
}

fn load_one(new_dir: &Path, results: &mut Results) {
    let read = |name: &str| {
        let path = new_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| LoadError {
            path,
            reason: e.to_string(),
        })
    };
    let (bench, est) = match (read("benchmark.json"), read("estimates.json")) {
        (Ok(b), Ok(e)) => (b, e),
        (Err(e), _) | (_, Err(e)) => {
            results.skipped.push(e);
            return;
        }
    };
    let mut m = match parse_measurement(&bench, &est) {
        Ok(m) => m,
        Err(reason) => {
            results.skipped.push(LoadError {
                path: new_dir.to_path_buf(),
                reason,
            });
            return;
        }
    };
    m.modified = std::fs::metadata(new_dir.join("estimates.json"))
        .and_then(|md| md.modified())
        .ok();
    if let Some(parent) = new_dir.parent() {
        let allocs = parent.join("allocs.json");
        if let Ok(text) = std::fs::read_to_string(&allocs) {
            match parse_allocs(&text) {
                Ok(a) => m.allocs_per_iter = Some(a),
                Err(reason) => results.skipped.push(LoadError {
                    path: allocs,
                    reason,
                }),
            }
        }
    }
    results.measurements.push(m);
}

impl Results {
    /// Adds `other`'s results; where both have the same benchmark, keeps
    /// the one written last (a later run of that bench).
    pub fn merge(&mut self, other: Results) {
        for m in other.measurements {
            match self.measurements.iter_mut().find(|x| x.id == m.id) {
                Some(x) if x.modified >= m.modified => {}
                Some(x) => *x = m,
                None => self.measurements.push(m),
            }
        }
        self.skipped.extend(other.skipped);
        self.measurements.sort_by(|a, b| {
            (&a.id.group, &a.id.implementation)
                .cmp(&(&b.id.group, &b.id.implementation))
                .then_with(|| natural_cmp(&a.id.parameter, &b.id.parameter))
        });
    }
}

/// Compares strings with runs of digits compared as numbers, so that
/// `256 < 1024` and `t2_held75 < t40_held0`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (xt, yt) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

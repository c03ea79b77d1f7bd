//! Ratios and target checks, from loaded results and the spec.

use std::time::{Duration, SystemTime};

use crate::results::{Measurement, Results, natural_cmp};
use crate::spec::{self, Bound, GroupSpec, Metric, Target};

/// Ours compared with a baseline, on the same parameter of the same run.
///
/// Both numbers are oriented the same way for every metric: `speedup` is
/// how many times faster ours is (baseline time / ours time), so above 1 is
/// better; `time_ratio` is its inverse (ours time / baseline time), below 1
/// is better. For a throughput group, `speedup` is the throughput ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// ours time / baseline time.
    pub time_ratio: f64,
    /// baseline time / ours time (= ours throughput / baseline throughput).
    pub speedup: f64,
}

impl Ratio {
    /// The ratio of two measurements.
    pub fn of(ours: &Measurement, baseline: &Measurement) -> Self {
        Self {
            time_ratio: ours.mean_ns / baseline.mean_ns,
            speedup: baseline.mean_ns / ours.mean_ns,
        }
    }

    /// The number shown for `metric`: the time ratio for time groups, the
    /// throughput ratio for throughput groups.
    pub fn shown(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Time => self.time_ratio,
            Metric::Throughput => self.speedup,
        }
    }
}

/// How a group is laid out in the report.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// The group name.
    pub name: String,
    /// Its spec, if it is a known group.
    pub spec: Option<&'static GroupSpec>,
    /// How ratios are shown.
    pub metric: Metric,
    /// The implementations measured, ours first.
    pub implementations: Vec<String>,
    /// The parameters measured, in natural order.
    pub parameters: Vec<String>,
    /// The (ours, baseline) pairs whose ratios are shown.
    pub pairs: Vec<(String, String)>,
    /// The oldest and newest result of the group.
    pub span: Option<(SystemTime, SystemTime)>,
}

impl GroupView {
    /// Whether the group's results were written so far apart that they
    /// probably come from different runs (more than `limit`).
    pub fn mixed_runs(&self, limit: Duration) -> Option<Duration> {
        let (a, b) = self.span?;
        let d = b.duration_since(a).ok()?;
        (d > limit).then_some(d)
    }
}

fn is_ours(implementation: &str) -> bool {
    implementation.starts_with("arenabuf")
}

/// Lays out `group` from `results`. Known groups use their spec's pairs
/// (those whose implementations ran); unknown groups pair every `arenabuf*`
/// implementation with every other one.
pub fn view(results: &Results, group: &str) -> GroupView {
    let spec = spec::group_spec(group);
    let ms: Vec<&Measurement> = results.group(group).collect();
    let mut implementations: Vec<String> = Vec::new();
    let mut parameters: Vec<String> = Vec::new();
    for m in &ms {
        if !implementations.contains(&m.id.implementation) {
            implementations.push(m.id.implementation.clone());
        }
        if !parameters.contains(&m.id.parameter) {
            parameters.push(m.id.parameter.clone());
        }
    }
    parameters.sort_by(|a, b| natural_cmp(a, b));
    // Ours first, then the spec's order, then by name.
    let spec_rank = |name: &str| {
        spec.and_then(|s| {
            s.pairs
                .iter()
                .flat_map(|(o, b)| [*o, *b])
                .position(|n| n == name)
        })
        .unwrap_or(usize::MAX)
    };
    implementations.sort_by(|a, b| {
        (!is_ours(a), spec_rank(a), a.as_str()).cmp(&(!is_ours(b), spec_rank(b), b.as_str()))
    });
    let pairs: Vec<(String, String)> = match spec {
        Some(s) => s
            .pairs
            .iter()
            .filter(|(o, b)| {
                implementations.iter().any(|i| i == o) && implementations.iter().any(|i| i == b)
            })
            .map(|(o, b)| (o.to_string(), b.to_string()))
            .collect(),
        None => implementations
            .iter()
            .filter(|o| is_ours(o))
            .flat_map(|o| {
                implementations
                    .iter()
                    .filter(|b| !is_ours(b))
                    .map(move |b| (o.clone(), b.clone()))
            })
            .collect(),
    };
    let metric = match spec {
        Some(s) => s.metric,
        None if ms.iter().any(|m| m.throughput.is_some()) => Metric::Throughput,
        None => Metric::Time,
    };
    let times: Vec<SystemTime> = ms.iter().filter_map(|m| m.modified).collect();
    let span = match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => Some((*a, *b)),
        _ => None,
    };
    GroupView {
        name: group.to_string(),
        spec,
        metric,
        implementations,
        parameters,
        pairs,
        span,
    }
}

/// Every group to report: the known ones in spec order (run or not), then
/// the others that have results, by name.
pub fn group_names(results: &Results) -> Vec<String> {
    let mut names: Vec<String> = spec::GROUPS.iter().map(|g| g.name.to_string()).collect();
    for g in results.groups() {
        if !names.iter().any(|n| n == g) {
            names.push(g.to_string());
        }
    }
    names
}

/// The outcome of one target on one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The bound holds; `margin` is how far inside it, as a fraction
    /// (0.1 = 10% better than required).
    Met {
        /// The measured value (a ratio, or allocations per iteration).
        measured: f64,
        /// Fraction by which the bound is beaten.
        margin: f64,
    },
    /// The bound does not hold; `by` is how far off, as a fraction
    /// (0.25 = 25% worse than required).
    Missed {
        /// The measured value.
        measured: f64,
        /// Fraction by which the bound is missed.
        by: f64,
    },
    /// One of the two implementations did not run for this parameter (or
    /// no parameter it applies to ran at all).
    NotRun,
    /// Both ran, but the bench recorded no heap allocation counts.
    NotRecorded,
}

/// One line of the targets table.
#[derive(Debug, Clone)]
pub struct TargetCheck {
    /// The target.
    pub target: Target,
    /// The parameter checked (empty for "not run" of the whole target).
    pub parameter: String,
    /// The result.
    pub verdict: Verdict,
}

/// Checks `bound` against a measured value.
pub fn judge(bound: Bound, measured: f64) -> Verdict {
    match bound {
        Bound::TimeRatioAtMost(max)
        | Bound::AllocRatioAtMost(max)
        | Bound::AllocsAtMost(max)
        | Bound::NetTimeRatioAtMost { max, .. } => {
            if measured <= max {
                let margin = if max > 0.0 { 1.0 - measured / max } else { 0.0 };
                Verdict::Met { measured, margin }
            } else {
                let by = if max > 0.0 {
                    measured / max - 1.0
                } else {
                    f64::INFINITY
                };
                Verdict::Missed { measured, by }
            }
        }
        Bound::ThroughputRatioAtLeast(min) => {
            if measured >= min {
                Verdict::Met {
                    measured,
                    margin: measured / min - 1.0,
                }
            } else {
                Verdict::Missed {
                    measured,
                    by: 1.0 - measured / min,
                }
            }
        }
    }
}

/// (ours - floor) / (baseline - floor), times in any one unit: how ours
/// compares with the baseline once the cost both share (the floor) is taken
/// out. A baseline no slower than the floor leaves nothing to compare
/// against: 0 if ours is no slower either, infinity otherwise.
pub fn net_ratio(ours: f64, baseline: f64, floor: f64) -> f64 {
    let (o, b) = (ours - floor, baseline - floor);
    if b > 0.0 {
        o.max(0.0) / b
    } else if o <= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Checks one target on one parameter.
pub fn check_param(results: &Results, target: &Target, parameter: &str) -> Verdict {
    let (Some(ours), Some(base)) = (
        results.get(target.group, target.ours, parameter),
        results.get(target.group, target.baseline, parameter),
    ) else {
        return Verdict::NotRun;
    };
    let measured = match target.bound {
        Bound::TimeRatioAtMost(_) => Ratio::of(ours, base).time_ratio,
        Bound::ThroughputRatioAtLeast(_) => Ratio::of(ours, base).speedup,
        Bound::NetTimeRatioAtMost { floor, .. } => {
            match results.get(target.group, floor, parameter) {
                Some(f) => net_ratio(ours.mean_ns, base.mean_ns, f.mean_ns),
                None => return Verdict::NotRun,
            }
        }
        Bound::AllocRatioAtMost(_) => match (ours.allocs_per_iter, base.allocs_per_iter) {
            (Some(o), Some(b)) if b > 0.0 => o / b,
            (Some(0.0), Some(_)) => 0.0,
            (Some(_), Some(_)) => f64::INFINITY,
            _ => return Verdict::NotRecorded,
        },
        Bound::AllocsAtMost(_) => match ours.allocs_per_iter {
            Some(o) => o,
            None => return Verdict::NotRecorded,
        },
    };
    judge(target.bound, measured)
}

/// Checks every target on every parameter it applies to. A target whose
/// group or implementations did not run gets one "not run" line; so does
/// each exactly listed parameter that is missing.
pub fn check_targets(results: &Results, targets: &[Target]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for t in targets {
        let mut params: Vec<String> = match t.params {
            spec::Params::Exact(list) => list.iter().map(|p| p.to_string()).collect(),
            _ => results
                .group(t.group)
                .filter(|m| m.id.implementation == t.ours && t.params.matches(&m.id.parameter))
                .map(|m| m.id.parameter.clone())
                .collect(),
        };
        params.sort_by(|a, b| natural_cmp(a, b));
        params.dedup();
        if params.is_empty() {
            out.push(TargetCheck {
                target: *t,
                parameter: String::new(),
                verdict: Verdict::NotRun,
            });
        }
        for p in params {
            let verdict = check_param(results, t, &p);
            out.push(TargetCheck {
                target: *t,
                parameter: p,
                verdict,
            });
        }
    }
    out
}

/// Counts of met, missed and unchecked (not run or not recorded) lines.
pub fn tally(checks: &[TargetCheck]) -> (usize, usize, usize) {
    let met = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Met { .. }))
        .count();
    let missed = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Missed { .. }))
        .count();
    (met, missed, checks.len() - met - missed)
}

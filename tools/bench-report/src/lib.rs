//! `bench-report`: turns the criterion results of arenabuf's benches into
//! `docs/benchmarks.md` (tables, same-run ratios, the issues' targets, the
//! machine) and `docs/benchmarks.svg` (ours vs baselines), so that the
//! report is regenerated, never hand-typed.
//!
//! Run it as `cargo run -p bench-report` after the benches; the commands are
//! in [`spec::REGENERATE`].

pub mod analysis;
pub mod chart;
pub mod machine;
pub mod report;
pub mod results;
pub mod spec;

//! The cross-thread pipeline (`cross_thread` in `benches/allocator_groups`)
//! on both arenas against `BytesMut`, implementations alternating round by
//! round, medians of seven: steadier than criterion's one case after
//! another on a loaded machine, where a case can move by 2-3x between
//! runs. Prints times and net ratios; run with
//! `cargo bench --bench cross_thread_alternating` (and
//! `--bench cross_thread_alternating_mimalloc`).

include!("cross_thread_alternating/harness.rs");

fn main() {
    run("glibc");
}

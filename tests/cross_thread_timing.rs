//! The cross-thread pipeline (`cross_thread` in `benches/allocator_groups`)
//! on a `BuddyArena` against `BytesMut`, implementations alternating round
//! by round, medians of seven: steadier than one criterion run after
//! another on a loaded machine. Ignored; run with
//! `cargo test --profile bench --test cross_thread_timing -- --ignored --nocapture`
//! (and `--test cross_thread_timing_mimalloc`).

include!("cross_thread_timing/harness.rs");

#[test]
#[ignore = "a timing: run by hand with --profile bench"]
fn cross_thread_timing() {
    run("glibc");
}

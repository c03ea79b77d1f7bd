//! `tests/cross_thread_timing.rs` with mimalloc as the global allocator.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("cross_thread_timing/harness.rs");

#[test]
#[ignore = "a timing: run by hand with --profile bench"]
fn cross_thread_timing_mimalloc() {
    run("mimalloc");
}

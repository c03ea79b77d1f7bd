//! `benches/cross_thread_alternating.rs` with mimalloc as the global
//! allocator.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("cross_thread_alternating/harness.rs");

fn main() {
    run("mimalloc");
}

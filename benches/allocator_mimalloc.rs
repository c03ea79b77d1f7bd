//! The allocator benchmarks (`allocator_groups/`) with mimalloc as the
//! global allocator: what a user who wants speed picks instead of a pool.
//! Group names end in `_mimalloc` (`fixed_roundtrip_mimalloc`,
//! `cross_thread_mimalloc`, ...), so both runs sit side by side in
//! `target/criterion` and in the report.
//!
//! `cargo bench --bench allocator_mimalloc -- --noplot`

mod allocator_groups;
mod support;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Appended to every group name.
const GROUP_SUFFIX: &str = "_mimalloc";

criterion::criterion_group!(
    benches,
    allocator_groups::fixed_roundtrip,
    allocator_groups::buddy_roundtrip,
    allocator_groups::fixed_contention,
    allocator_groups::buddy_contention,
    allocator_groups::auto_spill,
    allocator_groups::first_touch,
    allocator_groups::pages_roundtrip,
    allocator_groups::cross_thread
);
criterion::criterion_main!(benches);

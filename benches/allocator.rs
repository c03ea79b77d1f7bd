//! Allocator benchmarks for `arenabuf` with the system allocator (glibc on
//! Linux) as the global allocator: the baselines' heap memory, and the one
//! owner box `freeze()` allocates, come from it.
//!
//! The groups live in `allocator_groups/`; `allocator_mimalloc.rs` runs the
//! same groups with mimalloc, under group names ending in `_mimalloc`.
//! Nothing counts or instruments allocations in this binary.

mod allocator_groups;
mod support;

/// Appended to every group name: none for the system allocator.
const GROUP_SUFFIX: &str = "";

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

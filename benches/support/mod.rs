//! What several benches share: the extra thread count of
//! `ARENA_BENCH_EXTREME`, counting global allocators, and writing result
//! files beside Criterion's estimates for `tools/bench-report`.
//!
//! Each bench includes it with `mod support;` and uses what it needs.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The oversubscribed thread count that `ARENA_BENCH_EXTREME=1` adds to
/// every contention group: `ARENA_BENCH_EXTREME_THREADS`, default 40.
pub fn extreme_threads() -> Option<usize> {
    const DEFAULT: usize = 40;
    if !std::env::var("ARENA_BENCH_EXTREME").is_ok_and(|v| v == "1") {
        return None;
    }
    let threads = std::env::var("ARENA_BENCH_EXTREME_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT);
    Some(threads)
}

/// `counts` plus the extreme count if asked for, sorted, without repeats.
pub fn with_extreme(mut counts: Vec<usize>) -> Vec<usize> {
    counts.extend(extreme_threads());
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// A global allocator that counts allocations (`alloc`, `alloc_zeroed` and
/// `realloc` calls) and forwards everything to the system allocator.
///
/// A bench that wants counts installs it:
/// `#[global_allocator] static GLOBAL: support::Counting = support::Counting;`
/// counts in untimed passes, then calls [`stop_counting`] before its timed
/// groups.
pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Whether [`Counting`] counts; on until [`stop_counting`].
static COUNTING: AtomicBool = AtomicBool::new(true);

/// Stops counting, for good: call it after the untimed counting passes and
/// before the timed groups, so that no timed loop pays the shared counter's
/// `fetch_add` (a contended cache line across threads). What remains per
/// allocation is a load of a flag nobody writes again.
pub fn stop_counting() {
    COUNTING.store(false, Ordering::Relaxed);
}

#[inline]
fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Allocations so far, process-wide (0 unless [`Counting`] is installed).
pub fn allocations() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

// SAFETY: forwards every call to the system allocator unchanged; the counter
// is a plain atomic that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A global allocator that counts allocations only inside
/// [`count_allocations`], so that timed loops run uninstrumented: outside
/// it, an allocation costs one relaxed load of a flag nobody writes (no
/// shared write, no atomic read-modify-write), then goes to the system
/// allocator.
///
/// `#[global_allocator] static GLOBAL: support::GatedCounting = support::GatedCounting;`
pub struct GatedCounting;

static GATE: AtomicBool = AtomicBool::new(false);
static GATED: AtomicU64 = AtomicU64::new(0);

/// Runs `f` with [`GatedCounting`] counting; returns its result and the
/// allocations made meanwhile (by any thread). Call it in an untimed pass.
pub fn count_allocations<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = GATED.load(Ordering::SeqCst);
    GATE.store(true, Ordering::SeqCst);
    let out = f();
    GATE.store(false, Ordering::SeqCst);
    (out, GATED.load(Ordering::SeqCst) - before)
}

#[inline]
fn gate_count() {
    if GATE.load(Ordering::Relaxed) {
        GATED.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; the gate
// and the counter are plain atomics that allocate nothing.
unsafe impl GlobalAlloc for GatedCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        gate_count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        gate_count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        gate_count();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Writes `contents` to `<target dir>/criterion/<name>`, where
/// `tools/bench-report` looks for it; says where, or why it could not.
pub fn write_criterion_file(name: &str, contents: &str) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion");
    let path = dir.join(name);
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, contents)) {
        Ok(()) => println!("allocation counts written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

//! A shim over the synchronisation primitives, so that the same allocator code
//! runs under [loom](https://docs.rs/loom) (`RUSTFLAGS="--cfg arenabuf_loom"`) and in
//! normal builds.
//!
//! Everything that is shared between threads in the allocators goes through
//! this module: atomics, mutexes, and the per-thread shard index.
//!
//! The cfg is `arenabuf_loom`, not the usual `loom`: `--cfg loom` reaches every
//! crate in the build, and dependencies with loom code of their own (tokio,
//! for one) do not build with it.

#[cfg(not(arenabuf_loom))]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(arenabuf_loom))]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use std::sync::{Arc, Mutex};

#[cfg(arenabuf_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(arenabuf_loom)]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use loom::sync::{Arc, Mutex};

/// A small, stable, per-thread number, spread over all bits of a `usize`.
///
/// Used to pick a cache shard, so that threads on different cores touch
/// different cache lines.
#[cfg(not(arenabuf_loom))]
#[inline]
pub(crate) fn thread_index() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    static NEXT: StdAtomicUsize = StdAtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(0) };
    }
    INDEX.with(|index| {
        let i = index.get();
        if i != 0 {
            return i;
        }
        // Fibonacci hashing: consecutive threads land far apart in the high
        // bits, and (the multiplier being odd) differ in the low bits too.
        let i = (NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize);
        index.set(i);
        i
    })
}

// Under loom every thread shares shard 0: the models are about the atomic
// protocol, one shard makes the races as tight as possible, and loom needs
// every execution to be deterministic (the cache's own models pick shards
// explicitly).
#[cfg(arenabuf_loom)]
pub(crate) fn thread_index() -> usize {
    0
}
/// The clock of the buddy arena's head windows. A unit test may freeze
/// it on its thread and move it by hand ([`advance_clock`]), so that what
/// it checks does not depend on how fast the machine is.
#[cfg(all(feature = "async-alloc", not(arenabuf_loom)))]
pub(crate) fn now() -> std::time::Instant {
    #[cfg(test)]
    if let Some(frozen) = FROZEN_CLOCK.with(std::cell::Cell::get) {
        return frozen;
    }
    std::time::Instant::now()
}

#[cfg(all(test, not(arenabuf_loom)))]
thread_local! {
    static FROZEN_CLOCK: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Freezes this thread's [`now`], then moves it forward by `by` (unit
/// tests only).
#[cfg(all(test, not(arenabuf_loom)))]
pub(crate) fn advance_clock(by: std::time::Duration) {
    FROZEN_CLOCK.with(|c| c.set(Some(c.get().unwrap_or_else(std::time::Instant::now) + by)));
}

/// Lets other threads run: a failing allocation whose search overlapped a
/// move of cached slots retries after this (`fixed/cache/`).
pub(crate) fn yield_now() {
    #[cfg(not(arenabuf_loom))]
    std::thread::yield_now();
    #[cfg(arenabuf_loom)]
    loom::thread::yield_now();
}

/// Locks a mutex, ignoring poisoning.
///
/// The allocator state behind our mutexes is only ever updated by short,
/// non-panicking sections, so a poisoned lock still guards consistent data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    #[cfg(not(arenabuf_loom))]
    {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    #[cfg(arenabuf_loom)]
    {
        m.lock().unwrap()
    }
}

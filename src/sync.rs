//! A shim over the synchronisation primitives, so that the same allocator code
//! runs under [loom](https://docs.rs/loom) (`RUSTFLAGS="--cfg arenabuf_loom"`), in
//! normal builds, and without `std`.
//!
//! Everything that is shared between threads in the allocators goes through
//! this module: atomics, mutexes, the per-thread shard index, and the abort
//! on a handle-count overflow.
//!
//! The cfg is `arenabuf_loom`, not the usual `loom`: `--cfg loom` reaches every
//! crate in the build, and dependencies with loom code of their own (tokio,
//! for one) do not build with it.
//!
//! Without the `std` feature: atomics from `core`, [`Arc`] from `alloc`, a
//! spin mutex from the `spin` crate (held only for the short, non-panicking
//! sections of the buddy free lists), and no thread-locals: every thread has
//! index 0, so threads share one cache shard. That costs contention, never
//! correctness: every shard and cache update is a compare-exchange or made
//! under a lock.

#[cfg(not(arenabuf_loom))]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use alloc::sync::Arc;
#[cfg(not(arenabuf_loom))]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(all(not(arenabuf_loom), feature = "std"))]
pub(crate) use std::sync::Mutex;

/// The mutex of `no_std` builds: a spin lock. Its sections are short and
/// never block, and it is never taken from an interrupt handler by this
/// crate; code that drops arena buffers inside an interrupt handler that may
/// preempt a holder on the same core would deadlock, as with any spin lock.
#[cfg(all(not(arenabuf_loom), not(feature = "std")))]
pub(crate) type Mutex<T> = spin::Mutex<T>;

#[cfg(arenabuf_loom)]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(arenabuf_loom)]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use loom::sync::{Arc, Mutex};

/// A small, stable, per-thread number, spread over all bits of a `usize`.
///
/// Used to pick a cache shard, so that threads on different cores touch
/// different cache lines.
#[cfg(all(not(arenabuf_loom), feature = "std"))]
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
// explicitly). Without `std` (no thread-locals) every thread is thread 0
// too.
#[cfg(any(arenabuf_loom, not(feature = "std")))]
#[inline]
pub(crate) fn thread_index() -> usize {
    0
}

/// Cache shards for a new arena: about four per CPU, a power of two, at
/// most 256; one under loom and without `std`, where every thread has
/// index 0.
pub(crate) fn cache_shards() -> usize {
    #[cfg(any(arenabuf_loom, not(feature = "std")))]
    return 1;
    #[cfg(all(not(arenabuf_loom), feature = "std"))]
    std::thread::available_parallelism()
        .map_or(4, |n| n.get().saturating_mul(4))
        .clamp(1, 256)
        .next_power_of_two()
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
    #[cfg(all(not(arenabuf_loom), feature = "std"))]
    std::thread::yield_now();
    #[cfg(all(not(arenabuf_loom), not(feature = "std")))]
    core::hint::spin_loop();
    #[cfg(arenabuf_loom)]
    loom::thread::yield_now();
}

/// Locks a mutex, ignoring poisoning.
///
/// The allocator state behind our mutexes is only ever updated by short,
/// non-panicking sections, so a poisoned lock still guards consistent data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> impl core::ops::DerefMut<Target = T> + '_ {
    #[cfg(all(not(arenabuf_loom), feature = "std"))]
    {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    #[cfg(all(not(arenabuf_loom), not(feature = "std")))]
    {
        m.lock()
    }
    #[cfg(arenabuf_loom)]
    {
        m.lock().unwrap()
    }
}

/// Ends the process at once: a handle count about to overflow (more than
/// `isize::MAX` handles, which only leaked handles can reach), where going
/// on could free memory still in use.
///
/// With `std`, [`std::process::abort`]. Without it there is no stable
/// abort in `core`, so this panics while a guard whose `Drop` panics is
/// live: under `panic = "abort"` (the usual `no_std` setting) the first
/// panic ends the program through the panic handler, which never returns;
/// if panics unwind, the second panic, raised during the unwinding, aborts.
/// Either way no code after the overflow runs with the count wrapped.
#[cold]
pub(crate) fn abort() -> ! {
    #[cfg(feature = "std")]
    {
        std::process::abort()
    }
    #[cfg(not(feature = "std"))]
    {
        struct PanicOnDrop;
        impl Drop for PanicOnDrop {
            fn drop(&mut self) {
                panic!("arenabuf: handle count overflow");
            }
        }
        let _guard = PanicOnDrop;
        panic!("arenabuf: handle count overflow")
    }
}

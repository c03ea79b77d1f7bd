//! A shim over the synchronisation primitives, so that the same allocator code
//! runs under [loom](https://docs.rs/loom) (`RUSTFLAGS="--cfg arenabuf_loom"`) and in
//! normal builds.
//!
//! Everything that is shared between threads in the allocators goes through
//! this module: atomics, mutexes, and the per-thread search hint.
//!
//! The cfg is `arenabuf_loom`, not the usual `loom`: `--cfg loom` reaches every
//! crate in the build, and dependencies with loom code of their own (tokio,
//! for one) do not build with it.

#[cfg(not(arenabuf_loom))]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(arenabuf_loom))]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use std::sync::{Arc, Mutex};

#[cfg(arenabuf_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(arenabuf_loom)]
#[cfg_attr(not(feature = "async-alloc"), allow(unused_imports))]
pub(crate) use loom::sync::{Arc, Mutex};

/// A small, stable, per-thread number, spread over all bits of a `usize`.
///
/// Used to pick a counter shard and a thread's first bitmap word, so that
/// threads on different cores touch different cache lines.
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

/// The bitmap word of arena `key` (one of `words` words) this thread last
/// claimed from, if it remembers one.
#[cfg(not(arenabuf_loom))]
#[inline]
pub(crate) fn last_word(key: usize, words: usize) -> Option<usize> {
    let (k, w) = LAST_WORD.with(std::cell::Cell::get);
    (k == key && w < words).then_some(w)
}

/// Where this thread should start searching the bitmap of the arena `key`
/// (one of `words` words): the word it last claimed from in that arena, or a
/// per-thread spread-out word. Only a starting point; searches cover every
/// word.
#[cfg(not(arenabuf_loom))]
pub(crate) fn word_hint(key: usize, words: usize) -> usize {
    last_word(key, words)
        .unwrap_or(((thread_index() as u128 * words as u128) >> usize::BITS) as usize)
}

/// Remembers that this thread last claimed from word `word` of arena `key`.
#[cfg(not(arenabuf_loom))]
#[inline]
pub(crate) fn set_word_hint(key: usize, word: usize) {
    LAST_WORD.with(|c| c.set((key, word)));
}

/// A pseudo-random word of `words` (> 0), from a per-thread xorshift
/// generator: where a thread whose hint word is full probes next, so that
/// threads do not all meet at the first word with room.
#[cfg(not(arenabuf_loom))]
#[inline]
pub(crate) fn random_word(words: usize) -> usize {
    PROBE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = thread_index() as u64 | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        ((u128::from(x) * words as u128) >> 64) as usize
    })
}

#[cfg(not(arenabuf_loom))]
thread_local! {
    static LAST_WORD: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
    static PROBE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// Under loom every thread starts at word 0 and shares shard 0: the models are
// about the atomic protocol, a fixed start makes the claim races as tight as
// possible, and loom needs every execution to be deterministic.
#[cfg(arenabuf_loom)]
pub(crate) fn thread_index() -> usize {
    0
}
#[cfg(arenabuf_loom)]
pub(crate) fn last_word(_key: usize, _words: usize) -> Option<usize> {
    None
}
#[cfg(arenabuf_loom)]
pub(crate) fn word_hint(_key: usize, _words: usize) -> usize {
    0
}
#[cfg(arenabuf_loom)]
pub(crate) fn set_word_hint(_key: usize, _word: usize) {}
#[cfg(arenabuf_loom)]
pub(crate) fn random_word(_words: usize) -> usize {
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
/// move of cached slots retries after this (`cache.rs`).
#[allow(dead_code)]
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

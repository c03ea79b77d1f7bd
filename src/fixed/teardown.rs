//! Tearing a [`FixedArena`](super::FixedArena) down.
//!
//! Buffers and frozen `Bytes` keep the arena's memory alive, but they do not
//! bump a shared reference count (that one cache line would bounce between
//! every core on every allocation). Instead:
//!
//! - handles ([`FixedArena`] clones) are counted in `handles`;
//! - when the last handle drops, it first marks every cache handle closed
//!   and returns the slots they held to the bitmap, and waits for runs in
//!   flight between a cache and the bitmap to land (`cache/`): from then on
//!   a set bit means a leased slot, and releases go straight to the words;
//! - it then stores `pending = words + 1` and sets `CLOSED` in every word
//!   with `fetch_or`, counting the words that were already empty, and
//!   subtracts that count plus its own 1;
//! - a release whose clearing RMW returns a word with `CLOSED` set and
//!   leaves it empty subtracts 1.
//!
//! No slot can be claimed after the last handle is gone, so each word is
//! counted exactly once, by the closer or by the release that empties it.
//! Whoever brings `pending` to zero frees the arena. A release that does not
//! empty a closed word touches nothing after its clearing RMW.
//!
//! # Invariants
//!
//! - `pending` is written once (`words + 1`) by the closer before it sets
//!   any `CLOSED` bit, and only decremented after.
//! - Each word's count is returned exactly once: by the closer if the word
//!   was empty when it set `CLOSED`, else by the release that empties it.
//! - Whoever brings `pending` to zero frees the arena; nobody touches it
//!   after returning their last count.

use alloc::boxed::Box;
use core::ptr::NonNull;

use crate::sync::Ordering;

use super::FixedArena;
use super::FixedInner;

/// Frees the arena's state.
///
/// # Safety
///
/// `inner` came from `Box::into_raw`, and the caller brought `pending` to
/// zero: no handle, lease or other thread will touch it again.
pub(super) unsafe fn teardown(inner: NonNull<FixedInner>) {
    // SAFETY: guaranteed by the caller.
    drop(unsafe { Box::from_raw(inner.as_ptr()) });
}

/// Subtracts `n` from `pending`, freeing the arena if that was the rest.
///
/// # Safety
///
/// `inner` is alive, and the caller holds `n` of the `pending` counts (see
/// the module docs); it must not touch `inner` afterwards.
pub(super) unsafe fn finish(inner: NonNull<FixedInner>, n: usize) {
    // SAFETY: the caller's unreturned counts keep `pending > 0`, so the
    // arena has not been freed yet.
    let pending = unsafe { &inner.as_ref().pending };
    if pending.fetch_sub(n, Ordering::AcqRel) == n {
        // SAFETY: we took `pending` to zero: every word is empty and closed
        // and no handle is left, so nobody else can reach `inner`.
        unsafe { teardown(inner) }
    }
}

impl Drop for FixedArena {
    fn drop(&mut self) {
        if self.inner().handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last handle: empty the caches, close every word, count the
        // empty ones, and return those counts plus our own (module docs).
        let arena = self.inner();
        arena.slots.close();
        let n = arena.slots.bitmap.len();
        arena.pending.store(n + 1, Ordering::Relaxed);
        let returned = 1 + arena.slots.bitmap.close();
        // SAFETY: we hold `returned` counts: our own and the empty words'.
        unsafe { finish(self.inner, returned) }
    }
}

//! Tearing a [`BuddyArena`](super::BuddyArena) down.
//!
//! Leases hold no reference count. The last handle takes the mutex, sets
//! `closed`, and flushes every cache handle, leaving the `CLOSED_MARK`
//! marker in it, so later releases cannot park (nor swap groups) and go to
//! the lists under the mutex instead.
//! Whoever, under the mutex, sees `closed` with all memory free, frees the
//! arena after unlocking; a release that parked its block successfully
//! touches nothing afterwards.

//!
//! # Invariants
//!
//! - `closed` is set once, under the lock, by the last handle, which also
//!   leaves `CLOSED_MARK` in every cache handle, so that `free_bytes`
//!   counts every free block from then on;
//! - the arena is freed by exactly one party: whoever, under the lock, sees
//!   `closed` and `free_bytes == total_size`, after unlocking.

use alloc::boxed::Box;
use core::ptr::NonNull;

use crate::sync::{self, Ordering};

use super::BuddyArena;
use super::blocks::BuddyInner;

/// Frees the arena's state.
///
/// # Safety
///
/// `inner` came from `Box::into_raw`, the arena is closed and all its memory
/// is free: no handle or lease is left to touch it.
pub(super) unsafe fn teardown(inner: NonNull<BuddyInner>) {
    // SAFETY: guaranteed by the caller.
    drop(unsafe { Box::from_raw(inner.as_ptr()) });
}

impl Drop for BuddyArena {
    fn drop(&mut self) {
        if self.inner().handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let arena = self.inner();
        let mut lists = sync::lock(&arena.lists);
        lists.closed = true;
        arena.flush(&mut lists);
        let last = lists.free_bytes == arena.total_size;
        drop(lists);
        if last {
            // SAFETY: no handle is left and all memory is free, so no lease
            // is either; we hold no borrow of the arena.
            unsafe { teardown(self.inner) }
        }
    }
}

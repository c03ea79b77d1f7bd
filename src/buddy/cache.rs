//! The release caches of a [`BuddyArena`](super::BuddyArena): per order,
//! [`WAYS`] atomic slots, each on its own cache line, that each hold one
//! free, not yet merged block.
//!
//! A release first tries to park its block in its thread's slot (one CAS);
//! an allocation of that order first tries to take it from there. Parked
//! blocks are free but not merged: whenever the free lists cannot serve a
//! request, every slot is flushed into the lists before the arena answers
//! `ArenaFull`, and `metrics()` flushes too.
//!
//! # Invariants
//!
//! - A slot holds `NIL`, a parked block (a value below [`MARKERS`]), or a
//!   marker: [`WAIT_SLOT`] while tasks wait (set by a flush under the lock,
//!   taken out under the lock when the queue empties), [`CLOSED_SLOT`] for
//!   good after the last handle dropped;
//! - a block is parked by `compare_exchange(NIL, block, Release)` and taken
//!   by `Acquire` (or a flush's `AcqRel` swap), so its previous holder's
//!   writes happen before the next holder's;
//! - at most `WAYS * (max_order + 1)` blocks are parked at any time.

use crate::sync::{AtomicU32, Ordering};

use super::blocks::BuddyInner;
use super::lists::FreeLists;

/// Cache slots per order.
pub(super) const WAYS: usize = 4;
/// Marks a cache slot of a closed arena: nothing may park there any more.
pub(super) const CLOSED_SLOT: u32 = u32::MAX - 1;
/// Marks a cache slot while tasks wait: releases must go to the queue.
pub(super) const WAIT_SLOT: u32 = u32::MAX - 2;
/// Cache slot values below this are parked blocks; the rest are markers.
pub(super) const MARKERS: u32 = WAIT_SLOT;

/// A cache slot on its own cache line.
#[repr(align(64))]
pub(super) struct Way(pub(super) AtomicU32);

impl BuddyInner {
    #[inline]
    pub(super) fn way(&self, k: u32, thread: usize) -> &AtomicU32 {
        &self.cache[k as usize * WAYS + thread % WAYS].0
    }

    /// Moves every parked block to the free lists, leaving the marker the
    /// lists' state calls for (closed, waiting, or empty) in each cache slot.
    pub(super) fn flush(&self, lists: &mut FreeLists) {
        let marker = lists.cache_marker();
        #[cfg(feature = "async-alloc")]
        {
            lists.wait_markers = marker == WAIT_SLOT;
        }
        for (i, way) in self.cache.iter().enumerate() {
            // AcqRel: the parking release's writes to the block happen
            // before whoever gets the block next.
            let b = way.0.swap(marker, Ordering::AcqRel);
            if b < MARKERS {
                lists.free(b, (i / WAYS) as u32);
            }
        }
    }
}

//! The free lists of a [`BuddyArena`](super::BuddyArena): one doubly linked
//! list per order in side arrays, split on take and merged on free, all
//! under the arena's mutex.
//!
//! # Invariants
//!
//! - `tag[b] == k + 1` iff block `b` is linked in list `k`; linked blocks
//!   are free, and no two linked blocks are buddies (they would have been
//!   merged);
//! - bit `k` of `nonempty` is set iff list `k` is non-empty;
//! - `free_bytes` is the sum of the sizes of the linked blocks;
//! - every operation is O(max_order) and allocates nothing.

use alloc::boxed::Box;

use super::cache::{CLOSED_MARK, EMPTY, WAIT_MARK};

/// Most minimum blocks an arena may have (indices are `u32`, with two
/// values kept for markers); also bounds `max_order` to 31.
pub(crate) const MAX_BLOCKS: usize = 1 << 31;
/// No block: the end of a list.
pub(super) const NIL: u32 = u32::MAX;

/// The free lists, and the counters kept under the same lock.
///
/// Invariants:
/// - `tag[b] == k + 1` iff block `b` of order `k` is linked in list `k`;
///   blocks linked in lists are free, and no two linked blocks are buddies
///   (they would have been merged);
/// - bit `k` of `nonempty` is set iff list `k` is non-empty;
/// - `free_bytes` is the sum of the sizes of the linked blocks.
pub(super) struct FreeLists {
    pub(super) heads: [u32; 32],
    pub(super) next: Box<[u32]>,
    pub(super) prev: Box<[u32]>,
    pub(super) tag: Box<[u8]>,
    pub(super) nonempty: u32,
    pub(super) free_bytes: usize,
    pub(super) min_shift: u32,
    pub(super) max_order: u32,
    pub(super) splits: u64,
    pub(super) coalesces: u64,
    pub(super) failures: u64,
    pub(super) closed: bool,
    #[cfg(feature = "async-alloc")]
    pub(super) waiters: crate::wait::Waiters,
    /// The head waiter that could not be carved, if any (see "Waiting" in
    /// the module docs).
    #[cfg(feature = "async-alloc")]
    pub(super) stuck_head: Option<super::blocks::StuckHead>,
    /// The waiter that fits free memory reserved for the stuck head, whose
    /// task polls until the reservation lapses.
    #[cfg(feature = "async-alloc")]
    pub(super) ticker: Option<crate::sync::Arc<crate::wait::Node>>,
    /// Whether cache handles may hold [`WAIT_MARK`]s (set by a flush
    /// while tasks wait, cleared once the emptied queue took them back), so
    /// that releases through the lists scan the cache only when they must.
    #[cfg(feature = "async-alloc")]
    pub(super) wait_markers: bool,
}

impl FreeLists {
    pub(super) fn link(&mut self, b: u32, k: u32) {
        let head = self.heads[k as usize];
        self.tag[b as usize] = k as u8 + 1;
        self.next[b as usize] = head;
        self.prev[b as usize] = NIL;
        if head != NIL {
            self.prev[head as usize] = b;
        }
        self.heads[k as usize] = b;
        self.nonempty |= 1 << k;
        self.free_bytes += 1 << (k + self.min_shift);
    }

    pub(super) fn unlink(&mut self, b: u32, k: u32) {
        let (next, prev) = (self.next[b as usize], self.prev[b as usize]);
        self.tag[b as usize] = 0;
        if prev == NIL {
            self.heads[k as usize] = next;
            if next == NIL {
                self.nonempty &= !(1 << k);
            }
        } else {
            self.next[prev as usize] = next;
        }
        if next != NIL {
            self.prev[next as usize] = prev;
        }
        self.free_bytes -= 1 << (k + self.min_shift);
    }

    /// Takes a block of order `k`, splitting a larger one if needed.
    pub(super) fn take(&mut self, k: u32) -> Option<u32> {
        let fits = self.nonempty & (u32::MAX << k);
        if fits == 0 {
            return None;
        }
        let mut j = fits.trailing_zeros();
        let b = self.heads[j as usize];
        self.unlink(b, j);
        while j > k {
            j -= 1;
            self.link(b + (1 << j), j);
            self.splits += 1;
        }
        Some(b)
    }

    /// Frees block `b` of order `k`, merging it with free buddies.
    pub(super) fn free(&mut self, mut b: u32, mut k: u32) {
        while k < self.max_order {
            let buddy = b ^ (1 << k);
            if self.tag[buddy as usize] != k as u8 + 1 {
                break;
            }
            self.unlink(buddy, k);
            b &= !(1 << k);
            k += 1;
            self.coalesces += 1;
        }
        self.link(b, k);
    }

    pub(super) fn largest_free_order(&self) -> Option<u32> {
        (self.nonempty != 0).then(|| 31 - self.nonempty.leading_zeros())
    }

    /// Whether tasks are waiting for a block.
    pub(super) fn has_waiters(&self) -> bool {
        #[cfg(feature = "async-alloc")]
        return !self.waiters.is_empty();
        #[cfg(not(feature = "async-alloc"))]
        false
    }

    /// What the cache handles must hold while nothing is parked in them.
    pub(super) fn cache_marker(&self) -> u64 {
        if self.closed {
            CLOSED_MARK
        } else if self.has_waiters() {
            WAIT_MARK
        } else {
            EMPTY
        }
    }
}

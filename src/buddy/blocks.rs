//! The shared state of a [`BuddyArena`](super::BuddyArena) and the life of
//! a block past the release caches: taking one under the lock, its lease,
//! its release (park, or merge and serve waiters), teardown on the last one.
//!
//! # Invariants
//!
//! - Every byte of the region is in exactly one of: a block linked in the
//!   free lists, a block parked in a cache slot, or a leased block (or a
//!   grant not picked up yet, which is a lease);
//! - a block's bytes are accessed only by the holder of its lease;
//! - a release that parked its block touches nothing afterwards; one that
//!   goes to the lock frees the arena if it sees `closed` and all memory
//!   free (`teardown.rs`).

use std::ptr::NonNull;

use crate::buffer::{Home, Lease};
use crate::error::AllocError;
use crate::metrics::ShardedCounter;
use crate::region::{Region, scrub};
use crate::sync::{self, AtomicU64, AtomicUsize, Mutex, Ordering};

#[cfg(feature = "async-alloc")]
use super::cache::WAIT_SLOT;
use super::cache::Way;
use super::lists::{FreeLists, NIL};
use super::teardown::teardown;

/// The shared state of a buddy arena.
///
/// Invariants:
/// - every byte of the region is in exactly one of: a block linked in the
///   free lists, a block parked in a cache slot, or a leased block;
/// - a block's bytes are accessed only by the holder of its lease;
/// - the value is freed exactly once, by whoever sees `closed` and
///   `free_bytes == total_size` under the lock (see the module docs).
pub(crate) struct BuddyInner {
    pub(super) lists: Mutex<FreeLists>,
    pub(super) cache: Box<[Way]>,
    pub(super) region: Region,
    pub(super) total_size: usize,
    pub(super) min_block_size: usize,
    pub(super) min_shift: u32,
    pub(super) auto_spill: bool,
    pub(super) zero_on_release: bool,
    pub(super) handles: AtomicUsize,
    pub(super) allocs: ShardedCounter,
    pub(super) spills: AtomicU64,
    /// The `arena full` event's edge (feature `tracing`; zero-sized without).
    pub(super) full: crate::trace::FullEdge,
    /// Under loom, reports the arena as leaked if teardown never runs.
    #[cfg(arenabuf_loom)]
    pub(super) _track: loom::alloc::Track<()>,
}

impl BuddyInner {
    #[cold]
    pub(super) fn allocate_slow(&self, k: u32) -> Result<u32, AllocError> {
        let mut lists = sync::lock(&self.lists);
        if !lists.has_waiters() {
            if let Some(b) = lists.take(k) {
                return Ok(b);
            }
            self.flush(&mut lists);
            if let Some(b) = lists.take(k) {
                return Ok(b);
            }
        }
        lists.failures += 1;
        self.full.failed("buddy", self.total_size, lists.failures);
        Err(AllocError::ArenaFull)
    }

    /// The lease of block `block` of order `k`, which the caller took.
    #[inline]
    pub(super) fn lease(&self, this: NonNull<BuddyInner>, block: u32, k: u32) -> Lease {
        // SAFETY: block `block` of order `k` lies inside the region.
        let ptr = unsafe { self.region.at((block as usize) << self.min_shift) };
        Lease {
            ptr,
            cap: self.min_block_size << k,
            home: Home::Buddy(BuddyLease {
                inner: this,
                block,
                order: k,
            }),
        }
    }

    /// Serves waiters while their blocks can be carved: the head first;
    /// while the head cannot be carved, the earliest waiter behind it whose
    /// block can, within the head's bypass allowance. Returns the wakers to
    /// call after unlocking.
    #[cfg(feature = "async-alloc")]
    pub(super) fn serve_waiters(
        &self,
        this: NonNull<BuddyInner>,
        lists: &mut FreeLists,
    ) -> Vec<std::task::Waker> {
        let mut wake = Vec::new();
        while let Some((k, seq)) = lists.waiters.head() {
            if let Some(b) = lists.take(k as u32) {
                lists.stuck_head = None;
                self.allocs.add(sync::thread_index());
                wake.extend(lists.waiters.grant(k, self.lease(this, b, k as u32)));
                continue;
            }
            // The head is stuck. Its allowance is what was free when it got
            // stuck: memory released since then is never spent on others.
            let allowance = match lists.stuck_head {
                Some((s, left)) if s == seq => left,
                _ => lists.free_bytes,
            };
            lists.stuck_head = Some((seq, allowance));
            let Some(largest) = lists.largest_free_order() else {
                break;
            };
            // Orders that fit both the largest free block and the allowance.
            let affordable = match (allowance >> self.min_shift).checked_ilog2() {
                Some(j) => j.min(largest),
                None => break,
            };
            let Some(j) = lists.waiters.first_up_to(affordable as usize) else {
                break;
            };
            let b = lists.take(j as u32).expect("j <= the largest free order");
            lists.stuck_head = Some((seq, allowance - (self.min_block_size << j)));
            self.allocs.add(sync::thread_index());
            wake.extend(lists.waiters.grant(j, self.lease(this, b, j as u32)));
        }
        if lists.waiters.is_empty() {
            lists.stuck_head = None;
        }
        if lists.wait_markers && lists.waiters.is_empty() && !lists.closed {
            lists.wait_markers = false;
            for way in self.cache.iter() {
                // Only our own markers: parking is possible again.
                let _ =
                    way.0
                        .compare_exchange(WAIT_SLOT, NIL, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        wake
    }
}

/// A leased block of a buddy arena.
pub(crate) struct BuddyLease {
    inner: NonNull<BuddyInner>,
    block: u32,
    order: u32,
}

impl BuddyLease {
    fn inner(&self) -> &BuddyInner {
        // SAFETY: the arena is not freed while a block is leased (teardown
        // waits for all memory to be free).
        unsafe { self.inner.as_ref() }
    }

    pub(crate) fn count_spill(&self) {
        self.inner().spills.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the block (at `ptr`, `cap` bytes) to the arena.
    #[inline]
    pub(crate) fn release(&self, ptr: NonNull<u8>, cap: usize) {
        let arena = self.inner();
        if arena.zero_on_release {
            // SAFETY: the block is still ours; nobody else reads it.
            unsafe { scrub(ptr, cap) };
        }
        // Release: our writes to the block happen before the next taker's
        // Acquire. After a successful park we touch nothing: the arena may
        // be torn down at any moment from then on.
        let way = arena.way(self.order, sync::thread_index());
        if way
            .compare_exchange(NIL, self.block, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        let mut lists = sync::lock(&arena.lists);
        lists.free(self.block, self.order);
        #[cfg(feature = "async-alloc")]
        let wake = arena.serve_waiters(self.inner, &mut lists);
        let last = lists.closed && lists.free_bytes == arena.total_size;
        drop(lists);
        if last {
            // SAFETY: closed (no handles) and all memory free (no leases):
            // nobody else can reach the arena, and we hold no borrow of it.
            unsafe { teardown(self.inner) }
        }
        // The wakers are the tasks' own, not the arena's.
        #[cfg(feature = "async-alloc")]
        crate::wait::wake_all(wake);
    }
}

//! The shared state of a [`FixedArena`](super::FixedArena) (`FixedInner`),
//! its leases, and the hand-over of slots to waiting tasks.
//!
//! A slot is claimed and returned through the caches (`cache/`) in front
//! of the bitmap (`bitmap.rs`), on the shard of the calling thread. While
//! tasks wait (feature `async-alloc`), every returned slot reaches the wait
//! queue instead ([`Batch`]), and is granted to the head waiter under the
//! queue lock without its bit ever being cleared: a new caller cannot
//! overtake a waiter.
//!
//! # Invariants
//!
//! - A slot's bytes (`region[slot * slot_capacity ..][..slot_capacity]`)
//!   and its `releases` counter are touched only by the holder of its
//!   lease; the counter is bumped before the slot goes back, so
//!   `alloc_count` = released + leased holds whenever no release is in
//!   flight.
//! - The arena is freed exactly once, by whoever brings `pending` to zero
//!   after the last handle dropped (`teardown.rs`). A release whose slot
//!   was its last hold on the arena touches nothing after giving it back,
//!   except to return a teardown count it won.
//! - The first waiter marks the caches and sets `WAITERS` under the queue
//!   lock; the queue takes the marks out when it empties, under the lock.

use alloc::boxed::Box;
use core::ptr::NonNull;

use crate::buffer::{Home, Lease};
use crate::region::{Region, scrub};
use crate::sync::{self, AtomicU64, AtomicUsize, Ordering};

use super::bitmap::{Batch, SLOTS_PER_WORD, Slot};
use super::cache::CachedBitmap;
use super::teardown::finish;

/// The shared state of a fixed arena (invariants in the module docs).
pub(crate) struct FixedInner {
    pub(super) slots: CachedBitmap,
    pub(super) releases: Box<[AtomicU64]>,
    pub(super) region: Region,
    pub(super) slot_capacity: usize,
    pub(super) slot_count: usize,
    pub(super) auto_spill: bool,
    pub(super) zero_on_release: bool,
    pub(super) handles: AtomicUsize,
    pub(super) pending: AtomicUsize,
    pub(super) failures: AtomicU64,
    pub(super) spills: AtomicU64,
    /// The `arena full` event's edge (feature `tracing`; zero-sized without).
    pub(super) full: crate::trace::FullEdge,
    #[cfg(feature = "async-alloc")]
    pub(super) waiters: crate::sync::Mutex<crate::wait::Waiters>,
    /// Under loom, reports the arena as leaked if teardown never runs.
    #[cfg(arenabuf_loom)]
    pub(super) _track: loom::alloc::Track<()>,
}

impl FixedInner {
    /// Claims a slot for this thread: from its shard's cache, else the
    /// bitmap, else other shards' caches.
    #[inline]
    pub(super) fn claim(&self, this: NonNull<FixedInner>) -> Option<Slot> {
        let shard = self.slots.shard_of(sync::thread_index());
        self.slots.allocate(shard, &mut hand(this))
    }

    /// The lease of `slot`, which the caller claimed.
    #[inline]
    pub(super) fn lease(&self, this: NonNull<FixedInner>, slot: Slot) -> Lease {
        let index = slot.word * SLOTS_PER_WORD + slot.bit as usize;
        // SAFETY: index < slot_count (bits past it are padding, never
        // clear), so its offset is within the region.
        let ptr = unsafe { self.region.at(index * self.slot_capacity) };
        Lease {
            ptr,
            cap: self.slot_capacity,
            home: Home::Fixed(FixedLease {
                inner: this,
                word: slot.word,
                bit: slot.bit,
            }),
        }
    }

    /// Slots leased or granted now.
    pub(super) fn live_slots(&self) -> usize {
        self.slots.live_slots()
    }

    /// Whether tasks wait (then no slot is cached or cleared: every release
    /// hands over, and a claim would only search the bitmap).
    #[cfg(feature = "async-alloc")]
    #[inline]
    pub(super) fn has_waiters(&self) -> bool {
        self.slots.bitmap.has_waiters()
    }

    /// Under the queue lock, as the first task starts waiting: marks the
    /// caches and serves head waiters from what they held, then from free
    /// slots; returns the wakers to call after unlocking.
    #[cfg(feature = "async-alloc")]
    pub(super) fn start_waiting(
        &self,
        this: NonNull<FixedInner>,
        queue: &mut crate::wait::Waiters,
    ) -> Vec<crate::wait::Wake> {
        let mut batches = Vec::new();
        self.slots.set_waiting(true, &mut |b| batches.push(b));
        let mut wake = Vec::new();
        for batch in batches {
            // A waiter holds a handle: no word is closed.
            let closed = self.grant(this, queue, batch, &mut wake);
            debug_assert!(!closed);
        }
        while let Some((class, _)) = queue.head() {
            let Some(slot) = self.slots.bitmap.claim_one(0) else {
                break;
            };
            wake.push(queue.grant(class, self.lease(this, slot)));
        }
        self.stop_waiting_if_empty(queue);
        wake
    }

    /// Under the queue lock: takes the caches' marks out once nobody waits.
    #[cfg(feature = "async-alloc")]
    pub(super) fn stop_waiting_if_empty(&self, queue: &crate::wait::Waiters) {
        if queue.is_empty() {
            self.slots.set_waiting(false, &mut |_| {});
        }
    }

    /// Under the queue lock: grants the slots of `batch` to head waiters
    /// and clears the rest. Returns whether that emptied a closed word:
    /// the caller then owns its teardown count (see [`hand_over`]).
    #[cfg(feature = "async-alloc")]
    #[must_use]
    fn grant(
        &self,
        this: NonNull<FixedInner>,
        queue: &mut crate::wait::Waiters,
        batch: Batch,
        wake: &mut Vec<crate::wait::Wake>,
    ) -> bool {
        let mut rest = batch.mask;
        while rest != 0 {
            let Some((class, _)) = queue.head() else {
                break;
            };
            let bit = rest.trailing_zeros();
            rest &= !(1 << bit);
            let slot = Slot {
                word: batch.word,
                bit,
            };
            wake.push(queue.grant(class, self.lease(this, slot)));
        }
        // Nobody waits for the rest. That can be the last hold on a closed
        // arena: between a release meeting `WAITERS` and its hand-over, the
        // last waiter may cancel and the last handle drop.
        rest != 0
            && self.slots.bitmap.clear(Batch {
                word: batch.word,
                mask: rest,
            })
    }
}

/// What the caches call with slots that met `WAITERS`: the hand-over to
/// the queue (no lock may be held by the caller).
#[inline]
pub(super) fn hand(this: NonNull<FixedInner>) -> impl FnMut(Batch) {
    move |batch| {
        #[cfg(feature = "async-alloc")]
        hand_over(this, batch);
        #[cfg(not(feature = "async-alloc"))]
        {
            // `WAITERS` is never set without `async-alloc`.
            // SAFETY: the batch's bits are set, so the arena is alive.
            let closed = unsafe { this.as_ref() }.slots.bitmap.clear(batch);
            debug_assert!(!closed);
        }
    }
}

/// Gives `batch` (slots that met `WAITERS` on their way back) to the head
/// waiters; whatever nobody waits for any more is cleared.
///
/// Takes a pointer: once the queue lock is dropped, a waiter may cancel,
/// release what it was granted and drop the last handle, so the arena may
/// be freed before this returns (it only wakes tasks by then). And before
/// we lock, the last waiter may have cancelled and the last handle
/// dropped: then the batch may be the last thing in a closed word, and
/// clearing it owes that word's teardown count, which this returns
/// after unlocking.
#[cfg(feature = "async-alloc")]
#[cold]
#[inline(never)]
fn hand_over(this: NonNull<FixedInner>, batch: Batch) {
    let (wake, emptied_closed) = {
        // SAFETY: the batch's bits are set until it is granted or cleared
        // under the queue lock, so the arena is alive until we unlock (or
        // until we return the count that clearing them won); this
        // reference is not used after that.
        let arena = unsafe { this.as_ref() };
        let mut queue = sync::lock(&arena.waiters);
        let mut wake = Vec::new();
        let emptied_closed = arena.grant(this, &mut queue, batch, &mut wake);
        arena.stop_waiting_if_empty(&queue);
        (wake, emptied_closed)
    };
    if emptied_closed {
        // SAFETY: clearing the batch emptied a closed word: its count in
        // `pending` is ours to return, and we touch the arena no more
        // (the wakers below are the tasks', not the arena's).
        unsafe { finish(this, 1) }
    }
    crate::wait::wake_all(wake);
}

/// A leased slot of a fixed arena.
pub(crate) struct FixedLease {
    inner: NonNull<FixedInner>,
    word: usize,
    bit: u32,
}

impl FixedLease {
    fn inner(&self) -> &FixedInner {
        // SAFETY: the arena is not freed while this lease's bit is set (the
        // teardown protocol waits for every word to empty).
        unsafe { self.inner.as_ref() }
    }

    pub(crate) fn count_spill(&self) {
        self.inner().spills.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the slot (at `ptr`, `cap` bytes) to the arena.
    #[inline]
    pub(crate) fn release(&self, ptr: NonNull<u8>, cap: usize) {
        let inner = self.inner;
        let slot = Slot {
            word: self.word,
            bit: self.bit,
        };
        let (slots, shard) = {
            let arena = self.inner();
            if arena.zero_on_release {
                // SAFETY: the slot is still ours; nobody else reads it.
                unsafe { scrub(ptr, cap) };
            }
            let releases = &arena.releases[slot.word * SLOTS_PER_WORD + slot.bit as usize];
            // Only this lease's holder writes this counter: load + store is
            // enough, and keeps a locked instruction off the hot path.
            releases.store(
                releases.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
            let shard = arena.slots.shard_of(sync::thread_index());
            (NonNull::from(&arena.slots), shard)
        };
        // SAFETY: `slots` is alive while our slot is leased, and we pass
        // our lease's slot; after this we touch the arena only to return a
        // teardown count we won.
        let emptied_closed = unsafe { CachedBitmap::release(slots, shard, slot, &mut hand(inner)) };
        if emptied_closed {
            // SAFETY: this release emptied a closed word; that word's count
            // in `pending` is ours to return (`teardown.rs`).
            unsafe { finish(inner, 1) }
        }
    }
}

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

use crate::buffer::{Buffer, Home, Lease};
use crate::region::{Region, scrub};
use crate::sync::{self, AtomicU64, AtomicUsize, Ordering};

use super::bitmap::{Batch, Slot};
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
    /// Claims a slot for this thread (from its shard's cache, else the
    /// bitmap, else other shards' caches), as a buffer.
    ///
    /// The buffer is made before tasks granted slots on the way are woken:
    /// if a waker panics, unwinding drops it and the slot goes back.
    #[inline]
    pub(super) fn claim(&self, this: NonNull<FixedInner>) -> Option<Buffer> {
        let shard = self.slots.shard_of(sync::thread_index());
        let mut hand = HandOver::new(this);
        let got = self.slots.allocate(shard, &mut |b| hand.batch(b));
        let buffer = got.map(|slot| Buffer::from_lease(self.lease(this, slot), self.auto_spill));
        // A handle is alive while we allocate: no count is won here.
        hand.finish(0);
        buffer
    }

    /// The lease of `slot`, which the caller claimed.
    #[inline]
    pub(super) fn lease(&self, this: NonNull<FixedInner>, slot: Slot) -> Lease {
        // SAFETY: index < slot_count (bits past it are padding, never
        // clear), so its offset is within the region.
        let ptr = unsafe { self.region.at(slot.index() * self.slot_capacity) };
        Lease {
            ptr,
            cap: self.slot_capacity,
            home: Home::Fixed(FixedLease { inner: this, slot }),
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
    /// the caller then owns its teardown count (see [`HandOver::batch`]).
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

/// What the caches call with slots that met `WAITERS` ([`batch`]), and
/// what the caller completes once the cache call returned ([`finish`]).
///
/// The grants happen at once, under the queue lock, possibly inside a
/// cache *move* (`cache/`): no user code runs there, and no holder of the
/// queue lock waits for a move. The wakers (user code) run in `finish`,
/// after the move ended: a waker that panics, allocates, or drops the last
/// handle must not find a move of its own thread in flight.
///
/// [`batch`]: HandOver::batch
/// [`finish`]: HandOver::finish
#[must_use = "finish() wakes the tasks and returns teardown counts"]
pub(super) struct HandOver {
    this: NonNull<FixedInner>,
    #[cfg(feature = "async-alloc")]
    wake: Vec<crate::wait::Wake>,
    /// Teardown counts won by clearing what nobody waited for.
    #[cfg(feature = "async-alloc")]
    owed: usize,
}

impl HandOver {
    #[inline]
    pub(super) fn new(this: NonNull<FixedInner>) -> Self {
        Self {
            this,
            #[cfg(feature = "async-alloc")]
            wake: Vec::new(),
            #[cfg(feature = "async-alloc")]
            owed: 0,
        }
    }

    /// Gives `batch` (slots that met `WAITERS` on their way back) to the
    /// head waiters; whatever nobody waits for any more is cleared.
    ///
    /// Before we lock, the last waiter may have cancelled and the last
    /// handle dropped: then the batch may be the last thing in a closed
    /// word, and clearing it wins that word's teardown count, which
    /// `finish` returns.
    #[cold]
    #[inline(never)]
    pub(super) fn batch(&mut self, batch: Batch) {
        // SAFETY: the batch's bits are set until it is granted or cleared
        // under the queue lock, so the arena is alive until we unlock (and
        // past that if clearing them won a count, until `finish` returns
        // it); this reference is not used after that.
        let arena = unsafe { self.this.as_ref() };
        #[cfg(feature = "async-alloc")]
        {
            let mut queue = sync::lock(&arena.waiters);
            let emptied_closed = arena.grant(self.this, &mut queue, batch, &mut self.wake);
            arena.stop_waiting_if_empty(&queue);
            self.owed += usize::from(emptied_closed);
        }
        #[cfg(not(feature = "async-alloc"))]
        {
            // `WAITERS` is never set without `async-alloc`.
            let closed = arena.slots.bitmap.clear(batch);
            debug_assert!(!closed);
        }
    }

    /// Returns the teardown counts won (`won` by the caller plus those of
    /// [`batch`](Self::batch)), then wakes the tasks granted slots.
    ///
    /// Touches the arena only to return the counts: when the cache call
    /// gave back the caller's last hold on it, another thread may free it
    /// at any time (the wakers are the tasks', not the arena's).
    #[inline]
    pub(super) fn finish(self, won: usize) {
        #[cfg(feature = "async-alloc")]
        let won = won + self.owed;
        if won != 0 {
            // SAFETY: the caller's and our won counts keep the arena alive
            // until returned, and we touch it no more.
            unsafe { finish(self.this, won) }
        }
        #[cfg(feature = "async-alloc")]
        if !self.wake.is_empty() {
            crate::wait::wake_all(self.wake);
        }
    }
}

/// A leased slot of a fixed arena.
pub(crate) struct FixedLease {
    inner: NonNull<FixedInner>,
    slot: Slot,
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
        let (inner, slot) = (self.inner, self.slot);
        let (slots, shard) = {
            let arena = self.inner();
            if arena.zero_on_release {
                // SAFETY: the slot is still ours; nobody else reads it.
                unsafe { scrub(ptr, cap) };
            }
            let releases = &arena.releases[slot.index()];
            // Only this lease's holder writes this counter: load + store is
            // enough, and keeps a locked instruction off the hot path.
            releases.store(
                releases.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
            let shard = arena.slots.shard_of(sync::thread_index());
            (NonNull::from(&arena.slots), shard)
        };
        let mut hand = HandOver::new(inner);
        let mut hand_batch = |b| hand.batch(b);
        // SAFETY: `slots` is alive while our slot is leased, and we pass
        // our lease's slot; after this we touch the arena only to return
        // teardown counts we won (`HandOver::finish`).
        let emptied_closed = unsafe { CachedBitmap::release(slots, shard, slot, &mut hand_batch) };
        // Emptying a closed word won its count in `pending` (`teardown.rs`).
        hand.finish(usize::from(emptied_closed));
    }
}

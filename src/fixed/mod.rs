//! [`FixedArena`]: uniform slots claimed from a lock-free bitmap.
//!
//! The arena is split by concern; each file starts with the invariants it
//! relies on and keeps:
//!
//! - `bitmap.rs`: the bitmap words (which slots are free) and their
//!   `WAITERS` and `CLOSED` flags;
//! - `cache/`: the per-shard caches in front of the bitmap, which claim
//!   and return slots a run of 31 at a time, so that a buffer filled on
//!   one thread and dropped on another costs no shared write per buffer
//!   (`docs/thread-cache.md`);
//! - `shared.rs`: the shared state (`FixedInner`), leases and their
//!   release, the hand-over of returned slots to waiting tasks;
//! - `teardown.rs`: freeing the arena after the last handle and the last
//!   lease, without a per-buffer reference count;
//! - `allocate.rs`: the [`FixedAllocate`] future (feature `async-alloc`);
//! - `builder.rs`: [`FixedArenaBuilder`], geometry checks and build;
//! - this file: the [`FixedArena`] handle, `allocate`, metrics.

use core::fmt;
use core::num::NonZeroUsize;
use core::ptr::NonNull;

use crate::buffer::Buffer;
use crate::error::AllocError;
use crate::metrics::FixedMetrics;
use crate::region::{MemoryConfig, Region};
#[cfg(feature = "async-alloc")]
use crate::sync;
use crate::sync::Ordering;

#[cfg(feature = "async-alloc")]
mod allocate;
mod bitmap;
mod builder;
mod cache;
mod shared;
mod teardown;
#[cfg(all(test, not(arenabuf_loom)))]
mod tests;

#[cfg(feature = "async-alloc")]
pub use allocate::FixedAllocate;
pub use builder::FixedArenaBuilder;
pub(crate) use shared::{FixedInner, FixedLease};

/// A pool of uniform slots with a lock-free claim.
///
/// Every buffer from a `FixedArena` has the same capacity,
/// [`slot_capacity`](FixedArena::slot_capacity). Allocation and release are
/// usually one compare-exchange each on a cache line of the calling thread's
/// shard (about four shards per CPU), and slots move between those caches and
/// the arena's bitmap 31 at a time: no lock, no heap allocation, no shared
/// counter, and a buffer dropped on another thread than the one that took it
/// costs no more. Slots in the caches count as free: they are found before
/// [`AllocError::ArenaFull`] and go to waiting tasks first.
///
/// `FixedArena` is a cheap [`Clone`] handle (`Send + Sync`). Buffers and
/// frozen `Bytes` do not borrow it: when every handle is dropped, the memory
/// stays valid until the last buffer and `Bytes` drop, and is freed then.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{AllocError, FixedArena};
/// use bytes::BufMut;
///
/// let arena = FixedArena::builder(NonZeroUsize::new(2).unwrap(), NonZeroUsize::new(1024).unwrap())
///     .build()?;
/// let mut a = arena.allocate()?;
/// a.put_slice(b"frame");
/// let frame = a.freeze();
/// let _b = arena.allocate()?;
/// assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
/// drop(frame); // the last reference: the slot goes back
/// assert!(arena.allocate().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FixedArena {
    pub(super) inner: NonNull<FixedInner>,
}

// SAFETY: all shared state in `FixedInner` is atomics or immutable after
// build; slot memory is only touched through leases, one owner each.
unsafe impl Send for FixedArena {}
// SAFETY: as for `Send`; `&FixedArena` only allocates, which is thread-safe.
unsafe impl Sync for FixedArena {}

impl FixedArena {
    /// Starts building an arena of `slot_count` slots of `slot_capacity`
    /// bytes each.
    pub fn builder(slot_count: NonZeroUsize, slot_capacity: NonZeroUsize) -> FixedArenaBuilder {
        FixedArenaBuilder {
            slot_count,
            slot_capacity,
            auto_spill: false,
            zero_on_release: false,
            memory: MemoryConfig::new(),
        }
    }

    /// The arena's memory (for the getters in `crate::region`).
    pub(crate) fn memory(&self) -> &Region {
        &self.inner().region
    }

    #[inline]
    pub(super) fn inner(&self) -> &FixedInner {
        // SAFETY: a handle holds one of `handles`, so the arena is alive.
        unsafe { self.inner.as_ref() }
    }

    /// Leases a free slot as an empty [`Buffer`] of
    /// [`slot_capacity`](Self::slot_capacity) bytes.
    ///
    /// # Errors
    ///
    /// [`AllocError::ArenaFull`] when every slot is in use.
    #[inline]
    pub fn allocate(&self) -> Result<Buffer, AllocError> {
        let arena = self.inner();
        let Some(buffer) = arena.claim(self.inner) else {
            let failures = arena.failures.fetch_add(1, Ordering::Relaxed) + 1;
            let reserved = arena.slot_count * arena.slot_capacity;
            arena.full.failed("fixed", reserved, failures);
            return Err(AllocError::ArenaFull);
        };
        arena.full.succeeded();
        Ok(buffer)
    }

    /// Waits for a free slot (feature `async-alloc`).
    ///
    /// Resolves at once when a slot is free. Otherwise the task queues, and
    /// slots released while tasks wait are handed to them in arrival order
    /// (a new caller does not get a freed slot before an earlier waiter).
    /// Cancellation-safe: dropping the future gives up its place, and a slot
    /// that was already handed to it goes to the next waiter or back to the
    /// arena.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::num::NonZeroUsize;
    /// use arenabuf::FixedArena;
    ///
    /// let arena = FixedArena::builder(NonZeroUsize::MIN, NonZeroUsize::new(64).unwrap()).build()?;
    /// let held = arena.allocate()?.freeze();
    /// let waiter = tokio::spawn({
    ///     let arena = arena.clone();
    ///     async move { arena.allocate_async().await.capacity() }
    /// });
    /// tokio::task::yield_now().await; // let the waiter queue
    /// drop(held); // hands the slot to the waiter
    /// assert_eq!(waiter.await?, 64);
    /// assert_eq!(arena.metrics().wait_count, 1);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "async-alloc")]
    pub fn allocate_async(&self) -> FixedAllocate<'_> {
        FixedAllocate {
            arena: crate::wait::ArenaRef::Borrowed(self),
            state: crate::wait::WaitState::Start,
        }
    }

    /// Fails with `RequestTooLarge` if `len` bytes can never fit a slot.
    #[cfg(feature = "async-alloc")]
    pub(crate) fn check_len(&self, len: usize) -> Result<(), AllocError> {
        let max = self.inner().slot_capacity;
        if len > max {
            return Err(AllocError::RequestTooLarge {
                requested: len,
                max,
            });
        }
        Ok(())
    }

    /// Counts a fall-back to heap memory in `spill_count`.
    #[cfg(feature = "async-alloc")]
    pub(crate) fn count_spill(&self) {
        self.inner().spills.fetch_add(1, Ordering::Relaxed);
    }

    /// The wait queue's lock, held (tests check what works without it).
    #[cfg(all(test, feature = "async-alloc", not(arenabuf_loom)))]
    pub(crate) fn lock_queue(&self) -> impl Sized + '_ {
        sync::lock(&self.inner().waiters)
    }

    /// Entries the wait queue's buffers have room for now.
    #[cfg(all(test, feature = "async-alloc", not(arenabuf_loom)))]
    pub(crate) fn queue_capacity(&self) -> usize {
        sync::lock(&self.inner().waiters).heap_entries()
    }

    /// The number of slots.
    pub fn slot_count(&self) -> usize {
        self.inner().slot_count
    }

    /// The capacity of every slot, in bytes.
    pub fn slot_capacity(&self) -> usize {
        self.inner().slot_capacity
    }

    /// A snapshot of the arena's counters.
    ///
    /// Costs a pass over the bitmap and the per-slot counters; meant for
    /// monitoring, not for every allocation.
    pub fn metrics(&self) -> FixedMetrics {
        let arena = self.inner();
        let live_slots = arena.live_slots();
        let releases = arena
            .releases
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add);
        #[cfg(feature = "async-alloc")]
        let (waiting_tasks, wait_count) = {
            let queue = sync::lock(&arena.waiters);
            (queue.len(), queue.wait_count())
        };
        #[cfg(not(feature = "async-alloc"))]
        let (waiting_tasks, wait_count) = (0, 0);
        FixedMetrics {
            waiting_tasks,
            wait_count,
            alloc_count: releases.wrapping_add(live_slots as u64),
            alloc_failure_count: arena.failures.load(Ordering::Relaxed),
            spill_count: arena.spills.load(Ordering::Relaxed),
            live_slots,
            live_bytes: live_slots * arena.slot_capacity,
            reserved_bytes: arena.slot_count * arena.slot_capacity,
        }
    }
}

impl Clone for FixedArena {
    fn clone(&self) -> Self {
        let old = self.inner().handles.fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            // As `Arc` does: a count this high means handles are leaked in a
            // loop; wrapping around would free the arena while in use.
            crate::sync::abort();
        }
        Self { inner: self.inner }
    }
}

impl fmt::Debug for FixedArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedArena")
            .field("slot_count", &self.slot_count())
            .field("slot_capacity", &self.slot_capacity())
            .field("auto_spill", &self.inner().auto_spill)
            .field("zero_on_release", &self.inner().zero_on_release)
            .finish()
    }
}

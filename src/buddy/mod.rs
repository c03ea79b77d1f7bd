//! [`BuddyArena`]: power-of-two blocks from one region, split on demand,
//! coalesced on release.
//!
//! # Design
//!
//! The region is `total_size = min_block_size * 2^max_order` bytes. A block
//! of order `k` is `min_block_size << k` bytes and starts at a multiple of
//! its size; blocks are named by their index in minimum blocks, so the buddy
//! of block `b` at order `k` is `b ^ (1 << k)`.
//!
//! Two layers:
//!
//! - **Free lists** behind a mutex: one doubly linked list per order, kept in
//!   side arrays indexed by block (`next`, `prev`, and `tag`, which says
//!   "this block is free at order k"), plus a bitmask of non-empty orders.
//!   Allocation takes the smallest non-empty order that fits and splits it
//!   down; release merges the block with its buddy while the buddy is free,
//!   then links the result. Every step is O(1); a whole operation is
//!   O(max_order).
//! - **Group caches** in front (`cache.rs`): per shard (about four per
//!   CPU, chosen by thread) and per small order `k`, two atomic *handles*
//!   on their own cache line, each holding blocks of one *group* (the 32
//!   aligned order-`k` blocks of one order-`k + 5` block, fewer near the
//!   top). A release adds its block to its shard's `freed` handle with one
//!   CAS when the block is of the group held there, else swaps its group in
//!   and returns the old group's blocks to the lists under one lock hold;
//!   an allocation takes a block from `freed` or `alloc` with one CAS, and
//!   when both are empty carves a whole group under one lock hold. A thread
//!   that allocates and drops its own buffers touches no lock, and one that
//!   fills buffers another thread drops takes the lock once per 32 buffers
//!   on each side. Only orders whose group is at most 1/64 of the arena are
//!   cached.
//!
//! Cached blocks are free but not merged. Whenever the free lists cannot
//! serve a request, every handle is flushed into the free lists (merging as
//! usual) before the arena answers [`AllocError::ArenaFull`], so a failure
//! always means that no block of that order exists even after merging every
//! free buddy. [`BuddyArena::metrics`] flushes too, so `largest_free_block`
//! reports the coalesced truth. At most two groups per shard and cached
//! order are cached, whatever the number of threads.
//!
//! # Layout
//!
//! Each file starts with the invariants it relies on and keeps:
//!
//! - `lists.rs`: the free lists (split, merge) under the mutex;
//! - `cache.rs`: the per-shard group caches in front of them, their
//!   markers and the flush;
//! - `blocks.rs`: the shared state (`BuddyInner`), taking a block past the
//!   caches, leases and their release, serving waiters;
//! - `teardown.rs`: freeing the arena after the last handle and the last
//!   lease;
//! - `allocate.rs`: the [`BuddyAllocate`] future and the waiting policy
//!   (feature `async-alloc`);
//! - `builder.rs`: [`BuddyArenaBuilder`], geometry checks and build;
//! - `loom_models.rs`: loom models of the cache protocol (`tests.rs`: the
//!   unit tests);
//! - this file: the [`BuddyArena`] handle, `allocate`, metrics.

use core::fmt;
use core::num::NonZeroUsize;
use core::ptr::NonNull;

use crate::buffer::Buffer;
use crate::error::AllocError;
use crate::metrics::BuddyMetrics;
use crate::region::{MemoryConfig, Region};
use crate::sync::{self, Ordering};

#[cfg(feature = "async-alloc")]
mod allocate;
#[cfg(all(test, feature = "async-alloc", not(arenabuf_loom)))]
pub(crate) use blocks::HEAD_WINDOW;
mod blocks;
mod builder;
mod cache;
mod lists;
#[cfg(all(test, arenabuf_loom))]
mod loom_models;
mod teardown;
#[cfg(all(test, not(arenabuf_loom)))]
mod tests;

#[cfg(feature = "async-alloc")]
pub use allocate::BuddyAllocate;
pub(crate) use blocks::{BuddyInner, BuddyLease};
pub use builder::BuddyArenaBuilder;
pub(crate) use lists::MAX_BLOCKS;

/// A pool of power-of-two blocks carved from one region.
///
/// `allocate(len)` rounds `len` up to a power of two (at least
/// [`min_block_size`](BuddyArena::min_block_size)) and hands out a block of
/// that size, splitting a larger free block if needed; released blocks merge
/// with their free buddy. Use it when buffer sizes vary widely; use
/// [`FixedArena`](crate::FixedArena) when one size fits all (it is faster
/// and never fragments).
///
/// `BuddyArena` is a cheap [`Clone`] handle (`Send + Sync`); buffers and
/// frozen `Bytes` keep the memory alive after the last handle drops.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::BuddyArena;
/// use bytes::BufMut;
///
/// let nz = |n| NonZeroUsize::new(n).unwrap();
/// let arena = BuddyArena::builder(nz(1 << 20), nz(256)).build()?;
/// let mut buf = arena.allocate(nz(3000))?;
/// assert_eq!(buf.capacity(), 4096);
/// buf.put_slice(&[7; 3000]);
/// let bytes = buf.freeze();
/// assert_eq!(arena.metrics().live_bytes, 4096);
/// drop(bytes);
/// assert_eq!(arena.metrics().largest_free_block, 1 << 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BuddyArena {
    pub(super) inner: NonNull<BuddyInner>,
}

// SAFETY: shared state is atomics, a mutex, or immutable after build; block
// memory is only touched through leases, one owner each.
unsafe impl Send for BuddyArena {}
// SAFETY: as for `Send`; `&BuddyArena` only allocates, which is thread-safe.
unsafe impl Sync for BuddyArena {}

impl BuddyArena {
    /// Starts building an arena of `total_size` bytes handing out blocks of
    /// at least `min_block_size` bytes.
    ///
    /// `min_block_size` must be a power of two and `total_size` a
    /// power-of-two multiple of it; [`build`](BuddyArenaBuilder::build)
    /// says what is wrong otherwise.
    pub fn builder(total_size: NonZeroUsize, min_block_size: NonZeroUsize) -> BuddyArenaBuilder {
        BuddyArenaBuilder {
            total_size,
            min_block_size,
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
    pub(super) fn inner(&self) -> &BuddyInner {
        // SAFETY: a handle keeps the arena open, so it is alive.
        unsafe { self.inner.as_ref() }
    }

    /// The order of the smallest block holding `len` bytes.
    #[inline]
    fn order_for(&self, len: usize) -> Result<u32, AllocError> {
        let arena = self.inner();
        if len > arena.total_size {
            return Err(AllocError::RequestTooLarge {
                requested: len,
                max: arena.total_size,
            });
        }
        let size = len.max(arena.min_block_size).next_power_of_two();
        Ok(size.trailing_zeros() - arena.min_shift)
    }

    /// Leases a block of at least `len` bytes as an empty [`Buffer`]; its
    /// capacity is `len` rounded up to a power of two, at least
    /// [`min_block_size`](Self::min_block_size).
    ///
    /// # Errors
    ///
    /// [`AllocError::RequestTooLarge`] if `len > total_size` (it can never
    /// fit); [`AllocError::ArenaFull`] if no free block of that size exists,
    /// even after merging every pair of free buddies.
    #[inline]
    pub fn allocate(&self, len: NonZeroUsize) -> Result<Buffer, AllocError> {
        self.allocate_with(len, true)
    }

    /// [`allocate`](Self::allocate); a failure counts in the metrics only
    /// with `count_failure` (a wait's first try does not).
    #[inline]
    pub(crate) fn allocate_with(
        &self,
        len: NonZeroUsize,
        count_failure: bool,
    ) -> Result<Buffer, AllocError> {
        let k = self.order_for(len.get())?;
        let arena = self.inner();
        let thread = sync::thread_index();
        let block = match arena.cache_take(k, thread) {
            Some((b, false)) => b,
            Some((b, true)) => {
                arena.allocs.add(thread);
                b
            }
            None => {
                let b = arena.allocate_slow(k, thread, count_failure)?;
                arena.allocs.add(thread);
                b
            }
        };
        arena.full.succeeded();
        Ok(Buffer::from_lease(
            arena.lease(self.inner, block, k),
            arena.auto_spill,
        ))
    }

    /// Waits until a block of at least `len` bytes can be carved (feature
    /// `async-alloc`).
    ///
    /// Fails at once with [`AllocError::RequestTooLarge`] if `len` can never
    /// fit. Otherwise resolves when the block is available. Waiting tasks
    /// are served in arrival order, except that a head waiter whose block
    /// cannot be carved yet does not hold up those behind it forever: from
    /// the moment it is stuck, time alternates between *reserved* windows
    /// (memory released goes to the head; those behind it get only what
    /// was free when it got stuck) of 2 ms, doubling up to 64 ms, and
    /// *open* windows of 2 ms (those behind it get whatever fits). So a
    /// large request is not starved by a churn of small ones, and a small
    /// one that fits free memory waits at most one reserved window (64 ms)
    /// plus scheduling. Such a waiter sleeps until the window opens (one
    /// timed wake-up from `futures-timer`'s global timer thread); it does
    /// not poll in between.
    /// Cancellation-safe: dropping the future gives up its place, and a block
    /// already handed to it goes to the next waiter or back to the arena.
    #[cfg(feature = "async-alloc")]
    pub fn allocate_async(&self, len: NonZeroUsize) -> BuddyAllocate<'_> {
        BuddyAllocate {
            arena: crate::wait::ArenaRef::Borrowed(self),
            len,
            state: crate::wait::WaitState::Start,
            tick: None,
        }
    }

    /// Counts a fall-back to heap memory in `spill_count`.
    #[cfg(feature = "async-alloc")]
    pub(crate) fn count_spill(&self) {
        self.inner().spills.fetch_add(1, Ordering::Relaxed);
    }

    /// The lock of the lists and the wait queue, held (tests check what
    /// works without it).
    #[cfg(all(test, feature = "async-alloc", not(arenabuf_loom)))]
    pub(crate) fn lock_queue(&self) -> impl Sized + '_ {
        sync::lock(&self.inner().lists)
    }

    /// Entries the wait queue's buffers have room for now.
    #[cfg(all(test, feature = "async-alloc", not(arenabuf_loom)))]
    pub(crate) fn queue_capacity(&self) -> usize {
        sync::lock(&self.inner().lists).waiters.heap_entries()
    }

    /// The arena's size in bytes.
    pub fn total_size(&self) -> usize {
        self.inner().total_size
    }

    /// The smallest block handed out, in bytes.
    pub fn min_block_size(&self) -> usize {
        self.inner().min_block_size
    }

    /// A snapshot of the arena's counters.
    ///
    /// Takes the arena's lock and merges parked free blocks first, so
    /// `largest_free_block` is what an allocation could get now.
    pub fn metrics(&self) -> BuddyMetrics {
        let arena = self.inner();
        let mut lists = sync::lock(&arena.lists);
        arena.flush(&mut lists);
        #[cfg(feature = "async-alloc")]
        let (waiting_tasks, wait_count) = (lists.waiters.len(), lists.waiters.wait_count());
        #[cfg(not(feature = "async-alloc"))]
        let (waiting_tasks, wait_count) = (0, 0);
        BuddyMetrics {
            waiting_tasks,
            wait_count,
            alloc_count: arena.allocs.sum(),
            alloc_failure_count: lists.failures,
            spill_count: arena.spills.load(Ordering::Relaxed),
            live_bytes: arena.total_size - lists.free_bytes,
            reserved_bytes: arena.total_size,
            split_count: lists.splits,
            coalesce_count: lists.coalesces,
            largest_free_block: lists
                .largest_free_order()
                .map_or(0, |k| arena.min_block_size << k),
        }
    }
}

impl Clone for BuddyArena {
    fn clone(&self) -> Self {
        let old = self.inner().handles.fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            // As `Arc` does: wrapping around would free the arena in use.
            crate::sync::abort();
        }
        Self { inner: self.inner }
    }
}

impl fmt::Debug for BuddyArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuddyArena")
            .field("total_size", &self.total_size())
            .field("min_block_size", &self.min_block_size())
            .field("auto_spill", &self.inner().auto_spill)
            .field("zero_on_release", &self.inner().zero_on_release)
            .finish()
    }
}

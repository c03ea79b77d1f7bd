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
//! - **Release caches** in front: per order, [`WAYS`] atomic slots (each on
//!   its own cache line) that each hold one free, not-yet-merged block. A
//!   release first tries to park its block in its thread's slot (one CAS);
//!   an allocation of that order first tries to take it from there. A
//!   buffer allocated and dropped over and over by a thread therefore costs
//!   two atomic operations and never touches the mutex, instead of merging
//!   up to `max_order` levels and splitting them again each time.
//!
//! Parked blocks are free but not merged. Whenever the free lists cannot
//! serve a request, every cache is flushed into the free lists (merging as
//! usual) before the arena answers [`AllocError::ArenaFull`], so a failure
//! always means that no block of that order exists even after merging every
//! free buddy. [`BuddyArena::metrics`] flushes too, so `largest_free_block`
//! reports the coalesced truth. At most `WAYS * (max_order + 1)` blocks are
//! parked at any time.
//!
//! # Waiting (feature `async-alloc`)
//!
//! The wait queue lives under the same mutex as the free lists. While tasks
//! wait, every cache slot holds the [`WAIT_SLOT`] marker, so releases go to
//! the mutex: they merge their block, then serve the queue. The rule:
//!
//! 1. The head waiter (the earliest) is served as soon as its block can be
//!    carved.
//! 2. While the head cannot be carved, the earliest waiter behind it whose
//!    block can be carved is served, within the head's **bypass
//!    allowance**: the bytes that were free when the head got stuck. Each
//!    bypass spends its block's size; memory released after the head got
//!    stuck is never spent on others, so it accumulates for the head.
//!
//! Why both halves: strict first-come-first-served (the earlier rule)
//! wedges a server when the head's block is pinned by data whose owner
//! waits *behind* the head for a block that sits free (a batching consumer
//! keeping one small frame per connection is enough). Rule 2 serves it from
//! idle memory. Yet a large request is not starved by a churn of smaller
//! ones: they can overtake it by at most its allowance, after which every
//! release merges towards it. A synchronous [`BuddyArena::allocate`] that
//! would need the lists answers [`AllocError::ArenaFull`] while tasks wait,
//! rather than take memory a waiter is owed.
//!
//! # Teardown
//!
//! Leases hold no reference count. The last handle takes the mutex, sets
//! `closed`, and flushes every cache slot, leaving the [`CLOSED_SLOT`]
//! marker in it, so later releases cannot park and go to the mutex instead.
//! Whoever, under the mutex, sees `closed` with all memory free, frees the
//! arena after unlocking; a release that parked its block successfully
//! touches nothing afterwards.

use std::fmt;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use crate::buffer::{Buffer, Home, Lease};
use crate::error::{AllocError, BuildError};
use crate::metrics::{BuddyMetrics, ShardedCounter};
use crate::region::table::{try_box, try_table};
use crate::region::{MemoryConfig, Region, scrub};
use crate::sync::{self, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering};

/// Cache slots per order.
const WAYS: usize = 4;
/// Most minimum blocks an arena may have (indices are `u32`, with two
/// values kept for markers); also bounds `max_order` to 31.
pub(crate) const MAX_BLOCKS: usize = 1 << 31;
/// No block: end of a list, or an empty cache slot.
const NIL: u32 = u32::MAX;
/// Marks a cache slot of a closed arena: nothing may park there any more.
const CLOSED_SLOT: u32 = u32::MAX - 1;
/// Marks a cache slot while tasks wait: releases must go to the queue.
const WAIT_SLOT: u32 = u32::MAX - 2;
/// Cache slot values below this are parked blocks; the rest are markers.
const MARKERS: u32 = WAIT_SLOT;

/// A cache slot on its own cache line.
#[repr(align(64))]
struct Way(AtomicU32);

/// The free lists, and the counters kept under the same lock.
///
/// Invariants:
/// - `tag[b] == k + 1` iff block `b` of order `k` is linked in list `k`;
///   blocks linked in lists are free, and no two linked blocks are buddies
///   (they would have been merged);
/// - bit `k` of `nonempty` is set iff list `k` is non-empty;
/// - `free_bytes` is the sum of the sizes of the linked blocks.
struct FreeLists {
    heads: [u32; 32],
    next: Box<[u32]>,
    prev: Box<[u32]>,
    tag: Box<[u8]>,
    nonempty: u32,
    free_bytes: usize,
    min_shift: u32,
    max_order: u32,
    splits: u64,
    coalesces: u64,
    failures: u64,
    closed: bool,
    #[cfg(feature = "async-alloc")]
    waiters: crate::wait::Waiters,
    /// The head waiter that could not be carved (its arrival number), and
    /// the bytes that waiters behind it may still take before it (see
    /// "Waiting" in the module docs).
    #[cfg(feature = "async-alloc")]
    stuck_head: Option<(u64, usize)>,
    /// Whether cache slots may hold [`WAIT_SLOT`] markers (set by a flush
    /// while tasks wait, cleared once the emptied queue took them back), so
    /// that releases through the lists scan the cache only when they must.
    #[cfg(feature = "async-alloc")]
    wait_markers: bool,
}

impl FreeLists {
    fn link(&mut self, b: u32, k: u32) {
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

    fn unlink(&mut self, b: u32, k: u32) {
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
    fn take(&mut self, k: u32) -> Option<u32> {
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
    fn free(&mut self, mut b: u32, mut k: u32) {
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

    fn largest_free_order(&self) -> Option<u32> {
        (self.nonempty != 0).then(|| 31 - self.nonempty.leading_zeros())
    }

    /// Whether tasks are waiting for a block.
    fn has_waiters(&self) -> bool {
        #[cfg(feature = "async-alloc")]
        return !self.waiters.is_empty();
        #[cfg(not(feature = "async-alloc"))]
        false
    }

    /// What the cache slots must hold while nothing is parked in them.
    fn cache_marker(&self) -> u32 {
        if self.closed {
            CLOSED_SLOT
        } else if self.has_waiters() {
            WAIT_SLOT
        } else {
            NIL
        }
    }
}

/// The shared state of a buddy arena.
///
/// Invariants:
/// - every byte of the region is in exactly one of: a block linked in the
///   free lists, a block parked in a cache slot, or a leased block;
/// - a block's bytes are accessed only by the holder of its lease;
/// - the value is freed exactly once, by whoever sees `closed` and
///   `free_bytes == total_size` under the lock (see the module docs).
pub(crate) struct BuddyInner {
    lists: Mutex<FreeLists>,
    cache: Box<[Way]>,
    region: Region,
    total_size: usize,
    min_block_size: usize,
    min_shift: u32,
    auto_spill: bool,
    zero_on_release: bool,
    handles: AtomicUsize,
    allocs: ShardedCounter,
    spills: AtomicU64,
    /// The `arena full` event's edge (feature `tracing`; zero-sized without).
    full: crate::trace::FullEdge,
    /// Under loom, reports the arena as leaked if teardown never runs.
    #[cfg(arenabuf_loom)]
    _track: loom::alloc::Track<()>,
}

impl BuddyInner {
    #[inline]
    fn way(&self, k: u32, thread: usize) -> &AtomicU32 {
        &self.cache[k as usize * WAYS + thread % WAYS].0
    }

    /// Moves every parked block to the free lists, leaving the marker the
    /// lists' state calls for (closed, waiting, or empty) in each cache slot.
    fn flush(&self, lists: &mut FreeLists) {
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

    #[cold]
    fn allocate_slow(&self, k: u32) -> Result<u32, AllocError> {
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
    fn lease(&self, this: NonNull<BuddyInner>, block: u32, k: u32) -> Lease {
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
    fn serve_waiters(
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

/// Frees the arena's state.
///
/// # Safety
///
/// `inner` came from `Box::into_raw`, the arena is closed and all its memory
/// is free: no handle or lease is left to touch it.
unsafe fn teardown(inner: NonNull<BuddyInner>) {
    // SAFETY: guaranteed by the caller.
    drop(unsafe { Box::from_raw(inner.as_ptr()) });
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
    inner: NonNull<BuddyInner>,
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
    fn inner(&self) -> &BuddyInner {
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
        let k = self.order_for(len.get())?;
        let arena = self.inner();
        let thread = sync::thread_index();
        let way = arena.way(k, thread);
        let parked = way.load(Ordering::Relaxed);
        let block = if parked < MARKERS
            && way
                .compare_exchange(parked, NIL, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            parked
        } else {
            arena.allocate_slow(k)?
        };
        arena.allocs.add(thread);
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
    /// fit. Otherwise resolves when the block is available; waiting tasks
    /// are served strictly in arrival order (see the module docs for why a
    /// large waiter at the head is not overtaken by smaller ones).
    /// Cancellation-safe: dropping the future gives up its place, and a block
    /// already handed to it goes to the next waiter or back to the arena.
    #[cfg(feature = "async-alloc")]
    pub fn allocate_async(&self, len: NonZeroUsize) -> BuddyAllocate<'_> {
        BuddyAllocate {
            arena: crate::wait::ArenaRef::Borrowed(self),
            len,
            state: crate::wait::WaitState::Start,
        }
    }

    /// Counts a fall-back to heap memory in `spill_count`.
    #[cfg(feature = "async-alloc")]
    pub(crate) fn count_spill(&self) {
        self.inner().spills.fetch_add(1, Ordering::Relaxed);
    }

    /// The lock of the lists and the wait queue, held (tests check what
    /// works without it).
    #[cfg(all(test, feature = "async-alloc"))]
    pub(crate) fn lock_queue(&self) -> impl Sized + '_ {
        sync::lock(&self.inner().lists)
    }

    /// Entries the wait queue's buffers have room for now.
    #[cfg(all(test, feature = "async-alloc"))]
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
            std::process::abort();
        }
        Self { inner: self.inner }
    }
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

/// Configures and builds a [`BuddyArena`]; from [`BuddyArena::builder`],
/// [`BuddyArena::builder_nearest`] or [`BuddyArena::builder_in`] (on memory
/// the caller provides).
///
/// The memory options (`prefault`, `buffer_alignment`, `pages`) are in
/// `crate::region`.
#[derive(Debug)]
#[must_use = "call .build() to create the arena"]
pub struct BuddyArenaBuilder {
    total_size: NonZeroUsize,
    min_block_size: NonZeroUsize,
    auto_spill: bool,
    zero_on_release: bool,
    pub(crate) memory: MemoryConfig,
}

impl BuddyArenaBuilder {
    /// Lets buffers that outgrow their block move to the heap instead of
    /// panicking: the written bytes are copied once, the block goes back to
    /// the arena at once, and the spill is counted in
    /// [`BuddyMetrics::spill_count`].
    pub fn auto_spill(mut self) -> Self {
        self.auto_spill = true;
        self
    }

    /// Zeroes every block when it returns to the arena (and hands out
    /// zeroed memory the first time), so one request's bytes can never show
    /// up in another's memory, not even through `unsafe` reads of spare
    /// capacity. Costs a `memset` of the whole block on every release.
    ///
    /// Without it (the default) memory is not cleared, but the safe API
    /// still never shows a byte that was not written through the same
    /// `Buffer`. Bytes that spilled to the heap are the global allocator's
    /// and are not covered.
    pub fn zero_on_release(mut self) -> Self {
        self.zero_on_release = true;
        self
    }

    /// Validates the geometry, reserves the memory and builds the arena.
    ///
    /// Besides the region itself, the arena keeps 9 bytes of bookkeeping per
    /// minimum block on the heap. Every allocation `build()` makes is
    /// fallible.
    ///
    /// # Errors
    ///
    /// [`BuildError::MinBlockNotPowerOfTwo`],
    /// [`BuildError::TotalNotPowerOfTwoMultiple`] (or use
    /// [`BuddyArena::builder_nearest`]),
    /// [`BuildError::TooManyBlocks`] (more than 2^31 minimum blocks), or
    /// [`BuildError::OutOfMemory`] (the region or the bookkeeping); for the
    /// memory options, [`BuildError::RegionTooSmall`],
    /// [`BuildError::RegionMisaligned`],
    /// [`BuildError::AlignmentNotPowerOfTwo`], [`BuildError::SizeNotAligned`],
    /// [`BuildError::HugePagesUnavailable`], [`BuildError::MapFailed`] or
    /// [`BuildError::InvalidRegion`]. A caller-provided region is dropped
    /// when `build()` fails (its deallocation callback runs).
    pub fn build(self) -> Result<BuddyArena, BuildError> {
        let (total, min) = (self.total_size.get(), self.min_block_size.get());
        if !min.is_power_of_two() {
            return Err(BuildError::MinBlockNotPowerOfTwo {
                min_block_size: min,
                suggested: min.checked_next_power_of_two().unwrap_or(min),
            });
        }
        let blocks = total / min;
        if total % min != 0 || !blocks.is_power_of_two() || total > isize::MAX as usize {
            let suggested = if blocks == 0 {
                min
            } else {
                min << (usize::BITS - 1 - blocks.leading_zeros())
            };
            return Err(BuildError::TotalNotPowerOfTwoMultiple {
                total_size: total,
                min_block_size: min,
                suggested,
            });
        }
        if blocks > MAX_BLOCKS {
            return Err(BuildError::TooManyBlocks {
                total_size: total,
                blocks,
                max_blocks: MAX_BLOCKS,
            });
        }
        let min_shift = min.trailing_zeros();
        let max_order = blocks.trailing_zeros();
        let region = self.memory.reserve(total, min, self.zero_on_release)?;
        let mut lists = FreeLists {
            heads: [NIL; 32],
            next: try_table(blocks, |_| NIL)?,
            prev: try_table(blocks, |_| NIL)?,
            tag: try_table(blocks, |_| 0)?,
            nonempty: 0,
            free_bytes: 0,
            min_shift,
            max_order,
            splits: 0,
            coalesces: 0,
            failures: 0,
            closed: false,
            #[cfg(feature = "async-alloc")]
            waiters: crate::wait::Waiters::new(),
            #[cfg(feature = "async-alloc")]
            stuck_head: None,
            #[cfg(feature = "async-alloc")]
            wait_markers: false,
        };
        lists.link(0, max_order);
        let cache = try_table((max_order as usize + 1) * WAYS, |_| {
            Way(AtomicU32::new(NIL))
        })?;
        let inner = try_box(BuddyInner {
            lists: Mutex::new(lists),
            cache,
            region,
            total_size: total,
            min_block_size: min,
            min_shift,
            auto_spill: self.auto_spill,
            zero_on_release: self.zero_on_release,
            handles: AtomicUsize::new(1),
            allocs: ShardedCounter::new(),
            spills: AtomicU64::new(0),
            full: crate::trace::FullEdge::default(),
            #[cfg(arenabuf_loom)]
            _track: loom::alloc::Track::new(()),
        })?;
        Ok(BuddyArena {
            inner: NonNull::from(Box::leak(inner)),
        })
    }
}

/// The future of [`BuddyArena::allocate_async`].
///
/// `BuddyAllocate<'static>` (from the [`BufferSource`](crate::BufferSource)
/// impl) owns a handle instead of borrowing one.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics (one future, one
/// result); call `allocate_async()` again for another buffer.
#[cfg(feature = "async-alloc")]
#[must_use = "futures do nothing unless polled"]
pub struct BuddyAllocate<'a> {
    arena: crate::wait::ArenaRef<'a, BuddyArena>,
    len: NonZeroUsize,
    state: crate::wait::WaitState,
}

#[cfg(feature = "async-alloc")]
impl BuddyAllocate<'static> {
    /// A waiting future that owns a handle, for `'static` contexts.
    pub(crate) fn owned(arena: BuddyArena, len: NonZeroUsize) -> Self {
        Self {
            arena: crate::wait::ArenaRef::Owned(arena),
            len,
            state: crate::wait::WaitState::Start,
        }
    }
}

#[cfg(feature = "async-alloc")]
impl std::future::Future for BuddyAllocate<'_> {
    type Output = Result<Buffer, AllocError>;

    /// A block that can be had now is taken here, inlined into the caller
    /// like `allocate()`; queueing and picking up a grant are out of line.
    #[inline]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        if let crate::wait::WaitState::Start = this.state {
            match this.arena.allocate(this.len) {
                Err(AllocError::ArenaFull) => {}
                done => {
                    this.state = crate::wait::WaitState::Done;
                    return std::task::Poll::Ready(done);
                }
            }
        }
        this.poll_wait(cx)
    }
}

#[cfg(feature = "async-alloc")]
impl BuddyAllocate<'_> {
    /// Picks up a grant (once queued), or queues (after `allocate` found
    /// the arena full).
    #[cold]
    #[inline(never)]
    fn poll_wait(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Buffer, AllocError>> {
        use crate::wait::WaitState;
        use std::task::Poll;

        let this = self;
        this.state.check_not_done();
        let handle: &BuddyArena = &this.arena;
        let arena = handle.inner();
        if let WaitState::Queued(node) = &this.state {
            // The grant is written into our node: no arena lock needed.
            return match node.poll(cx.waker()) {
                Some(lease) => {
                    this.state = WaitState::Done;
                    Poll::Ready(Ok(Buffer::from_lease(lease, arena.auto_spill)))
                }
                None => Poll::Pending,
            };
        }
        let k = match handle.order_for(this.len.get()) {
            Ok(k) => k,
            Err(e) => {
                this.state = WaitState::Done;
                return Poll::Ready(Err(e));
            }
        };
        let mut lists = sync::lock(&arena.lists);
        let first = lists.waiters.is_empty();
        let node = lists.waiters.register(k as usize, cx.waker());
        if first {
            // Park nothing from now on, and move what is parked to the
            // lists, where the queue can use it.
            arena.flush(&mut lists);
        }
        let wake = arena.serve_waiters(handle.inner, &mut lists);
        drop(lists);
        let poll = match node.poll(cx.waker()) {
            Some(lease) => {
                this.state = WaitState::Done;
                Poll::Ready(Ok(Buffer::from_lease(lease, arena.auto_spill)))
            }
            None => {
                this.state = WaitState::Queued(node);
                Poll::Pending
            }
        };
        crate::wait::wake_all(wake);
        poll
    }
}

#[cfg(feature = "async-alloc")]
impl Drop for BuddyAllocate<'_> {
    fn drop(&mut self) {
        let crate::wait::WaitState::Queued(node) = &self.state else {
            return;
        };
        let arena = self.arena.inner();
        let mut lists = sync::lock(&arena.lists);
        let cancelled = lists.waiters.cancel(node);
        // The head may have left: serve whoever can be served now.
        let wake = arena.serve_waiters(self.arena.inner, &mut lists);
        drop(lists);
        // A grant we never picked up goes back through the release path.
        drop(cancelled);
        crate::wait::wake_all(wake);
    }
}

#[cfg(feature = "async-alloc")]
impl fmt::Debug for BuddyAllocate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuddyAllocate")
            .field("len", &self.len)
            .field(
                "waiting",
                &matches!(self.state, crate::wait::WaitState::Queued(_)),
            )
            .finish()
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    fn arena(total: usize, min: usize) -> BuddyArena {
        BuddyArena::builder(nz(total), nz(min)).build().unwrap()
    }

    #[test]
    fn rounds_up_splits_and_merges_back() {
        let arena = arena(1024, 16);
        let a = arena.allocate(nz(1)).unwrap();
        let b = arena.allocate(nz(17)).unwrap();
        let c = arena.allocate(nz(300)).unwrap();
        assert_eq!((a.capacity(), b.capacity(), c.capacity()), (16, 32, 512));
        let m = arena.metrics();
        assert_eq!(m.live_bytes, 16 + 32 + 512);
        assert!(m.split_count >= 6, "{m:?}");
        drop((a, b, c));
        let m = arena.metrics();
        assert_eq!((m.live_bytes, m.largest_free_block), (0, 1024));
        assert!(m.coalesce_count >= 6, "{m:?}");
        assert!(arena.allocate(nz(1024)).is_ok());
    }

    #[test]
    fn full_means_no_block_even_after_merging_parked_ones() {
        let arena = arena(256, 16);
        let halves = [
            arena.allocate(nz(128)).unwrap(),
            arena.allocate(nz(128)).unwrap(),
        ];
        assert_eq!(arena.allocate(nz(16)).unwrap_err(), AllocError::ArenaFull);
        drop(halves); // both parked in caches, unmerged
        assert_eq!(arena.allocate(nz(256)).unwrap().capacity(), 256);
        assert_eq!(
            arena.allocate(nz(257)).unwrap_err(),
            AllocError::RequestTooLarge {
                requested: 257,
                max: 256
            }
        );
        assert_eq!(arena.metrics().alloc_failure_count, 1);
    }

    #[test]
    fn fragmentation_leaves_only_minimum_blocks() {
        let arena = arena(1024, 16);
        let mut all: Vec<_> = (0..64)
            .map(|_| Some(arena.allocate(nz(16)).unwrap()))
            .collect();
        for b in all.iter_mut().step_by(2) {
            *b = None;
        }
        let m = arena.metrics();
        assert_eq!((m.largest_free_block, m.live_bytes), (16, 512));
        drop(all);
        assert_eq!(arena.metrics().largest_free_block, 1024);
    }

    #[test]
    fn teardown_with_parked_and_live_blocks() {
        let arena = arena(1024, 16);
        let parked = arena.allocate(nz(64)).unwrap();
        let live = arena.allocate(nz(16)).unwrap();
        drop(parked);
        drop(arena); // flushes the parked block; `live` keeps the arena
        drop(live); // closed slot: goes to the lists, frees the arena
    }

    /// Threads allocate blocks of mixed sizes (splitting and coalescing,
    /// through the caches and the lists), write, freeze and send them to
    /// a third thread while the last handle drops: under miri, the
    /// data-race detector checks the park/take and lock orderings against
    /// the block bytes, and the leak checker checks the teardown.
    #[test]
    fn threads_split_and_merge_and_drop_the_arena_midway() {
        use bytes::BufMut;

        let rounds: u8 = if cfg!(miri) { 12 } else { 200 };
        let arena = arena(128, 16);
        let (tx, rx) = std::sync::mpsc::channel::<(u8, bytes::Bytes)>();
        let checker = std::thread::spawn(move || {
            let mut last = None;
            for (tag, bytes) in rx {
                assert!(bytes.iter().all(|&b| b == tag));
                last = Some(bytes); // drops the one before
            }
            last
        });
        let workers: Vec<_> = (0..2u8)
            .map(|id| {
                let (arena, tx) = (arena.clone(), tx.clone());
                std::thread::spawn(move || {
                    for r in 0..rounds {
                        let tag = id.wrapping_mul(100).wrapping_add(r);
                        let len = 16 << ((r as usize + id as usize) % 3);
                        match arena.allocate(nz(len)) {
                            Ok(mut buf) => {
                                buf.put_bytes(tag, len);
                                let bytes = buf.freeze();
                                if r % 2 == 0 {
                                    tx.send((tag, bytes)).unwrap();
                                } else {
                                    assert!(bytes.iter().all(|&b| b == tag));
                                }
                            }
                            Err(AllocError::ArenaFull) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for w in workers {
            w.join().unwrap();
        }
        let last = checker.join().unwrap().expect("round 0 always fits");
        assert_eq!(arena.metrics().live_bytes, last.len());
        drop(last);
        let m = arena.metrics();
        assert_eq!((m.live_bytes, m.largest_free_block), (0, 128));
        let whole = arena.allocate(nz(128)).unwrap();
        drop(arena);
        drop(whole); // the last lease frees the arena
    }

    #[cfg(feature = "async-alloc")]
    #[test]
    fn block_handed_to_a_waiter_and_cancelled_grant() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        use bytes::BufMut;

        let arena = arena(64, 16);
        let mut cx = Context::from_waker(Waker::noop());
        let mut held = arena.allocate(nz(64)).unwrap();
        held.put_bytes(7, 64);
        let mut first = Box::pin(arena.allocate_async(nz(32)));
        let mut second = Box::pin(arena.allocate_async(nz(32)));
        let mut third = Box::pin(arena.allocate_async(nz(64)));
        for fut in [&mut first, &mut second] {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert!(third.as_mut().poll(&mut cx).is_pending());
        drop(held.freeze()); // split: one half to each of the first two
        drop(first); // its grant goes back to the lists, unmerged: `second` holds the buddy
        let Poll::Ready(Ok(mut buf)) = second.as_mut().poll(&mut cx) else {
            panic!("the second waiter is served");
        };
        assert!(buf.is_empty());
        buf.put_slice(b"half");
        assert!(third.as_mut().poll(&mut cx).is_pending());
        assert_eq!(buf.freeze(), "half"); // dropped: the halves merge
        let Poll::Ready(Ok(whole)) = third.as_mut().poll(&mut cx) else {
            panic!("the merged block goes to the third waiter");
        };
        assert_eq!((whole.capacity(), whole.len()), (64, 0));
        drop((second, third));
        drop(arena);
        drop(whole); // the last lease frees the arena
    }

    #[test]
    fn bad_geometry_is_a_build_error() {
        let err = BuddyArena::builder(nz(1024), nz(24)).build().unwrap_err();
        assert_eq!(
            err,
            BuildError::MinBlockNotPowerOfTwo {
                min_block_size: 24,
                suggested: 32
            }
        );
        let err = BuddyArena::builder(nz(1000), nz(16)).build().unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::TotalNotPowerOfTwoMultiple { suggested: 512, .. }
            ),
            "{err}"
        );
        let err = BuddyArena::builder(nz(48), nz(16)).build().unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::TotalNotPowerOfTwoMultiple { suggested: 32, .. }
            ),
            "{err}"
        );
        let err = BuddyArena::builder(nz(8), nz(16)).build().unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::TotalNotPowerOfTwoMultiple { suggested: 16, .. }
            ),
            "{err}"
        );
        let err = BuddyArena::builder(nz(1 << 40), nz(1)).build().unwrap_err();
        assert!(matches!(err, BuildError::TooManyBlocks { .. }), "{err}");
        let err = BuddyArena::builder(nz(1 << 63), nz(1 << 62))
            .build()
            .unwrap_err();
        assert!(
            matches!(err, BuildError::TotalNotPowerOfTwoMultiple { .. }),
            "{err}"
        );
    }
}

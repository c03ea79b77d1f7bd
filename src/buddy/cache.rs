//! The group caches of a [`BuddyArena`](super::BuddyArena) (issue 14;
//! design in `docs/thread-cache.md`, "Design: group caches for the buddy
//! arena").
//!
//! # Layout
//!
//! A *group* of order `k` is the set of aligned order-`k` blocks inside one
//! aligned block of order `group_order(k) = min(k + 5, max_order - 6)`: 32
//! blocks, fewer near the top (a single block at `max_order - 6`). Only
//! orders up to `max_order - 6` are cached, so a group is at most 1/64 of
//! the arena and caches cannot hold large parts of it away from merging.
//!
//! The arena has `S` *shards* (a power of two, about four per CPU, chosen by
//! the high bits of `sync::thread_index()`). Per shard and cached order, one
//! [`GroupCache`] on its own cache line holds two *handles*, each one
//! `AtomicU64` = `(group + 1) << 32 | mask`, the mask saying which blocks of
//! the group the handle holds (bit `i`: the group's `i`-th order-`k` block):
//!
//! - `freed`: blocks released by threads of this shard, all of one group.
//!   A release adds its bit with one CAS on the shard's own line; a release
//!   of another group takes the lock, swaps its own group in and returns
//!   the old group's blocks to the free lists under that one lock hold
//!   (merging as usual).
//! - `alloc`: blocks carved in bulk. An allocation takes the lowest bit of
//!   `freed` (warm: just released here), else of `alloc`, with one CAS;
//!   both empty, it takes the lock once and carves a whole group (or the
//!   largest free block below a group's size), keeping one block and putting
//!   the rest in `alloc`. The carve takes the head of the lists, which are
//!   LIFO: the memory returned most recently.
//!
//! Cross-thread, the consumer's releases collect in its `freed` handle and
//! go back whole (merged into one block), and the producer's next carve
//! takes that block: one lock per up to 32 buffers on each side.
//!
//! # Invariants
//!
//! - A block is in exactly one of: linked in the free lists, one handle's
//!   mask, or leased (including a grant and a release in flight). Between a
//!   handle and a lease a block moves with one CAS on the handle; between a
//!   handle and the lists only under the lock, in one lock hold (a swap, a
//!   carve, a flush). So whoever holds the lock sees every free block either
//!   in the lists or in a handle: [`BuddyInner::flush_all`] under the lock
//!   moves every cached block to the lists and leaves `FLUSH_MARK` in the
//!   handles until the allocation has looked (nothing is parked or taken
//!   behind the pass's back), and an allocation fails only after one (no
//!   spurious `ArenaFull`).
//! - Only a lock holder puts a group into a handle that did not hold that
//!   group (`EMPTY` → group by a release is a park of one block, the one
//!   exception; it needs no lock because the block comes from a lease).
//!   Hence a lock holder that found `alloc` empty may fill it.
//! - A handle holds [`EMPTY`], a group with a non-empty mask, or a marker:
//!   [`WAIT_MARK`] while tasks wait (put in by the flush of the first
//!   waiter's registration, under the lock; taken out under the lock when
//!   the queue empties), [`CLOSED_MARK`] for good after the last handle
//!   dropped. While tasks wait every handle holds `WAIT_MARK`, so nothing is
//!   parked: releases go to the lock and serve the queue.
//! - Orderings: a park is a `compare_exchange` with `AcqRel`, a take too,
//!   and a flush a swap with `AcqRel`: every RMW on a handle continues the
//!   release sequence of the park before it, so the releaser's writes to a
//!   block happen before its next holder's.
//! - Correctness never assumes one thread per shard: every handle update is
//!   a CAS or a swap, and threads that share a shard only contend.
//! - `alloc_count`: the blocks a carve puts into an `alloc` handle are
//!   counted as allocated then, and uncounted when a flush takes them out
//!   unallocated; a take from `alloc` adds nothing, a take from `freed` or
//!   a block from the lock path adds one. `metrics()` flushes before it
//!   sums, so the count it reports is exact.
//! - Bounded memory: at most two groups per shard and cached order are
//!   cached, `2 * S * sum_k group_size(k)` bytes in all, whatever the
//!   number of threads; an idle thread's shard holds at most two groups per
//!   order, and all of it is found before an allocation fails.

use crate::sync::{AtomicU64, Ordering};

use super::blocks::BuddyInner;
use super::lists::FreeLists;

/// A handle that holds nothing.
pub(super) const EMPTY: u64 = 0;
/// A handle while tasks wait: nothing may be parked.
pub(super) const WAIT_MARK: u64 = u64::MAX - 1;
/// A handle of a closed arena: nothing may be parked ever again.
pub(super) const CLOSED_MARK: u64 = u64::MAX;
/// A handle while a failing allocation holds the lock after flushing it:
/// nothing may be parked or taken behind the flush's back, so that the
/// flush sees every free block at once (see [`BuddyInner::flush_all`]).
pub(super) const FLUSH_MARK: u64 = u64::MAX - 2;
/// Handle values from here up are markers.
const MARKERS: u64 = FLUSH_MARK;

/// The two handles of one shard for one order, on their own cache line.
#[repr(align(64))]
pub(super) struct GroupCache {
    pub(super) alloc: AtomicU64,
    pub(super) freed: AtomicU64,
}

impl GroupCache {
    pub(super) fn new() -> Self {
        Self {
            alloc: AtomicU64::new(EMPTY),
            freed: AtomicU64::new(EMPTY),
        }
    }
}

/// Orders whose group is this many times smaller than the arena or more are
/// cached (as a shift: 1/64).
const GROUP_FRACTION_SHIFT: u32 = 6;
/// Blocks in a full group (as a shift: 32).
const GROUP_SHIFT: u32 = 5;

/// How many orders an arena of `max_order` caches: `0..cached_orders`.
pub(super) fn cached_orders(max_order: u32) -> u32 {
    if max_order >= GROUP_FRACTION_SHIFT {
        max_order - GROUP_FRACTION_SHIFT + 1
    } else {
        0
    }
}

fn pack(group: u32, mask: u32) -> u64 {
    debug_assert!(mask != 0 && group < u32::MAX - 1);
    ((u64::from(group) + 1) << 32) | u64::from(mask)
}

/// The group and mask of a handle value, or `None` for [`EMPTY`] and the
/// markers.
fn unpack(h: u64) -> Option<(u32, u32)> {
    if h == EMPTY || h >= MARKERS {
        None
    } else {
        Some(((h >> 32) as u32 - 1, h as u32))
    }
}

/// What a park found.
pub(super) enum Park {
    /// The block is in the handle: the releaser must touch nothing more.
    Parked,
    /// The handle holds another group: swap under the lock.
    OtherGroup,
    /// A marker: the block goes to the lists.
    Marker,
}

impl BuddyInner {
    /// The group order of cached order `k`.
    #[inline]
    fn group_order(&self, k: u32) -> u32 {
        (k + GROUP_SHIFT).min(self.cached_orders - 1)
    }

    /// The shard of the thread with index `thread` (`sync::thread_index`).
    #[inline]
    pub(super) fn shard(&self, thread: usize) -> usize {
        if self.shard_bits == 0 {
            0
        } else {
            // High bits: `thread_index` is a Fibonacci hash.
            thread >> (usize::BITS - self.shard_bits)
        }
    }

    /// The handles of order `k` (cached) for the thread with index `thread`.
    #[inline]
    fn group_cache(&self, k: u32, thread: usize) -> &GroupCache {
        &self.cache[self.shard(thread) * self.cached_orders as usize + k as usize]
    }

    /// The group of block `b` of order `k`, and its bit.
    #[inline]
    fn locate(&self, b: u32, k: u32) -> (u32, u32) {
        let gk = self.group_order(k);
        (b >> gk, 1 << ((b & ((1 << gk) - 1)) >> k))
    }

    /// Block `bit` (an index) of `group` of order `k`.
    #[inline]
    fn block_of(&self, group: u32, bit: u32, k: u32) -> u32 {
        (group << self.group_order(k)) + (bit << k)
    }

    /// Takes a cached block of order `k` for the thread `thread`: its
    /// shard's `freed` blocks first (warm), then its `alloc` blocks. The
    /// flag says whether the allocation still has to be counted in
    /// `allocs`: blocks put into `alloc` were counted by the carve (and
    /// uncounted when they leave it unallocated), so that the take of a
    /// thread that allocates what others drop takes one locked instruction,
    /// not two.
    #[inline]
    pub(super) fn cache_take(&self, k: u32, thread: usize) -> Option<(u32, bool)> {
        if k >= self.cached_orders {
            return None;
        }
        let c = self.group_cache(k, thread);
        if let Some(b) = self.take_from(&c.freed, k) {
            return Some((b, true));
        }
        self.take_from(&c.alloc, k).map(|b| (b, false))
    }

    /// Takes the lowest block of a handle's group with one CAS.
    #[inline]
    fn take_from(&self, h: &AtomicU64, k: u32) -> Option<u32> {
        let mut cur = h.load(Ordering::Relaxed);
        loop {
            let (group, mask) = unpack(cur)?;
            let bit = mask.trailing_zeros();
            let rest = mask & !(1 << bit);
            let next = if rest == 0 { EMPTY } else { pack(group, rest) };
            // AcqRel: the parking releaser's writes happen before ours.
            match h.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(self.block_of(group, bit, k)),
                Err(now) => cur = now,
            }
        }
    }

    /// Parks released block `b` of order `k` in the `freed` handle of the
    /// thread `thread`, if it is empty or holds `b`'s group.
    #[inline]
    pub(super) fn park(&self, b: u32, k: u32, thread: usize) -> Park {
        if k >= self.cached_orders {
            return Park::Marker;
        }
        let (group, bit) = self.locate(b, k);
        let h = &self.group_cache(k, thread).freed;
        let mut cur = h.load(Ordering::Relaxed);
        loop {
            let next = match unpack(cur) {
                _ if cur >= MARKERS => return Park::Marker,
                None => pack(group, bit),
                Some((g, mask)) if g == group => {
                    debug_assert_eq!(mask & bit, 0, "block released twice");
                    cur | u64::from(bit)
                }
                Some(_) => return Park::OtherGroup,
            };
            // AcqRel: our writes to the block happen before the next
            // taker's (see the module docs).
            match h.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Park::Parked,
                Err(now) => cur = now,
            }
        }
    }

    /// Under the lock: parks block `b` of order `k` in the thread's `freed`
    /// handle, swapping out the group it held and returning that group's
    /// blocks to the lists. `false` if the handle holds a marker (the block
    /// is still the caller's).
    pub(super) fn park_swapping(
        &self,
        lists: &mut FreeLists,
        b: u32,
        k: u32,
        thread: usize,
    ) -> bool {
        let (group, bit) = self.locate(b, k);
        let h = &self.group_cache(k, thread).freed;
        let mut cur = h.load(Ordering::Relaxed);
        loop {
            if cur >= MARKERS {
                return false;
            }
            let (next, old) = match unpack(cur) {
                Some((g, _)) if g == group => (cur | u64::from(bit), None),
                old => (pack(group, bit), old),
            };
            match h.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    if let Some((g, mask)) = old {
                        self.free_group(lists, g, mask, k);
                    }
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Links the blocks `mask` of `group` of order `k` into the lists, each
    /// aligned run of them as one larger block (a whole group is one `free`
    /// of order `group_order(k)`, not 32 that merge).
    fn free_group(&self, lists: &mut FreeLists, group: u32, mask: u32, k: u32) {
        let levels = self.group_order(k) - k;
        let mask = u64::from(mask);
        let mut i = mask.trailing_zeros();
        while i < 32 {
            // The largest aligned run of set bits that starts at `i`.
            let mut m = 0;
            while m < levels && i % (2 << m) == 0 {
                let run = ((1u64 << (2 << m)) - 1) << i;
                if mask & run != run {
                    break;
                }
                m += 1;
            }
            lists.free(self.block_of(group, i, k), k + m);
            let next = i + (1 << m);
            i = if next >= 32 {
                32
            } else {
                next + (mask >> next).trailing_zeros()
            };
        }
    }

    /// Under the lock, with no task waiting: a block of cached order `k`
    /// for the thread `thread`, from its `alloc` handle if another thread
    /// of its shard refilled it meanwhile, else carved with a whole group
    /// (or the largest free block below a group's size): one block for the
    /// caller, the rest into `alloc`.
    pub(super) fn refill(&self, lists: &mut FreeLists, k: u32, thread: usize) -> Option<u32> {
        let c = self.group_cache(k, thread);
        if let Some(b) = self.take_from(&c.alloc, k) {
            // Counted by its carve; the caller counts it again.
            self.allocs.add_n(thread, 1u64.wrapping_neg());
            return Some(b);
        }
        let gk = self.group_order(k);
        let fits = lists.nonempty & (u32::MAX << k);
        if fits == 0 {
            return None;
        }
        let j = if fits >> gk != 0 {
            gk
        } else {
            31 - fits.leading_zeros()
        };
        let base = lists
            .take(j)
            .expect("order j has a free block or a larger one");
        let (group, first) = self.locate(base, k);
        let n = 1u64 << (j - k);
        let mask = (((1u64 << n) - 1) as u32) * first;
        let rest = mask & !first;
        if rest != 0 {
            // Only lock holders fill a handle with a new group, and we found
            // `alloc` empty (or a marker) under the lock.
            if c.alloc
                .compare_exchange(
                    EMPTY,
                    pack(group, rest),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                // Counted now, taken without counting (`cache_take`).
                self.allocs.add_n(thread, u64::from(rest.count_ones()));
            } else {
                self.free_group(lists, group, rest, k);
            }
        }
        Some(base)
    }

    /// Moves every cached block to the free lists, leaving the marker the
    /// lists' state calls for (closed, waiting, or empty) in each handle.
    pub(super) fn flush(&self, lists: &mut FreeLists) {
        self.flush_with(lists, EMPTY);
    }

    /// [`flush`](Self::flush), leaving `instead_of_empty` where the lists'
    /// state calls for an empty handle.
    fn flush_with(&self, lists: &mut FreeLists, instead_of_empty: u64) {
        let marker = match lists.cache_marker() {
            EMPTY => instead_of_empty,
            marker => marker,
        };
        #[cfg(feature = "async-alloc")]
        {
            lists.wait_markers = marker == WAIT_MARK;
        }
        let orders = self.cached_orders.max(1) as usize;
        for (i, c) in self.cache.iter().enumerate() {
            let k = (i % orders) as u32;
            for h in [&c.alloc, &c.freed] {
                // AcqRel: the parking releaser's writes to the blocks happen
                // before whoever gets them next.
                if let Some((group, mask)) = unpack(h.swap(marker, Ordering::AcqRel)) {
                    if core::ptr::eq(h, &c.alloc) {
                        // Counted by their carve, never allocated.
                        self.allocs
                            .add_n(i, u64::from(mask.count_ones()).wrapping_neg());
                    }
                    self.free_group(lists, group, mask, k);
                }
            }
        }
    }

    /// Under the lock, before an allocation answers `ArenaFull`: moves every
    /// cached block to the lists like [`flush`](Self::flush), but leaves
    /// [`FLUSH_MARK`] where it would leave the handles empty, until
    /// [`end_flush_all`](Self::end_flush_all) (in the same lock hold).
    ///
    /// A plain flush is one pass over the handles: a release could park a
    /// block in a handle the pass had emptied while another thread took one
    /// from a handle it had not reached yet, and the allocation would fail
    /// though a block was free at every moment. With the marks, a block
    /// released meanwhile waits for the lock and goes to the lists, and a
    /// take finds a mark and waits for the lock too: the lists then hold
    /// every free block.
    pub(super) fn flush_all(&self, lists: &mut FreeLists) {
        self.flush_with(lists, FLUSH_MARK);
    }

    /// Ends [`flush_all`](Self::flush_all): takes its marks out.
    pub(super) fn end_flush_all(&self) {
        for c in self.cache.iter() {
            for h in [&c.alloc, &c.freed] {
                let _ = h.compare_exchange(FLUSH_MARK, EMPTY, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// Under the lock, once the queue emptied: takes the [`WAIT_MARK`]s
    /// out, so that blocks may be parked again.
    #[cfg(feature = "async-alloc")]
    pub(super) fn clear_wait_markers(&self) {
        for c in self.cache.iter() {
            for h in [&c.alloc, &c.freed] {
                // Only our own markers.
                let _ = h.compare_exchange(WAIT_MARK, EMPTY, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// Bytes held in the handles now (a snapshot; for tests).
    #[cfg(all(test, not(arenabuf_loom)))]
    pub(super) fn cached_bytes(&self) -> usize {
        let orders = self.cached_orders.max(1) as usize;
        self.cache
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                let k = i % orders;
                [&c.alloc, &c.freed].map(move |h| (k, h.load(Ordering::Relaxed)))
            })
            .filter_map(|(k, h)| unpack(h).map(|(_, m)| (m.count_ones() as usize) << k))
            .sum::<usize>()
            * self.min_block_size
    }
}

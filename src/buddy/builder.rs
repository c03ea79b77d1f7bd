//! [`BuddyArenaBuilder`]: the geometry checks and the build of a
//! [`BuddyArena`].
//!
//! Invariants established here: `min_block_size` is a power of two, the
//! region is a power-of-two number (at most `MAX_BLOCKS`) of minimum
//! blocks, the free lists start with the whole region as one block of the
//! top order, and every cache handle is empty.

use alloc::boxed::Box;
use core::num::NonZeroUsize;
use core::ptr::NonNull;

use crate::error::BuildError;
use crate::metrics::ShardedCounter;
use crate::region::MemoryConfig;
use crate::region::table::{try_box, try_table};
use crate::sync::{AtomicU64, AtomicUsize, Mutex};

use super::BuddyArena;
use super::blocks::BuddyInner;
use super::cache::{GroupCache, cached_orders};
use super::lists::{FreeLists, MAX_BLOCKS, NIL};

/// Configures and builds a [`BuddyArena`]; from [`BuddyArena::builder`],
/// [`BuddyArena::builder_nearest`] or [`BuddyArena::builder_in`] (on memory
/// the caller provides).
///
/// The memory options (`prefault`, `buffer_alignment`, `pages`) are in
/// `crate::region`.
#[derive(Debug)]
#[must_use = "call .build() to create the arena"]
pub struct BuddyArenaBuilder {
    pub(super) total_size: NonZeroUsize,
    pub(super) min_block_size: NonZeroUsize,
    pub(super) auto_spill: bool,
    pub(super) zero_on_release: bool,
    pub(crate) memory: MemoryConfig,
}

impl BuddyArenaBuilder {
    /// Lets buffers that outgrow their block move to the heap instead of
    /// panicking: the written bytes are copied once, the block goes back to
    /// the arena at once, and the spill is counted in
    /// [`BuddyMetrics::spill_count`](crate::BuddyMetrics::spill_count).
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
    /// minimum block on the heap, plus one 64-byte cache line per cache
    /// shard (about four per CPU, at most 256) and cached order (the orders
    /// whose 32-block groups are at most 1/64 of the arena). Every
    /// allocation `build()` makes is fallible.
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
            ticker: None,
            #[cfg(feature = "async-alloc")]
            wait_markers: false,
        };
        lists.link(0, max_order);
        let cached = cached_orders(max_order);
        let shards = crate::sync::cache_shards();
        let cache = try_table(shards * cached as usize, |_| GroupCache::new())?;
        let inner = try_box(BuddyInner {
            lists: Mutex::new(lists),
            cache,
            cached_orders: cached,
            shard_bits: shards.trailing_zeros(),
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

//! Metrics snapshots, and the sharded counter that keeps counting off the
//! shared cache lines of the hot path.

use crate::sync::{AtomicU64, Ordering};

/// A snapshot of a [`FixedArena`](crate::FixedArena)'s counters.
///
/// Taken without stopping the arena: while other threads allocate and
/// release, the fields are each accurate but may be a few operations apart
/// from one another. When the arena is quiet they balance exactly:
/// `alloc_count` = releases + live slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FixedMetrics {
    /// Successful allocations since the arena was built: slots and blocks
    /// handed out, including one handed to a waiting task whose future was
    /// dropped before it picked the buffer up (that one goes straight on to
    /// the next waiter or back to the arena, and counts as released too).
    pub alloc_count: u64,
    /// Allocations that failed with [`AllocError::ArenaFull`](crate::AllocError::ArenaFull).
    pub alloc_failure_count: u64,
    /// Buffers that outgrew their slot and moved to the heap (`auto_spill`).
    pub spill_count: u64,
    /// Slots in use now (by a `Buffer` or a frozen `Bytes`).
    pub live_slots: usize,
    /// Arena bytes in use now: `live_slots * slot_capacity`.
    pub live_bytes: usize,
    /// Total arena bytes: `slot_count * slot_capacity`.
    pub reserved_bytes: usize,
    /// Tasks waiting in `allocate_async` now (feature `async-alloc`).
    pub waiting_tasks: usize,
    /// Allocations that had to wait for capacity (feature `async-alloc`).
    pub wait_count: u64,
}

/// A snapshot of a [`BuddyArena`](crate::BuddyArena)'s counters.
///
/// Same consistency rules as [`FixedMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BuddyMetrics {
    /// Successful allocations since the arena was built: slots and blocks
    /// handed out, including one handed to a waiting task whose future was
    /// dropped before it picked the buffer up (that one goes straight on to
    /// the next waiter or back to the arena, and counts as released too).
    pub alloc_count: u64,
    /// Allocations that failed with [`AllocError::ArenaFull`](crate::AllocError::ArenaFull).
    pub alloc_failure_count: u64,
    /// Buffers that outgrew their block and moved to the heap (`auto_spill`).
    pub spill_count: u64,
    /// Arena bytes in use now (block sizes, after rounding up).
    pub live_bytes: usize,
    /// Total arena bytes (`total_size`).
    pub reserved_bytes: usize,
    /// Times a larger free block was split in two to serve a smaller request.
    pub split_count: u64,
    /// Times two free buddies were merged into their parent block.
    pub coalesce_count: u64,
    /// The largest block that can be allocated now (0 when full).
    pub largest_free_block: usize,
    /// Tasks waiting in `allocate_async` now (feature `async-alloc`).
    pub waiting_tasks: usize,
    /// Allocations that had to wait for capacity (feature `async-alloc`).
    pub wait_count: u64,
}

const SHARDS: usize = 16;

#[repr(align(64))]
struct Shard(AtomicU64);

/// A counter split over cache-line-sized shards: each thread adds to the
/// shard its search hint picks, so threads on different cores do not contend
/// on one line. Reading sums the shards.
pub(crate) struct ShardedCounter {
    shards: [Shard; SHARDS],
}

impl ShardedCounter {
    pub(crate) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Shard(AtomicU64::new(0))),
        }
    }

    #[inline]
    pub(crate) fn add(&self, hint: usize) {
        self.shards[hint % SHARDS].0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

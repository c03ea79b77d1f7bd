//! The shared state of a [`BuddyArena`](super::BuddyArena) and the life of
//! a block past the group caches: taking one under the lock, its lease, its
//! release (park, swap the cached group, or merge and serve waiters),
//! teardown on the last one.
//!
//! # Invariants
//!
//! - Every byte of the region is in exactly one of: a block linked in the
//!   free lists, a block held in a cache handle, or a leased block (or a
//!   grant not picked up yet, which is a lease);
//! - a block's bytes are accessed only by the holder of its lease;
//! - a release that parked its block touches nothing afterwards (nor one
//!   that swapped groups under the lock, once it unlocked: the arena was not
//!   closed, its handles held no `CLOSED_MARK`); one that goes to the lists
//!   frees the arena if it sees `closed` and all memory free
//!   (`teardown.rs`).

use alloc::boxed::Box;
use core::ptr::NonNull;

use crate::buffer::{Home, Lease};
use crate::error::AllocError;
use crate::metrics::ShardedCounter;
use crate::region::{Region, scrub};
use crate::sync::{self, AtomicU64, AtomicUsize, Mutex, Ordering};

use super::cache::{GroupCache, Park};
use super::lists::FreeLists;
use super::teardown::teardown;

/// The shared state of a buddy arena.
///
/// Invariants:
/// - every byte of the region is in exactly one of: a block linked in the
///   free lists, a block held in a cache handle, or a leased block;
/// - a block's bytes are accessed only by the holder of its lease;
/// - the value is freed exactly once, by whoever sees `closed` and
///   `free_bytes == total_size` under the lock (see the module docs).
pub(crate) struct BuddyInner {
    pub(super) lists: Mutex<FreeLists>,
    /// The group caches: `cached_orders` entries per shard, shard-major.
    pub(super) cache: Box<[GroupCache]>,
    /// Orders `0..cached_orders` are cached (`cache.rs`).
    pub(super) cached_orders: u32,
    /// `log2` of the number of shards.
    pub(super) shard_bits: u32,
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
    /// The locked path of an allocation. `count_failure`: whether a failure
    /// is an `ArenaFull` answer (counted, and the `arena full` event) or
    /// just the first step of a wait (not counted, as on a fixed arena).
    #[cold]
    pub(super) fn allocate_slow(
        &self,
        k: u32,
        thread: usize,
        count_failure: bool,
    ) -> Result<u32, AllocError> {
        let mut lists = sync::lock(&self.lists);
        if !lists.has_waiters() {
            let got = if k < self.cached_orders {
                self.refill(&mut lists, k, thread)
            } else {
                lists.take(k)
            };
            if let Some(b) = got {
                return Ok(b);
            }
            // Every cached block to the lists, merged, with nothing parked
            // or taken meanwhile: a failure below means no block of order
            // `k` exists (see `cache.rs`).
            self.flush_all(&mut lists);
            let got = lists.take(k);
            self.end_flush_all();
            if let Some(b) = got {
                return Ok(b);
            }
        }
        if count_failure {
            lists.failures += 1;
            self.full.failed("buddy", self.total_size, lists.failures);
        }
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

    /// Serves waiters while their blocks can be carved, by the rule in the
    /// module docs. Returns the waiters to wake after unlocking.
    #[cfg(feature = "async-alloc")]
    pub(super) fn serve_waiters(
        &self,
        this: NonNull<BuddyInner>,
        lists: &mut FreeLists,
    ) -> Vec<crate::wait::Wake> {
        let mut wake = Vec::new();
        let mut blocked = None;
        while let Some((k, seq)) = lists.waiters.head() {
            if let Some(b) = lists.take(k as u32) {
                lists.stuck_head = None;
                self.allocs.add(sync::thread_index());
                wake.push(lists.waiters.grant(k, self.lease(this, b, k as u32)));
                continue;
            }
            // The head is stuck.
            let mut stuck = match lists.stuck_head {
                Some(s) if s.seq == seq => s,
                _ => StuckHead {
                    seq,
                    allowance: lists.free_bytes,
                    since: StuckHead::now(),
                },
            };
            lists.stuck_head = Some(stuck);
            let Some(largest) = lists.largest_free_order() else {
                break;
            };
            let open = stuck.is_open();
            let affordable = if open {
                Some(largest)
            } else {
                (stuck.allowance >> self.min_shift)
                    .checked_ilog2()
                    .map(|j| j.min(largest))
            };
            let Some(j) = affordable.and_then(|a| lists.waiters.first_up_to(a as usize)) else {
                // Someone fits what is free but must wait for the window.
                if !open {
                    blocked = lists.waiters.first_up_to(largest as usize);
                }
                break;
            };
            let b = lists.take(j as u32).expect("j <= the largest free order");
            if !open {
                stuck.allowance -= self.min_block_size << j;
                lists.stuck_head = Some(stuck);
            }
            self.allocs.add(sync::thread_index());
            wake.push(lists.waiters.grant(j, self.lease(this, b, j as u32)));
        }
        if lists.waiters.is_empty() {
            lists.stuck_head = None;
        }
        // Exactly the blocked waiter ticks (polls until the window opens).
        let ticker = blocked.and_then(|j| lists.waiters.front_of(j).cloned());
        if let Some(old) = lists.ticker.take() {
            if ticker
                .as_ref()
                .is_none_or(|t| !crate::sync::Arc::ptr_eq(t, &old))
            {
                old.set_ticking(false);
            }
        }
        if let Some(t) = &ticker {
            wake.push(crate::wait::Wake {
                waker: t.set_ticking(true),
                _node: None,
            });
        }
        lists.ticker = ticker;
        if lists.wait_markers && lists.waiters.is_empty() && !lists.closed {
            lists.wait_markers = false;
            self.clear_wait_markers();
        }
        wake
    }
}

/// A head waiter whose block cannot be carved yet.
#[cfg(feature = "async-alloc")]
#[derive(Clone, Copy)]
pub(super) struct StuckHead {
    /// Its arrival number.
    seq: u64,
    /// Bytes waiters behind it may still take during a reserved window:
    /// what was free when it got stuck, less what they took.
    allowance: usize,
    /// When it got stuck.
    since: Option<std::time::Instant>,
}

/// The stuck head's windows alternate: reserved (memory released goes to
/// the head; waiters behind it get only its allowance), then open (they get
/// whatever fits) for `HEAD_WINDOW`. The first reserved window lasts
/// `HEAD_WINDOW`, and each next one twice the last, up to
/// `MAX_RESERVED_WINDOW`: whatever holds the head's block only briefly is
/// outlasted, and whatever waits behind it is never held longer than that.
#[cfg(feature = "async-alloc")]
pub(crate) const HEAD_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);
#[cfg(feature = "async-alloc")]
const MAX_RESERVED_WINDOW: std::time::Duration = std::time::Duration::from_millis(64);

#[cfg(feature = "async-alloc")]
impl StuckHead {
    /// The clock (none under loom, whose models must be deterministic: the
    /// window never opens there).
    fn now() -> Option<std::time::Instant> {
        #[cfg(arenabuf_loom)]
        return None;
        #[cfg(not(arenabuf_loom))]
        Some(crate::sync::now())
    }

    /// Whether the head's current window is an open one.
    fn is_open(&self) -> bool {
        self.until_open() == Some(std::time::Duration::ZERO)
    }

    /// How long until the head's next open window starts: zero while one is
    /// open, `None` without a clock (loom).
    pub(super) fn until_open(&self) -> Option<std::time::Duration> {
        use std::time::Duration;

        let (since, now) = (self.since?, Self::now()?);
        let mut t = now.saturating_duration_since(since);
        let mut reserved = HEAD_WINDOW;
        loop {
            if t < reserved {
                return Some(reserved - t);
            }
            t -= reserved;
            if t < HEAD_WINDOW {
                return Some(Duration::ZERO);
            }
            t -= HEAD_WINDOW;
            if reserved >= MAX_RESERVED_WINDOW {
                // Periodic from here on.
                let period = (reserved + HEAD_WINDOW).as_nanos();
                let into = t.as_nanos() % period;
                let left = reserved.as_nanos().saturating_sub(into);
                return Some(Duration::from_nanos(
                    u64::try_from(left).unwrap_or(u64::MAX),
                ));
            }
            reserved *= 2;
        }
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
        // After a successful park we touch nothing: the arena may be torn
        // down at any moment from then on.
        let thread = sync::thread_index();
        let park = arena.park(self.block, self.order, thread);
        if let Park::Parked = park {
            return;
        }
        let mut lists = sync::lock(&arena.lists);
        if let Park::OtherGroup = park {
            // One lock for the up to 32 blocks of the old group. The handle
            // held no marker, so the arena is not closed: unlocking is the
            // last thing we do to it.
            if arena.park_swapping(&mut lists, self.block, self.order, thread) {
                return;
            }
        }
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

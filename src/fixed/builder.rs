//! [`FixedArenaBuilder`]: the geometry checks and the build of a
//! [`FixedArena`].
//!
//! Invariants established here: the bitmap has `slot_count.div_ceil(62)`
//! words, the padding bits of the last word are set and stay set, and the
//! region holds `slot_count * slot_capacity` bytes (checked not to
//! overflow `isize`) before any lease can exist; the slot count fits the
//! caches' run numbers (`MAX_SLOTS`).

use alloc::boxed::Box;
use core::num::NonZeroUsize;
use core::ptr::NonNull;

use crate::error::BuildError;
use crate::region::MemoryConfig;
use crate::region::table::{try_box, try_table};
use crate::sync::{AtomicU64, AtomicUsize};

use super::FixedArena;
use super::FixedInner;
use super::cache::{CachedBitmap, MAX_SLOTS};

/// Configures and builds a [`FixedArena`]; from [`FixedArena::builder`] or
/// [`FixedArena::builder_in`] (on memory the caller provides).
///
/// The memory options (`prefault`, `buffer_alignment`, `pages`) are in
/// `crate::region`.
#[derive(Debug)]
#[must_use = "call .build() to create the arena"]
pub struct FixedArenaBuilder {
    pub(super) slot_count: NonZeroUsize,
    pub(super) slot_capacity: NonZeroUsize,
    pub(super) auto_spill: bool,
    pub(super) zero_on_release: bool,
    pub(crate) memory: MemoryConfig,
}

impl FixedArenaBuilder {
    /// Lets buffers that outgrow their slot move to the heap instead of
    /// panicking: the written bytes are copied once, the slot goes back to
    /// the arena at once, and the spill is counted in
    /// [`FixedMetrics::spill_count`](crate::FixedMetrics::spill_count).
    pub fn auto_spill(mut self) -> Self {
        self.auto_spill = true;
        self
    }

    /// Zeroes every slot when it returns to the arena (and hands out
    /// zeroed memory the first time), so one request's bytes can never show
    /// up in another's memory, not even through `unsafe` reads of spare
    /// capacity. Costs a `memset` of the whole slot on every release.
    ///
    /// Without it (the default) memory is not cleared, but the safe API
    /// still never shows a byte that was not written through the same
    /// `Buffer`. Bytes that spilled to the heap are the global allocator's
    /// and are not covered.
    pub fn zero_on_release(mut self) -> Self {
        self.zero_on_release = true;
        self
    }

    /// Reserves the arena's memory (or takes the caller's region) and builds
    /// it.
    ///
    /// Besides the region itself, the arena keeps about 9 bytes of
    /// bookkeeping per slot on the heap: an 8-byte release counter per slot
    /// and a 64-byte bitmap word per 62 slots. Every allocation `build()`
    /// makes is fallible.
    ///
    /// # Errors
    ///
    /// [`BuildError::FixedSizeOverflow`] if `slot_count * slot_capacity` does
    /// not fit in `isize`; [`BuildError::OutOfMemory`] if the system cannot
    /// provide the region or the bookkeeping; for the memory options,
    /// [`BuildError::RegionTooSmall`], [`BuildError::RegionMisaligned`],
    /// [`BuildError::AlignmentNotPowerOfTwo`], [`BuildError::SizeNotAligned`],
    /// [`BuildError::HugePagesUnavailable`], [`BuildError::MapFailed`] or
    /// [`BuildError::InvalidRegion`]. A caller-provided region is dropped
    /// when `build()` fails (its deallocation callback runs).
    pub fn build(self) -> Result<FixedArena, BuildError> {
        let (slot_count, slot_capacity) = (self.slot_count.get(), self.slot_capacity.get());
        let overflow = BuildError::FixedSizeOverflow {
            slot_count,
            slot_capacity,
        };
        let total = slot_count
            .checked_mul(slot_capacity)
            .filter(|&t| t <= isize::MAX as usize && slot_count <= MAX_SLOTS)
            .ok_or(overflow)?;
        let region = self
            .memory
            .reserve(total, slot_capacity, self.zero_on_release)?;
        let slots = CachedBitmap::try_new(slot_count, crate::sync::cache_shards())?;
        let releases = try_table(slot_count, |_| AtomicU64::new(0))?;
        let inner = try_box(FixedInner {
            slots,
            releases,
            region,
            slot_capacity,
            slot_count,
            auto_spill: self.auto_spill,
            zero_on_release: self.zero_on_release,
            handles: AtomicUsize::new(1),
            pending: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            spills: AtomicU64::new(0),
            full: crate::trace::FullEdge::default(),
            #[cfg(feature = "async-alloc")]
            waiters: crate::sync::Mutex::new(crate::wait::Waiters::new()),
            #[cfg(arenabuf_loom)]
            _track: loom::alloc::Track::new(()),
        })?;
        Ok(FixedArena {
            inner: NonNull::from(Box::leak(inner)),
        })
    }
}

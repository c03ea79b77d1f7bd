//! What the builders hold about the memory until `build()`, the builder
//! methods that choose it, and the arenas' region getters.

use core::fmt;
use core::num::NonZeroUsize;

use super::{Region, RegionInfo};
use crate::buddy::{BuddyArena, BuddyArenaBuilder};
use crate::error::BuildError;
use crate::fixed::{FixedArena, FixedArenaBuilder};

/// The memory part of an arena builder.
pub(crate) struct MemoryConfig {
    /// A region the caller provided (`builder_in`), or `None` to reserve one.
    provided: Option<Region>,
    #[cfg(feature = "mmap")]
    pages: super::PagePolicy,
    prefault: bool,
    /// Every buffer starts at a multiple of this (a power of two, checked
    /// at build).
    alignment: usize,
}

impl MemoryConfig {
    /// Memory reserved by the arena, from the global allocator.
    pub(crate) fn new() -> Self {
        Self {
            provided: None,
            #[cfg(feature = "mmap")]
            pages: super::PagePolicy::Heap,
            prefault: false,
            alignment: 1,
        }
    }

    /// A region the caller provided.
    fn provided(region: Region) -> Self {
        Self {
            provided: Some(region),
            ..Self::new()
        }
    }

    /// Checks the alignment against `unit` (the slot capacity or minimum
    /// block size: every buffer starts at a multiple of it) and makes the
    /// region of `len` bytes: the provided one, or a new one.
    ///
    /// Call it after the geometry was validated and before the side tables
    /// are allocated; a provided region that fails here is dropped (its
    /// deallocation callback runs).
    pub(crate) fn reserve(
        self,
        len: usize,
        unit: usize,
        zeroed: bool,
    ) -> Result<Region, BuildError> {
        let alignment = self.alignment;
        if !alignment.is_power_of_two() {
            return Err(BuildError::AlignmentNotPowerOfTwo {
                alignment,
                suggested: alignment.checked_next_power_of_two().unwrap_or(alignment),
            });
        }
        if unit % alignment != 0 {
            return Err(BuildError::SizeNotAligned {
                size: unit,
                alignment,
                suggested: unit.div_ceil(alignment).saturating_mul(alignment),
            });
        }
        if let Some(region) = self.provided {
            #[cfg(feature = "mmap")]
            if self.pages != super::PagePolicy::Heap {
                return Err(BuildError::InvalidRegion {
                    reason: "pages() chooses how the arena maps memory it reserves itself; \
                             a caller-provided region keeps the pages it was mapped with: \
                             drop pages(), or map the memory with the pages you want"
                        .into(),
                });
            }
            return region.fit(len, alignment, zeroed, self.prefault);
        }
        #[cfg(feature = "mmap")]
        if self.pages != super::PagePolicy::Heap {
            return super::mapped::map(len, self.pages, alignment, zeroed, self.prefault);
        }
        Region::heap(len, alignment, zeroed, self.prefault)
    }
}

impl fmt::Debug for MemoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Memory");
        d.field("provided", &self.provided);
        #[cfg(feature = "mmap")]
        d.field("pages", &self.pages);
        d.field("prefault", &self.prefault)
            .field("alignment", &self.alignment)
            .finish()
    }
}

/// The builder methods that choose the memory, the same on both builders.
macro_rules! memory_methods {
    ($unit:literal) => {
        /// Touches every page of the region at build, so that no request
        /// pays the first-touch page fault of its buffer's memory (the
        /// build pays all of them, on the building thread, which also
        /// places the pages on that thread's NUMA node under the default
        /// first-touch policy). Off by default: pages are faulted in as
        /// buffers first use them.
        ///
        /// On a caller-provided region this writes a zero into every page.
        /// [`RegionInfo::prefaulted`] reports it. Pages are the region's
        /// page size ([`RegionInfo::page_size`]); where the arena cannot ask
        /// the system (without feature `mmap`, off Unix, without `std`) it
        /// writes every 4096 bytes.
        pub fn prefault(mut self) -> Self {
            self.memory.prefault = true;
            self
        }

        #[doc = concat!(
                    "Makes every buffer start at a multiple of `alignment` bytes (a power of two): \
             for `O_DIRECT` reads and devices that need aligned buffers. The ",
                    $unit,
                    " must be a multiple of it, and a caller-provided region must start at one; \
             the arena's own regions are page aligned already, or aligned to `alignment` \
             if it is larger.\n\n\
             Default: no requirement. `build()` fails with \
             [`BuildError::AlignmentNotPowerOfTwo`], [`BuildError::SizeNotAligned`] or \
             [`BuildError::RegionMisaligned`], which say what to change."
                )]
        pub fn buffer_alignment(mut self, alignment: NonZeroUsize) -> Self {
            self.memory.alignment = alignment.get();
            self
        }

        /// Chooses how the arena maps the memory it reserves (feature
        /// `mmap`): the global allocator (the default), an anonymous
        /// mapping, transparent or explicit huge pages. See
        /// [`PagePolicy`](crate::PagePolicy) for what each one does and
        /// falls back to, and [`RegionInfo`] for what the region got.
        ///
        /// Not for caller-provided regions (`build()` fails with
        /// [`BuildError::InvalidRegion`]): they keep their own pages.
        #[cfg(feature = "mmap")]
        pub fn pages(mut self, policy: crate::PagePolicy) -> Self {
            self.memory.pages = policy;
            self
        }
    };
}

impl FixedArenaBuilder {
    memory_methods!("slot capacity");
}

impl BuddyArenaBuilder {
    memory_methods!("minimum block size");
}

impl FixedArena {
    /// Starts building an arena of slots of `slot_capacity` bytes on memory
    /// the caller provides: as many slots as fit in the region
    /// (`region.len() / slot_capacity`; the rest of the region is unused).
    ///
    /// `build()` fails with [`BuildError::RegionTooSmall`] if not one slot
    /// fits; the other builder options apply as usual (`zero_on_release()`
    /// zeroes the region at build). The arena keeps about 9 bytes of
    /// bookkeeping per slot on the heap (`build()` documents it).
    pub fn builder_in(region: Region, slot_capacity: NonZeroUsize) -> FixedArenaBuilder {
        let slots = region.len() / slot_capacity.get();
        let mut builder = Self::builder(
            NonZeroUsize::new(slots).unwrap_or(NonZeroUsize::MIN),
            slot_capacity,
        );
        builder.memory = MemoryConfig::provided(region);
        builder
    }

    /// The arena's region: its base and length (to register it with the
    /// kernel or a device), where it came from, and what it got (page
    /// size, huge pages, prefault). Slot `i` starts at byte
    /// `i * slot_capacity` of it.
    pub fn region(&self) -> RegionInfo {
        self.memory().info()
    }

    /// The index of the slot `ptr` points into, if it points into this
    /// arena's region: for `io_uring` or device APIs that address a buffer
    /// by its index among registered buffers of `slot_capacity` bytes each.
    /// Pass `Buffer::chunk_mut().as_mut_ptr()` or `Bytes::as_ptr()` (a
    /// slice's pointer gives the slot it lies in); a buffer that spilled to
    /// the heap gives `None`.
    pub fn slot_index(&self, ptr: *const u8) -> Option<usize> {
        let offset = self.region().offset_of(ptr)?;
        Some(offset / self.slot_capacity())
    }
}

impl BuddyArena {
    /// Starts building an arena of blocks of at least `min_block_size`
    /// bytes on memory the caller provides: the largest valid total inside
    /// the region, `min_block_size * 2^k <= region.len()` (with at most
    /// 2^31 minimum blocks; the rest of the region is unused).
    ///
    /// `build()` fails with [`BuildError::MinBlockNotPowerOfTwo`] or
    /// [`BuildError::RegionTooSmall`] (not one block fits); the other
    /// builder options apply as usual.
    pub fn builder_in(region: Region, min_block_size: NonZeroUsize) -> BuddyArenaBuilder {
        let min = min_block_size.get();
        let blocks = region.len() / min;
        let total = if blocks == 0 {
            min
        } else {
            let k = (usize::BITS - 1 - blocks.leading_zeros())
                .min(crate::buddy::MAX_BLOCKS.trailing_zeros());
            min << k
        };
        let mut builder = Self::builder(
            NonZeroUsize::new(total).unwrap_or(min_block_size),
            min_block_size,
        );
        builder.memory = MemoryConfig::provided(region);
        builder
    }

    /// The arena's region: its base and length (to register it with the
    /// kernel or a device), where it came from, and what it got. A block of
    /// `min_block_size << k` bytes starts at a multiple of its size inside
    /// it.
    pub fn region(&self) -> RegionInfo {
        self.memory().info()
    }

    /// Where `ptr` lies inside this arena's region, in bytes from its
    /// base, if it points into it (see [`RegionInfo::offset_of`]).
    pub fn offset_of(&self, ptr: *const u8) -> Option<usize> {
        self.region().offset_of(ptr)
    }
}

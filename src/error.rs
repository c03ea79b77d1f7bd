//! Error types: [`AllocError`] for allocation, [`BuildError`] for arena
//! configuration. (The codecs' own errors, framing configuration included,
//! are in `codec`.)

use alloc::string::String;
use thiserror::Error;

/// Why an allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AllocError {
    /// The arena has no free slot or block of the requested size right now.
    ///
    /// This is transient: it succeeds again once buffers (or the last clone of
    /// their frozen `Bytes`) are dropped. Wait for capacity with
    /// `allocate_async` (feature `async-alloc`), enable `auto_spill()` for
    /// writes that outgrow a buffer, or size the arena for the peak load.
    #[error(
        "arena is full: no free slot or block of the requested size; drop buffers or frozen Bytes to release capacity, or wait for it"
    )]
    ArenaFull,
    /// The request can never be served by this arena, however much is freed.
    #[error(
        "request of {requested} bytes can never fit this arena (largest possible allocation is {max} bytes); use a larger arena or split the data"
    )]
    RequestTooLarge {
        /// The number of bytes asked for.
        requested: usize,
        /// The largest allocation this arena can ever hand out.
        max: usize,
    },
}

/// What is wrong with an arena configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `slot_count * slot_capacity` does not fit in `usize` (or exceeds
    /// `isize::MAX`, the most any allocation can hold), or `slot_count` is
    /// above the most a fixed arena can track (about 133 billion slots).
    #[error(
        "{slot_count} slots of {slot_capacity} bytes overflow the address space; use fewer or smaller slots"
    )]
    FixedSizeOverflow {
        /// The requested slot count.
        slot_count: usize,
        /// The requested slot capacity.
        slot_capacity: usize,
    },
    /// The buddy minimum block size is not a power of two.
    #[error("buddy min_block_size {min_block_size} is not a power of two; use e.g. {suggested}")]
    MinBlockNotPowerOfTwo {
        /// The requested minimum block size.
        min_block_size: usize,
        /// The next power of two above it.
        suggested: usize,
    },
    /// The buddy total size is not `min_block_size * 2^k`.
    #[error(
        "buddy total_size {total_size} is not a power-of-two multiple of min_block_size {min_block_size}; use e.g. {suggested}"
    )]
    TotalNotPowerOfTwoMultiple {
        /// The requested total size.
        total_size: usize,
        /// The requested minimum block size.
        min_block_size: usize,
        /// The nearest valid total size at or below the request (or the
        /// minimum block size if the request is smaller than one block).
        suggested: usize,
    },
    /// The buddy arena would have more minimum blocks than it can index.
    #[error(
        "buddy arena of {total_size} bytes has {blocks} minimum blocks, more than the supported {max_blocks}; raise min_block_size"
    )]
    TooManyBlocks {
        /// The requested total size.
        total_size: usize,
        /// How many minimum blocks that makes.
        blocks: usize,
        /// The most minimum blocks an arena supports.
        max_blocks: usize,
    },
    /// The system could not provide the arena's memory: its region or its
    /// bookkeeping (the per-slot and per-block side tables).
    #[error(
        "could not reserve {bytes} bytes for the arena: out of memory; build a smaller arena (fewer slots, or a larger min_block_size for less bookkeeping) or raise the process's memory limit"
    )]
    OutOfMemory {
        /// The number of bytes of the allocation that failed.
        bytes: usize,
    },
    /// A caller-provided region cannot hold one slot or minimum block.
    #[error(
        "the region of {region_len} bytes cannot hold the arena's {needed} bytes; provide at least {needed} bytes, or use smaller slots or blocks"
    )]
    RegionTooSmall {
        /// The region's length.
        region_len: usize,
        /// The bytes the arena needs at least.
        needed: usize,
    },
    /// A caller-provided region does not start at a multiple of the
    /// `buffer_alignment()` asked for.
    #[error(
        "the region starts at {base:#x}, not at a multiple of the buffer alignment {alignment}; provide memory aligned to {alignment} (e.g. Layout::from_size_align(len, {alignment})) or lower buffer_alignment()"
    )]
    RegionMisaligned {
        /// The region's base address.
        base: usize,
        /// The alignment asked for.
        alignment: usize,
    },
    /// `buffer_alignment()` is not a power of two.
    #[error("buffer alignment {alignment} is not a power of two; use e.g. {suggested}")]
    AlignmentNotPowerOfTwo {
        /// The alignment asked for.
        alignment: usize,
        /// The next power of two above it.
        suggested: usize,
    },
    /// The slot capacity or minimum block size is not a multiple of
    /// `buffer_alignment()`, so not every buffer could start aligned.
    #[error(
        "slot or minimum block size {size} is not a multiple of the buffer alignment {alignment}; use e.g. {suggested}, or lower buffer_alignment()"
    )]
    SizeNotAligned {
        /// The slot capacity or minimum block size.
        size: usize,
        /// The alignment asked for.
        alignment: usize,
        /// The next multiple of the alignment.
        suggested: usize,
    },
    /// Explicit huge pages (`PagePolicy::Huge`, feature `mmap`) could not be
    /// had: none or too few are reserved, or the platform has none.
    #[error(
        "could not map {bytes} bytes of {page_size}-byte huge pages: {reason}; reserve them (e.g. `sysctl vm.nr_hugepages=N` with N >= bytes / page_size) or use PagePolicy::TransparentHuge, which falls back to normal pages"
    )]
    HugePagesUnavailable {
        /// The bytes asked for, rounded up to whole huge pages.
        bytes: usize,
        /// The huge page size.
        page_size: usize,
        /// What the system said.
        reason: String,
    },
    /// `mmap` failed for a reason other than a lack of memory (feature
    /// `mmap`).
    #[error("could not map {bytes} bytes for the arena: {reason}")]
    MapFailed {
        /// The bytes asked for.
        bytes: usize,
        /// What the system said.
        reason: String,
    },
    /// The memory options contradict each other (for instance `pages()` on
    /// a caller-provided region).
    #[error("invalid region configuration: {reason}")]
    InvalidRegion {
        /// What is wrong, and what would be valid.
        reason: String,
    },
}

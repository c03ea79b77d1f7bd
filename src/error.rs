//! Error types: [`AllocError`] for allocation, [`BuildError`] for arena
//! configuration. (The codecs' own errors, framing configuration included,
//! are in `codec`.)

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
    /// `isize::MAX`, the most any allocation can hold).
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
    /// The system allocator could not provide the arena's memory.
    #[error("could not reserve {bytes} bytes for the arena: out of memory")]
    OutOfMemory {
        /// The number of bytes requested from the system.
        bytes: usize,
    },
}

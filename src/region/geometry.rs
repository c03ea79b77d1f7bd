//! The nearest valid buddy geometry, for callers who would rather round
//! than handle [`BuildError::TotalNotPowerOfTwoMultiple`](crate::BuildError).

use core::num::NonZeroUsize;

use crate::buddy::{BuddyArena, BuddyArenaBuilder, MAX_BLOCKS};

/// The largest power of two an allocation can be (`isize::MAX` rounded
/// down).
const MAX_POW2: usize = 1 << (usize::BITS - 2);

impl BuddyArena {
    /// The valid geometry nearest to `total_size` and `min_block_size`,
    /// as `(total_size, min_block_size)`, which
    /// [`builder`](Self::builder) accepts:
    ///
    /// - `min_block_size` is rounded up to a power of two (a block still
    ///   holds what was asked for), at most 2^62 on 64-bit targets;
    /// - `total_size` is rounded down to `min_block_size * 2^k` (the arena
    ///   never reserves more than asked: it is a memory cap), but is at
    ///   least one minimum block;
    /// - if that makes more than 2^31 minimum blocks,
    ///   `min_block_size` is raised until it does not.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use arenabuf::BuddyArena;
    ///
    /// let nz = |n| NonZeroUsize::new(n).unwrap();
    /// let (total, min) = BuddyArena::nearest_geometry(nz(1000), nz(24));
    /// assert_eq!((total.get(), min.get()), (512, 32));
    /// assert!(BuddyArena::builder(total, min).build().is_ok());
    /// ```
    pub fn nearest_geometry(
        total_size: NonZeroUsize,
        min_block_size: NonZeroUsize,
    ) -> (NonZeroUsize, NonZeroUsize) {
        let mut min = min_block_size
            .get()
            .checked_next_power_of_two()
            .unwrap_or(MAX_POW2)
            .min(MAX_POW2);
        let total = total_size.get().min(MAX_POW2);
        let blocks = total / min;
        let mut total = if blocks == 0 {
            min
        } else {
            min << (usize::BITS - 1 - blocks.leading_zeros())
        };
        if total / min > MAX_BLOCKS {
            min = total / MAX_BLOCKS;
        }
        total = total.max(min);
        let nz = |n| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        (nz(total), nz(min))
    }

    /// [`builder`](Self::builder) with the
    /// [`nearest_geometry`](Self::nearest_geometry) to the one asked for,
    /// instead of a geometry error from `build()`; read the result back
    /// with [`total_size`](Self::total_size) and
    /// [`min_block_size`](Self::min_block_size).
    pub fn builder_nearest(
        total_size: NonZeroUsize,
        min_block_size: NonZeroUsize,
    ) -> BuddyArenaBuilder {
        let (total, min) = Self::nearest_geometry(total_size, min_block_size);
        Self::builder(total, min)
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests {
    use super::*;

    fn nearest(total: usize, min: usize) -> (usize, usize) {
        let nz = |n| NonZeroUsize::new(n).unwrap();
        let (t, m) = BuddyArena::nearest_geometry(nz(total), nz(min));
        (t.get(), m.get())
    }

    #[test]
    fn nearest_geometry_rounds_min_up_and_total_down() {
        assert_eq!(nearest(1 << 20, 256), (1 << 20, 256)); // valid: unchanged
        assert_eq!(nearest(1000, 16), (512, 16));
        assert_eq!(nearest(1000, 24), (512, 32));
        assert_eq!(nearest(48, 16), (32, 16));
        assert_eq!(nearest(8, 16), (16, 16)); // at least one block
        assert_eq!(nearest(3 << 20, 4096), (2 << 20, 4096));
        assert_eq!(nearest(1 << 40, 1), (1 << 40, 1 << 9)); // at most 2^31 blocks
        assert_eq!(nearest(usize::MAX, usize::MAX), (MAX_POW2, MAX_POW2));
    }

    #[test]
    fn every_nearest_geometry_builds() {
        let nz = |n| NonZeroUsize::new(n).unwrap();
        for (total, min) in [
            (1000, 24),
            (4097, 3),
            (100, 1000),
            (1 << 16, 7),
            (12_345, 100),
        ] {
            let arena = BuddyArena::builder_nearest(nz(total), nz(min))
                .build()
                .unwrap_or_else(|e| panic!("{total}/{min}: {e}"));
            assert!(arena.total_size() <= total.max(arena.min_block_size()));
            assert!(arena.min_block_size() >= min);
        }
    }
}

//! [`FrameBudget`]: the sizing rule that keeps a decoder from finding its
//! arena full.

use super::ConfigError;
use crate::{BuddyArena, FixedArena};

/// How many frames can be alive at once, and how large: the arena a codec
/// needs so that it never finds the arena full.
///
/// A decoder cannot wait for memory, so a codec whose arena is too small
/// fails the stream ([`OnFull::Error`](super::OnFull::Error)) or spills to
/// the heap ([`OnFull::Spill`](super::OnFull::Spill), the default). The
/// rule that avoids both: every frame that can be alive at once must fit
/// in the arena at the same time.
///
/// - Each **decoder** (one per connection) holds at most one frame while it
///   arrives (the length-delimited codec's partial frame; the others
///   allocate when a frame is complete and hand it out at once).
/// - Every frame the application has **not dropped yet** counts too: frames
///   queued in channels, a frame each reader task holds while it waits to
///   queue it, frames being processed, clones and slices of them.
///
/// So `frames = decoders + held`, each at most `max_frame` bytes. A
/// [`FixedArena`] needs `frames` slots of at least `max_frame` bytes; a
/// [`BuddyArena`] needs room for `frames` blocks of `max_frame` rounded up
/// to a power of two (at least `min_block_size`). For the buddy arena this
/// holds whatever the frame sizes and their order: `n` live blocks of at
/// most `b` bytes touch at most `n` of the arena's aligned `b`-byte regions,
/// so while fewer than `total / b` are alive one region is wholly free.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{codec::FrameBudget, BuddyArena, FixedArena};
///
/// let nz = |n| NonZeroUsize::new(n).unwrap();
/// // 64 connections; a bounded queue of 128 frames, each reader task may
/// // hold one frame while the queue is full, one frame being processed.
/// let budget = FrameBudget::new(64, 128 + 64 + 1, 16 * 1024);
/// assert_eq!(budget.frames(), 257);
///
/// let fixed = FixedArena::builder(nz(budget.fixed_slot_count()), nz(16 * 1024)).build()?;
/// budget.check_fixed(&fixed)?;
///
/// let buddy = BuddyArena::builder(nz(budget.buddy_total_size(256)), nz(256)).build()?;
/// budget.check_buddy(&buddy)?;
///
/// let small = FixedArena::builder(nz(64), nz(16 * 1024)).build()?;
/// assert!(budget.check_fixed(&small).is_err()); // names what to change
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBudget {
    frames: usize,
    max_frame: usize,
}

impl FrameBudget {
    /// `decoders` decoding at once (one per connection), `held` decoded
    /// frames the application may hold at once, frames of at most
    /// `max_frame` bytes (for the length-delimited codec: the frame after
    /// `length_adjustment`, as the header announces it).
    pub fn new(decoders: usize, held: usize, max_frame: usize) -> Self {
        Self {
            frames: decoders.saturating_add(held),
            max_frame,
        }
    }

    /// Frames alive at once, at most: `decoders + held`.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The largest frame, in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The slot count a [`FixedArena`] needs (with a slot capacity of at
    /// least [`max_frame`](Self::max_frame)).
    pub fn fixed_slot_count(&self) -> usize {
        self.frames
    }

    /// The block one frame takes in a buddy arena with this minimum block
    /// size.
    fn buddy_block(&self, min_block_size: usize) -> usize {
        self.max_frame
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .max(min_block_size)
    }

    /// The total size a [`BuddyArena`] with this `min_block_size` (a power
    /// of two) needs: `frames` blocks of the largest frame's block size,
    /// rounded up to a size `BuddyArena::builder` accepts. Saturates at
    /// `usize::MAX` (which no builder accepts) if it does not fit.
    pub fn buddy_total_size(&self, min_block_size: usize) -> usize {
        let blocks = self
            .frames
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX);
        self.buddy_block(min_block_size).saturating_mul(blocks)
    }

    /// Checks that `arena` holds every frame of the budget at once.
    ///
    /// # Errors
    ///
    /// [`ConfigError::FrameLargerThanSource`] if a slot is smaller than
    /// `max_frame`; [`ConfigError::ArenaTooSmall`] if there are fewer slots
    /// than frames.
    pub fn check_fixed(&self, arena: &FixedArena) -> Result<(), ConfigError> {
        if arena.slot_capacity() < self.max_frame {
            return Err(ConfigError::FrameLargerThanSource {
                max_frame: self.max_frame,
                source_max: arena.slot_capacity(),
            });
        }
        if arena.slot_count() < self.frames {
            return Err(ConfigError::ArenaTooSmall {
                needed: self.frames,
                available: arena.slot_count(),
                max_frame: self.max_frame,
                advice: format!("build the arena with at least {} slots", self.frames),
            });
        }
        Ok(())
    }

    /// Checks that `arena` holds every frame of the budget at once, however
    /// the frames' sizes mix.
    ///
    /// # Errors
    ///
    /// [`ConfigError::FrameLargerThanSource`] if the arena is smaller than
    /// one frame; [`ConfigError::ArenaTooSmall`] if it has fewer blocks of
    /// the largest frame's size than frames.
    pub fn check_buddy(&self, arena: &BuddyArena) -> Result<(), ConfigError> {
        let block = self.buddy_block(arena.min_block_size());
        if block > arena.total_size() {
            return Err(ConfigError::FrameLargerThanSource {
                max_frame: self.max_frame,
                source_max: arena.total_size(),
            });
        }
        let available = arena.total_size() / block;
        if available < self.frames {
            return Err(ConfigError::ArenaTooSmall {
                needed: self.frames,
                available,
                max_frame: self.max_frame,
                advice: format!(
                    "build the arena with a total size of at least {} bytes",
                    self.buddy_total_size(arena.min_block_size())
                ),
            });
        }
        Ok(())
    }
}

//! The reader's typed errors: [`ReaderError`] when one is built,
//! [`WaitTimeout`] when a bounded wait for memory gives up.

use std::time::Duration;

use thiserror::Error;

/// Why a [`Frames`](super::Frames) reader could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// The framing allows frames larger than the source can ever hand out in
    /// one buffer, so such a frame would end the stream mid-way.
    #[error(
        "the framing allows frames of up to {max_frame_length} bytes, but the buffer source hands out at most {source_max} bytes per buffer; use slots (or an arena) of at least {max_frame_length} bytes, or lower the framing's maximum to {source_max}"
    )]
    FrameTooLarge {
        /// The framing's largest payload.
        max_frame_length: usize,
        /// The most the source hands out in one buffer
        /// ([`BufferSource::max_len`](crate::BufferSource::max_len)).
        source_max: usize,
    },
    /// A length-delimited layout given as a builder is invalid (a length
    /// field that is not 1 to 8 bytes, an offset that overflows).
    #[error("invalid length-delimited framing: {reason}")]
    InvalidFraming {
        /// What is wrong, and what would be valid.
        reason: String,
    },
}

/// A reader with [`max_wait`](super::FramesBuilder::max_wait) gave up
/// waiting for memory. Returned inside an `io::Error` of kind `TimedOut`
/// (get it with `io::Error::get_ref` and `downcast_ref`); the stream ends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
#[error(
    "waited {waited:?} for {requested} bytes of buffer memory without getting them: the arena stays full because frames are held (or other readers fill it); drop or detach held frames, give the arena more memory, or raise max_wait"
)]
pub struct WaitTimeout {
    /// How long the reader waited.
    pub waited: Duration,
    /// The bytes it waited for.
    pub requested: usize,
}

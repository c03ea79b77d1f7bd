//! The codecs' errors: [`CodecError`] while decoding and encoding,
//! [`ConfigError`] for a configuration that can never work.

use std::io;

use thiserror::Error;

use crate::AllocError;

/// Why a codec failed to decode or encode a frame.
///
/// Every codec in this module uses it as its `Decoder::Error` and
/// `Encoder::Error`, the way tokio_util's `LinesCodec` uses
/// `LinesCodecError`. It converts both ways with [`io::Error`]
/// (`FramedRead` needs `From<io::Error>`; `?` in a function that returns
/// `io::Result` needs the other direction), keeping tokio_util's error kinds
/// and messages, so code written against tokio_util's codecs sees the same
/// `io::Error`s. [`kind`](Self::kind) gives that kind without converting.
///
/// Which codec gives which variant, and whether decoding can go on after it:
///
/// | variant | codec | decoding goes on? |
/// |---|---|---|
/// | [`FrameTooBig`](Self::FrameTooBig), [`LengthOverflow`](Self::LengthOverflow) | length-delimited | no: the same header fails again |
/// | [`MaxLengthExceeded`](Self::MaxLengthExceeded) | lines, any-delimiter | yes: the frame is skipped up to its delimiter |
/// | [`BytesRemaining`](Self::BytesRemaining) | length-delimited (at EOF) | yes, if the stream resumes: the frame is kept |
/// | [`Alloc`](Self::Alloc) with [`AllocError::ArenaFull`] | all, with [`OnFull::Error`](super::OnFull::Error) | yes: nothing was consumed; decode again once memory is free |
/// | [`Alloc`](Self::Alloc) with [`AllocError::RequestTooLarge`] | all | no: the frame can never fit the source |
/// | [`EncodeFrameTooBig`](Self::EncodeFrameTooBig) | length-delimited (encoding) | (nothing was written) |
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A length field above `max_frame_length` (kind `InvalidData`, as
    /// tokio_util). Nothing was allocated or consumed.
    #[error(
        "frame size too big: the length field says {length} bytes, the maximum is {max}; raise max_frame_length if the peer is right"
    )]
    FrameTooBig {
        /// The length field's value.
        length: u64,
        /// The codec's maximum.
        max: usize,
    },
    /// The length field plus `length_adjustment` under- or overflows (kind
    /// `InvalidInput`, as tokio_util), when decoding or encoding.
    #[error("provided length would overflow after adjustment")]
    LengthOverflow,
    /// A delimited frame longer than `max_length` (kind `InvalidData`). The
    /// decoder skips to the next delimiter; decoding again goes on with the
    /// next frame, as with tokio_util's `MaxLineLengthExceeded`.
    #[error(
        "max length exceeded: a frame is longer than {max_length} bytes; it is skipped up to the next delimiter"
    )]
    MaxLengthExceeded {
        /// The codec's maximum.
        max_length: usize,
    },
    /// The stream ended inside a frame (kind `Other`, tokio_util's message).
    /// The decoder keeps the partial frame: if the stream resumes, the frame
    /// completes.
    #[error("bytes remaining on stream")]
    BytesRemaining,
    /// The source could not hand out the frame's buffer: full (with
    /// [`OnFull::Error`](super::OnFull::Error); kind `OutOfMemory`), or the
    /// frame can never fit (kind `InvalidData`). When full, nothing was
    /// consumed: decoding again once memory is free yields the same frame.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// A frame longer than `max_frame_length`, or than the length field can
    /// express, was given to the encoder (kind `InvalidInput`, as tokio_util).
    #[error(
        "frame of {length} bytes is too big to encode: the maximum is {max} bytes (max_frame_length, or what the length field can express)"
    )]
    EncodeFrameTooBig {
        /// The frame's length.
        length: usize,
        /// The largest frame this codec encodes.
        max: usize,
    },
    /// An I/O error of the underlying reader or writer.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl CodecError {
    /// The [`io::ErrorKind`] this error has as an `io::Error` (the kinds
    /// tokio_util's codecs use).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            CodecError::FrameTooBig { .. } | CodecError::MaxLengthExceeded { .. } => {
                io::ErrorKind::InvalidData
            }
            CodecError::LengthOverflow | CodecError::EncodeFrameTooBig { .. } => {
                io::ErrorKind::InvalidInput
            }
            CodecError::BytesRemaining => io::ErrorKind::Other,
            CodecError::Alloc(AllocError::ArenaFull) => io::ErrorKind::OutOfMemory,
            CodecError::Alloc(_) => io::ErrorKind::InvalidData,
            CodecError::Io(e) => e.kind(),
        }
    }
}

impl From<CodecError> for io::Error {
    /// Keeps the kind and message; an allocation error stays reachable as
    /// the inner [`AllocError`] (`get_ref()`), an I/O error is unwrapped.
    fn from(e: CodecError) -> io::Error {
        let kind = e.kind();
        match e {
            CodecError::Io(e) => e,
            CodecError::Alloc(a) => io::Error::new(kind, a),
            e => io::Error::new(kind, e),
        }
    }
}

/// A codec configuration that can never work.
///
/// Returned where a codec is configured ([`LengthDelimitedBuilder`]'s
/// `new_codec`, `new_read`, `new_framed` and `layout`) and by the sizing
/// checks of [`FrameBudget`].
///
/// [`LengthDelimitedBuilder`]: super::LengthDelimitedBuilder
/// [`FrameBudget`]: super::FrameBudget
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `length_field_length` is not 1 to 8 bytes.
    #[error(
        "length_field_length must be 1 to 8 bytes, not {length}; use length_field_type::<u16>() or similar"
    )]
    LengthFieldLength {
        /// The requested length.
        length: usize,
    },
    /// `length_field_offset + length_field_length` overflows `usize`.
    #[error(
        "length_field_offset {offset} overflows usize with the length field; use a smaller offset"
    )]
    LengthFieldOffset {
        /// The requested offset.
        offset: usize,
    },
    /// The configuration allows frames the source can never hand out: each
    /// would fail the stream with `InvalidData`.
    #[error(
        "frames of up to {max_frame} bytes are allowed, but the source hands out at most {source_max} bytes; lower max_frame_length (or max_length) or use larger slots / a larger arena"
    )]
    FrameLargerThanSource {
        /// The largest frame the configuration allows.
        max_frame: usize,
        /// The source's `max_len()`.
        source_max: usize,
    },
    /// The arena cannot hold every frame of a [`FrameBudget`](super::FrameBudget)
    /// at once, so a decoder may find it full.
    #[error(
        "the arena holds {available} frames of up to {max_frame} bytes at once, the budget needs {needed}; {advice}"
    )]
    ArenaTooSmall {
        /// Frames the budget says can be alive at once.
        needed: usize,
        /// Frames of the largest size the arena can hold at once.
        available: usize,
        /// The largest frame.
        max_frame: usize,
        /// What to change.
        advice: String,
    },
}

//! Drop-in `tokio_util` codecs whose frames are arena memory (feature
//! `codec`).
//!
//! [`ArenaLengthDelimitedCodec`] and [`ArenaDelimiterCodec`] implement
//! [`Decoder<Item = Bytes>`](tokio_util::codec::Decoder) and
//! [`Encoder<Bytes>`](tokio_util::codec::Encoder), so they go into
//! `FramedRead`, `FramedWrite` and `Framed` unchanged. They speak the same
//! wire format as tokio_util's `LengthDelimitedCodec` and `LinesCodec`, and
//! behave the same at EOF and on over-long input, with one deliberate
//! difference: a stream that ends right after a length header is "bytes
//! remaining on stream" here, where tokio_util ends it without an error.
//! A frame longer than the source can ever hand out is an `InvalidData`
//! error as soon as its header is read.
//!
//! What differs is where a frame lives: while it arrives, its payload is
//! copied once, straight into an arena [`Buffer`] of the
//! frame's size, and consumed from `FramedRead`'s read buffer, which
//! therefore stays small however large the frame (a 16 MiB frame never grows
//! it past its usual few KiB). The decoded `Bytes` return their memory to
//! the arena when dropped.
//!
//! # When the arena is full
//!
//! A decoder is synchronous: it cannot wait for capacity. [`OnFull`] says
//! what it does instead: fail the stream with an error (the default), or
//! spill the frame to the heap and count it in the arena's `spill_count`.
//! For real backpressure (stop reading the socket until frames are dropped),
//! use the `io` feature's [`ArenaReader`](crate::io::ArenaReader), which
//! waits with `allocate_wait`.

mod delimiter;
mod length_delimited;

use std::io;
use std::num::NonZeroUsize;

pub use delimiter::ArenaDelimiterCodec;
pub use length_delimited::{ArenaLengthDelimitedCodec, LengthDelimited, LengthDelimitedBuilder};

use crate::{AllocError, Buffer, BufferSource};

/// What a decoder does when its [`BufferSource`] has no room for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFull {
    /// Fail with an `io::Error` of kind `OutOfMemory` (the stream ends).
    #[default]
    Error,
    /// Put the frame in heap memory instead, and count it with
    /// [`BufferSource::note_spill`] (the arenas' `spill_count`).
    Spill,
}

/// A buffer for a `len`-byte frame from `source`, following `on_full`.
pub(crate) fn frame_buffer<S: BufferSource>(
    source: &S,
    len: NonZeroUsize,
    on_full: OnFull,
) -> io::Result<Buffer> {
    match source.try_allocate(len) {
        Ok(buf) => Ok(buf),
        Err(AllocError::ArenaFull) if on_full == OnFull::Spill => {
            source.note_spill();
            Ok(Buffer::heap(len.get()))
        }
        Err(e) => Err(alloc_error(e)),
    }
}

/// The `io::Error` for an allocation that failed while decoding.
pub(crate) fn alloc_error(e: AllocError) -> io::Error {
    match e {
        AllocError::RequestTooLarge { .. } => io::Error::new(io::ErrorKind::InvalidData, e),
        e => io::Error::new(io::ErrorKind::OutOfMemory, e),
    }
}

/// The error tokio_util gives for a stream that ends inside a frame.
pub(crate) fn bytes_remaining() -> io::Error {
    io::Error::other("bytes remaining on stream")
}

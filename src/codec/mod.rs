//! Drop-in `tokio_util` codecs whose frames are arena memory (feature
//! `codec`).
//!
//! | tokio_util | here | frames |
//! |---|---|---|
//! | `LengthDelimitedCodec` | [`ArenaLengthDelimitedCodec`] | copied into an arena buffer of the frame's size as they arrive |
//! | `LinesCodec` | [`ArenaLinesCodec`] | `Bytes` (no UTF-8 check), copied once the line is complete |
//! | `AnyDelimiterCodec` | [`ArenaAnyDelimiterCodec`] | copied once the chunk is complete |
//! | `BytesCodec` | [`ArenaBytesCodec`] | each read's bytes, copied into the arena |
//!
//! They implement tokio_util's `Decoder` (items are [`Bytes`](bytes::Bytes)
//! whose memory is the arena's, given back when the last clone drops) and
//! `Encoder`, so they go into `FramedRead`, `FramedWrite` and `Framed`
//! unchanged, and speak the same wire formats: either side can be the stock
//! codec. Errors are [`CodecError`], which converts to and from `io::Error`
//! with tokio_util's kinds and messages.
//!
//! # Size the arena first: a decoder cannot wait
//!
//! `Decoder::decode` is synchronous, so when the arena has no room for a
//! frame the codec cannot wait for it. [`OnFull`] says what it does instead:
//!
//! - [`OnFull::Spill`] (the default): the frame goes to the heap, counted in
//!   the arena's `spill_count`. The stream never fails for memory, as with
//!   tokio_util's codecs; heap use is bounded the way tokio_util's is, by the
//!   frames the application holds, because `FramedRead` only decodes when it
//!   is polled.
//! - [`OnFull::Error`]: the stream fails with [`CodecError::Alloc`]
//!   (`OutOfMemory` as an `io::Error`), and memory never exceeds the arena.
//!   Nothing of the frame is consumed: once memory is free, decoding again
//!   yields the same frame (see below for what `FramedRead` does).
//!
//! Either way, an arena that can hold every frame that can be alive at once
//! never spills and never fails: [`FrameBudget`] is that rule (decoders +
//! frames the application holds, times the largest frame) and checks an
//! arena against it. Size the arena with it, or use
//! `io::ArenaReader` (feature `io`), which waits for
//! memory without reading the socket: real backpressure, with no sizing rule.
//! [`LengthDelimitedBuilder::new_codec`] also refuses, at construction, a
//! `max_frame_length` the source can never hold.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::num::NonZeroUsize;
//! use arenabuf::{codec::{ArenaLengthDelimitedCodec, FrameBudget, OnFull}, FixedArena};
//! use futures::{SinkExt, StreamExt};
//!
//! let nz = |n| NonZeroUsize::new(n).unwrap();
//! // 32 connections, and the application holds at most 64 frames at once.
//! let budget = FrameBudget::new(32, 64, 4096);
//! let arena = FixedArena::builder(nz(budget.fixed_slot_count()), nz(4096)).build()?;
//! budget.check_fixed(&arena)?;
//!
//! let (client, server) = tokio::io::duplex(1024);
//! let mut rx = ArenaLengthDelimitedCodec::builder()
//!     .max_frame_length(4096)
//!     .on_full(OnFull::Error) // the arena is sized: a hard cap, never a spill
//!     .new_read(server, arena.clone())?;
//! let mut tx = ArenaLengthDelimitedCodec::builder().new_write(client)?;
//! tx.send(bytes::Bytes::from_static(b"hello")).await?;
//! assert_eq!(rx.next().await.unwrap()?, "hello");
//! # Ok(())
//! # }
//! ```
//!
//! # Errors, EOF and going on
//!
//! A decoder error leaves the decoder and the read buffer consistent, so a
//! caller may decode again: an arena error leaves the frame unconsumed, an
//! over-long delimited frame is skipped, EOF inside a length-delimited frame
//! keeps the partial frame (a stream resumed after EOF completes it, as with
//! tokio_util). Note how `FramedRead` goes on after an error: the next poll
//! returns `None`, and the one after reads the socket before decoding again,
//! so a frame that failed for memory is retried when more bytes (or EOF)
//! arrive. A caller that must retry at once drives the decoder itself.
//!
//! The one deliberate difference from tokio_util: a length-delimited stream
//! that ends right after a header is "bytes remaining on stream" here, where
//! tokio_util ends quietly. Its quiet end is an accident of its state (it
//! has consumed the header, so its read buffer is empty) and silently drops
//! a frame the peer announced; here the same EOF inside a frame is an error
//! wherever it falls. The partial frame is kept as for any EOF error, so a
//! resumed stream still completes it.
//!
//! Where a frame lives: the length-delimited codec copies a payload into
//! arena memory as it arrives and consumes it from `FramedRead`'s read
//! buffer, which therefore stays small however large the frame (a 16 MiB
//! frame never grows it past its usual few KiB). The delimiter codecs copy a
//! frame once its delimiter has arrived; until then its bytes wait in the
//! read buffer (at most `max_length` of them).

mod any_delimiter;
mod budget;
mod bytes_codec;
mod delimited;
mod error;
mod length_delimited;
mod lines;

use std::io;
use std::num::NonZeroUsize;

pub use any_delimiter::ArenaAnyDelimiterCodec;
pub use budget::FrameBudget;
pub use bytes_codec::ArenaBytesCodec;
pub use error::{CodecError, ConfigError};
pub use length_delimited::{
    ArenaLengthDelimitedCodec, LengthDelimited, LengthDelimitedBuilder, LengthFieldType,
};
pub use lines::ArenaLinesCodec;

use crate::{AllocError, Buffer, BufferSource};

/// What a decoder does when its [`BufferSource`] has no room for a frame.
///
/// See [the module docs](self#size-the-arena-first-a-decoder-cannot-wait)
/// for how to size an arena so that neither happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFull {
    /// Put the frame in heap memory instead, and count it with
    /// [`BufferSource::note_spill`] (the arenas' `spill_count`). The
    /// default: the stream never fails for memory, as with tokio_util.
    #[default]
    Spill,
    /// Fail with [`CodecError::Alloc`] (`OutOfMemory` as an `io::Error`),
    /// consuming nothing of the frame: decoding again once memory is free
    /// yields it. Memory never exceeds the arena.
    Error,
}

/// A buffer for a `len`-byte frame from `source`, following `on_full`.
pub(crate) fn frame_buffer<S: BufferSource>(
    source: &S,
    len: NonZeroUsize,
    on_full: OnFull,
) -> Result<Buffer, CodecError> {
    match source.try_allocate(len) {
        Ok(buf) => Ok(buf),
        Err(AllocError::ArenaFull) if on_full == OnFull::Spill => {
            source.note_spill();
            Ok(Buffer::heap(len.get()))
        }
        Err(e) => Err(CodecError::Alloc(e)),
    }
}

/// A frame holding a copy of `data`, from `source` (empty frames take no
/// memory).
pub(crate) fn copy_frame<S: BufferSource>(
    source: &S,
    data: &[u8],
    on_full: OnFull,
) -> Result<bytes::Bytes, CodecError> {
    let Some(len) = NonZeroUsize::new(data.len()) else {
        return Ok(bytes::Bytes::new());
    };
    let mut buf = frame_buffer(source, len, on_full)?;
    bytes::BufMut::put_slice(&mut buf, data);
    Ok(buf.freeze())
}

/// The `io::Error` for an allocation that failed while decoding.
#[cfg_attr(not(feature = "io"), allow(dead_code))]
pub(crate) fn alloc_error(e: AllocError) -> io::Error {
    CodecError::Alloc(e).into()
}

/// The error tokio_util gives for a stream that ends inside a frame.
#[cfg_attr(not(feature = "io"), allow(dead_code))]
pub(crate) fn bytes_remaining() -> io::Error {
    CodecError::BytesRemaining.into()
}

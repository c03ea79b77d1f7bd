//! Length-delimited framing: the header layout (`layout`), its builder
//! (`builder`), and the codec.

mod builder;
mod layout;

use std::num::NonZeroUsize;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use builder::{LengthDelimitedBuilder, LengthFieldType};
pub use layout::LengthDelimited;
use layout::capped_max;

use super::{CodecError, OnFull, frame_buffer};
use crate::{Buffer, BufferSource};

#[derive(Debug)]
enum State {
    Head,
    /// A frame whose header has been consumed: its buffer, filling.
    Data {
        buf: Buffer,
        remaining: usize,
    },
}

/// A `tokio_util` length-delimited codec whose frames are arena memory.
///
/// Reads and writes the same wire format as tokio_util's
/// `LengthDelimitedCodec` with the same options, so either side can be the
/// stock codec. The payload is copied into an arena buffer of the frame's
/// size as it arrives. See the [module docs](crate::codec) for sizing the
/// arena, what happens when it is full, and EOF.
///
/// Errors leave the codec able to go on: a full arena
/// ([`OnFull::Error`]) consumes nothing, so decoding again once memory is
/// free yields the same frame; EOF inside a frame
/// ([`CodecError::BytesRemaining`]) keeps the partial frame (and its arena
/// buffer, until the frame completes or the codec is dropped), so a stream
/// that resumes completes it, as with tokio_util.
///
/// `Clone` gives a codec with the same configuration and source that starts
/// at a frame boundary: a partial frame is arena memory that cannot be
/// shared, so it is not cloned (clone codecs between streams, as a
/// template, not in the middle of one).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::num::NonZeroUsize;
/// use arenabuf::{codec::ArenaLengthDelimitedCodec, FixedArena};
/// use futures::{SinkExt, StreamExt};
/// use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
///
/// let arena = FixedArena::builder(NonZeroUsize::new(64).unwrap(), NonZeroUsize::new(4096).unwrap())
///     .build()?;
/// let (client, server) = tokio::io::duplex(1024);
/// let mut tx = FramedWrite::new(client, LengthDelimitedCodec::new()); // the stock codec
/// let mut rx = FramedRead::new(server, ArenaLengthDelimitedCodec::new(arena.clone()));
/// tx.send(bytes::Bytes::from_static(b"hello")).await?;
/// let frame = rx.next().await.unwrap()?;
/// assert_eq!(frame, "hello");
/// assert_eq!(arena.metrics().live_slots, 1); // the frame is in the arena
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ArenaLengthDelimitedCodec<S> {
    layout: LengthDelimited,
    on_full: OnFull,
    source: S,
    state: State,
}

impl<S: Clone> Clone for ArenaLengthDelimitedCodec<S> {
    /// The same configuration and source, at a frame boundary (see the type's
    /// docs).
    fn clone(&self) -> Self {
        Self {
            layout: self.layout,
            on_full: self.on_full,
            source: self.source.clone(),
            state: State::Head,
        }
    }
}

impl<S: BufferSource> ArenaLengthDelimitedCodec<S> {
    /// A codec with tokio_util's defaults (4-byte big-endian length, 8 MiB
    /// maximum), allocating frames from `source`.
    ///
    /// Unlike [`LengthDelimitedBuilder::new_codec`], this does not check the
    /// maximum against the source: a frame larger than the source can hand
    /// out fails the stream with `InvalidData` when its header arrives.
    pub fn new(source: S) -> Self {
        Self {
            layout: LengthDelimited::default(),
            on_full: OnFull::default(),
            source,
            state: State::Head,
        }
    }

    /// The buffer source frames come from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The largest length field accepted (after tokio_util's capping to
    /// what the length field can express).
    pub fn max_frame_length(&self) -> usize {
        self.layout.max_frame_len
    }

    /// Changes the maximum frame length, as tokio_util's
    /// `LengthDelimitedCodec::set_max_frame_length` (capped the same way).
    pub fn set_max_frame_length(&mut self, max: usize) {
        self.layout.max_frame_len = capped_max(max, self.layout.field_len, self.layout.adjustment);
    }

    /// What the decoder does when the arena is full.
    pub fn on_full(&self) -> OnFull {
        self.on_full
    }

    /// Sets what the decoder does when the arena is full.
    pub fn set_on_full(&mut self, on_full: OnFull) {
        self.on_full = on_full;
    }

    /// The header layout.
    pub fn layout(&self) -> LengthDelimited {
        self.layout
    }
}

impl ArenaLengthDelimitedCodec<()> {
    /// Starts configuring a codec (the builder is not generic: the source
    /// is given to [`LengthDelimitedBuilder::new_codec`]).
    pub fn builder() -> LengthDelimitedBuilder {
        LengthDelimitedBuilder::default()
    }
}

impl<S: BufferSource> Decoder for ArenaLengthDelimitedCodec<S> {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        loop {
            match &mut self.state {
                State::Head => {
                    // No `reserve` here: `FramedRead` grows its buffer as
                    // it reads, and a huge `num_skip` must not allocate.
                    if src.len() < self.layout.header_len() {
                        return Ok(None);
                    }
                    let (skip, n) = self.layout.parse(src)?;
                    let Some(len) = NonZeroUsize::new(n) else {
                        src.advance(skip);
                        return Ok(Some(Bytes::new()));
                    };
                    // Allocate before consuming the header: if the arena is
                    // full, the header is still there for the next try.
                    let buf = frame_buffer(&self.source, len, self.on_full)?;
                    src.advance(skip);
                    self.state = State::Data { buf, remaining: n };
                }
                State::Data { buf, remaining } => {
                    // Move what has arrived into the frame and out of the
                    // read buffer, which so never holds more than one read.
                    let take = src.len().min(*remaining);
                    buf.put_slice(&src[..take]);
                    src.advance(take);
                    *remaining -= take;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    let State::Data { buf, .. } = std::mem::replace(&mut self.state, State::Head)
                    else {
                        unreachable!("matched Data above")
                    };
                    return Ok(Some(buf.freeze()));
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && matches!(self.state, State::Head) => Ok(None),
            // Inside a frame: the state is kept, so that a stream resumed
            // after EOF completes the frame (tokio_util keeps its state too).
            None => Err(CodecError::BytesRemaining),
        }
    }
}

impl<S> Encoder<&[u8]> for ArenaLengthDelimitedCodec<S> {
    type Error = CodecError;

    /// Writes the header and the frame, as tokio_util.
    fn encode(&mut self, data: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        self.layout.encode_header(data.len(), dst)?;
        dst.extend_from_slice(data);
        Ok(())
    }
}

impl<S> Encoder<Bytes> for ArenaLengthDelimitedCodec<S> {
    type Error = CodecError;

    /// Writes the header and the frame, as tokio_util.
    fn encode(&mut self, data: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        Encoder::<&[u8]>::encode(self, &data, dst)
    }
}

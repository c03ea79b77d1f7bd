//! Length-delimited framing: the header options, and the codec.

use std::num::NonZeroUsize;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{
    Decoder, Encoder, Framed, FramedRead, FramedWrite, LengthDelimitedCodec, length_delimited,
};

use super::{CodecError, ConfigError, OnFull, frame_buffer};
use crate::{Buffer, BufferSource};

/// The header layout of a length-delimited stream, validated.
///
/// The same options, and the same meaning, as tokio_util's
/// `length_delimited::Builder`: a length field of 1 to 8 bytes at
/// `length_field_offset`, big or little endian; the frame is `length +
/// length_adjustment` bytes starting `num_skip` bytes into the header
/// (default: right after the length field); a length field above
/// `max_frame_length` is an error. Made by [`LengthDelimitedBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthDelimited {
    offset: usize,
    field_len: usize,
    adjustment: isize,
    num_skip: usize,
    big_endian: bool,
    max_frame_len: usize,
}

impl Default for LengthDelimited {
    /// tokio_util's defaults: a 4-byte big-endian length at offset 0, no
    /// adjustment, the header skipped, frames up to 8 MiB.
    fn default() -> Self {
        LengthDelimitedBuilder::default()
            .layout()
            .expect("the default layout is valid")
    }
}

impl LengthDelimited {
    /// Starts configuring a layout (the same builder as
    /// [`ArenaLengthDelimitedCodec::builder`]).
    pub fn builder() -> LengthDelimitedBuilder {
        LengthDelimitedBuilder::default()
    }

    /// The largest frame (after `length_adjustment`) this layout accepts.
    pub(crate) fn max_payload(&self) -> usize {
        self.max_frame_len
            .saturating_add_signed(self.adjustment.max(0))
    }

    /// Bytes needed before the header can be parsed.
    pub(crate) fn header_len(&self) -> usize {
        (self.offset + self.field_len).max(self.num_skip)
    }

    /// Reads the header at the start of `src` (at least
    /// [`header_len`](Self::header_len) bytes): how many bytes to skip, and
    /// the frame length after them.
    ///
    /// Errors, as tokio_util: a length field above the maximum is
    /// [`CodecError::FrameTooBig`] (`InvalidData`); a length that under- or
    /// overflows with the adjustment is [`CodecError::LengthOverflow`]
    /// (`InvalidInput`).
    pub(crate) fn parse(&self, src: &[u8]) -> Result<(usize, usize), CodecError> {
        let mut field = &src[self.offset..self.offset + self.field_len];
        let n = if self.big_endian {
            field.get_uint(self.field_len)
        } else {
            field.get_uint_le(self.field_len)
        };
        if n > self.max_frame_len as u64 {
            return Err(CodecError::FrameTooBig {
                length: n,
                max: self.max_frame_len,
            });
        }
        let n = n as usize;
        let n = if self.adjustment < 0 {
            n.checked_sub(self.adjustment.unsigned_abs())
        } else {
            n.checked_add(self.adjustment as usize)
        };
        let n = n.ok_or(CodecError::LengthOverflow)?;
        Ok((self.num_skip, n))
    }

    /// Writes the header for a `len`-byte payload, as tokio_util's encoder
    /// does (the length field only: `length_field_offset` and `num_skip`
    /// describe what the reader skips, which the writer does not produce).
    pub(crate) fn encode_header(&self, len: usize, dst: &mut BytesMut) -> Result<(), CodecError> {
        if len > self.max_frame_len {
            return Err(CodecError::EncodeFrameTooBig {
                length: len,
                max: self.max_frame_len,
            });
        }
        let n = if self.adjustment < 0 {
            len.checked_add(self.adjustment.unsigned_abs())
        } else {
            len.checked_sub(self.adjustment as usize)
        }
        .ok_or(CodecError::LengthOverflow)?;
        if self.field_len < 8 && n as u64 >= 1u64 << (self.field_len * 8) {
            return Err(CodecError::EncodeFrameTooBig {
                length: len,
                max: self.max_frame_len,
            });
        }
        dst.reserve(self.field_len + len);
        if self.big_endian {
            dst.put_uint(n as u64, self.field_len);
        } else {
            dst.put_uint_le(n as u64, self.field_len);
        }
        Ok(())
    }
}

/// Configures length-delimited framing; from
/// [`ArenaLengthDelimitedCodec::builder`] or [`LengthDelimited::builder`].
///
/// The options and defaults are tokio_util's `length_delimited::Builder`'s:
/// a 4-byte big-endian length at offset 0, no adjustment, the header
/// skipped, frames up to 8 MiB. Setters take `&mut self`, so a builder can
/// be configured in separate statements, and it is `Copy`, so one
/// configuration can make many codecs. Where tokio_util's builder panics on
/// a bad option, this one returns a [`ConfigError`] when the codec is made.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::num::NonZeroUsize;
/// use arenabuf::{codec::ArenaLengthDelimitedCodec, BuddyArena};
/// use futures::{SinkExt, StreamExt};
///
/// let arena = BuddyArena::builder(NonZeroUsize::new(1 << 20).unwrap(), NonZeroUsize::new(64).unwrap())
///     .build()?;
/// let mut builder = ArenaLengthDelimitedCodec::builder();
/// builder.length_field_type::<u16>().little_endian();
/// if true {
///     builder.max_frame_length(60_000);
/// }
///
/// let (client, server) = tokio::io::duplex(1024);
/// let mut tx = builder.new_write(client)?; // writing needs no arena
/// let mut rx = builder.new_read(server, arena.clone())?;
/// tx.send(bytes::Bytes::from_static(b"hi")).await?;
/// tx.send(&b"there"[..]).await?;
/// assert_eq!(rx.next().await.unwrap()?, "hi");
/// assert_eq!(rx.next().await.unwrap()?, "there");
///
/// let copy = builder; // `Copy`: the same configuration
/// assert_eq!(copy.new_codec(arena)?.max_frame_length(), 60_000);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthDelimitedBuilder {
    offset: usize,
    field_len: usize,
    adjustment: isize,
    num_skip: Option<usize>,
    big_endian: bool,
    max_frame_len: usize,
    on_full: OnFull,
}

impl Default for LengthDelimitedBuilder {
    fn default() -> Self {
        Self {
            offset: 0,
            field_len: 4,
            adjustment: 0,
            num_skip: None,
            big_endian: true,
            max_frame_len: 8 * 1024 * 1024,
            on_full: OnFull::default(),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
    impl Sealed for usize {}
}

/// An integer type whose size can be a length field:
/// `u8`, `u16`, `u32`, `u64`, `usize` (for
/// [`LengthDelimitedBuilder::length_field_type`]).
pub trait LengthFieldType: sealed::Sealed {}
impl LengthFieldType for u8 {}
impl LengthFieldType for u16 {}
impl LengthFieldType for u32 {}
impl LengthFieldType for u64 {}
impl LengthFieldType for usize {}

impl LengthDelimitedBuilder {
    /// A builder with tokio_util's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the length field starts in the header (default 0).
    pub fn length_field_offset(&mut self, offset: usize) -> &mut Self {
        self.offset = offset;
        self
    }

    /// The length field's size in bytes, 1 to 8 (default 4); another size
    /// is a [`ConfigError::LengthFieldLength`] when the codec is made.
    pub fn length_field_length(&mut self, len: usize) -> &mut Self {
        self.field_len = len;
        self
    }

    /// The length field's size as that of `T`: `length_field_type::<u16>()`
    /// is a 2-byte field.
    pub fn length_field_type<T: LengthFieldType>(&mut self) -> &mut Self {
        self.length_field_length(std::mem::size_of::<T>())
    }

    /// Added to the length field to get the frame length (default 0).
    pub fn length_adjustment(&mut self, adjustment: isize) -> &mut Self {
        self.adjustment = adjustment;
        self
    }

    /// Header bytes to drop before the frame (default: up to the end of
    /// the length field).
    pub fn num_skip(&mut self, num_skip: usize) -> &mut Self {
        self.num_skip = Some(num_skip);
        self
    }

    /// Read and write the length field big-endian (the default).
    pub fn big_endian(&mut self) -> &mut Self {
        self.big_endian = true;
        self
    }

    /// Read and write the length field little-endian.
    pub fn little_endian(&mut self) -> &mut Self {
        self.big_endian = false;
        self
    }

    /// Read and write the length field in this machine's byte order.
    pub fn native_endian(&mut self) -> &mut Self {
        if cfg!(target_endian = "big") {
            self.big_endian()
        } else {
            self.little_endian()
        }
    }

    /// The largest length field accepted (default 8 MiB); a larger one is
    /// [`CodecError::FrameTooBig`] before anything is allocated. As in
    /// tokio_util, it is capped at the largest length the field can express
    /// (plus the adjustment).
    pub fn max_frame_length(&mut self, max: usize) -> &mut Self {
        self.max_frame_len = max;
        self
    }

    /// What the decoder does when the arena has no room for a frame
    /// (default [`OnFull::Spill`]). Not used by `ArenaReader`, which waits.
    pub fn on_full(&mut self, on_full: OnFull) -> &mut Self {
        self.on_full = on_full;
        self
    }

    /// Validates the layout (what `ArenaReader`'s `Framing` takes).
    ///
    /// # Errors
    ///
    /// [`ConfigError::LengthFieldLength`] for a length field that is not 1
    /// to 8 bytes, [`ConfigError::LengthFieldOffset`] for a header whose
    /// size overflows.
    pub fn layout(&self) -> Result<LengthDelimited, ConfigError> {
        if !(1..=8).contains(&self.field_len) {
            return Err(ConfigError::LengthFieldLength {
                length: self.field_len,
            });
        }
        let head = self
            .offset
            .checked_add(self.field_len)
            .ok_or(ConfigError::LengthFieldOffset {
                offset: self.offset,
            })?;
        Ok(LengthDelimited {
            offset: self.offset,
            field_len: self.field_len,
            adjustment: self.adjustment,
            num_skip: self.num_skip.unwrap_or(head),
            big_endian: self.big_endian,
            max_frame_len: capped_max(self.max_frame_len, self.field_len, self.adjustment),
        })
    }

    /// Builds the codec, allocating frames from `source`.
    ///
    /// # Errors
    ///
    /// As [`layout`](Self::layout), and
    /// [`ConfigError::FrameLargerThanSource`] when the largest frame the
    /// layout allows (`max_frame_length` plus a positive
    /// `length_adjustment`) is more than `source` can ever hand out: such
    /// frames could only fail the stream. Size the arena with
    /// [`FrameBudget`](super::FrameBudget), too.
    pub fn new_codec<S: BufferSource>(
        &self,
        source: S,
    ) -> Result<ArenaLengthDelimitedCodec<S>, ConfigError> {
        let layout = self.layout()?;
        let max_frame = layout.max_payload();
        if max_frame > source.max_len() {
            return Err(ConfigError::FrameLargerThanSource {
                max_frame,
                source_max: source.max_len(),
            });
        }
        Ok(ArenaLengthDelimitedCodec {
            layout,
            on_full: self.on_full,
            source,
            state: State::Head,
        })
    }

    /// A `FramedRead` over `io` with this codec (tokio_util's `new_read`,
    /// plus the source).
    ///
    /// # Errors
    ///
    /// As [`new_codec`](Self::new_codec).
    pub fn new_read<T, S: BufferSource>(
        &self,
        io: T,
        source: S,
    ) -> Result<FramedRead<T, ArenaLengthDelimitedCodec<S>>, ConfigError> {
        Ok(FramedRead::new(io, self.new_codec(source)?))
    }

    /// A `Framed` over `io` with this codec (tokio_util's `new_framed`,
    /// plus the source).
    ///
    /// # Errors
    ///
    /// As [`new_codec`](Self::new_codec).
    pub fn new_framed<T, S: BufferSource>(
        &self,
        io: T,
        source: S,
    ) -> Result<Framed<T, ArenaLengthDelimitedCodec<S>>, ConfigError> {
        Ok(Framed::new(io, self.new_codec(source)?))
    }

    /// A `FramedWrite` over `io` writing this layout. Writing takes no arena
    /// memory, so this is tokio_util's own `LengthDelimitedCodec`, configured
    /// the same (see [`tokio_builder`](Self::tokio_builder)); it takes
    /// `Bytes` and `&[u8]` frames.
    ///
    /// # Errors
    ///
    /// As [`layout`](Self::layout).
    pub fn new_write<T>(&self, io: T) -> Result<FramedWrite<T, LengthDelimitedCodec>, ConfigError> {
        Ok(FramedWrite::new(io, self.tokio_builder()?.new_codec()))
    }

    /// tokio_util's builder with the same options, for a peer that uses the
    /// stock codec.
    ///
    /// # Errors
    ///
    /// As [`layout`](Self::layout) (where tokio_util's builder would panic).
    pub fn tokio_builder(&self) -> Result<length_delimited::Builder, ConfigError> {
        let layout = self.layout()?;
        let mut b = LengthDelimitedCodec::builder();
        b.length_field_offset(layout.offset)
            .length_field_length(layout.field_len)
            .length_adjustment(layout.adjustment)
            .num_skip(layout.num_skip)
            .max_frame_length(layout.max_frame_len);
        if layout.big_endian {
            b.big_endian();
        } else {
            b.little_endian();
        }
        Ok(b)
    }
}

/// The maximum frame length as tokio_util's builder applies it: no larger
/// than the largest value the length field can hold, plus the adjustment
/// (so both codecs reject the same headers and refuse the same frames).
fn capped_max(max: usize, field_len: usize, adjustment: isize) -> usize {
    let field_max = match 1u64.checked_shl(8 * field_len as u32) {
        Some(shl) => shl - 1,
        None => u64::MAX,
    };
    let allowed = field_max.saturating_add_signed(adjustment as i64);
    max.min(usize::try_from(allowed).unwrap_or(usize::MAX))
}

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

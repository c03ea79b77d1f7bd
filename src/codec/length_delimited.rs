//! Length-delimited framing: the header options, and the codec.

use std::io;
use std::num::NonZeroUsize;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{OnFull, bytes_remaining, frame_buffer};
use crate::{Buffer, BufferSource, BuildError};

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

    /// Bytes needed before the header can be parsed.
    pub(crate) fn header_len(&self) -> usize {
        (self.offset + self.field_len).max(self.num_skip)
    }

    /// The longest payload a header may announce: the maximum frame length
    /// with the adjustment applied (what the `io` reader checks against its
    /// source when it is built).
    #[cfg(feature = "io")]
    pub(crate) fn max_payload_len(&self) -> usize {
        self.max_frame_len.saturating_add_signed(self.adjustment)
    }

    /// Reads the header at the start of `src` (at least
    /// [`header_len`](Self::header_len) bytes): how many bytes to skip, and
    /// the frame length after them.
    ///
    /// Errors, as tokio_util: a length field above the maximum is
    /// `InvalidData` ("frame size too big"); a length that under- or
    /// overflows with the adjustment is `InvalidInput`.
    pub(crate) fn parse(&self, src: &[u8]) -> io::Result<(usize, usize)> {
        let mut field = &src[self.offset..self.offset + self.field_len];
        let n = if self.big_endian {
            field.get_uint(self.field_len)
        } else {
            field.get_uint_le(self.field_len)
        };
        if n > self.max_frame_len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame size too big: length field says {n} bytes, the maximum is {}",
                    self.max_frame_len
                ),
            ));
        }
        let n = n as usize;
        let n = if self.adjustment < 0 {
            n.checked_sub(self.adjustment.unsigned_abs())
        } else {
            n.checked_add(self.adjustment as usize)
        };
        let n = n.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "provided length would overflow after adjustment",
            )
        })?;
        Ok((self.num_skip, n))
    }

    /// Writes the header for a `len`-byte payload, as tokio_util's encoder
    /// does (the length field only: `length_field_offset` and `num_skip`
    /// describe what the reader skips, which the writer does not produce).
    pub(crate) fn encode_header(&self, len: usize, dst: &mut BytesMut) -> io::Result<()> {
        if len > self.max_frame_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {len} bytes is over the maximum frame length {}",
                    self.max_frame_len
                ),
            ));
        }
        let n = if self.adjustment < 0 {
            len.checked_add(self.adjustment.unsigned_abs())
        } else {
            len.checked_sub(self.adjustment as usize)
        }
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "provided length would overflow after adjustment",
            )
        })?;
        if self.field_len < 8 && n as u64 >= 1u64 << (self.field_len * 8) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {len} bytes does not fit a {}-byte length field",
                    self.field_len
                ),
            ));
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
/// [`ArenaLengthDelimitedCodec::builder`].
///
/// Defaults are tokio_util's: a 4-byte big-endian length at offset 0, no
/// adjustment, the header skipped, frames up to 8 MiB.
#[derive(Debug, Clone)]
#[must_use]
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
            on_full: OnFull::Error,
        }
    }
}

impl LengthDelimitedBuilder {
    /// Where the length field starts in the header (default 0).
    pub fn length_field_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// The length field's size in bytes, 1 to 8 (default 4).
    pub fn length_field_length(mut self, len: usize) -> Self {
        self.field_len = len;
        self
    }

    /// Added to the length field to get the frame length (default 0).
    pub fn length_adjustment(mut self, adjustment: isize) -> Self {
        self.adjustment = adjustment;
        self
    }

    /// Header bytes to drop before the frame (default: up to the end of
    /// the length field).
    pub fn num_skip(mut self, num_skip: usize) -> Self {
        self.num_skip = Some(num_skip);
        self
    }

    /// Read and write the length field big-endian (the default).
    pub fn big_endian(mut self) -> Self {
        self.big_endian = true;
        self
    }

    /// Read and write the length field little-endian.
    pub fn little_endian(mut self) -> Self {
        self.big_endian = false;
        self
    }

    /// Read and write the length field in this machine's byte order.
    pub fn native_endian(self) -> Self {
        if cfg!(target_endian = "big") {
            self.big_endian()
        } else {
            self.little_endian()
        }
    }

    /// The largest length field accepted (default 8 MiB); a larger one is
    /// an `InvalidData` error before anything is allocated. As in
    /// tokio_util, it is capped at the largest length the field can express
    /// (plus the adjustment).
    pub fn max_frame_length(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// What the codec does when the arena has no room for a frame (default
    /// [`OnFull::Error`]). Not used by `ArenaReader`, which waits.
    pub fn on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// Validates the layout.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidFraming`] for a length field that is not 1 to
    /// 8 bytes, or a header whose size overflows.
    pub fn layout(&self) -> Result<LengthDelimited, BuildError> {
        if !(1..=8).contains(&self.field_len) {
            return Err(BuildError::InvalidFraming {
                reason: format!(
                    "length_field_length must be 1 to 8 bytes, not {}",
                    self.field_len
                ),
            });
        }
        let head =
            self.offset
                .checked_add(self.field_len)
                .ok_or_else(|| BuildError::InvalidFraming {
                    reason: format!("length_field_offset {} overflows", self.offset),
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
    /// As [`layout`](Self::layout).
    pub fn new_codec<S: BufferSource>(
        &self,
        source: S,
    ) -> Result<ArenaLengthDelimitedCodec<S>, BuildError> {
        Ok(ArenaLengthDelimitedCodec {
            layout: self.layout()?,
            on_full: self.on_full,
            source,
            state: State::Head,
        })
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
    Data { buf: Buffer, remaining: usize },
}

/// A `tokio_util` length-delimited codec whose frames are arena memory.
///
/// Reads and writes the same wire format as tokio_util's
/// `LengthDelimitedCodec` with the same options, so either side can be the
/// stock codec. See the [module docs](crate::codec) for how frames are
/// stored and what happens when the arena is full.
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

impl<S: BufferSource> ArenaLengthDelimitedCodec<S> {
    /// A codec with tokio_util's defaults (4-byte big-endian length, 8 MiB
    /// maximum), allocating frames from `source`.
    pub fn new(source: S) -> Self {
        Self {
            layout: LengthDelimited::default(),
            on_full: OnFull::Error,
            source,
            state: State::Head,
        }
    }

    /// Starts configuring a codec.
    pub fn builder() -> LengthDelimitedBuilder {
        LengthDelimitedBuilder::default()
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
}

impl<S: BufferSource> Decoder for ArenaLengthDelimitedCodec<S> {
    type Item = Bytes;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        loop {
            match &mut self.state {
                State::Head => {
                    // No `reserve` here: `FramedRead` grows its buffer as
                    // it reads, and a huge `num_skip` must not allocate.
                    if src.len() < self.layout.header_len() {
                        return Ok(None);
                    }
                    let (skip, n) = self.layout.parse(src)?;
                    src.advance(skip);
                    let Some(len) = NonZeroUsize::new(n) else {
                        return Ok(Some(Bytes::new()));
                    };
                    let buf = frame_buffer(&self.source, len, self.on_full)?;
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

    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && matches!(self.state, State::Head) => Ok(None),
            None => {
                // Give the partial frame's memory back now.
                self.state = State::Head;
                Err(bytes_remaining())
            }
        }
    }
}

impl<S> Encoder<Bytes> for ArenaLengthDelimitedCodec<S> {
    type Error = io::Error;

    fn encode(&mut self, data: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        self.layout.encode_header(data.len(), dst)?;
        dst.extend_from_slice(&data);
        Ok(())
    }
}

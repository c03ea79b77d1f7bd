//! [`LengthDelimitedBuilder`]: tokio_util's options, checked when a codec
//! is made.

use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec, length_delimited};

use super::layout::capped_max;
use super::{ArenaLengthDelimitedCodec, LengthDelimited, State};
use crate::BufferSource;
use crate::codec::{ConfigError, OnFull};

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
    /// [`CodecError::FrameTooBig`](crate::codec::CodecError::FrameTooBig) before anything is allocated. As in
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
        let head =
            self.offset
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
    /// [`FrameBudget`](crate::codec::FrameBudget), too.
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

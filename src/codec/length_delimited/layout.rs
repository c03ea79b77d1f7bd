//! [`LengthDelimited`]: the header layout, validated; reading and writing
//! headers.

use bytes::{Buf, BufMut, BytesMut};

use super::LengthDelimitedBuilder;
use crate::codec::CodecError;

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
    pub(super) offset: usize,
    pub(super) field_len: usize,
    pub(super) adjustment: isize,
    pub(super) num_skip: usize,
    pub(super) big_endian: bool,
    pub(super) max_frame_len: usize,
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
    /// [`ArenaLengthDelimitedCodec::builder`](crate::codec::ArenaLengthDelimitedCodec::builder)).
    pub fn builder() -> LengthDelimitedBuilder {
        LengthDelimitedBuilder::default()
    }

    /// The largest frame (after `length_adjustment`) this layout accepts.
    pub(crate) fn max_payload(&self) -> usize {
        self.max_frame_len
            .saturating_add_signed(self.adjustment.max(0))
    }

    /// The longest payload a header may announce: the maximum frame length
    /// with the adjustment applied (what the `io` reader checks against its
    /// source when it is built).
    #[cfg(feature = "io")]
    pub(crate) fn max_payload_len(&self) -> usize {
        self.max_frame_len.saturating_add_signed(self.adjustment)
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

/// The maximum frame length as tokio_util's builder applies it: no larger
/// than the largest value the length field can hold, plus the adjustment
/// (so both codecs reject the same headers and refuse the same frames).
pub(super) fn capped_max(max: usize, field_len: usize, adjustment: isize) -> usize {
    let field_max = match 1u64.checked_shl(8 * field_len as u32) {
        Some(shl) => shl - 1,
        None => u64::MAX,
    };
    let allowed = field_max.saturating_add_signed(adjustment as i64);
    max.min(usize::try_from(allowed).unwrap_or(usize::MAX))
}

//! [`FrameDecoder`]: where frames begin and end in the bytes read, and the
//! built-in framings ([`Framing`]) implemented on it.

use std::io;
use std::ops::Range;

use crate::codec::{LengthDelimited, bytes_remaining};

/// Finds frame boundaries in the bytes a [`Frames`](super::Frames) stream
/// has read: the hook for protocols with a header of their own (RESP,
/// Kafka, a TLV format).
///
/// The reader calls [`decode`](Self::decode) with the bytes read and not
/// yet framed, starting at a frame boundary, and cuts what it answers out of
/// arena memory itself: a decoder only computes offsets, never copies. Where
/// a frame lives (a slice of the chunk it arrived in, a right-sized copy, or
/// a buffer of its own, read into straight from the socket) is the reader's
/// choice; see the [module docs](crate::io#what-a-held-frame-costs).
///
/// A TLV format (a 1-byte tag, a 2-byte big-endian length, the value; the
/// frame is the value):
///
/// ```
/// use std::{io, ops::Range};
/// use arenabuf::io::{Decoded, FrameDecoder};
///
/// struct Tlv;
///
/// impl FrameDecoder for Tlv {
///     fn decode(&mut self, data: &[u8]) -> io::Result<Decoded> {
///         let Some(head) = data.get(..3) else {
///             return Ok(Decoded::Incomplete { min_len: 3 });
///         };
///         let len = u16::from_be_bytes([head[1], head[2]]) as usize;
///         let (payload, next) = (3..3 + len, 3 + len);
///         Ok(if data.len() >= next {
///             Decoded::Frame { payload, next }
///         } else {
///             Decoded::Header { payload, next }
///         })
///     }
///
///     fn max_frame_length(&self) -> Option<usize> {
///         Some(u16::MAX as usize)
///     }
/// }
///
/// assert_eq!(
///     Tlv.decode(&[7, 0, 2, b'h', b'i', 9]).unwrap(),
///     Decoded::Frame { payload: 3..5, next: 5 },
/// );
/// ```
pub trait FrameDecoder {
    /// Looks at `data` (at least one byte, starting at a frame boundary)
    /// and says where the first frame is, or how much more is needed.
    ///
    /// # Errors
    ///
    /// Bad input (a length over the maximum, a malformed header): the
    /// stream yields the error and ends. Use `InvalidData` as tokio_util's
    /// decoders do.
    fn decode(&mut self, data: &[u8]) -> io::Result<Decoded>;

    /// At the end of the stream, with `rest` (not empty) left unframed:
    /// the range of one last frame, or `None` for none.
    ///
    /// # Errors
    ///
    /// The default is tokio_util's "bytes remaining on stream" error, for
    /// framings where a stream must end on a frame boundary.
    fn decode_eof(&mut self, rest: &[u8]) -> io::Result<Option<Range<usize>>> {
        let _ = rest;
        Err(bytes_remaining())
    }

    /// The largest payload a frame can have, in bytes, if the framing bounds
    /// it. A reader is not built (`ReaderError::FrameTooLarge`) when this is
    /// more than its source can hand out in one buffer; `None` leaves the
    /// check to each frame (`InvalidData` when one does not fit).
    fn max_frame_length(&self) -> Option<usize> {
        None
    }
}

/// What a [`FrameDecoder`] found at the start of the bytes read. Offsets are
/// from the start of those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decoded {
    /// A whole frame: its payload is `data[payload]`, and the next frame
    /// starts at `next` (`payload.end <= next`; the bytes between are
    /// dropped, a delimiter or trailer).
    Frame {
        /// Where the frame's payload is.
        payload: Range<usize>,
        /// Where the next frame starts.
        next: usize,
    },
    /// A header is complete but the frame is not: once `next` bytes have
    /// arrived, the payload will be `data[payload]`. The reader may read
    /// the payload straight into a buffer of exactly its size; the bytes
    /// between `payload.end` and `next` are then skipped unseen.
    Header {
        /// Where the frame's payload will be.
        payload: Range<usize>,
        /// Where the next frame starts.
        next: usize,
    },
    /// Not enough bytes to tell: call again with at least `min_len` bytes
    /// (more than `data.len()`).
    Incomplete {
        /// The fewest bytes worth decoding again.
        min_len: usize,
    },
}

/// The built-in framings: length-delimited (tokio_util's wire format, any of
/// its header options) and delimiter/lines. Each implements
/// [`FrameDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LengthDelimited(LengthDelimited),
    Delimiter {
        delimiter: u8,
        strip_cr: bool,
        max_length: usize,
    },
}

impl Framing {
    /// Length-delimited frames, with the same header options as
    /// [`ArenaLengthDelimitedCodec`](crate::codec::ArenaLengthDelimitedCodec)
    /// (make the layout with its builder; `max_frame_length` must not be
    /// more than the reader's source can hand out in one buffer).
    pub fn length_delimited(layout: LengthDelimited) -> Self {
        Self(Kind::LengthDelimited(layout))
    }

    /// Frames ended by `delimiter` (not included), at most `max_length`
    /// bytes (which must not be more than the reader's source can hand out
    /// in one buffer); at EOF, bytes after the last delimiter are one last
    /// frame.
    pub fn delimiter(delimiter: u8, max_length: usize) -> Self {
        Self(Kind::Delimiter {
            delimiter,
            strip_cr: false,
            max_length,
        })
    }

    /// Lines ended by `\n`, a trailing `\r` dropped, at most `max_length`
    /// bytes (as [`delimiter`](Self::delimiter)).
    pub fn lines(max_length: usize) -> Self {
        Self(Kind::Delimiter {
            delimiter: b'\n',
            strip_cr: true,
            max_length,
        })
    }
}

impl FrameDecoder for LengthDelimited {
    fn decode(&mut self, data: &[u8]) -> io::Result<Decoded> {
        let head = self.header_len();
        if data.len() < head {
            return Ok(Decoded::Incomplete { min_len: head });
        }
        let (skip, n) = self.parse(data)?;
        let next = skip.checked_add(n).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "frame length overflows usize")
        })?;
        let payload = skip..next;
        Ok(if data.len() >= next {
            Decoded::Frame { payload, next }
        } else {
            Decoded::Header { payload, next }
        })
    }

    fn max_frame_length(&self) -> Option<usize> {
        Some(self.max_payload_len())
    }
}

impl FrameDecoder for Framing {
    fn decode(&mut self, data: &[u8]) -> io::Result<Decoded> {
        match &mut self.0 {
            Kind::LengthDelimited(layout) => layout.decode(data),
            &mut Kind::Delimiter {
                delimiter,
                strip_cr,
                max_length,
            } => {
                let search = &data[..data.len().min(max_length.saturating_add(1))];
                match search.iter().position(|&b| b == delimiter) {
                    Some(at) => {
                        let end = if strip_cr && at > 0 && data[at - 1] == b'\r' {
                            at - 1
                        } else {
                            at
                        };
                        Ok(Decoded::Frame {
                            payload: 0..end,
                            next: at + 1,
                        })
                    }
                    None if data.len() > max_length => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("frame longer than the maximum of {max_length} bytes"),
                    )),
                    None => Ok(Decoded::Incomplete {
                        min_len: data.len() + 1,
                    }),
                }
            }
        }
    }

    fn decode_eof(&mut self, rest: &[u8]) -> io::Result<Option<Range<usize>>> {
        match self.0 {
            Kind::LengthDelimited(_) => Err(bytes_remaining()),
            Kind::Delimiter { strip_cr, .. } => {
                let end = if strip_cr && rest.ends_with(b"\r") {
                    rest.len() - 1
                } else {
                    rest.len()
                };
                Ok((end > 0).then_some(0..end))
            }
        }
    }

    fn max_frame_length(&self) -> Option<usize> {
        match &self.0 {
            Kind::LengthDelimited(layout) => layout.max_frame_length(),
            Kind::Delimiter { max_length, .. } => Some(*max_length),
        }
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests {
    use super::*;

    #[test]
    fn length_delimited_header_then_frame() {
        let mut f = Framing::length_delimited(LengthDelimited::default());
        assert_eq!(
            f.decode(&[0, 0]).unwrap(),
            Decoded::Incomplete { min_len: 4 }
        );
        assert_eq!(
            f.decode(&[0, 0, 0, 3, b'a']).unwrap(),
            Decoded::Header {
                payload: 4..7,
                next: 7
            }
        );
        assert_eq!(
            f.decode(&[0, 0, 0, 3, b'a', b'b', b'c', 9]).unwrap(),
            Decoded::Frame {
                payload: 4..7,
                next: 7
            }
        );
    }

    #[test]
    fn lines_strip_cr_and_eof() {
        let mut f = Framing::lines(8);
        assert_eq!(
            f.decode(b"ab\r\ncd").unwrap(),
            Decoded::Frame {
                payload: 0..2,
                next: 4
            }
        );
        assert_eq!(
            f.decode(b"12345678").unwrap(),
            Decoded::Incomplete { min_len: 9 }
        );
        assert!(f.decode(b"123456789").is_err());
        assert_eq!(f.decode_eof(b"cd\r").unwrap(), Some(0..2));
        assert_eq!(f.max_frame_length(), Some(8));
    }
}

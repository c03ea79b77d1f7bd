//! Delimiter framing: lines, or frames ended by any byte.

use std::io;
use std::num::NonZeroUsize;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{OnFull, frame_buffer};
use crate::BufferSource;

/// A `tokio_util` codec for frames ended by a delimiter byte, whose frames
/// are arena memory.
///
/// [`lines`](Self::lines) behaves as tokio_util's `LinesCodec` (frames end at
/// `\n`, a trailing `\r` is dropped) but yields `Bytes` instead of `String`
/// and does not check UTF-8. As there: a frame longer than `max_length` is an
/// `InvalidData` error, after which the decoder skips to the next delimiter
/// and goes on; at EOF, bytes after the last delimiter are one last frame.
///
/// A frame's length is known once its delimiter arrives, so the frame is
/// copied into an arena buffer of exactly that size then; until then its
/// bytes wait in the read buffer (at most `max_length` of them).
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{codec::ArenaDelimiterCodec, BuddyArena};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let arena = BuddyArena::builder(NonZeroUsize::new(1 << 16).unwrap(), NonZeroUsize::new(64).unwrap())
///     .build()?;
/// let mut codec = ArenaDelimiterCodec::lines(arena).max_length(1024);
/// let mut input = BytesMut::from("GET / HTTP/1.1\r\nHost: a\r\n");
/// assert_eq!(codec.decode(&mut input)?.unwrap(), "GET / HTTP/1.1");
/// assert_eq!(codec.decode(&mut input)?.unwrap(), "Host: a");
/// assert_eq!(codec.decode(&mut input)?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ArenaDelimiterCodec<S> {
    source: S,
    delimiter: u8,
    strip_cr: bool,
    max_length: usize,
    on_full: OnFull,
    /// How far the read buffer was searched without finding a delimiter.
    next_index: usize,
    /// Skipping the rest of an over-long frame.
    discarding: bool,
}

impl<S: BufferSource> ArenaDelimiterCodec<S> {
    /// Frames ended by `delimiter` (not included in the frame), of any
    /// length up to the source's [`max_len`](BufferSource::max_len).
    pub fn new(source: S, delimiter: u8) -> Self {
        Self {
            max_length: source.max_len(),
            source,
            delimiter,
            strip_cr: false,
            on_full: OnFull::Error,
            next_index: 0,
            discarding: false,
        }
    }

    /// Lines: frames ended by `\n`, with a trailing `\r` dropped.
    pub fn lines(source: S) -> Self {
        Self {
            strip_cr: true,
            ..Self::new(source, b'\n')
        }
    }

    /// The longest frame accepted (without its delimiter); longer ones are
    /// an error and skipped. At most the source's `max_len`.
    #[must_use]
    pub fn max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length.min(self.source.max_len());
        self
    }

    /// What to do when the arena has no room for a frame (default
    /// [`OnFull::Error`]).
    #[must_use]
    pub fn on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// The buffer source frames come from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Copies `line` (delimiter already removed) into arena memory.
    fn frame(&self, mut line: &[u8]) -> io::Result<Bytes> {
        if self.strip_cr {
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
        }
        let Some(len) = NonZeroUsize::new(line.len()) else {
            return Ok(Bytes::new());
        };
        let mut buf = frame_buffer(&self.source, len, self.on_full)?;
        buf.put_slice(line);
        Ok(buf.freeze())
    }
}

impl<S: BufferSource> Decoder for ArenaDelimiterCodec<S> {
    type Item = Bytes;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        loop {
            let read_to = src.len().min(self.max_length.saturating_add(1));
            let found = src[self.next_index..read_to]
                .iter()
                .position(|&b| b == self.delimiter)
                .map(|i| i + self.next_index);
            match (self.discarding, found) {
                (true, Some(at)) => {
                    src.advance(at + 1);
                    self.discarding = false;
                    self.next_index = 0;
                }
                (true, None) => {
                    src.advance(read_to);
                    self.next_index = 0;
                    if src.is_empty() {
                        return Ok(None);
                    }
                }
                (false, Some(at)) => {
                    self.next_index = 0;
                    let frame = self.frame(&src[..at]);
                    src.advance(at + 1);
                    return frame.map(Some);
                }
                (false, None) if src.len() > self.max_length => {
                    self.discarding = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "frame longer than the maximum of {} bytes; skipping to the next delimiter",
                            self.max_length
                        ),
                    ));
                }
                (false, None) => {
                    self.next_index = read_to;
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        self.next_index = 0;
        if src.is_empty() || (self.strip_cr && src[..] == b"\r"[..]) {
            return Ok(None);
        }
        let frame = self.frame(&src[..]);
        src.clear();
        frame.map(Some)
    }
}

impl<S> Encoder<Bytes> for ArenaDelimiterCodec<S> {
    type Error = io::Error;

    /// Writes the frame and the delimiter (`\n` for lines).
    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        dst.reserve(frame.len() + 1);
        dst.extend_from_slice(&frame);
        dst.put_u8(self.delimiter);
        Ok(())
    }
}

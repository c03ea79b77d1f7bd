//! Lines: tokio_util's `LinesCodec`, with frames in arena memory.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::delimited::{ByteSet, Scanner};
use super::{CodecError, OnFull, copy_frame};
use crate::BufferSource;

/// A `tokio_util` codec for lines, whose lines are arena memory.
///
/// Behaves as tokio_util's `LinesCodec`: a line ends at `\n`, a `\r` before
/// it is dropped, a line longer than [`max_length`](Self::max_length) is
/// [`CodecError::MaxLengthExceeded`] after which decoding goes on with the
/// next line, and at EOF the bytes after the last `\n` are one last line
/// (unless they are a lone `\r`). It yields `Bytes` instead of `String` (the
/// line is arena memory) and does not check UTF-8; use
/// `std::str::from_utf8(&line)` where that matters. A line is copied into an
/// arena buffer of exactly its size once its `\n` arrives; until then its
/// bytes wait in the read buffer (at most `max_length + 1` of them are
/// searched).
///
/// The encoder writes the line and `\n`, from `&str`, `String`, `&[u8]` or
/// `Bytes`.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{codec::ArenaLinesCodec, BuddyArena};
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let arena = BuddyArena::builder(NonZeroUsize::new(1 << 16).unwrap(), NonZeroUsize::new(64).unwrap())
///     .build()?;
/// let mut codec = ArenaLinesCodec::new_with_max_length(arena, 1024);
/// assert_eq!(codec.max_length(), 1024);
/// let mut input = BytesMut::from("GET / HTTP/1.1\r\nHost: a\r\n");
/// assert_eq!(codec.decode(&mut input)?.unwrap(), "GET / HTTP/1.1");
/// assert_eq!(codec.decode(&mut input)?.unwrap(), "Host: a");
/// assert_eq!(codec.decode(&mut input)?, None);
///
/// let mut out = BytesMut::new();
/// codec.encode("hello", &mut out)?;
/// assert_eq!(out, "hello\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ArenaLinesCodec<S> {
    source: S,
    scanner: Scanner,
    on_full: OnFull,
}

impl<S: BufferSource> ArenaLinesCodec<S> {
    /// Lines of any length up to the source's
    /// [`max_len`](BufferSource::max_len) (tokio_util's `new()` has no limit;
    /// a line the source can never hold is skipped as over-long).
    pub fn new(source: S) -> Self {
        Self::new_with_max_length(source, usize::MAX)
    }

    /// Lines of at most `max_length` bytes (without the `\n`, with any
    /// `\r`), and at most the source's [`max_len`](BufferSource::max_len).
    pub fn new_with_max_length(source: S, max_length: usize) -> Self {
        Self {
            scanner: Scanner::new(max_length.min(source.max_len())),
            source,
            on_full: OnFull::default(),
        }
    }

    /// The longest line accepted: the `max_length` given, capped at the
    /// source's `max_len`.
    pub fn max_length(&self) -> usize {
        self.scanner.max_length
    }

    /// What the decoder does when the arena is full (default
    /// [`OnFull::Spill`]).
    pub fn on_full(&self) -> OnFull {
        self.on_full
    }

    /// Sets what the decoder does when the arena is full.
    pub fn set_on_full(&mut self, on_full: OnFull) {
        self.on_full = on_full;
    }

    /// The buffer source lines come from.
    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<S: BufferSource + Default> Default for ArenaLinesCodec<S> {
    /// Lines from `S::default()`, as [`new`](Self::new).
    fn default() -> Self {
        Self::new(S::default())
    }
}

fn without_carriage_return(line: &[u8]) -> &[u8] {
    match line {
        [rest @ .., b'\r'] => rest,
        line => line,
    }
}

const NEWLINE: ByteSet = ByteSet::new(b"\n");

impl<S: BufferSource> Decoder for ArenaLinesCodec<S> {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let Some(at) = self.scanner.find(src, &NEWLINE)? else {
            return Ok(None);
        };
        // Copy first: if the arena is full, the line stays where it is.
        let line = copy_frame(
            &self.source,
            without_carriage_return(&src[..at]),
            self.on_full,
        )?;
        self.scanner.consumed(src, at);
        Ok(Some(line))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if let Some(line) = self.decode(src)? {
            return Ok(Some(line));
        }
        self.scanner.at_eof();
        if src.is_empty() || src[..] == b"\r"[..] {
            return Ok(None);
        }
        let line = copy_frame(&self.source, without_carriage_return(src), self.on_full)?;
        src.clear();
        Ok(Some(line))
    }
}

impl<S> ArenaLinesCodec<S> {
    fn write_line(line: &[u8], dst: &mut BytesMut) {
        dst.reserve(line.len() + 1);
        dst.put_slice(line);
        dst.put_u8(b'\n');
    }
}

impl<S> Encoder<&str> for ArenaLinesCodec<S> {
    type Error = CodecError;

    /// Writes the line and `\n`.
    fn encode(&mut self, line: &str, dst: &mut BytesMut) -> Result<(), CodecError> {
        Self::write_line(line.as_bytes(), dst);
        Ok(())
    }
}

impl<S> Encoder<String> for ArenaLinesCodec<S> {
    type Error = CodecError;

    /// Writes the line and `\n`.
    fn encode(&mut self, line: String, dst: &mut BytesMut) -> Result<(), CodecError> {
        Self::write_line(line.as_bytes(), dst);
        Ok(())
    }
}

impl<S> Encoder<&[u8]> for ArenaLinesCodec<S> {
    type Error = CodecError;

    /// Writes the line and `\n`.
    fn encode(&mut self, line: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        Self::write_line(line, dst);
        Ok(())
    }
}

impl<S> Encoder<Bytes> for ArenaLinesCodec<S> {
    type Error = CodecError;

    /// Writes the line and `\n`.
    fn encode(&mut self, line: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        Self::write_line(&line, dst);
        Ok(())
    }
}

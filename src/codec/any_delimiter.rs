//! Chunks ended by any of several bytes: tokio_util's `AnyDelimiterCodec`,
//! with chunks in arena memory.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::delimited::{ByteSet, Scanner};
use super::{CodecError, OnFull, copy_frame};
use crate::BufferSource;

/// The delimiters tokio_util's `AnyDelimiterCodec::default()` seeks.
const DEFAULT_SEEK_DELIMITERS: &[u8] = b",;\n\r";
/// What tokio_util's `AnyDelimiterCodec::default()` writes after a chunk.
const DEFAULT_SEQUENCE_WRITER: &[u8] = b",";

/// A `tokio_util` codec for chunks ended by any of several delimiter bytes,
/// whose chunks are arena memory.
///
/// Behaves as tokio_util's `AnyDelimiterCodec`: the decoder cuts a chunk at
/// the first of the `seek_delimiters` (the delimiter is not part of it), a
/// chunk longer than [`max_length`](Self::max_length) is
/// [`CodecError::MaxLengthExceeded`] after which decoding goes on with the
/// next chunk, and at EOF the bytes after the last delimiter are one last
/// chunk. The encoder writes the chunk followed by the `sequence_writer`
/// bytes, from `&str`, `String`, `&[u8]` or `Bytes`. A chunk is copied into
/// an arena buffer of exactly its size once its delimiter arrives.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{codec::ArenaAnyDelimiterCodec, FixedArena};
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let arena = FixedArena::builder(NonZeroUsize::new(16).unwrap(), NonZeroUsize::new(256).unwrap())
///     .build()?;
/// // Read chunks ended by `,` or `;`, write them ended by `;`.
/// let mut codec = ArenaAnyDelimiterCodec::new(arena, b",;".to_vec(), b";".to_vec());
/// let mut input = BytesMut::from("a,bc;d");
/// assert_eq!(codec.decode(&mut input)?.unwrap(), "a");
/// assert_eq!(codec.decode(&mut input)?.unwrap(), "bc");
/// assert_eq!(codec.decode(&mut input)?, None);
/// assert_eq!(codec.decode_eof(&mut input)?.unwrap(), "d");
///
/// let mut out = BytesMut::new();
/// codec.encode("x", &mut out)?;
/// assert_eq!(out, "x;");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ArenaAnyDelimiterCodec<S> {
    source: S,
    scanner: Scanner,
    seek: ByteSet,
    seek_delimiters: Vec<u8>,
    sequence_writer: Vec<u8>,
    on_full: OnFull,
}

impl<S: BufferSource> ArenaAnyDelimiterCodec<S> {
    /// Chunks ended by any byte of `seek_delimiters`, written followed by
    /// `sequence_writer`, of any length up to the source's
    /// [`max_len`](BufferSource::max_len) (tokio_util's `new()` has no
    /// limit; a chunk the source can never hold is skipped as over-long).
    pub fn new(source: S, seek_delimiters: Vec<u8>, sequence_writer: Vec<u8>) -> Self {
        Self::new_with_max_length(source, seek_delimiters, sequence_writer, usize::MAX)
    }

    /// As [`new`](Self::new), with chunks of at most `max_length` bytes (and
    /// at most the source's `max_len`).
    pub fn new_with_max_length(
        source: S,
        seek_delimiters: Vec<u8>,
        sequence_writer: Vec<u8>,
        max_length: usize,
    ) -> Self {
        Self {
            scanner: Scanner::new(max_length.min(source.max_len())),
            source,
            seek: ByteSet::new(&seek_delimiters),
            seek_delimiters,
            sequence_writer,
            on_full: OnFull::default(),
        }
    }

    /// The longest chunk accepted: the `max_length` given, capped at the
    /// source's `max_len`.
    pub fn max_length(&self) -> usize {
        self.scanner.max_length
    }

    /// The bytes that end a chunk when decoding.
    pub fn seek_delimiters(&self) -> &[u8] {
        &self.seek_delimiters
    }

    /// The bytes written after each chunk when encoding.
    pub fn sequence_writer(&self) -> &[u8] {
        &self.sequence_writer
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

    /// The buffer source chunks come from.
    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<S: BufferSource + Default> Default for ArenaAnyDelimiterCodec<S> {
    /// tokio_util's defaults: seek `,` `;` `\n` `\r`, write `,`; chunks
    /// from `S::default()`.
    fn default() -> Self {
        Self::new(
            S::default(),
            DEFAULT_SEEK_DELIMITERS.to_vec(),
            DEFAULT_SEQUENCE_WRITER.to_vec(),
        )
    }
}

impl<S: BufferSource> Decoder for ArenaAnyDelimiterCodec<S> {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let Some(at) = self.scanner.find(src, &self.seek)? else {
            return Ok(None);
        };
        // Copy first: if the arena is full, the chunk stays where it is.
        let chunk = copy_frame(&self.source, &src[..at], self.on_full)?;
        self.scanner.consumed(src, at);
        Ok(Some(chunk))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        if let Some(chunk) = self.decode(src)? {
            return Ok(Some(chunk));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let chunk = copy_frame(&self.source, src, self.on_full)?;
        src.clear();
        self.scanner.at_eof();
        Ok(Some(chunk))
    }
}

impl<S> ArenaAnyDelimiterCodec<S> {
    fn write_chunk(&self, chunk: &[u8], dst: &mut BytesMut) {
        dst.reserve(chunk.len() + self.sequence_writer.len());
        dst.put_slice(chunk);
        dst.put_slice(&self.sequence_writer);
    }
}

impl<S> Encoder<&str> for ArenaAnyDelimiterCodec<S> {
    type Error = CodecError;

    /// Writes the chunk and the sequence writer.
    fn encode(&mut self, chunk: &str, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.write_chunk(chunk.as_bytes(), dst);
        Ok(())
    }
}

impl<S> Encoder<String> for ArenaAnyDelimiterCodec<S> {
    type Error = CodecError;

    /// Writes the chunk and the sequence writer.
    fn encode(&mut self, chunk: String, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.write_chunk(chunk.as_bytes(), dst);
        Ok(())
    }
}

impl<S> Encoder<&[u8]> for ArenaAnyDelimiterCodec<S> {
    type Error = CodecError;

    /// Writes the chunk and the sequence writer.
    fn encode(&mut self, chunk: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        self.write_chunk(chunk, dst);
        Ok(())
    }
}

impl<S> Encoder<Bytes> for ArenaAnyDelimiterCodec<S> {
    type Error = CodecError;

    /// Writes the chunk and the sequence writer.
    fn encode(&mut self, chunk: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.write_chunk(&chunk, dst);
        Ok(())
    }
}

//! Raw chunks: tokio_util's `BytesCodec`, with chunks in arena memory.

use std::num::NonZeroUsize;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{CodecError, OnFull, frame_buffer};
use crate::BufferSource;

/// A `tokio_util` codec that passes bytes through as they arrive, whose
/// chunks are arena memory.
///
/// As tokio_util's `BytesCodec`, the decoder yields whatever the read
/// buffer holds (one socket read, typically) as one chunk, and the encoder
/// writes `Bytes`, `BytesMut` or `&[u8]` unchanged. Here each chunk is
/// copied into an arena buffer of its size (a chunk larger than the
/// source's [`max_len`](BufferSource::max_len) comes out in several), and
/// `FramedRead`'s buffer is emptied for the next read, so memory held by
/// chunks the application keeps is the arena's. With a [`FixedArena`]
/// every chunk takes a whole slot however short the read; a
/// [`BuddyArena`] fits reads of varying size better. (The `io` feature's
/// `ArenaReader` reads into arena memory directly, without the copy.)
///
/// [`FixedArena`]: crate::FixedArena
/// [`BuddyArena`]: crate::BuddyArena
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{codec::ArenaBytesCodec, BuddyArena};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let arena = BuddyArena::builder(NonZeroUsize::new(1 << 16).unwrap(), NonZeroUsize::new(64).unwrap())
///     .build()?;
/// let mut codec = ArenaBytesCodec::new(arena.clone());
/// let mut input = BytesMut::from("raw bytes");
/// let chunk = codec.decode(&mut input)?.unwrap();
/// assert_eq!(chunk, "raw bytes");
/// assert!(input.is_empty());
/// assert_eq!(arena.metrics().live_bytes, 64); // the chunk is in the arena
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ArenaBytesCodec<S> {
    source: S,
    on_full: OnFull,
}

impl<S: BufferSource> ArenaBytesCodec<S> {
    /// Chunks from `source`.
    pub fn new(source: S) -> Self {
        Self {
            source,
            on_full: OnFull::default(),
        }
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

impl<S: BufferSource + Default> Default for ArenaBytesCodec<S> {
    /// Chunks from `S::default()`.
    fn default() -> Self {
        Self::new(S::default())
    }
}

impl<S: BufferSource> Decoder for ArenaBytesCodec<S> {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let Some(len) = NonZeroUsize::new(src.len().min(self.source.max_len())) else {
            return Ok(None);
        };
        // Copy first: if the arena is full, the bytes stay where they are.
        let mut buf = frame_buffer(&self.source, len, self.on_full)?;
        bytes::BufMut::put_slice(&mut buf, &src[..len.get()]);
        src.advance(len.get());
        Ok(Some(buf.freeze()))
    }
}

impl<S> Encoder<Bytes> for ArenaBytesCodec<S> {
    type Error = CodecError;

    fn encode(&mut self, data: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&data);
        Ok(())
    }
}

impl<S> Encoder<BytesMut> for ArenaBytesCodec<S> {
    type Error = CodecError;

    fn encode(&mut self, data: BytesMut, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&data);
        Ok(())
    }
}

impl<S> Encoder<&[u8]> for ArenaBytesCodec<S> {
    type Error = CodecError;

    fn encode(&mut self, data: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(data);
        Ok(())
    }
}

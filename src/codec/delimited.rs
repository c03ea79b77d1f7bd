//! The delimiter search that [`ArenaLinesCodec`](super::ArenaLinesCodec)
//! and [`ArenaAnyDelimiterCodec`](super::ArenaAnyDelimiterCodec) share:
//! tokio_util's algorithm (search only what is new, at most `max_length + 1`
//! bytes; after an over-long frame, discard up to the next delimiter), with
//! the frame left in the read buffer until the caller has copied it, so a
//! failed copy (the arena is full) can be retried.

use bytes::{Buf, BytesMut};

use super::CodecError;

/// A set of delimiter bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSet([u64; 4]);

impl ByteSet {
    pub(crate) const fn new(bytes: &[u8]) -> Self {
        let mut set = [0u64; 4];
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            set[(b >> 6) as usize] |= 1 << (b & 63);
            i += 1;
        }
        Self(set)
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
}

/// The search state of a delimiter decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scanner {
    /// How far the read buffer was searched without finding a delimiter.
    next_index: usize,
    pub(crate) max_length: usize,
    /// Skipping the rest of an over-long frame.
    discarding: bool,
}

impl Scanner {
    pub(crate) fn new(max_length: usize) -> Self {
        Self {
            next_index: 0,
            max_length,
            discarding: false,
        }
    }

    /// The index of the next frame's delimiter in `src` (the frame is
    /// `src[..at]`), or `None` when more input is needed. The frame stays in
    /// `src`; call [`consumed`](Self::consumed) once it is copied. Over-long
    /// input is [`CodecError::MaxLengthExceeded`], after which the next call
    /// skips to the next delimiter.
    pub(crate) fn find(
        &mut self,
        src: &mut BytesMut,
        delimiters: &ByteSet,
    ) -> Result<Option<usize>, CodecError> {
        loop {
            let read_to = src.len().min(self.max_length.saturating_add(1));
            let found = src[self.next_index..read_to]
                .iter()
                .position(|&b| delimiters.contains(b))
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
                    // Searched up to the delimiter: a retry after a failed
                    // copy finds it again at once.
                    self.next_index = at;
                    return Ok(Some(at));
                }
                (false, None) if src.len() > self.max_length => {
                    self.discarding = true;
                    self.next_index = 0;
                    return Err(CodecError::MaxLengthExceeded {
                        max_length: self.max_length,
                    });
                }
                (false, None) => {
                    self.next_index = read_to;
                    return Ok(None);
                }
            }
        }
    }

    /// The frame found at `at` was copied: drop it and its delimiter.
    pub(crate) fn consumed(&mut self, src: &mut BytesMut, at: usize) {
        src.advance(at + 1);
        self.next_index = 0;
    }

    /// At EOF, after [`find`](Self::find) found nothing: what is left is one
    /// last frame (`src[..]`); the search starts over.
    pub(crate) fn at_eof(&mut self) {
        self.next_index = 0;
    }
}

//! [`FramesBuilder`] and the short paths to a [`Frames`] stream.

use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::io::AsyncRead;

use super::{Config, CopyBudget, Frames};
use crate::BufferSource;
use crate::codec::{LengthDelimited, LengthDelimitedBuilder};
use crate::io::{DEFAULT_CHUNK, FrameDecoder, Framing, ReaderError};

/// The default copy budget is at least this many chunks, however small the
/// source.
const MIN_BUDGET_CHUNKS: usize = 16;

/// Configures a [`Frames`] reader: chunk size, where frames live, a bounded
/// wait. From [`Frames::builder`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::{num::NonZeroUsize, time::Duration};
/// use arenabuf::{io::{CopyBudget, Frames}, FixedArena};
/// use futures::StreamExt;
///
/// let nz = |n| NonZeroUsize::new(n).unwrap();
/// let arena = FixedArena::builder(nz(64), nz(16 * 1024)).build()?;
/// let budget = CopyBudget::new(1 << 20); // shared by every connection
/// # let socket: &[u8] = &[0, 0, 0, 2, b'h', b'i'];
/// let mut frames = Frames::builder(arena)
///     .copy_budget(budget.clone())
///     .max_wait(Duration::from_secs(5))
///     .length_delimited(socket)?; // frames up to the slot size, 16 KiB
/// assert_eq!(frames.next().await.unwrap()?, "hi");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct FramesBuilder<S> {
    source: S,
    chunk_size: Option<NonZeroUsize>,
    zero_copy: bool,
    max_wait: Option<Duration>,
    budget: Option<CopyBudget>,
}

impl<S: BufferSource> FramesBuilder<S> {
    pub(crate) fn new(source: S) -> Self {
        Self {
            source,
            chunk_size: None,
            zero_copy: false,
            max_wait: None,
            budget: None,
        }
    }

    /// The most bytes read into one chunk (default 64 KiB, capped at the
    /// source's [`max_len`](BufferSource::max_len)). Chunks adapt to recent
    /// reads below it (as Netty's adaptive receive buffer does) where the
    /// source hands out sizes other than one slot.
    pub fn chunk_size(mut self, chunk_size: NonZeroUsize) -> Self {
        self.chunk_size = Some(chunk_size);
        self
    }

    /// Opt-out of copying: every frame is a zero-copy slice of the chunk it
    /// arrived in, so a frame that is kept **pins its whole chunk**. Only
    /// for applications that drop (or [detach](Frames::detach)) every frame
    /// before asking for the next few; see the
    /// [module docs](crate::io#what-a-held-frame-costs).
    pub fn zero_copy(mut self) -> Self {
        self.zero_copy = true;
        self
    }

    /// Give up waiting for memory (arena buffers or copy budget) after
    /// `max_wait`: the stream then yields an `io::Error` of kind `TimedOut`
    /// holding a [`WaitTimeout`](crate::io::WaitTimeout) and ends. Without
    /// it a reader waits as long as the memory stays in use. Needs a tokio
    /// runtime with the time driver enabled.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Heap copies go to `budget`, shared with whoever else holds it. The
    /// default is a budget of this reader's own, as large as the source
    /// ([`BufferSource::capacity`]) and at least 16 chunks (1 MiB with
    /// 64 KiB chunks): one connection may keep as much on the
    /// heap as the arena holds, N connections N times that. A server should
    /// share one budget among its connections. See [`CopyBudget`].
    pub fn copy_budget(mut self, budget: CopyBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// A stream of the frames `decoder` finds in `reader`.
    ///
    /// # Errors
    ///
    /// [`ReaderError::FrameTooLarge`] when the decoder's
    /// [`max_frame_length`](FrameDecoder::max_frame_length) is more than
    /// the source can hand out in one buffer.
    pub fn new_read<R: AsyncRead, D: FrameDecoder>(
        self,
        reader: R,
        decoder: D,
    ) -> Result<Frames<R, S, D>, ReaderError> {
        let source_max = self.source.max_len();
        if let Some(max) = decoder.max_frame_length() {
            if max > source_max {
                return Err(ReaderError::FrameTooLarge {
                    max_frame_length: max,
                    source_max,
                });
            }
        }
        let chunk = self
            .chunk_size
            .map_or(DEFAULT_CHUNK, NonZeroUsize::get)
            .min(source_max)
            .max(1);
        let budget = self.budget.unwrap_or_else(|| {
            CopyBudget::new(
                self.source
                    .capacity()
                    .max(chunk.saturating_mul(MIN_BUDGET_CHUNKS)),
            )
        });
        let cfg = Config {
            chunk_size: chunk,
            zero_copy: self.zero_copy,
            max_wait: self.max_wait,
        };
        Ok(Frames::new(reader, self.source, decoder, cfg, budget))
    }

    /// Length-delimited frames in tokio_util's default layout (a 4-byte
    /// big-endian length, then the payload), of up to the source's
    /// [`max_len`](BufferSource::max_len) bytes each: the short path, like
    /// tokio_util's `LengthDelimitedCodec::builder().new_read(io)`.
    ///
    /// # Errors
    ///
    /// None in practice (the maximum is the source's); the `Result` is
    /// [`new_read`](Self::new_read)'s.
    pub fn length_delimited<R: AsyncRead>(
        self,
        reader: R,
    ) -> Result<Frames<R, S, LengthDelimited>, ReaderError> {
        let max = self.source.max_len();
        let layout = LengthDelimited::builder()
            .max_frame_length(max)
            .layout()
            .map_err(|e| ReaderError::InvalidFraming {
                reason: e.to_string(),
            })?;
        self.new_read(reader, layout)
    }

    /// Length-delimited frames with the header options of `layout` (one
    /// step: no separate `layout()` call).
    ///
    /// # Errors
    ///
    /// [`ReaderError::InvalidFraming`] for an invalid layout;
    /// [`ReaderError::FrameTooLarge`] as [`new_read`](Self::new_read).
    pub fn length_delimited_with<R: AsyncRead>(
        self,
        reader: R,
        layout: &LengthDelimitedBuilder,
    ) -> Result<Frames<R, S, LengthDelimited>, ReaderError> {
        let layout = layout.layout().map_err(|e| ReaderError::InvalidFraming {
            reason: e.to_string(),
        })?;
        self.new_read(reader, layout)
    }

    /// Lines ended by `\n` (a trailing `\r` dropped), of up to the source's
    /// [`max_len`](BufferSource::max_len) bytes each.
    ///
    /// # Errors
    ///
    /// None in practice; the `Result` is [`new_read`](Self::new_read)'s.
    pub fn lines<R: AsyncRead>(self, reader: R) -> Result<Frames<R, S, Framing>, ReaderError> {
        let max = self.source.max_len();
        self.new_read(reader, Framing::lines(max))
    }
}

//! [`Frames`]: frames cut from what a reader reads into arena memory.
//!
//! The reader fills a chunk (an arena buffer) with as much as the socket
//! has, freezes it, and cuts the frames a [`FrameDecoder`] finds in it. What
//! a frame becomes depends on its size against the chunk:
//!
//! - a frame of at least half its chunk is a zero-copy slice of it (keeping
//!   it pins at most twice its size);
//! - a smaller frame is copied, once, into memory of its own size (a block
//!   of the source where that fits tightly, else the heap under a
//!   [`CopyBudget`]), so keeping it pins nothing else; with
//!   [`FramesBuilder::zero_copy`] it is a slice too;
//! - a frame longer than a chunk (or than half one, in the default mode)
//!   whose header has arrived is read straight into a buffer of exactly its
//!   payload's size: no copy, no neighbours;
//! - an empty frame is an empty `Bytes` and pins nothing.
//!
//! Whenever the reader must wait for memory, the unframed rest of its chunk
//! (less than one chunk) moves to the heap first, so a waiting reader pins
//! no arena memory; the frames cut from that copy are copies too.

mod builder;
mod state;
mod store;
#[cfg(all(test, not(arenabuf_loom)))]
mod tests;

use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::io::AsyncRead;
use tokio::time::{Instant, Sleep};

pub use builder::FramesBuilder;
use state::{Body, End, State};
use store::BudgetWait;
pub use store::CopyBudget;

use super::{Acquire, FrameDecoder, Framing};
use crate::{Buffer, BufferSource};

/// The smallest chunk adaptive sizing goes down to.
const MIN_CHUNK: usize = 4096;
/// The most bytes read past a full buffer to let a decoder see the end of a
/// frame of exactly the source's maximum (a delimiter, a trailer).
const MAX_PEEK: usize = 64;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) chunk_size: usize,
    pub(crate) zero_copy: bool,
    pub(crate) max_wait: Option<Duration>,
}

/// Counters of one [`Frames`] stream, from [`Frames::metrics`]: where its
/// frames went, and how much memory its held copies use now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FramesMetrics {
    /// Frames yielded.
    pub frames: u64,
    /// Frames yielded as zero-copy slices of a chunk (they pin it).
    pub sliced_frames: u64,
    /// Payload bytes of those.
    pub sliced_bytes: u64,
    /// Bytes of the chunks those slices were cut from, counted once per
    /// chunk: what they may pin. `sliced_bytes / sliced_chunk_bytes` near 0
    /// means frames are pinning chunks many times their size.
    pub sliced_chunk_bytes: u64,
    /// Frames copied into memory of their own size as they were cut.
    pub copied_frames: u64,
    /// Payload bytes of those.
    pub copied_bytes: u64,
    /// Frames read straight into a buffer of exactly their size.
    pub direct_frames: u64,
    /// Payload bytes of those.
    pub direct_bytes: u64,
    /// Chunks read.
    pub chunks: u64,
    /// Times the reader waited for memory (arena or copy budget).
    pub waits: u64,
    /// Bytes of heap copies alive now in the reader's [`CopyBudget`]
    /// (shared budgets count every reader's).
    pub copy_budget_in_use: usize,
    /// The copy budget's size.
    pub copy_budget_capacity: usize,
}

pin_project! {
    /// A [`Stream`] of frames read into arena memory: from
    /// [`Frames::builder`], [`Frames::length_delimited`], [`Frames::lines`]
    /// or [`ArenaReader::frames`](super::ArenaReader::frames).
    ///
    /// Where each frame lives and what holding it costs is in the
    /// [module docs](crate::io#what-a-held-frame-costs); use
    /// [`detach`](Self::detach) to move one into memory of its own size.
    ///
    /// Errors end the stream, and every whole frame read before an error is
    /// yielded before it: bad headers (`InvalidData`, before anything is
    /// allocated for the frame), a frame that can never fit the source
    /// (`InvalidData`), EOF inside a frame ("bytes remaining on stream"),
    /// a [`max_wait`](FramesBuilder::max_wait) that ran out (`TimedOut`),
    /// and I/O errors. An error gives back the stream's arena memory at once.
    ///
    /// # Cancellation
    ///
    /// Dropping a `next()` future (a `tokio::time::timeout`, a losing
    /// `select!` branch) loses nothing: the stream keeps its bytes and its
    /// place in the arena's wait queue, and the next `next()` resumes. While
    /// nobody polls it, memory already granted to it stays with it; drop the
    /// stream to give its place and memory back.
    pub struct Frames<R, S: BufferSource, D = Framing> {
        #[pin]
        reader: R,
        source: S,
        decoder: D,
        cfg: Config,
        budget: CopyBudget,
        acquire: Acquire<S>,
        budget_wait: Option<(BudgetWait, usize)>,
        deadline: Option<(Pin<Box<Sleep>>, Instant)>,
        // The chunk being filled.
        buf: Option<Buffer>,
        // Frozen bytes not framed yet.
        ready: Bytes,
        // The capacity of the memory `ready` pins; `usize::MAX` once parked
        // on the heap (every frame cut from it is copied).
        ready_cap: usize,
        // Bytes the next chunk must hold in all (a frame cut off in `ready`).
        need: usize,
        // Stream bytes to drop before the next frame (a direct frame's trailer).
        skip: usize,
        body: Option<Body>,
        // Bytes read past a full buffer for the decoder (see MAX_PEEK).
        peek: Vec<u8>,
        // The chunk size adaptive sizing asks for next.
        next_chunk: usize,
        small_reads: u8,
        // Whether `ready`'s chunk has been counted in `sliced_chunk_bytes`.
        chunk_counted: bool,
        end: Option<End>,
        done: bool,
        stats: FramesMetrics,
    }
}

impl<S: BufferSource> Frames<(), S> {
    /// Starts configuring a reader that takes its memory from `source`.
    pub fn builder(source: S) -> FramesBuilder<S> {
        FramesBuilder::new(source)
    }

    /// Length-delimited frames (tokio_util's default wire format) of up to
    /// the source's `max_len` bytes from `reader`, with the default
    /// configuration: the one-line path.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::num::NonZeroUsize;
    /// use arenabuf::{io::Frames, FixedArena};
    /// use futures::StreamExt;
    ///
    /// let arena = FixedArena::builder(NonZeroUsize::new(16).unwrap(), NonZeroUsize::new(4096).unwrap())
    ///     .build()?;
    /// # let socket: &[u8] = &[0, 0, 0, 2, b'h', b'i'];
    /// let mut frames = Frames::length_delimited(socket, arena)?;
    /// assert_eq!(frames.next().await.unwrap()?, "hi");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// None in practice; see [`FramesBuilder::length_delimited`].
    pub fn length_delimited<R: AsyncRead>(
        reader: R,
        source: S,
    ) -> Result<Frames<R, S, crate::codec::LengthDelimited>, super::ReaderError> {
        FramesBuilder::new(source).length_delimited(reader)
    }

    /// Lines of up to the source's `max_len` bytes from `reader`, with the
    /// default configuration.
    ///
    /// # Errors
    ///
    /// None in practice; see [`FramesBuilder::lines`].
    pub fn lines<R: AsyncRead>(reader: R, source: S) -> Result<Frames<R, S>, super::ReaderError> {
        FramesBuilder::new(source).lines(reader)
    }
}

impl<R: AsyncRead, S: BufferSource, D: FrameDecoder> Frames<R, S, D> {
    pub(crate) fn new(reader: R, source: S, decoder: D, cfg: Config, budget: CopyBudget) -> Self {
        Self {
            reader,
            source,
            decoder,
            next_chunk: cfg
                .chunk_size
                .min(16 * 1024)
                .max(MIN_CHUNK.min(cfg.chunk_size)),
            cfg,
            budget,
            acquire: Acquire::new(),
            budget_wait: None,
            deadline: None,
            buf: None,
            ready: Bytes::new(),
            ready_cap: 0,
            need: 0,
            skip: 0,
            body: None,
            peek: Vec::new(),
            small_reads: 0,
            chunk_counted: false,
            end: None,
            done: false,
            stats: FramesMetrics::default(),
        }
    }
}

impl<R, S: BufferSource, D> Frames<R, S, D> {
    /// The buffer source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The frame decoder.
    pub fn decoder(&self) -> &D {
        &self.decoder
    }

    /// The budget heap copies count against.
    pub fn copy_budget(&self) -> &CopyBudget {
        &self.budget
    }

    /// This stream's counters (a snapshot).
    pub fn metrics(&self) -> FramesMetrics {
        FramesMetrics {
            copy_budget_in_use: self.budget.in_use(),
            copy_budget_capacity: self.budget.capacity(),
            ..self.stats
        }
    }

    /// Moves `frame` into memory of its own size, so that keeping it pins
    /// nothing else: a block of the source where it fits tightly, else the
    /// heap under this stream's [`CopyBudget`]. Returns the frame unchanged
    /// (`Err`) when neither has room now. For frames from a
    /// [`zero_copy`](FramesBuilder::zero_copy) stream the application
    /// wants to keep.
    ///
    /// # Errors
    ///
    /// The frame itself, when no memory is free for the copy.
    pub fn detach(&self, frame: Bytes) -> Result<Bytes, Bytes> {
        let Some(len) = NonZeroUsize::new(frame.len()) else {
            return Ok(Bytes::new());
        };
        if self.source.allocation_size(len) <= len.get().saturating_mul(2) {
            if let Ok(mut buf) = self.source.try_allocate(len) {
                buf.put_slice(&frame);
                return Ok(buf.freeze());
            }
        }
        self.budget.try_copy(&frame).ok_or(frame)
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

impl<R: AsyncRead, S: BufferSource, D: FrameDecoder> Stream for Frames<R, S, D> {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let mut st = State {
            reader: this.reader,
            source: this.source,
            decoder: this.decoder,
            cfg: this.cfg,
            budget: this.budget,
            acquire: this.acquire,
            budget_wait: this.budget_wait,
            deadline: this.deadline,
            buf: this.buf,
            ready: this.ready,
            ready_cap: this.ready_cap,
            need: this.need,
            skip: this.skip,
            body: this.body,
            peek: this.peek,
            next_chunk: this.next_chunk,
            small_reads: this.small_reads,
            chunk_counted: this.chunk_counted,
            end: this.end,
            stats: this.stats,
        };
        let item = ready!(st.poll_frame(cx));
        match item {
            Some(Ok(frame)) => {
                st.stats.frames += 1;
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                *this.done = true;
                st.release();
                Poll::Ready(Some(Err(e)))
            }
            None => {
                *this.done = true;
                st.release();
                Poll::Ready(None)
            }
        }
    }
}

impl<R, S: BufferSource, D> std::fmt::Debug for Frames<R, S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("chunk_size", &self.cfg.chunk_size)
            .field("zero_copy", &self.cfg.zero_copy)
            .field("buffered", &self.ready.len())
            .field("copy_budget", &self.budget)
            .finish()
    }
}

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
mod store;
#[cfg(test)]
mod tests;

use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

pub use builder::FramesBuilder;
pub use store::CopyBudget;
use store::{BudgetWait, copy_with, poll_budget};

use super::{Acquire, Decoded, FrameDecoder, Framing, WaitTimeout, poll_read_into, poll_read_upto};
use crate::codec::{alloc_error, bytes_remaining};
use crate::{AllocError, Buffer, BufferSource};

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

/// What ended the input: frames read before it are delivered first.
#[derive(Debug)]
enum End {
    Eof,
    Error(io::Error),
}

/// A large frame being read straight into a buffer of its own.
struct Body {
    buf: Buffer,
    // The payload's length (the buffer may be larger: a fixed slot).
    len: usize,
    skip_after: usize,
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

/// An `InvalidData` error for a decoder's answer that breaks its contract.
fn bad_decoder(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("frame decoder answered out of range: {what}"),
    )
}

/// An `InvalidData` error for a frame that needs more than `max` bytes.
fn too_large(requested: usize, max: usize) -> io::Error {
    alloc_error(AllocError::RequestTooLarge { requested, max })
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

/// The projected fields, so the steps can be methods.
struct State<'a, R, S: BufferSource, D> {
    reader: Pin<&'a mut R>,
    source: &'a S,
    decoder: &'a mut D,
    cfg: &'a Config,
    budget: &'a CopyBudget,
    acquire: &'a mut Acquire<S>,
    budget_wait: &'a mut Option<(BudgetWait, usize)>,
    deadline: &'a mut Option<(Pin<Box<Sleep>>, Instant)>,
    buf: &'a mut Option<Buffer>,
    ready: &'a mut Bytes,
    ready_cap: &'a mut usize,
    need: &'a mut usize,
    skip: &'a mut usize,
    body: &'a mut Option<Body>,
    peek: &'a mut Vec<u8>,
    next_chunk: &'a mut usize,
    small_reads: &'a mut u8,
    chunk_counted: &'a mut bool,
    end: &'a mut Option<End>,
    stats: &'a mut FramesMetrics,
}

impl<R: AsyncRead, S: BufferSource, D: FrameDecoder> State<'_, R, S, D> {
    /// Gives back every piece of memory the stream holds (it has ended).
    fn release(&mut self) {
        *self.buf = None;
        *self.ready = Bytes::new();
        *self.body = None;
        *self.budget_wait = None;
        *self.deadline = None;
        *self.acquire = Acquire::new();
        self.peek.clear();
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let max_len = self.source.max_len();
        loop {
            // 1. A large frame read straight into its own buffer.
            if let Some(body) = self.body.as_mut() {
                if body.buf.len() < body.len {
                    let max = body.len - body.buf.len();
                    match ready!(poll_read_upto(self.reader.as_mut(), &mut body.buf, max, cx)) {
                        Ok(0) => return Poll::Ready(Some(Err(bytes_remaining()))),
                        Ok(_) => continue,
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
                let body = self.body.take().expect("checked above");
                *self.skip = body.skip_after;
                self.stats.direct_frames += 1;
                self.stats.direct_bytes += body.buf.len() as u64;
                return Poll::Ready(Some(Ok(body.buf.freeze())));
            }
            // 2. The trailer of a direct frame.
            if *self.skip > 0 {
                if !self.ready.is_empty() {
                    let n = (*self.skip).min(self.ready.len());
                    self.advance(n);
                    *self.skip -= n;
                } else if let Some(end) = self.end.take() {
                    *self.skip = 0;
                    return Poll::Ready(Some(Err(match end {
                        End::Error(e) => e,
                        End::Eof => bytes_remaining(),
                    })));
                } else {
                    let mut scratch = [0u8; 256];
                    let want = (*self.skip).min(scratch.len());
                    let mut rb = ReadBuf::new(&mut scratch[..want]);
                    match ready!(self.reader.as_mut().poll_read(cx, &mut rb)) {
                        Ok(()) if rb.filled().is_empty() => *self.end = Some(End::Eof),
                        Ok(()) => *self.skip -= rb.filled().len(),
                        Err(e) => *self.end = Some(End::Error(e)),
                    }
                    continue;
                }
            }
            // 3. The next frame in what has been read.
            if !self.ready.is_empty() && *self.need == 0 {
                match self.decoder.decode(&self.ready[..]) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Decoded::Frame { payload, next }) => {
                        if payload.start > payload.end
                            || payload.end > next
                            || next > self.ready.len()
                            || next == 0
                        {
                            return Poll::Ready(Some(Err(bad_decoder("frame"))));
                        }
                        let frame = match ready!(self.cut(payload, cx)) {
                            Ok(frame) => frame,
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        };
                        self.advance(next);
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(Decoded::Header { payload, next }) => {
                        if payload.start > payload.end
                            || payload.end > next
                            || next <= self.ready.len()
                        {
                            return Poll::Ready(Some(Err(bad_decoder("header"))));
                        }
                        if payload.len() > max_len {
                            return Poll::Ready(Some(Err(too_large(payload.len(), max_len))));
                        }
                        let chunk = self.cfg.chunk_size.min(max_len);
                        let large = next > chunk
                            || (!self.cfg.zero_copy && payload.len().saturating_mul(2) >= chunk);
                        if large && payload.start <= self.ready.len() && !payload.is_empty() {
                            let len = NonZeroUsize::new(payload.len()).expect("not empty");
                            let mut buf = match ready!(self.poll_memory(len, cx)) {
                                Ok(buf) => buf,
                                Err(e) => return Poll::Ready(Some(Err(e))),
                            };
                            let have = self.ready.len().min(payload.end);
                            buf.put_slice(&self.ready[payload.start..have]);
                            let skip_after = next - self.ready.len().max(payload.end);
                            *self.ready = Bytes::new();
                            *self.body = Some(Body {
                                buf,
                                len: payload.len(),
                                skip_after,
                            });
                            continue;
                        }
                        *self.need = if large {
                            // The payload's start has not arrived yet.
                            payload.start.max(self.ready.len() + 1)
                        } else {
                            next
                        };
                    }
                    Ok(Decoded::Incomplete { min_len }) => {
                        if min_len <= self.ready.len() {
                            return Poll::Ready(Some(Err(bad_decoder("incomplete"))));
                        }
                        if min_len > max_len && self.end.is_none() {
                            // A frame of exactly the source's maximum whose
                            // delimiter or trailer did not fit the buffer.
                            match ready!(self.poll_peek(min_len, max_len, cx)) {
                                Some(item) => return Poll::Ready(Some(item)),
                                None => continue,
                            }
                        }
                        *self.need = min_len;
                    }
                }
            }
            // 4. The end of the input, once every whole frame is out.
            if self.buf.is_none() {
                match self.end.take() {
                    Some(End::Error(e)) => return Poll::Ready(Some(Err(e))),
                    Some(End::Eof) => {
                        // The input stays ended: the next poll finds nothing.
                        *self.end = Some(End::Eof);
                        return Poll::Ready(self.at_eof());
                    }
                    None => {}
                }
            }
            // 5. A chunk to read into, holding the cut-off frame's head.
            if self.buf.is_none() {
                // Room for twice what has arrived (a frame of unknown
                // length), but `need` is a must.
                let len = (*self.next_chunk)
                    .max(self.ready.len().saturating_mul(2))
                    .min(max_len)
                    .max(*self.need)
                    .max(1);
                let len = NonZeroUsize::new(len).expect("at least 1");
                let mut buf = match ready!(self.poll_memory(len, cx)) {
                    Ok(buf) => buf,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                };
                buf.put_slice(self.ready);
                *self.ready = Bytes::new();
                *self.need = 0;
                *self.buf = Some(buf);
                self.stats.chunks += 1;
            }
            let buf = self.buf.as_mut().expect("set above");
            // 6. A full buffer: cut it.
            if buf.len() == buf.capacity() {
                self.freeze_chunk(true);
                continue;
            }
            // 7. Read; on a pause, hand out what is complete.
            match poll_read_into(self.reader.as_mut(), buf, cx) {
                Poll::Ready(Ok(0)) => {
                    *self.end = Some(End::Eof);
                    self.freeze_chunk(false);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    // Whole frames already read come out before the error.
                    *self.end = Some(End::Error(e));
                    self.freeze_chunk(false);
                }
                // Nothing has arrived: an idle peer pins no arena memory.
                Poll::Pending if buf.is_empty() => {
                    *self.buf = None;
                    return Poll::Pending;
                }
                Poll::Pending => {
                    let cut = match self.decoder.decode(buf) {
                        Ok(Decoded::Frame { .. }) | Err(_) => true,
                        Ok(Decoded::Header { next, .. }) => next > buf.capacity(),
                        Ok(Decoded::Incomplete { .. }) => false,
                    };
                    if !cut {
                        return Poll::Pending;
                    }
                    self.freeze_chunk(false);
                }
            }
        }
    }

    /// Drops `n` framed bytes from `ready`, letting go of its chunk when
    /// nothing is left (an empty slice still shares the chunk's owner).
    fn advance(&mut self, n: usize) {
        self.ready.advance(n);
        if self.ready.is_empty() {
            *self.ready = Bytes::new();
        }
    }

    /// Freezes the chunk being filled into `ready`, and sizes the next one
    /// by how this one filled (grow when full, shrink after two reads of
    /// less than half).
    fn freeze_chunk(&mut self, full: bool) {
        let buf = self.buf.take().expect("a chunk is being filled");
        let filled = buf.len();
        *self.ready_cap = buf.capacity();
        *self.ready = buf.freeze();
        *self.chunk_counted = false;
        let (size, max) = (*self.next_chunk, self.cfg.chunk_size);
        if full {
            *self.next_chunk = size.saturating_mul(2).min(max);
            *self.small_reads = 0;
        } else if filled < size / 2 {
            *self.small_reads += 1;
            if *self.small_reads >= 2 {
                *self.next_chunk = (size / 2).max(MIN_CHUNK).min(max);
                *self.small_reads = 0;
            }
        } else {
            *self.small_reads = 0;
        }
    }

    /// The frame at `payload` in `ready`: a slice, or a copy of its own size.
    fn cut(
        &mut self,
        payload: std::ops::Range<usize>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Bytes>> {
        let len = payload.len();
        if len == 0 {
            return Poll::Ready(Ok(Bytes::new()));
        }
        if self.cfg.zero_copy || len.saturating_mul(2) >= *self.ready_cap {
            if !*self.chunk_counted {
                *self.chunk_counted = true;
                // A parked (heap) copy counts what it holds.
                let cap = if *self.ready_cap == usize::MAX {
                    self.ready.len()
                } else {
                    *self.ready_cap
                };
                self.stats.sliced_chunk_bytes += cap as u64;
            }
            self.stats.sliced_frames += 1;
            self.stats.sliced_bytes += len as u64;
            return Poll::Ready(Ok(self.ready.slice(payload)));
        }
        let nz = NonZeroUsize::new(len).expect("not empty");
        let copy = if self.source.allocation_size(nz) <= len.saturating_mul(2) {
            // A tight fit in the source: the copy counts against its cap.
            let mut buf = match ready!(self.poll_memory(nz, cx)) {
                Ok(buf) => buf,
                Err(e) => return Poll::Ready(Err(e)),
            };
            buf.put_slice(&self.ready[payload]);
            buf.freeze()
        } else if self.budget.fits(len) {
            let quick = if self.budget_wait.is_none() {
                self.budget.try_copy(&self.ready[payload.clone()])
            } else {
                None
            };
            match quick {
                Some(copy) => copy,
                None => match ready!(self.poll_budget(len, cx)) {
                    Ok(permit) => copy_with(&self.ready[payload], permit),
                    Err(e) => return Poll::Ready(Err(e)),
                },
            }
        } else {
            // Larger than the whole copy budget: a slice is the only way on.
            self.stats.sliced_frames += 1;
            self.stats.sliced_bytes += len as u64;
            return Poll::Ready(Ok(self.ready.slice(payload)));
        };
        self.stats.copied_frames += 1;
        self.stats.copied_bytes += len as u64;
        Poll::Ready(Ok(copy))
    }

    /// Moves the unframed rest of the chunk to the heap before a wait, so
    /// that a waiting reader pins no arena memory.
    fn park(&mut self) {
        if *self.ready_cap != usize::MAX && !self.ready.is_empty() {
            *self.ready = Bytes::copy_from_slice(self.ready);
            *self.ready_cap = usize::MAX;
        }
    }

    /// A buffer of `len` bytes from the source, waiting (parked, under the
    /// deadline) when none is free.
    fn poll_memory(&mut self, len: NonZeroUsize, cx: &mut Context<'_>) -> Poll<io::Result<Buffer>> {
        match self.acquire.poll_buffer(self.source, len, cx) {
            Poll::Ready(r) => {
                *self.deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.park();
                self.poll_deadline(len.get(), cx)
            }
        }
    }

    /// Room for `len` bytes in the copy budget, waiting (parked, under the
    /// deadline) when there is none.
    fn poll_budget(
        &mut self,
        len: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<OwnedSemaphorePermit>> {
        if self.budget_wait.as_ref().is_some_and(|(_, l)| *l != len) {
            *self.budget_wait = None;
        }
        let (wait, _) = self
            .budget_wait
            .get_or_insert_with(|| (self.budget.wait(len), len));
        match poll_budget(wait, cx) {
            Poll::Ready(permit) => {
                *self.budget_wait = None;
                *self.deadline = None;
                Poll::Ready(Ok(permit))
            }
            Poll::Pending => {
                self.park();
                self.poll_deadline(len, cx)
            }
        }
    }

    /// Pending while the bounded wait (if any) has time left; the
    /// `WaitTimeout` error once it has run out.
    fn poll_deadline<T>(&mut self, requested: usize, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.deadline.is_none() {
            self.stats.waits += 1;
        }
        let Some(max_wait) = self.cfg.max_wait else {
            return Poll::Pending;
        };
        let (sleep, started) = self
            .deadline
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep(max_wait)), Instant::now()));
        ready!(sleep.as_mut().poll(cx));
        let waited = started.elapsed();
        *self.deadline = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            WaitTimeout { waited, requested },
        )))
    }

    /// Reads up to `MAX_PEEK` bytes past a full buffer of `max_len` bytes so
    /// the decoder can see where a frame of exactly that size ends. `None`:
    /// the input ended meanwhile (go on to the end handling).
    fn poll_peek(
        &mut self,
        min_len: usize,
        max_len: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        let want = min_len - self.ready.len();
        if self.ready.len() < max_len || want > MAX_PEEK {
            return Poll::Ready(Some(Err(too_large(min_len, max_len))));
        }
        while self.peek.len() < want && self.end.is_none() {
            let mut scratch = [0u8; MAX_PEEK];
            let mut rb = ReadBuf::new(&mut scratch[..want - self.peek.len()]);
            match ready!(self.reader.as_mut().poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => *self.end = Some(End::Eof),
                Ok(()) => self.peek.extend_from_slice(rb.filled()),
                Err(e) => *self.end = Some(End::Error(e)),
            }
        }
        let mut all = Vec::with_capacity(self.ready.len() + self.peek.len());
        all.extend_from_slice(self.ready);
        all.extend_from_slice(self.peek);
        self.peek.clear();
        match self.decoder.decode(&all) {
            Ok(Decoded::Frame { payload, next })
                if payload.start <= payload.end
                    && payload.end <= self.ready.len()
                    && payload.end <= next
                    && next <= all.len() =>
            {
                let frame = self.ready.slice(payload);
                *self.ready = Bytes::copy_from_slice(&all[next..]);
                *self.ready_cap = usize::MAX;
                if self.ready.is_empty() {
                    *self.ready = Bytes::new();
                }
                self.stats.sliced_frames += 1;
                self.stats.sliced_bytes += frame.len() as u64;
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(_) if self.end.is_some() && all.len() < min_len => {
                // The input ended before the decoder could tell: the rest,
                // peeked bytes included, goes to the end-of-input handling.
                *self.ready = Bytes::from(all);
                *self.ready_cap = usize::MAX;
                *self.need = min_len;
                Poll::Ready(None)
            }
            Ok(_) => Poll::Ready(Some(Err(too_large(min_len, max_len)))),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    /// What is left at EOF: one last frame (the decoder's choice), nothing,
    /// or an error.
    fn at_eof(&mut self) -> Option<io::Result<Bytes>> {
        if *self.skip > 0 {
            return Some(Err(bytes_remaining()));
        }
        let rest = std::mem::take(self.ready);
        if rest.is_empty() {
            return None;
        }
        match self.decoder.decode_eof(&rest) {
            Ok(Some(range)) if range.start <= range.end && range.end <= rest.len() => {
                if range.is_empty() {
                    return Some(Ok(Bytes::new()));
                }
                Some(Ok(rest.slice(range)))
            }
            Ok(Some(_)) => Some(Err(bad_decoder("last frame"))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
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

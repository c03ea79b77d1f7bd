//! The steps of [`Frames`](super::Frames)' `poll_next`: cutting, copying,
//! direct reads, waiting for memory (parked, under the deadline), the peek
//! past a full buffer, and the end of the input.

use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::store::{BudgetWait, copy_with, poll_budget};
use super::{Config, CopyBudget, FramesMetrics, MAX_PEEK, MIN_CHUNK};
use crate::codec::{alloc_error, bytes_remaining};
use crate::io::{Acquire, Decoded, FrameDecoder, WaitTimeout, poll_read_into, poll_read_upto};
use crate::{AllocError, Buffer, BufferSource};

/// What ended the input: frames read before it are delivered first.
#[derive(Debug)]
pub(super) enum End {
    Eof,
    Error(io::Error),
}

/// A large frame being read straight into a buffer of its own.
pub(super) struct Body {
    pub(super) buf: Buffer,
    // The payload's length (the buffer may be larger: a fixed slot).
    pub(super) len: usize,
    pub(super) skip_after: usize,
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

/// The projected fields, so the steps can be methods.
pub(super) struct State<'a, R, S: BufferSource, D> {
    pub(super) reader: Pin<&'a mut R>,
    pub(super) source: &'a S,
    pub(super) decoder: &'a mut D,
    pub(super) cfg: &'a Config,
    pub(super) budget: &'a CopyBudget,
    pub(super) acquire: &'a mut Acquire<S>,
    pub(super) budget_wait: &'a mut Option<(BudgetWait, usize)>,
    pub(super) deadline: &'a mut Option<(Pin<Box<Sleep>>, Instant)>,
    pub(super) buf: &'a mut Option<Buffer>,
    pub(super) ready: &'a mut Bytes,
    pub(super) ready_cap: &'a mut usize,
    pub(super) need: &'a mut usize,
    pub(super) skip: &'a mut usize,
    pub(super) body: &'a mut Option<Body>,
    pub(super) peek: &'a mut Vec<u8>,
    pub(super) next_chunk: &'a mut usize,
    pub(super) small_reads: &'a mut u8,
    pub(super) chunk_counted: &'a mut bool,
    pub(super) end: &'a mut Option<End>,
    pub(super) stats: &'a mut FramesMetrics,
}

impl<R: AsyncRead, S: BufferSource, D: FrameDecoder> State<'_, R, S, D> {
    /// Gives back every piece of memory the stream holds (it has ended).
    pub(super) fn release(&mut self) {
        *self.buf = None;
        *self.ready = Bytes::new();
        *self.body = None;
        *self.budget_wait = None;
        *self.deadline = None;
        *self.acquire = Acquire::new();
        self.peek.clear();
    }

    pub(super) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
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

//! [`Frames`]: frames cut from arena chunks without copying.
//!
//! The reader fills a chunk (an arena buffer) with as much as the socket has,
//! then freezes it and hands out every complete frame in it as a slice of the
//! frozen chunk: many frames share one chunk, whose memory returns to the
//! arena when the last of them drops. A frame cut off at the end of a chunk
//! is the only thing copied: its head moves into the next chunk. A frame
//! longer than a chunk gets a buffer of its own size (where the source
//! allows; otherwise the stream fails with `InvalidData`).
//!
//! While the reader waits for a buffer (the source is full), the head of a
//! cut-off frame is kept on the heap rather than in its chunk, so a waiting
//! reader pins no arena memory: many readers sharing one small arena cannot
//! each hold a chunk while waiting for another.

use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::io::AsyncRead;

use super::{Acquire, poll_read_into};
use crate::codec::{LengthDelimited, alloc_error, bytes_remaining};
use crate::{AllocError, Buffer, BufferSource};

/// How a byte stream is cut into frames.
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

/// What the framing found at the start of some bytes.
enum Step {
    /// A frame at `start..end`; the next frame starts at `next`.
    Frame {
        start: usize,
        end: usize,
        next: usize,
    },
    /// No complete frame: the next buffer should hold `want` bytes in all
    /// (capped at what the source can hand out) and must hold `need`.
    Incomplete { want: usize, need: usize },
}

impl Framing {
    /// Length-delimited frames, with the same header options as
    /// [`ArenaLengthDelimitedCodec`](crate::codec::ArenaLengthDelimitedCodec)
    /// (make the layout with its builder).
    pub fn length_delimited(layout: LengthDelimited) -> Self {
        Self(Kind::LengthDelimited(layout))
    }

    /// Frames ended by `delimiter` (not included), at most `max_length`
    /// bytes (and at most the source's `max_len`); at EOF, bytes after the
    /// last delimiter are one last frame.
    pub fn delimiter(delimiter: u8, max_length: usize) -> Self {
        Self(Kind::Delimiter {
            delimiter,
            strip_cr: false,
            max_length,
        })
    }

    /// Lines ended by `\n`, a trailing `\r` dropped, at most `max_length`
    /// bytes.
    pub fn lines(max_length: usize) -> Self {
        Self(Kind::Delimiter {
            delimiter: b'\n',
            strip_cr: true,
            max_length,
        })
    }

    /// [`step`](Self::step), with a frame that needs more than `max_len`
    /// bytes (the most the source can ever hand out) an error at once,
    /// before any wait for more input or for memory.
    fn step_within(&self, data: &[u8], max_len: usize) -> io::Result<Step> {
        match self.step(data)? {
            Step::Incomplete { need, .. } if need > max_len => {
                Err(alloc_error(AllocError::RequestTooLarge {
                    requested: need,
                    max: max_len,
                }))
            }
            step => Ok(step),
        }
    }

    fn step(&self, data: &[u8]) -> io::Result<Step> {
        match self.0 {
            Kind::LengthDelimited(layout) => {
                let head = layout.header_len();
                if data.len() < head {
                    return Ok(Step::Incomplete {
                        want: head,
                        need: head,
                    });
                }
                let (skip, n) = layout.parse(data)?;
                let total = skip.checked_add(n).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "frame length overflows usize")
                })?;
                Ok(if data.len() >= total {
                    Step::Frame {
                        start: skip,
                        end: total,
                        next: total,
                    }
                } else {
                    Step::Incomplete {
                        want: total,
                        need: total,
                    }
                })
            }
            Kind::Delimiter {
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
                        Ok(Step::Frame {
                            start: 0,
                            end,
                            next: at + 1,
                        })
                    }
                    None if data.len() > max_length => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("frame longer than the maximum of {max_length} bytes"),
                    )),
                    // The line's length is unknown: room for twice what has
                    // arrived, but only one more byte is a must.
                    None => Ok(Step::Incomplete {
                        want: data
                            .len()
                            .saturating_mul(2)
                            .min(max_length.saturating_add(1)),
                        need: data.len() + 1,
                    }),
                }
            }
        }
    }

    /// What is left at EOF: a last frame (delimiter framing), nothing, or an
    /// error.
    fn at_eof(&self, rest: Bytes) -> Option<io::Result<Bytes>> {
        if rest.is_empty() {
            return None;
        }
        match self.0 {
            Kind::LengthDelimited(_) => Some(Err(bytes_remaining())),
            Kind::Delimiter { strip_cr, .. } => {
                let end = if strip_cr && rest.ends_with(b"\r") {
                    rest.len() - 1
                } else {
                    rest.len()
                };
                (end > 0).then(|| Ok(rest.slice(..end)))
            }
        }
    }
}

pin_project! {
    /// A [`Stream`] of frames read into arena memory; from
    /// [`ArenaReader::frames`](super::ArenaReader::frames).
    ///
    /// Frames are zero-copy slices of the chunks they arrived in (see the
    /// [module docs](self)). Errors end the stream: bad headers
    /// (`InvalidData`, before anything is allocated for the frame), a frame
    /// that can never fit the source (`InvalidData`, as soon as its header is
    /// read: never a wait that cannot end), EOF inside a frame ("bytes
    /// remaining on stream"), and I/O errors. An error gives back the
    /// stream's arena memory at once.
    pub struct Frames<R, S: BufferSource> {
        #[pin]
        reader: R,
        source: S,
        chunk_size: NonZeroUsize,
        framing: Framing,
        acquire: Acquire<S>,
        // The chunk being filled.
        buf: Option<Buffer>,
        // The frozen rest of the last chunk, frames still to be cut from it.
        ready: Bytes,
        // Bytes the next buffer should and must hold (the frame cut off in
        // `ready`); `need == 0`: nothing cut off.
        want: usize,
        need: usize,
        // `ready` was moved to the heap while waiting for a buffer.
        parked: bool,
        eof: bool,
        done: bool,
    }
}

impl<R: AsyncRead, S: BufferSource> Frames<R, S> {
    pub(super) fn new(reader: R, source: S, chunk_size: NonZeroUsize, framing: Framing) -> Self {
        Self {
            reader,
            source,
            chunk_size,
            framing,
            acquire: Acquire::new(),
            buf: None,
            ready: Bytes::new(),
            want: 0,
            need: 0,
            parked: false,
            eof: false,
            done: false,
        }
    }

    /// The buffer source.
    pub fn source(&self) -> &S {
        &self.source
    }
}

impl<R: AsyncRead, S: BufferSource> Stream for Frames<R, S> {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // An error ends the stream and gives back what it holds at once.
        let fail = |done: &mut bool, buf: &mut Option<Buffer>, ready: &mut Bytes, e| {
            *done = true;
            *buf = None;
            *ready = Bytes::new();
            Poll::Ready(Some(Err(e)))
        };
        loop {
            // 1. Cut the next frame from the frozen chunk.
            if !this.ready.is_empty() && *this.need == 0 {
                match this.framing.step_within(this.ready, this.source.max_len()) {
                    Ok(Step::Frame { start, end, next }) => {
                        let frame = this.ready.slice(start..end);
                        this.ready.advance(next);
                        if this.ready.is_empty() {
                            // An empty `Bytes` still shares the chunk's
                            // owner: let go of it, or a reader waiting for
                            // its next buffer pins the chunk it emptied.
                            *this.ready = Bytes::new();
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Ok(Step::Incomplete { want, need }) => {
                        *this.want = want;
                        *this.need = need;
                    }
                    Err(e) => return fail(this.done, this.buf, this.ready, e),
                }
            }
            if *this.eof {
                *this.done = true;
                return Poll::Ready(this.framing.at_eof(std::mem::take(this.ready)));
            }
            // 2. A buffer to read into, holding the cut-off frame's head.
            if this.buf.is_none() {
                let len = this
                    .chunk_size
                    .get()
                    .max(*this.want)
                    .min(this.source.max_len())
                    .max(*this.need);
                let len = NonZeroUsize::new(len).expect("chunk size is non-zero");
                // Backpressure: while no buffer is free, the socket is not read.
                let mut buf = match this.acquire.poll_buffer(this.source, len, cx) {
                    Poll::Ready(Ok(buf)) => buf,
                    Poll::Ready(Err(e)) => return fail(this.done, this.buf, this.ready, e),
                    Poll::Pending => {
                        // While waiting, the cut-off frame's head must not pin
                        // its arena chunk: if every reader held one chunk so
                        // and waited for another, none could ever get one.
                        // Move it (less than one frame) to the heap, once.
                        if !*this.parked && !this.ready.is_empty() {
                            *this.ready = Bytes::copy_from_slice(this.ready);
                            *this.parked = true;
                        }
                        return Poll::Pending;
                    }
                };
                buf.put_slice(this.ready);
                *this.ready = Bytes::new();
                *this.parked = false;
                *this.want = 0;
                *this.need = 0;
                *this.buf = Some(buf);
            }
            let buf = this.buf.as_mut().expect("set above");
            // 3. A full buffer: cut it (a frame longer than the buffer moves
            // to a buffer of its own size in step 2).
            if buf.len() == buf.capacity() {
                *this.ready = this.buf.take().expect("set above").freeze();
                continue;
            }
            // 4. Read; on a pause, hand out what is complete.
            match poll_read_into(this.reader.as_mut(), buf, cx) {
                Poll::Ready(Ok(0)) => {
                    *this.eof = true;
                    *this.ready = this.buf.take().expect("set above").freeze();
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return fail(this.done, this.buf, this.ready, e),
                // Nothing has arrived: an idle peer pins no arena memory (the
                // buffer goes back, and a new one is taken when the socket
                // wakes us).
                Poll::Pending if buf.is_empty() => {
                    *this.buf = None;
                    return Poll::Pending;
                }
                Poll::Pending => match this.framing.step_within(buf, this.source.max_len()) {
                    Ok(Step::Frame { .. }) => {
                        *this.ready = this.buf.take().expect("set above").freeze();
                    }
                    Ok(Step::Incomplete { .. }) => return Poll::Pending,
                    Err(e) => return fail(this.done, this.buf, this.ready, e),
                },
            }
        }
    }
}

impl<R, S: BufferSource> std::fmt::Debug for Frames<R, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("framing", &self.framing)
            .field("chunk_size", &self.chunk_size)
            .field("buffered", &self.ready.len())
            .finish()
    }
}

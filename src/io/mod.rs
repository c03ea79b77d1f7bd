//! Reading sockets straight into arena memory (feature `io`).
//!
//! [`Frames`] wraps any [`AsyncRead`] (a `TcpStream`, a `UnixStream`, a TLS
//! stream) and a [`BufferSource`], reads into the spare capacity of arena
//! [`Buffer`]s (no intermediate `BytesMut`), and yields the frames a
//! [`FrameDecoder`] finds: length-delimited or lines ([`Framing`]), or a
//! protocol of your own. The short paths are one line, like tokio_util's
//! `new_read(io)`:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::num::NonZeroUsize;
//! use arenabuf::{io::Frames, FixedArena};
//! use futures::StreamExt;
//!
//! let arena = FixedArena::builder(NonZeroUsize::new(256).unwrap(), NonZeroUsize::new(64 * 1024).unwrap())
//!     .build()?; // 16 MiB cap
//! # let socket: &[u8] = &[0, 0, 0, 2, b'h', b'i'];
//! let mut frames = Frames::length_delimited(socket, arena)?; // frames up to 64 KiB
//! while let Some(frame) = frames.next().await {
//!     assert_eq!(frame?, "hi");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Frames::builder`] has the options (chunk size, a shared
//! [`CopyBudget`], [`max_wait`](FramesBuilder::max_wait), the zero-copy
//! opt-out). [`ArenaReader`] alone is a stream of the raw chunks read.
//!
//! # Backpressure
//!
//! When the source has no buffer free, the reader waits for one
//! ([`BufferSource::allocate_wait`]) and does **not** poll the socket
//! meanwhile. The kernel's receive buffer fills, the peer's TCP window
//! closes, and the peer stops sending; memory stays within the arena's cap.
//! Reading resumes when frames are dropped. (Memory becomes latency: data
//! waits in the kernel's socket buffers, bounded by `SO_RCVBUF` on our side
//! and `SO_SNDBUF` on the peer's.)
//!
//! # What a held frame costs
//!
//! The liveness rule: **a frame the application keeps costs about its own
//! size, never a neighbour's.** In the default (compact) mode:
//!
//! - a frame smaller than half its chunk is copied once, as it is cut, into
//!   memory of its own size: a block of the source where the source fits it
//!   tightly (a [`BuddyArena`](crate::BuddyArena): at most twice the frame,
//!   counted against the arena's cap), else the heap, counted against the
//!   reader's [`CopyBudget`] (a [`FixedArena`](crate::FixedArena), whose
//!   slots are far larger than such frames);
//! - a larger frame is a slice of its chunk (it pins at most twice its size)
//!   or, when it does not fit the chunk, is read straight into a buffer of
//!   exactly its payload's size;
//! - a reader holds at most one chunk of its own, and none while it waits
//!   for memory or while its peer is idle (what it has not framed yet moves
//!   to the heap, less than a chunk).
//!
//! So the memory N connections need is about **N chunks plus the bytes of
//! the frames the application holds** (up to twice that, for power-of-two
//! blocks and half-chunk slices); a reader stalls only when the application
//! holds more than the arena (or the copy budget) can take. With
//! [`FramesBuilder::zero_copy`] every frame is a slice of its chunk, which
//! saves the copy but makes a kept frame pin its whole chunk (64 KiB for a
//! 100-byte frame by default): only for consumers that drop each frame
//! before asking for the next few, or that [`detach`](Frames::detach) what
//! they keep. [`Frames::metrics`] shows which frames were sliced, copied or
//! read straight, and how many chunk bytes the slices came from.
//!
//! # Cancellation and bounded waits
//!
//! Dropping a `next()` future mid-wait (under `tokio::time::timeout`, in a
//! losing `select!` branch) is safe: the stream keeps its bytes and its
//! place in the arena's queue, and the next `next()` resumes where it was.
//! Dropping the stream gives both back. [`FramesBuilder::max_wait`] makes
//! the stream itself give up after a while, with a [`WaitTimeout`] error.

mod decode;
mod error;
mod frames;

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes};
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, ReadBuf};

pub use decode::{Decoded, FrameDecoder, Framing};
pub use error::{ReaderError, WaitTimeout};
pub use frames::{CopyBudget, Frames, FramesBuilder, FramesMetrics};

use crate::codec::alloc_error;
use crate::{AllocError, Buffer, BufferSource};

/// The default chunk size: 64 KiB, a typical socket read.
pub(crate) const DEFAULT_CHUNK: usize = 64 * 1024;

/// Getting a buffer from a source: at once if one is free, else by waiting.
/// Keeps the wait future between polls, so a pending wait is resumed (and
/// cancelled when dropped), never started twice.
struct Acquire<S: BufferSource> {
    wait: Option<(S::Wait, usize)>,
}

impl<S: BufferSource> Acquire<S> {
    fn new() -> Self {
        Self { wait: None }
    }

    fn poll_buffer(
        &mut self,
        source: &S,
        len: NonZeroUsize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Buffer>> {
        if self.wait.as_ref().is_some_and(|(_, l)| *l != len.get()) {
            self.wait = None;
        }
        if self.wait.is_none() {
            match source.try_allocate(len) {
                Ok(buf) => return Poll::Ready(Ok(buf)),
                Err(AllocError::ArenaFull) => {
                    self.wait = Some((source.allocate_wait(len), len.get()))
                }
                Err(e) => return Poll::Ready(Err(alloc_error(e))),
            }
        }
        let (wait, _) = self.wait.as_mut().expect("set above");
        let result = ready!(Pin::new(wait).poll(cx));
        self.wait = None;
        Poll::Ready(result.map_err(alloc_error))
    }
}

/// Reads once from `reader` into the spare capacity of `buf`; returns the
/// number of bytes read (0 at EOF or when `buf` is full).
fn poll_read_into<R: AsyncRead>(
    reader: Pin<&mut R>,
    buf: &mut Buffer,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    poll_read_upto(reader, buf, usize::MAX, cx)
}

/// [`poll_read_into`], reading at most `max` bytes.
fn poll_read_upto<R: AsyncRead>(
    reader: Pin<&mut R>,
    buf: &mut Buffer,
    max: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let spare = (buf.capacity() - buf.len()).min(max);
    if spare == 0 {
        return Poll::Ready(Ok(0));
    }
    let chunk = buf.chunk_mut();
    // SAFETY: `ReadBuf` only ever writes initialised bytes into the slice
    // and never de-initialises it; `chunk` is the buffer's spare capacity.
    let uninit = unsafe { chunk.as_uninit_slice_mut() };
    let mut read_buf = ReadBuf::uninit(&mut uninit[..spare]);
    ready!(reader.poll_read(cx, &mut read_buf))?;
    let n = read_buf.filled().len();
    // SAFETY: `ReadBuf` guarantees its first `filled().len()` bytes were
    // initialised, and they are the first bytes of the spare capacity.
    unsafe { buf.advance_mut(n) };
    Poll::Ready(Ok(n))
}

pin_project! {
    /// An [`AsyncRead`] adapter that reads into arena buffers: a [`Stream`]
    /// of the chunks read, as `Bytes` in arena memory.
    ///
    /// Each item is one read (at most [`chunk_size`](Self::chunk_size)
    /// bytes) in a buffer of its own. Use [`frames`](Self::frames) for a
    /// stream of frames instead. See the [module docs](crate::io) for the
    /// backpressure.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::num::NonZeroUsize;
    /// use arenabuf::{io::{ArenaReader, Framing}, FixedArena};
    /// use bytes::Bytes;
    /// use futures::{SinkExt, StreamExt};
    /// use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};
    ///
    /// let arena = FixedArena::builder(NonZeroUsize::new(8).unwrap(), NonZeroUsize::new(4096).unwrap())
    ///     .build()?;
    /// let (client, server) = tokio::io::duplex(4096);
    /// let mut tx = FramedWrite::new(client, LengthDelimitedCodec::new());
    /// tx.send(Bytes::from_static(b"one")).await?;
    /// tx.send(Bytes::from_static(b"two")).await?;
    /// drop(tx);
    ///
    /// // Frames up to 4 KiB (a slot): the layout must fit the source.
    /// let layout = arenabuf::codec::LengthDelimited::builder().max_frame_length(4096).layout()?;
    /// let frames: Vec<_> = ArenaReader::new(server, arena.clone())
    ///     .frames(Framing::length_delimited(layout))?
    ///     .collect()
    ///     .await;
    /// assert_eq!(frames.len(), 2);
    /// assert_eq!(frames[0].as_ref().unwrap(), "one");
    /// assert_eq!(frames[1].as_ref().unwrap(), "two");
    /// // Small frames were copied out of the chunk: they hold no slot.
    /// assert_eq!(arena.metrics().live_slots, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub struct ArenaReader<R, S: BufferSource> {
        #[pin]
        reader: R,
        source: S,
        chunk_size: NonZeroUsize,
        acquire: Acquire<S>,
        buf: Option<Buffer>,
        done: bool,
    }
}

impl<R: AsyncRead, S: BufferSource> ArenaReader<R, S> {
    /// Reads from `reader` into buffers from `source`, in chunks of 64 KiB
    /// or the source's [`max_len`](BufferSource::max_len), whichever is
    /// smaller.
    pub fn new(reader: R, source: S) -> Self {
        let chunk = DEFAULT_CHUNK.min(source.max_len()).max(1);
        Self {
            reader,
            chunk_size: NonZeroUsize::new(chunk).expect("at least 1"),
            source,
            acquire: Acquire::new(),
            buf: None,
            done: false,
        }
    }

    /// Reads at most `chunk_size` bytes per chunk (capped at the source's
    /// `max_len`). With a `FixedArena`, the slot capacity is the natural
    /// choice.
    #[must_use]
    pub fn with_chunk_size(mut self, chunk_size: NonZeroUsize) -> Self {
        let chunk = chunk_size.get().min(self.source.max_len()).max(1);
        self.chunk_size = NonZeroUsize::new(chunk).expect("at least 1");
        self
    }

    /// The most bytes read into one chunk.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size.get()
    }

    /// The buffer source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// A stream of the frames `decoder` finds in the bytes read, with this
    /// reader's chunk size and otherwise the default configuration
    /// ([`Frames::builder`] has the options). Small frames are copied into
    /// memory of their own size as they are cut; see the
    /// [module docs](crate::io#what-a-held-frame-costs).
    ///
    /// # Errors
    ///
    /// [`ReaderError::FrameTooLarge`] when the decoder allows frames larger
    /// than the source can hand out in one buffer.
    pub fn frames<D: FrameDecoder>(self, decoder: D) -> Result<Frames<R, S, D>, ReaderError> {
        FramesBuilder::new(self.source)
            .chunk_size(self.chunk_size)
            .new_read(self.reader, decoder)
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

impl<R: AsyncRead, S: BufferSource> Stream for ArenaReader<R, S> {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if this.buf.is_none() {
            // Backpressure: no buffer, no read.
            match ready!(this.acquire.poll_buffer(this.source, *this.chunk_size, cx)) {
                Ok(buf) => *this.buf = Some(buf),
                Err(e) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        let buf = this.buf.as_mut().expect("set above");
        let Poll::Ready(result) = poll_read_into(this.reader, buf, cx) else {
            // Nothing to read: an idle peer pins no arena memory; a new
            // buffer is taken when the reader wakes us.
            *this.buf = None;
            return Poll::Pending;
        };
        let buf = this.buf.take().expect("set above");
        match result {
            Err(e) => {
                *this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Ok(0) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Ok(_) => Poll::Ready(Some(Ok(buf.freeze()))),
        }
    }
}

impl<R, S: BufferSource> std::fmt::Debug for ArenaReader<R, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaReader")
            .field("chunk_size", &self.chunk_size)
            .field("waiting", &self.acquire.wait.is_some())
            .finish()
    }
}

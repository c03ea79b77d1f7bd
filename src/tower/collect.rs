//! `Collect`: reads a request body into one contiguous arena block.
//!
//! The policy (the [module docs](super) state it for users):
//!
//! 1. Nothing is allocated before the body's first bytes arrive.
//! 2. The first chunks are *staged*: kept as the server delivered them (no
//!    copy, no arena memory), up to [`STAGE_CHUNKS`] chunks and
//!    [`STAGE_BYTES`] bytes. A body that ends within that gets one block of
//!    exactly its length, and each byte is copied once.
//! 3. A longer body gets a block when staging is full: its declared length
//!    if it has one (`Content-Length` or an exact `size_hint`), otherwise
//!    about four times what has arrived. The staged chunks and every later
//!    chunk are copied straight into it. A body of unknown length that
//!    outgrows its block moves to one twice as large (one copy of what it
//!    holds). A block of a body of unknown length is thus at most about
//!    eight times the bytes received; a declared length is reserved whole
//!    once the stage is full, and `body_timeout` takes it back from a
//!    client that stops sending.
//! 4. A finished body whose block is four or more times its length moves to
//!    an exact one if the arena has it free at once.
//!
//! Every wait for a block is bounded (`wait_timeout`; on HTTP/2, while the
//! client may still be sending, `http2_wait_timeout`), and a request that
//! holds memory and whose client sends nothing for `body_timeout` gives it
//! back (408).

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut};
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{HeaderMap, Version};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::{ArenaBody, BodyRejection, Config};
use crate::{AllocError, Buffer, BufferSource};

/// The most chunks a body keeps staged before it takes an arena block.
pub(crate) const STAGE_CHUNKS: usize = 8;
/// The most bytes a body keeps staged before it takes an arena block.
pub(crate) const STAGE_BYTES: usize = 128 * 1024;

/// Up to [`STAGE_CHUNKS`] chunks of a body, as received.
struct Staged<D> {
    chunks: [Option<D>; STAGE_CHUNKS],
    count: usize,
    bytes: usize,
}

impl<D: Buf> Staged<D> {
    fn new() -> Self {
        Self {
            chunks: std::array::from_fn(|_| None),
            count: 0,
            bytes: 0,
        }
    }

    /// Keeps `data` if there is room for it (in chunks and bytes); gives it
    /// back otherwise.
    fn push(&mut self, data: D) -> Result<(), D> {
        let n = data.remaining();
        if self.count == STAGE_CHUNKS || self.bytes + n > STAGE_BYTES {
            return Err(data);
        }
        self.chunks[self.count] = Some(data);
        self.count += 1;
        self.bytes += n;
        Ok(())
    }

    /// Copies the staged chunks into `buf` in order, and drops them.
    fn drain_into(&mut self, buf: &mut Buffer) {
        for slot in &mut self.chunks[..self.count] {
            if let Some(data) = slot.take() {
                put_all(buf, data);
            }
        }
        self.count = 0;
        self.bytes = 0;
    }

    fn clear(&mut self) {
        self.chunks[..self.count].iter_mut().for_each(|c| *c = None);
        self.count = 0;
        self.bytes = 0;
    }
}

pin_project! {
    /// Reads a body into one contiguous arena buffer.
    #[project = CollectProj]
    pub(crate) struct Collect<B: Body, S: BufferSource> {
        #[pin]
        body: B,
        // The one timer of a request (a wait's bound, or the body's idle
        // timeout; never both at once), boxed and made only when first
        // needed, so the common path carries and moves no timer.
        timer: Option<Pin<Box<Sleep>>>,
        // Whether `timer` is set for the current idle spell of the body.
        idle_armed: bool,
        source: S,
        config: Config,
        // HTTP/2 or later: a wait holds flow-control window the connection's
        // other streams share.
        multiplexed: bool,
        // The declared length (`Content-Length` or an exact size hint), at
        // most the limit.
        declared: Option<usize>,
        // A failed header check, reported on the first poll.
        refused: Option<BodyRejection>,
        staged: Staged<B::Data>,
        buf: Option<Buffer>,
        wait: Option<S::Wait>,
        // A chunk that fits neither the stage nor `buf`, written once the
        // larger buffer comes.
        pending: Option<B::Data>,
        trailers: Option<Box<HeaderMap>>,
        // Bytes of body received so far.
        seen: usize,
        // The body has ended (every byte is in `staged`, `buf`, `pending`).
        ended: bool,
        // `buf` was sized by a guess (a body of unknown length), not for a
        // known length.
        guessed: bool,
        // A 503 to answer once the rest of the body has been read and
        // discarded (see `poll_collect`).
        draining: Option<BodyRejection>,
    }
}

impl<B: Body, S: BufferSource> Collect<B, S> {
    pub(crate) fn new(parts: &Parts, body: B, source: S, config: Config) -> Self {
        let mut refused = None;
        let mut declared = None;
        let hint = body.size_hint();
        let length = match parts.headers.get(CONTENT_LENGTH) {
            Some(v) => match parse_length(v.as_bytes()) {
                Some(n) => Some(n),
                None => {
                    refused = Some(BodyRejection::InvalidContentLength);
                    None
                }
            },
            None => hint.exact(),
        };
        let lower = hint.lower();
        match length {
            Some(n) if n > config.limit as u64 => {
                refused = Some(BodyRejection::LengthTooLarge {
                    declared: n,
                    limit: config.limit,
                });
            }
            // Fits `usize`: it is at most the limit.
            Some(n) => declared = Some(n as usize),
            None if lower > config.limit as u64 => {
                refused = Some(BodyRejection::TooLarge {
                    limit: config.limit,
                });
            }
            None => {}
        }
        Self {
            body,
            timer: None,
            idle_armed: false,
            source,
            config,
            multiplexed: parts.version >= Version::HTTP_2,
            declared,
            refused,
            staged: Staged::new(),
            buf: None,
            wait: None,
            pending: None,
            trailers: None,
            seen: 0,
            ended: false,
            guessed: false,
            draining: None,
        }
    }

    pub(crate) fn poll_collect(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ArenaBody, BodyRejection>>
    where
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut this = self.project();
        if let Some(refused) = this.refused.take() {
            return Poll::Ready(Err(refused));
        }
        loop {
            if let Some(wait) = this.wait.as_mut() {
                match Pin::new(wait).poll(cx) {
                    Poll::Ready(result) => {
                        *this.wait = None;
                        let new = result.map_err(|e| unavailable(e, this.config))?;
                        install(&mut this, new);
                        continue;
                    }
                    Poll::Pending => {
                        if !timer_fired(this.timer, cx) {
                            return Poll::Pending;
                        }
                        // Dropping the wait gives up its place in the queue;
                        // the memory held goes back at once.
                        *this.wait = None;
                        release(&mut this);
                        let rejection = BodyRejection::CapacityTimeout {
                            timeout: wait_bound(this.config, *this.multiplexed, *this.ended),
                            retry_after_secs: this.config.retry_after_secs,
                        };
                        if *this.ended {
                            return Poll::Ready(Err(rejection));
                        }
                        *this.draining = Some(rejection);
                        *this.idle_armed = false;
                    }
                }
            }
            if this.draining.is_some() {
                return drain(&mut this, cx);
            }
            if *this.ended {
                if this.buf.is_none() && this.staged.count > 0 {
                    // The whole body is staged: one block of exactly its
                    // length.
                    start_allocation(*this.seen, &mut this);
                    continue;
                }
                return Poll::Ready(finish(&mut this));
            }
            let frame = match this.body.as_mut().poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => return idle(&mut this, cx),
            };
            *this.idle_armed = false;
            let Some(frame) = frame else {
                *this.ended = true;
                continue;
            };
            let frame = frame.map_err(|e| {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                BodyRejection::Body { source: e.into() }
            })?;
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        match this.trailers {
                            Some(t) => t.extend(trailers),
                            None => *this.trailers = Some(Box::new(trailers)),
                        }
                    }
                    continue;
                }
            };
            let n = data.remaining();
            if n == 0 {
                continue;
            }
            *this.seen = this.seen.saturating_add(n);
            if *this.seen > this.config.limit {
                release(&mut this);
                return Poll::Ready(Err(BodyRejection::TooLarge {
                    limit: this.config.limit,
                }));
            }
            let data = match this.buf.as_mut() {
                Some(buf) if buf.capacity() - buf.len() >= n => {
                    put_all(buf, data);
                    continue;
                }
                Some(_) => data,
                None => match this.staged.push(data) {
                    Ok(()) => continue,
                    Err(data) => data,
                },
            };
            // Neither the stage nor the block has room: a (larger) block.
            *this.pending = Some(data);
            let len = block_len(&mut this)?;
            start_allocation(len, &mut this);
        }
    }
}

/// The body's memory so far goes back (staged chunks, block, pending chunk).
fn release<B: Body, S: BufferSource>(this: &mut CollectProj<'_, B, S>) {
    *this.buf = None;
    *this.pending = None;
    this.staged.clear();
}

/// Whether the request holds any of its body.
fn holds<B: Body, S: BufferSource>(this: &CollectProj<'_, B, S>) -> bool {
    this.buf.is_some() || this.staged.count > 0 || this.pending.is_some()
}

/// The body has nothing to give now: while the request holds memory (or is
/// draining), the client has `body_timeout` to send the next frame.
fn idle<B: Body, S: BufferSource>(
    this: &mut CollectProj<'_, B, S>,
    cx: &mut Context<'_>,
) -> Poll<Result<ArenaBody, BodyRejection>> {
    if !holds(this) {
        // Holds nothing: a silent client costs the arena nothing.
        return Poll::Pending;
    }
    if !*this.idle_armed {
        arm(this.timer, this.config.body_timeout);
        *this.idle_armed = true;
    }
    if !timer_fired(this.timer, cx) {
        return Poll::Pending;
    }
    release(this);
    Poll::Ready(Err(BodyRejection::BodyTimeout {
        timeout: this.config.body_timeout,
    }))
}

/// A 503 while the client may still be sending: read and discard the rest
/// (up to the limit, holding no memory, and while the client keeps sending
/// within `body_timeout`) so that the client reads the answer on a clean
/// connection instead of a reset, and so that on HTTP/2 the stream gives its
/// flow-control window back to the connection at once. A 413 does not do
/// this: that body is not worth reading, and the connection closes after
/// the answer.
fn drain<B: Body, S: BufferSource>(
    this: &mut CollectProj<'_, B, S>,
    cx: &mut Context<'_>,
) -> Poll<Result<ArenaBody, BodyRejection>> {
    while *this.seen <= this.config.limit {
        match this.body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.idle_armed = false;
                if let Some(data) = frame.data_ref() {
                    *this.seen = this.seen.saturating_add(data.remaining());
                }
            }
            Poll::Ready(_) => break,
            Poll::Pending => {
                if !*this.idle_armed {
                    arm(this.timer, this.config.body_timeout);
                    *this.idle_armed = true;
                }
                if !timer_fired(this.timer, cx) {
                    return Poll::Pending;
                }
                break;
            }
        }
    }
    Poll::Ready(Err(this
        .draining
        .take()
        .expect("drain() runs only with a pending 503")))
}

/// The body has ended: its one block (made now from the staged chunks if
/// need be), frozen.
fn finish<B: Body, S: BufferSource>(
    this: &mut CollectProj<'_, B, S>,
) -> Result<ArenaBody, BodyRejection> {
    debug_assert!(
        this.staged.count == 0,
        "finish() runs once the stage has a block"
    );
    let trailers = this.trailers.take();
    let Some(mut buf) = this.buf.take() else {
        return Ok(ArenaBody::new(bytes::Bytes::new(), trailers));
    };
    // A block four or more times the body (a body of unknown length that
    // stopped soon after a growth): move to an exact one if it is free now.
    let len = buf.len();
    if *this.guessed && len > 0 && buf.capacity() / 4 >= len {
        if let Ok(mut exact) = this
            .source
            .try_allocate(NonZeroUsize::new(len).expect("len > 0"))
        {
            if exact.capacity() < buf.capacity() {
                exact.put_slice(&buf);
                buf = exact;
            }
        }
    }
    Ok(ArenaBody::new(buf.freeze(), trailers))
}

/// The block a body needs now, for `seen` bytes received.
fn block_len<B: Body, S: BufferSource>(
    this: &mut CollectProj<'_, B, S>,
) -> Result<usize, BodyRejection> {
    let need = *this.seen;
    let limit = this.config.limit;
    if let Some(declared) = *this.declared {
        if declared >= need && this.buf.is_none() {
            return Ok(declared);
        }
    }
    *this.guessed = true;
    let held = this.buf.as_ref().map_or(0, Buffer::capacity);
    let len = if held == 0 {
        // The first block: about four times what arrived.
        need.saturating_mul(4)
    } else {
        // Outgrown: at least twice the block.
        need.max(held.saturating_mul(2))
    }
    .checked_next_power_of_two()
    .unwrap_or(usize::MAX)
    .min(limit);
    // Growing copies out of the block held, so both are needed at once.
    let room = this.source.max_len().saturating_sub(held);
    if need > room {
        return Err(BodyRejection::TooLargeToGrow {
            received: need,
            largest: room,
        });
    }
    Ok(len.min(room).max(need))
}

/// Called when the stage is full, when the block is, and at the end with
/// staged chunks: gets a block of `len` bytes now, or starts a bounded wait
/// for one.
fn start_allocation<B: Body, S: BufferSource>(len: usize, this: &mut CollectProj<'_, B, S>) {
    let Some(len) = NonZeroUsize::new(len) else {
        return;
    };
    match this.source.try_allocate(len) {
        Ok(new) => install(this, new),
        Err(_) => {
            // Also for `RequestTooLarge` (a source whose `max_len` shrank):
            // the wait resolves with the error at once.
            *this.wait = Some(this.source.allocate_wait(len));
            arm(
                this.timer,
                wait_bound(this.config, *this.multiplexed, *this.ended),
            );
            *this.idle_armed = false;
        }
    }
}

/// How long a request may wait for a block: `wait_timeout`, or on HTTP/2
/// while the client may still be sending (its unread DATA holds connection
/// window) the shorter of it and `http2_wait_timeout`.
fn wait_bound(config: &Config, multiplexed: bool, ended: bool) -> Duration {
    if multiplexed && !ended {
        config.wait_timeout.min(config.http2_wait_timeout)
    } else {
        config.wait_timeout
    }
}

/// Moves the bytes so far into `new` (one copy), then the staged chunks and
/// the pending chunk.
fn install<B: Body, S: BufferSource>(this: &mut CollectProj<'_, B, S>, mut new: Buffer) {
    if let Some(old) = this.buf.take() {
        new.put_slice(&old);
    }
    this.staged.drain_into(&mut new);
    if let Some(data) = this.pending.take() {
        put_all(&mut new, data);
    }
    *this.buf = Some(new);
}

/// Sets the request's timer to fire `after` from now.
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, after: Duration) {
    // About 30 years: tokio's own "far future" for durations that overflow.
    let deadline = Instant::now()
        .checked_add(after)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365 * 30));
    match timer {
        Some(sleep) => sleep.as_mut().reset(deadline),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
}

/// Whether the armed timer has fired (registering the waker if not).
fn timer_fired(timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    timer
        .as_mut()
        .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
}

/// A `Content-Length` value: one or more ASCII digits, nothing else (no
/// sign, no spaces, no list), that fits a `u64`.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Copies all of `data` into `buf`, which has room for it.
#[inline]
fn put_all<D: Buf>(buf: &mut Buffer, mut data: D) {
    while data.has_remaining() {
        let chunk = data.chunk();
        let n = chunk.len();
        buf.put_slice(chunk);
        data.advance(n);
    }
}

/// An allocation error the checks above should have ruled out (a source
/// whose `max_len` shrank, or a custom source that fails a wait).
fn unavailable(error: AllocError, config: &Config) -> BodyRejection {
    match error {
        AllocError::RequestTooLarge { .. } => BodyRejection::TooLarge {
            limit: config.limit,
        },
        _ => BodyRejection::CapacityTimeout {
            timeout: config.wait_timeout,
            retry_after_secs: config.retry_after_secs,
        },
    }
}

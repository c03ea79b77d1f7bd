//! [`ResponseFuture`]: collects the body into arena memory, then runs the
//! inner service's future.
//!
//! Collecting: with a known length (`Content-Length`, or an exact
//! `size_hint`) one buffer of that size is allocated before the first read.
//! Without one the buffer starts at the first chunk's size and, when a chunk
//! does not fit, is replaced by one at least twice as large (capped at the
//! limit) into which the bytes so far are copied once. Each byte is thus
//! copied at most about twice in total (n + n/2 + n/4 + ...), the result is
//! one contiguous buffer, and every byte held stays arena memory, under the
//! cap: keeping the chunks until the end and joining them would hold the body
//! on the heap, outside the cap, and need a second copy of the whole anyway.

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::{ArenaBody, BodyRejection, Config, ResponseBody};
use crate::{AllocError, Buffer, BufferSource};

pin_project! {
    /// The response future of [`ArenaBodyService`](super::ArenaBodyService).
    ///
    /// First collects the request body (waiting for arena capacity if need
    /// be), then calls the inner service and drives its future. Dropping it
    /// at any point releases the body's arena memory and any place in the
    /// arena's wait queue.
    pub struct ResponseFuture<B: Body, I, F, S: BufferSource> {
        #[pin]
        state: State<B, I, F, S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B: Body, I, F, S: BufferSource> {
        Collect {
            #[pin]
            collect: Collect<B, S>,
            inner: Option<I>,
            parts: Option<Parts>,
        },
        Call {
            #[pin]
            future: F,
        },
        Done,
    }
}

impl<B: Body, I, F, S: BufferSource> ResponseFuture<B, I, F, S> {
    pub(crate) fn new(req: Request<B>, inner: I, source: S, config: Config) -> Self {
        let (parts, body) = req.into_parts();
        let collect = Collect::new(&parts.headers, body, source, config);
        Self {
            state: State::Collect {
                collect,
                inner: Some(inner),
                parts: Some(parts),
            },
        }
    }
}

impl<B, I, F, S, ResBody, E> Future for ResponseFuture<B, I, F, S>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: Service<Request<ArenaBody>, Response = Response<ResBody>, Error = E, Future = F>,
    F: Future<Output = Result<Response<ResBody>, E>>,
    S: BufferSource,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProj::Collect {
                    collect,
                    inner,
                    parts,
                } => {
                    let headers = parts.as_ref().map(|p| &p.headers);
                    let result = ready!(collect.poll_collect(cx, headers));
                    match result {
                        Ok(body) => {
                            let (Some(mut inner), Some(parts)) = (inner.take(), parts.take())
                            else {
                                unreachable!("the Collect state holds both until it ends")
                            };
                            let future = inner.call(Request::from_parts(parts, body));
                            self.as_mut().project().state.set(State::Call { future });
                        }
                        Err(rejection) => {
                            self.as_mut().project().state.set(State::Done);
                            return Poll::Ready(Ok(reject(rejection)));
                        }
                    }
                }
                StateProj::Call { future } => {
                    let response = ready!(future.poll(cx));
                    self.as_mut().project().state.set(State::Done);
                    return Poll::Ready(response.map(|r| r.map(ResponseBody::new)));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// The layer's own answer to a request it refused.
fn reject<B>(rejection: BodyRejection) -> Response<ResponseBody<B>> {
    let mut res = Response::new(ResponseBody::rejection(rejection.text()));
    *res.status_mut() = rejection.status();
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let BodyRejection::CapacityTimeout {
        retry_after_secs, ..
    } = rejection
    {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    res.extensions_mut().insert(rejection);
    res
}

pin_project! {
    /// Reads a body into one contiguous arena buffer.
    #[project = CollectProj]
    struct Collect<B: Body, S: BufferSource> {
        #[pin]
        body: B,
        // The wait timeout's timer, boxed: made only when a request has to
        // wait, so the common path carries and moves no timer.
        sleep: Option<Pin<Box<Sleep>>>,
        source: S,
        config: Config,
        // The length to allocate before the first read, when known up front.
        initial: usize,
        // A failed header check, reported on the first poll.
        refused: Option<BodyRejection>,
        buf: Option<Buffer>,
        wait: Option<S::Wait>,
        // A chunk that did not fit `buf`, written once the larger buffer comes.
        pending: Option<B::Data>,
        trailers: Option<Box<HeaderMap>>,
        // Bytes of body received so far.
        seen: usize,
        // Whether the body has been polled (which, with `Expect:
        // 100-continue`, lets hyper tell the client to send it).
        polled: bool,
        // A 503 to answer once the rest of the body has been read and
        // discarded (see `poll_collect`).
        draining: Option<BodyRejection>,
    }
}

impl<B: Body, S: BufferSource> Collect<B, S> {
    fn new(headers: &HeaderMap, body: B, source: S, config: Config) -> Self {
        let mut refused = None;
        let mut initial = 0;
        let declared = match headers.get(CONTENT_LENGTH) {
            Some(v) => match parse_length(v.as_bytes()) {
                Some(n) => Some(n),
                None => {
                    refused = Some(BodyRejection::InvalidContentLength);
                    None
                }
            },
            None => body.size_hint().exact(),
        };
        let lower = body.size_hint().lower();
        match declared {
            Some(n) if n > config.limit as u64 => {
                refused = Some(BodyRejection::LengthTooLarge {
                    declared: n,
                    limit: config.limit,
                });
            }
            // Fits `usize`: it is at most the limit.
            Some(n) => initial = n as usize,
            None if lower > config.limit as u64 => {
                refused = Some(BodyRejection::TooLarge {
                    limit: config.limit,
                });
            }
            None => {}
        }
        Self {
            body,
            sleep: None,
            source,
            config,
            initial,
            refused,
            buf: None,
            wait: None,
            pending: None,
            trailers: None,
            seen: 0,
            polled: false,
            draining: None,
        }
    }

    /// `headers` are the request's (looked at only on the rare paths).
    fn poll_collect(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        headers: Option<&HeaderMap>,
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
                        *this.sleep = None;
                        let new = result.map_err(|e| unavailable(e, this.config))?;
                        install(this.buf, new, this.pending);
                    }
                    Poll::Pending => {
                        if let Some(sleep) = this.sleep.as_mut() {
                            if sleep.as_mut().poll(cx).is_ready() {
                                // Dropping the wait gives up its place in the
                                // queue; the memory held goes back at once.
                                *this.wait = None;
                                *this.sleep = None;
                                *this.buf = None;
                                *this.pending = None;
                                let rejection = BodyRejection::CapacityTimeout {
                                    timeout: this.config.wait_timeout.unwrap_or_default(),
                                    retry_after_secs: this.config.retry_after_secs,
                                };
                                let expect_continue =
                                    headers.and_then(|h| h.get(EXPECT)).is_some_and(|v| {
                                        v.as_bytes().eq_ignore_ascii_case(b"100-continue")
                                    });
                                if expect_continue && !*this.polled {
                                    // The client waits for a 100 Continue
                                    // before sending: it sends nothing now.
                                    return Poll::Ready(Err(rejection));
                                }
                                *this.draining = Some(rejection);
                                break;
                            }
                        }
                        return Poll::Pending;
                    }
                }
            }
            if this.draining.is_some() {
                break;
            }
            if *this.initial > 0 {
                let len = std::mem::take(this.initial);
                start_allocation(len, &mut this)?;
                continue;
            }
            *this.polled = true;
            let Some(frame) = ready!(this.body.as_mut().poll_frame(cx)) else {
                let data = this.buf.take().map(Buffer::freeze).unwrap_or_default();
                return Poll::Ready(Ok(ArenaBody::new(data, this.trailers.take())));
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
            *this.seen = this.seen.saturating_add(data.remaining());
            let (len, cap) = this
                .buf
                .as_ref()
                .map_or((0, 0), |b| (b.len(), b.capacity()));
            let need = len.saturating_add(data.remaining());
            if need > this.config.limit {
                return Poll::Ready(Err(BodyRejection::TooLarge {
                    limit: this.config.limit,
                }));
            }
            if need <= cap {
                if let Some(buf) = this.buf.as_mut() {
                    put_all(buf, data);
                }
            } else if need > 0 {
                *this.pending = Some(data);
                let grown = need.max(cap.saturating_mul(2)).min(this.config.limit);
                start_allocation(grown, &mut this)?;
            }
        }
        // A 503 while the client may still be sending: read and discard the
        // rest (up to the limit, holding no memory) so that the client reads
        // the answer on a clean connection instead of a reset. A 413 does
        // not do this: that body is not worth reading, and the connection
        // closes after the answer.
        while *this.seen <= this.config.limit {
            match ready!(this.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        *this.seen = this.seen.saturating_add(data.remaining());
                    }
                }
                _ => break,
            }
        }
        Poll::Ready(Err(this
            .draining
            .take()
            .expect("only a pending 503 leaves the collecting loop")))
    }
}

/// Gets a buffer of `len` bytes now, or starts waiting for one.
fn start_allocation<B: Body, S: BufferSource>(
    len: usize,
    this: &mut CollectProj<'_, B, S>,
) -> Result<(), BodyRejection> {
    let Some(len) = NonZeroUsize::new(len) else {
        return Ok(());
    };
    match this.source.try_allocate(len) {
        Ok(new) => {
            install(this.buf, new, this.pending);
            Ok(())
        }
        Err(AllocError::ArenaFull) => {
            *this.wait = Some(this.source.allocate_wait(len));
            if let Some(timeout) = this.config.wait_timeout {
                *this.sleep = Some(Box::pin(tokio::time::sleep(timeout)));
            }
            Ok(())
        }
        Err(e) => Err(unavailable(e, this.config)),
    }
}

/// Moves the bytes so far into `new` (one copy), then the pending chunk.
fn install<D: Buf>(buf: &mut Option<Buffer>, mut new: Buffer, pending: &mut Option<D>) {
    if let Some(old) = buf.take() {
        new.put_slice(&old);
    }
    if let Some(data) = pending.take() {
        put_all(&mut new, data);
    }
    *buf = Some(new);
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
            timeout: config.wait_timeout.unwrap_or_default(),
            retry_after_secs: config.retry_after_secs,
        },
    }
}

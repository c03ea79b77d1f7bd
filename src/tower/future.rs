//! [`ResponseFuture`]: collects the body into arena memory (see
//! [`collect`](super::collect) for how), then runs the inner service's
//! future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderValue, Request, Response, Version};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::collect::Collect;
use super::{ArenaBody, BodyRejection, Config, ResponseBody};
use crate::BufferSource;

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
        let collect = Collect::new(&parts, body, source, config);
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
                    let result = ready!(collect.poll_collect(cx));
                    let (Some(mut inner), Some(parts)) = (inner.take(), parts.take()) else {
                        unreachable!("the Collect state holds both until it ends")
                    };
                    match result {
                        Ok(body) => {
                            // For the axum extractor only: an extension costs
                            // two heap allocations.
                            #[cfg(feature = "axum")]
                            let parts = {
                                let mut parts = parts;
                                parts.extensions.insert(super::Collected);
                                parts
                            };
                            let future = inner.call(Request::from_parts(parts, body));
                            self.as_mut().project().state.set(State::Call { future });
                        }
                        Err(rejection) => {
                            self.as_mut().project().state.set(State::Done);
                            return Poll::Ready(Ok(reject(rejection, parts.version)));
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
fn reject<B>(rejection: BodyRejection, version: Version) -> Response<ResponseBody<B>> {
    // Operators see backpressure and hostile clients in their logs
    // (feature `tracing`): memory refusals are warnings, the rest info.
    let status = u64::from(rejection.status().as_u16());
    match &rejection {
        BodyRejection::CapacityTimeout { timeout, .. } => crate::trace::event!(
            warn,
            "request body refused: no arena memory within wait_timeout",
            status = status,
            waited_ms = timeout.as_millis() as u64,
        ),
        BodyRejection::BodyTimeout { timeout } => crate::trace::event!(
            info,
            "request body timed out while holding arena memory",
            status = status,
            timeout_ms = timeout.as_millis() as u64,
        ),
        BodyRejection::LengthTooLarge { .. }
        | BodyRejection::TooLarge { .. }
        | BodyRejection::TooLargeToGrow { .. } => crate::trace::event!(
            info,
            "request body too large",
            status = status,
            reason = rejection.to_string().as_str(),
        ),
        _ => crate::trace::event!(
            debug,
            "request body rejected",
            status = status,
            reason = rejection.to_string().as_str(),
        ),
    }
    let mut res = Response::new(ResponseBody::rejection(rejection.text()));
    *res.status_mut() = rejection.status();
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match rejection {
        BodyRejection::CapacityTimeout {
            retry_after_secs, ..
        } => {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        // The rest of the body was not read: on HTTP/1 the connection cannot
        // be reused (HTTP/2 streams end on their own; the header is not
        // allowed there).
        BodyRejection::BodyTimeout { .. } if version <= Version::HTTP_11 => {
            res.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    res.extensions_mut().insert(rejection);
    res
}

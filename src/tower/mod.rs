//! [`ArenaBodyLayer`]: a `tower` layer that collects HTTP request bodies into
//! arena memory (feature `tower`).
//!
//! Put it in front of any `Service<http::Request<B>>` (a hyper service, an
//! axum `Router`, a tower stack): it reads each request body into one
//! contiguous buffer from a [`BufferSource`](crate::BufferSource) (a
//! [`BuddyArena`](crate::BuddyArena) suits bodies of varying size) and calls
//! the inner service with `http::Request<`[`ArenaBody`]`>`, whose
//! [`into_bytes`](ArenaBody::into_bytes) is the whole body as one
//! arena-backed [`Bytes`](bytes::Bytes). The memory of all bodies in flight
//! is then capped by the arena.
//!
//! - **Memory follows the bytes received.** Nothing is allocated before
//!   the body's first bytes arrive: a client that sends headers only (or
//!   waits for `100 Continue`) holds no memory, however large its
//!   `Content-Length`. The first chunks (up to 8 chunks and 128 KiB) are
//!   kept as the server delivered them; a body that ends within that gets
//!   one block of exactly its length. A longer body then gets one block:
//!   its declared length (`Content-Length` or an exact `size_hint`), or,
//!   without one, about four times what has arrived, moving to a block
//!   twice as large when full (one copy of what it holds). So a body of
//!   unknown length holds at most about 8x the bytes it has sent (before
//!   the arena's rounding to its block sizes), and a declared length is
//!   reserved only once 128 KiB (or 8 chunks) of it has arrived. Each byte
//!   is copied once into its block (a body of unknown length also copies
//!   what it holds each time it outgrows a block, less than the body in
//!   all, and once more if it ends in a block four or more times its size
//!   and an exact one is free), and the result is one contiguous block of
//!   arena memory.
//! - **Idle bodies lose their memory.** A request that holds memory and
//!   receives no body frame for `body_timeout` (default 10 s) gives it back
//!   and is answered `408 Request Timeout` (with `Connection: close` on
//!   HTTP/1). A request that holds nothing is not timed by the layer.
//! - **Limit.** A body over `max_body_size` is answered
//!   `413 Payload Too Large` without reading the rest; a `Content-Length`
//!   over it is refused before anything is read. A body without a declared
//!   length that outgrows what the arena can hold beside the block it
//!   already has (a `max_body_size` near the arena's size) is answered 413
//!   too: send a `Content-Length` for bodies that large.
//! - **Backpressure, always bounded.** When the arena is exhausted the
//!   request waits for capacity
//!   ([`BufferSource::allocate_wait`](crate::BufferSource::allocate_wait):
//!   fair, first come first served), without reading more of its body, for
//!   at most `wait_timeout` (default 5 s; there is no unbounded wait, so
//!   bodies that wait to grow while holding memory cannot wedge the server).
//!   Then it is answered `503 Service Unavailable` with `Retry-After`: its
//!   memory goes back at once, then the rest of its body is read and
//!   discarded (up to `max_body_size`, holding no memory, while the client
//!   keeps sending within `body_timeout`) so that a client still sending
//!   reads the 503 on a clean connection rather than a reset.
//! - **HTTP/2.** A waiting HTTP/2 stream is not backpressure on its client
//!   alone: the DATA it does not read holds the connection's shared
//!   flow-control window (hyper's server defaults: 1 MiB per stream, 1 MiB
//!   per connection), so the other uploads on the connection stall behind
//!   it. An HTTP/2 request whose client may still be sending therefore
//!   waits at most `http2_wait_timeout` (default 100 ms), then is answered
//!   503 and its body drained, which gives the window back: no stream's
//!   wait delays the others on its connection by more than that. Raising
//!   hyper's `initial_connection_window_size` above the streams' windows
//!   makes such stalls rarer, never impossible.
//! - **Errors.** A body that fails (the client went away, a protocol error)
//!   or a malformed `Content-Length` is answered `400 Bad Request`; the
//!   inner service is not called. In every refusal all memory and the place
//!   in the wait queue are released before the response is returned, and
//!   the response's extensions carry the [`BodyRejection`] saying why.
//!
//! The layer's responses and the inner service's share one body type,
//! [`ResponseBody`], as tower-http's middlewares do; nothing is boxed.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::{convert::Infallible, num::NonZeroUsize, time::Duration};
//! use arenabuf::tower::{ArenaBody, ArenaBodyLayer};
//! use arenabuf::BuddyArena;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! let nz = |n| NonZeroUsize::new(n).unwrap();
//! let arena = BuddyArena::builder(nz(64 << 20), nz(4096)).build()?; // 64 MiB for all bodies
//! let layer = ArenaBodyLayer::builder(arena.clone())
//!     .max_body_size(8 << 20)
//!     .wait_timeout(Duration::from_secs(2))
//!     .build()?;
//! let service = layer.layer(service_fn(|req: Request<ArenaBody>| async move {
//!     let body: Bytes = req.into_body().into_bytes(); // one contiguous arena buffer
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.len().to_string()))))
//! }));
//!
//! let req = Request::post("/upload").body(Full::new(Bytes::from_static(b"hello")))?;
//! let res = service.clone().oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//!
//! let req = Request::post("/upload")
//!     .header("content-length", "9000000")
//!     .body(Full::new(Bytes::new()))?;
//! let res = service.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE); // refused before any allocation
//! assert_eq!(arena.metrics().live_bytes, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # With axum
//!
//! Put the layer on the router with `Router::layer(layer)` (it then covers
//! the routes added before it; unmatched paths collect nothing) and take
//! the body with `ArenaBytes` (feature `axum`), or with axum's own `Bytes`,
//! which is the arena block too, without a copy. Two rules:
//!
//! - **axum's `DefaultBodyLimit` (2 MB) still applies to axum's `Bytes`,
//!   `String`, `Json` and `Form` extractors** behind the layer, so bodies
//!   between 2 MB and `max_body_size` would get a second, different 413.
//!   Add `.layer(DefaultBodyLimit::disable())` to the router (the layer
//!   enforces the limit), or use `ArenaBytes`, which ignores it.
//! - A handler cannot take `Request<ArenaBody>`: axum hands handlers
//!   `Request<axum::body::Body>` (the error is axum's opaque "Handler not
//!   implemented"). Take `ArenaBytes` (or `Bytes`) instead.
//!
//! Wrapping the whole `Router` (`layer.layer(router)`) also works, but its
//! response body is then [`ResponseBody`], so `axum::serve` needs it mapped
//! back (`MapResponse` with `res.map(axum::body::Body::new)`) and wrapped
//! as a make-service (`tower::make::Shared::new(svc)`); the
//! `Router::layer` form needs nothing. A whole server, tested over loopback
//! with hyper's HTTP/1.1 and HTTP/2 clients, raw TCP and curl, is in
//! `integrations/axum-upload`; the extractor's docs have a compiled
//! example.

#[cfg(feature = "axum")]
mod axum;
mod body;
mod collect;
mod future;
mod layer;
mod service;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

#[cfg(feature = "axum")]
pub use axum::{ArenaBytes, ArenaBytesRejection};
pub use body::{ArenaBody, ResponseBody};
pub use future::ResponseFuture;
pub use layer::{ArenaBodyLayer, ArenaBodyLayerBuilder};
pub use service::ArenaBodyService;

/// How long a request may wait for arena memory by default
/// ([`ArenaBodyLayerBuilder::wait_timeout`]).
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an HTTP/2 request whose client may still be sending may wait for
/// arena memory by default ([`ArenaBodyLayerBuilder::http2_wait_timeout`]).
pub const DEFAULT_HTTP2_WAIT_TIMEOUT: Duration = Duration::from_millis(100);

/// How long a request that holds memory may go without receiving a body
/// frame by default ([`ArenaBodyLayerBuilder::body_timeout`]).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The checked settings a layer hands each service.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// The largest body accepted; at most the source's `max_len()`.
    pub(crate) limit: usize,
    pub(crate) wait_timeout: Duration,
    pub(crate) http2_wait_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) retry_after_secs: u64,
}

impl Config {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            http2_wait_timeout: DEFAULT_HTTP2_WAIT_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            retry_after_secs: 1,
        }
    }
}

/// Put in the request's extensions by the layer (with the `axum` feature),
/// so that `ArenaBytes` can tell a collected body from one that did not
/// pass through it.
#[cfg(feature = "axum")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Collected;

/// Why [`ArenaBodyLayer`] answered a request itself instead of calling the
/// inner service.
///
/// It is in the extensions of the response (`response.extensions().get::<BodyRejection>()`),
/// for logging and tests; the status code follows from it ([`status`](Self::status)).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BodyRejection {
    /// The `Content-Length` is over the limit; nothing was read or allocated.
    /// Answered 413.
    #[error(
        "request body of {declared} bytes (Content-Length) exceeds the limit of {limit} bytes; send at most {limit} bytes"
    )]
    LengthTooLarge {
        /// The length the client declared.
        declared: u64,
        /// The layer's `max_body_size`.
        limit: usize,
    },
    /// The body grew past the limit while being read; the rest was not read.
    /// Answered 413.
    #[error("request body exceeds the limit of {limit} bytes; send at most {limit} bytes")]
    TooLarge {
        /// The layer's `max_body_size`.
        limit: usize,
    },
    /// No arena capacity came free within the wait timeout
    /// (`wait_timeout`, or `http2_wait_timeout` for an HTTP/2 request whose
    /// client was still sending). Answered 503 with `Retry-After`.
    #[error(
        "no memory for the request body came free within {timeout:?}; the server is busy, retry in {retry_after_secs} s"
    )]
    CapacityTimeout {
        /// The layer's `wait_timeout`.
        timeout: Duration,
        /// The `Retry-After` sent, in seconds.
        retry_after_secs: u64,
    },
    /// The request held memory and its client sent nothing for
    /// `body_timeout`; the memory went back and the rest of the body was
    /// not read. Answered 408 (with `Connection: close` on HTTP/1).
    #[error(
        "the client sent no body data for {timeout:?} while the request held memory; send the body without pauses that long"
    )]
    BodyTimeout {
        /// The layer's `body_timeout`.
        timeout: Duration,
    },
    /// A body without a declared length outgrew its block, and the arena
    /// cannot hold the larger block beside it (growing copies from one to
    /// the other). Answered 413.
    #[error(
        "request body without a Content-Length grew to {received} bytes, but the arena can grow a body only to {largest} bytes; send a Content-Length, or a smaller body"
    )]
    TooLargeToGrow {
        /// Bytes received when it could not grow.
        received: usize,
        /// The most the arena could hold beside the block already held.
        largest: usize,
    },
    /// The `Content-Length` header is not a decimal number. Answered 400.
    #[error("the Content-Length header is not a valid length; send a decimal byte count")]
    InvalidContentLength,
    /// Reading the body failed (the client went away or broke the
    /// protocol). Answered 400.
    #[error("reading the request body failed: {source}")]
    Body {
        /// The body's error.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl BodyRejection {
    /// The status code the layer answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::LengthTooLarge { .. } | Self::TooLarge { .. } | Self::TooLargeToGrow { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::CapacityTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::InvalidContentLength | Self::Body { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The short text of the response body.
    fn text(&self) -> &'static str {
        match self {
            Self::LengthTooLarge { .. } | Self::TooLarge { .. } | Self::TooLargeToGrow { .. } => {
                "request body too large\n"
            }
            Self::BodyTimeout { .. } => "request body timed out\n",
            Self::CapacityTimeout { .. } => {
                "server busy: no memory for the request body, retry later\n"
            }
            Self::InvalidContentLength => "invalid Content-Length\n",
            Self::Body { .. } => "could not read the request body\n",
        }
    }
}

/// What is wrong with an [`ArenaBodyLayer`] configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_body_size` is larger than the largest buffer the source can hand
    /// out, so bodies between the two could never be collected.
    #[error(
        "max_body_size {max_body_size} exceeds the largest buffer the source can hand out ({source_max} bytes); lower it or use a larger arena"
    )]
    MaxBodyExceedsSource {
        /// The requested `max_body_size`.
        max_body_size: usize,
        /// The source's `max_len()`.
        source_max: usize,
    },
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests;

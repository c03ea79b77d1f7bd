//! [`ArenaBytes`], the axum extractor for a body [`ArenaBodyLayer`] collected
//! (feature `axum`).
//!
//! [`ArenaBodyLayer`]: super::ArenaBodyLayer

use std::future::poll_fn;
use std::ops::Deref;
use std::pin::Pin;

use axum_core::extract::{FromRequest, Request};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http_body::Body as _;

use super::Collected;

/// The request body that [`ArenaBodyLayer`](super::ArenaBodyLayer)
/// collected, as one arena-backed [`Bytes`] (no copy): an axum extractor
/// (feature `axum`).
///
/// Put the layer on the router with `Router::layer` (or on a route with
/// `MethodRouter::layer`) and take `ArenaBytes` in the handler. The layer has
/// already enforced its `max_body_size`, so, unlike axum's `Bytes`, `String`
/// and `Json` extractors, `ArenaBytes` is **not** subject to axum's
/// `DefaultBodyLimit` (2 MB unless changed): bodies up to the layer's limit
/// arrive whole. To use axum's own extractors behind the layer instead (they
/// also get the arena memory without a copy), add
/// `.layer(DefaultBodyLimit::disable())`, or raise it to the layer's limit,
/// or they answer a second, different 413 above 2 MB.
///
/// The layer tells the extractor that it collected the body through a marker
/// in the request's extensions, which it adds only with this feature on (a
/// request without extensions then costs two small heap allocations more).
///
/// Without the layer in front of the handler, the extractor does not read
/// the body (it would be unbounded, heap memory) and answers
/// `500 Internal Server Error` ([`ArenaBytesRejection::MissingLayer`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use std::num::NonZeroUsize;
/// use arenabuf::BuddyArena;
/// use arenabuf::tower::{ArenaBodyLayer, ArenaBytes};
/// use axum::{Router, body::Body, routing::post};
/// use http::{Request, StatusCode};
/// use tower::ServiceExt;
///
/// async fn upload(ArenaBytes(body): ArenaBytes) -> String {
///     // `body` is the arena block itself.
///     format!("{} bytes", body.len())
/// }
///
/// let nz = |n| NonZeroUsize::new(n).unwrap();
/// let arena = BuddyArena::builder(nz(64 << 20), nz(4096)).build()?;
/// let layer = ArenaBodyLayer::builder(arena.clone())
///     .max_body_size(16 << 20)
///     .build()?;
/// let app = Router::new()
///     .route("/upload", post(upload))
///     .layer(layer); // covers the routes above
///
/// // Serve it with `axum::serve(listener, app).await?`; here, one request
/// // in-process. 3 MB: over axum's DefaultBodyLimit, which ArenaBytes
/// // does not apply (the layer's 16 MiB limit does).
/// let req = Request::post("/upload").body(Body::from(vec![7u8; 3_000_000]))?;
/// let res = app.clone().oneshot(req).await?;
/// assert_eq!(res.status(), StatusCode::OK);
/// assert_eq!(arena.metrics().live_bytes, 0); // the handler has dropped it
///
/// // Over the layer's limit: its 413, before anything is read.
/// let req = Request::post("/upload")
///     .header("content-length", (17 << 20).to_string())
///     .body(Body::empty())?;
/// assert_eq!(app.oneshot(req).await?.status(), StatusCode::PAYLOAD_TOO_LARGE);
/// # Ok(())
/// # }
/// ```
///
/// The [module docs](super) say how the layer sizes, times and limits
/// bodies.
#[derive(Debug, Clone)]
pub struct ArenaBytes(pub Bytes);

impl ArenaBytes {
    /// The body.
    pub fn into_inner(self) -> Bytes {
        self.0
    }
}

impl Deref for ArenaBytes {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        &self.0
    }
}

impl<S: Send + Sync> FromRequest<S> for ArenaBytes {
    type Rejection = ArenaBytesRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if req.extensions().get::<Collected>().is_none() {
            return Err(ArenaBytesRejection::MissingLayer);
        }
        // The layer's body is one data frame (the arena block), then the
        // trailers if any; axum's boxing passes the frame through as is.
        let mut body = req.into_body();
        let mut data = Bytes::new();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            // An ArenaBody never fails; a layer between it and the handler
            // that wraps the body might.
            let frame = frame.map_err(|source| ArenaBytesRejection::Body { source })?;
            if let Ok(chunk) = frame.into_data() {
                debug_assert!(data.is_empty(), "an ArenaBody has one data frame");
                data = chunk;
            }
        }
        Ok(Self(data))
    }
}

/// Why [`ArenaBytes`] could not extract the body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArenaBytesRejection {
    /// No [`ArenaBodyLayer`](super::ArenaBodyLayer) collected the request's
    /// body: a configuration error, answered `500 Internal Server Error`.
    #[error(
        "ArenaBytes needs ArenaBodyLayer in front of the handler: add `.layer(arena_layer)` to the Router (after the routes it should cover) or to the route"
    )]
    MissingLayer,
    /// A layer between `ArenaBodyLayer` and the handler wrapped the body,
    /// and that body failed. Answered `400 Bad Request`.
    #[error("reading the request body failed: {source}")]
    Body {
        /// The body's error.
        source: axum_core::Error,
    },
}

impl IntoResponse for ArenaBytesRejection {
    fn into_response(self) -> Response {
        let status = match self {
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Body { .. } => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

//! An axum upload server whose request bodies live in a capped arena.
//!
//! [`app`] puts arenabuf's [`ArenaBodyLayer`] in front of an axum
//! [`Router`]: every request body is collected into one contiguous block of a
//! [`BuddyArena`] before the router sees it, so the memory of all bodies in
//! flight is capped by the arena. `POST /upload` answers
//! `len=<bytes> crc32=<hex>`; with `?hold_ms=N` the handler keeps the body
//! (and its arena memory) for N milliseconds first, like a slow consumer.
//!
//! Bodies over the limit get 413, requests that find the arena exhausted for
//! longer than the wait timeout get 503 with `Retry-After`, and broken
//! bodies get 400: all answered by the layer, before the router.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let config = axum_upload::Config::default();
//! let (arena, layer) = config.build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum_upload::serve(listener, layer).await?;
//! # drop(arena);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod metrics;
pub use metrics::{CONTENT_TYPE, app_with_metrics, metrics_text};

use std::num::NonZeroUsize;
use std::time::Duration;

use arenabuf::BuddyArena;
use arenabuf::tower::{ArenaBodyLayer, ArenaBodyService, ResponseBody};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query};
use axum::response::Response;
use axum::routing::post;
use tower::Layer;
use tower::util::MapResponse;

/// The server's arena and limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes of arena memory for all request bodies together.
    pub arena_size: usize,
    /// The smallest block the arena hands out.
    pub min_block: usize,
    /// The largest body accepted (at most `arena_size`).
    pub max_body_size: usize,
    /// How long a request may wait for arena memory before a 503.
    pub wait_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            arena_size: 64 << 20,
            min_block: 4096,
            max_body_size: 16 << 20,
            wait_timeout: Some(Duration::from_secs(2)),
        }
    }
}

impl Config {
    /// The arena and the layer over it (keep the arena to read its metrics).
    ///
    /// # Errors
    ///
    /// A message naming what is wrong with the sizes.
    pub fn build(&self) -> Result<(BuddyArena, ArenaBodyLayer<BuddyArena>), String> {
        let nz = |n: usize, what: &str| NonZeroUsize::new(n).ok_or(format!("{what} must not be 0"));
        let arena = BuddyArena::builder(
            nz(self.arena_size, "arena_size")?,
            nz(self.min_block, "min_block")?,
        )
        .build()
        .map_err(|e| e.to_string())?;
        let mut layer = ArenaBodyLayer::builder(arena.clone()).max_body_size(self.max_body_size);
        if let Some(timeout) = self.wait_timeout {
            layer = layer.wait_timeout(timeout);
        }
        let layer = layer.build().map_err(|e| e.to_string())?;
        Ok((arena, layer))
    }
}

/// The query of `POST /upload`.
#[derive(Debug, serde::Deserialize)]
struct Upload {
    /// Milliseconds to keep the body before answering.
    #[serde(default)]
    hold_ms: u64,
}

/// `POST /upload`: the body's length and CRC-32.
async fn upload(Query(q): Query<Upload>, body: Bytes) -> String {
    // `body` is the arena block itself: axum hands the layer's one frame
    // through without a copy.
    if q.hold_ms > 0 {
        tokio::time::sleep(Duration::from_millis(q.hold_ms)).await;
    }
    format!("len={} crc32={:08x}", body.len(), crc32fast::hash(&body))
}

/// The routes, without the arena layer.
pub fn router() -> Router {
    Router::new()
        .route("/upload", post(upload))
        // The arena layer enforces the limit; axum's own 2 MB default would
        // refuse larger bodies first.
        .layer(DefaultBodyLimit::disable())
}

/// Turns the layer's response body into axum's.
pub type ToAxumBody = fn(http::Response<ResponseBody<Body>>) -> Response;

/// The whole service: the arena layer in front of the router.
pub type App = MapResponse<ArenaBodyService<Router, BuddyArena>, ToAxumBody>;

/// The router behind `layer`, as one service axum can serve.
pub fn app(layer: ArenaBodyLayer<BuddyArena>) -> App {
    let to_axum: ToAxumBody = |res| res.map(Body::new);
    MapResponse::new(layer.layer(router()), to_axum)
}

/// Serves [`app`], and `GET /metrics` ([`app_with_metrics`]), on `listener`
/// until the task is dropped.
///
/// # Errors
///
/// The listener's I/O errors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    layer: ArenaBodyLayer<BuddyArena>,
) -> std::io::Result<()> {
    use axum::ServiceExt;
    let make = ServiceExt::<http::Request<Body>>::into_make_service(app_with_metrics(layer));
    axum::serve(listener, make).await
}

//! An axum upload server whose request bodies live in a capped arena.
//!
//! [`app`] is an axum [`Router`] with arenabuf's [`ArenaBodyLayer`] on it
//! (`Router::layer`): every request body is collected into one contiguous
//! block of a [`BuddyArena`] before its handler runs, so the memory of all
//! bodies in flight is capped by the arena, and the handlers take it with
//! the [`ArenaBytes`] extractor (no copy). `POST /upload` answers
//! `len=<bytes> crc32=<hex>`; with `?hold_ms=N` the handler keeps the body
//! (and its arena memory) for N milliseconds first, like a slow consumer.
//! `POST /upload-bytes` answers the same with axum's own `Bytes` extractor,
//! which is the arena block too, but which axum's `DefaultBodyLimit` (2 MB)
//! would cut short: the router disables that limit, as every router behind
//! the layer that uses axum's body extractors must.
//!
//! Bodies over the limit get 413, requests that find the arena exhausted for
//! longer than the wait timeout get 503 with `Retry-After`, clients that
//! hold memory and go silent get 408, and broken bodies get 400: all
//! answered by the layer, before the handler. HTTP/1.1 and HTTP/2 (prior
//! knowledge, `h2c`) are both served.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
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
use arenabuf::tower::{ArenaBodyLayer, ArenaBytes};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query};
use axum::routing::post;

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
    pub wait_timeout: Duration,
    /// How long an HTTP/2 request whose client is still sending may wait
    /// for arena memory before a 503 (its unread data holds the
    /// connection's flow-control window).
    pub http2_wait_timeout: Duration,
    /// How long a request holding memory may receive nothing before a 408.
    pub body_timeout: Duration,
}

impl Default for Config {
    /// A 64 MiB arena, 16 MiB bodies, and the layer's default timeouts.
    fn default() -> Self {
        Self {
            arena_size: 64 << 20,
            min_block: 4096,
            max_body_size: 16 << 20,
            wait_timeout: arenabuf::tower::DEFAULT_WAIT_TIMEOUT,
            http2_wait_timeout: arenabuf::tower::DEFAULT_HTTP2_WAIT_TIMEOUT,
            body_timeout: arenabuf::tower::DEFAULT_BODY_TIMEOUT,
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
        let layer = ArenaBodyLayer::builder(arena.clone())
            .max_body_size(self.max_body_size)
            .wait_timeout(self.wait_timeout)
            .http2_wait_timeout(self.http2_wait_timeout)
            .body_timeout(self.body_timeout)
            .build()
            .map_err(|e| e.to_string())?;
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
async fn upload(Query(q): Query<Upload>, ArenaBytes(body): ArenaBytes) -> String {
    // `body` is the arena block itself.
    if q.hold_ms > 0 {
        tokio::time::sleep(Duration::from_millis(q.hold_ms)).await;
    }
    format!("len={} crc32={:08x}", body.len(), crc32fast::hash(&body))
}

/// `POST /upload-bytes`: the same with axum's `Bytes` extractor (also the
/// arena block, without a copy, but subject to `DefaultBodyLimit`).
async fn upload_bytes(body: Bytes) -> String {
    format!("len={} crc32={:08x}", body.len(), crc32fast::hash(&body))
}

/// The routes with the arena layer on them.
pub fn app(layer: ArenaBodyLayer<BuddyArena>) -> Router {
    Router::new()
        .route("/upload", post(upload))
        .route("/upload-bytes", post(upload_bytes))
        // The arena layer enforces the limit; axum's own 2 MB default would
        // refuse larger bodies in `Bytes`, `String`, `Json` and `Form`
        // (not in `ArenaBytes`).
        .layer(DefaultBodyLimit::disable())
        // Collects every body of the routes above into the arena.
        .layer(layer)
}

/// Serves [`app`], and `GET /metrics` ([`app_with_metrics`]), on `listener`
/// (HTTP/1.1 and HTTP/2) until the task is dropped.
///
/// # Errors
///
/// The listener's I/O errors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    layer: ArenaBodyLayer<BuddyArena>,
) -> std::io::Result<()> {
    axum::serve(listener, app_with_metrics(layer)).await
}

/// Serves [`app`] on `listener` until `signal` completes, then stops
/// accepting and returns once every request in flight has finished.
///
/// # Errors
///
/// The listener's I/O errors.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    layer: ArenaBodyLayer<BuddyArena>,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app_with_metrics(layer))
        .with_graceful_shutdown(signal)
        .await
}

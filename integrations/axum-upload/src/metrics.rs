//! `GET /metrics`: the arena's gauges and counters in the Prometheus text
//! format, rendered by [`arenabuf::write_prometheus`].
//!
//! The route sits outside the arena layer: a scrape never waits for arena
//! memory, so it answers while uploads are stalled on a full arena, which is
//! when an operator wants it.

use arenabuf::tower::ArenaBodyLayer;
use arenabuf::{BuddyArena, BufferSource};
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

/// The Prometheus text exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The arena's metrics in the Prometheus text format, labelled
/// `arena="upload_bodies"`.
pub fn metrics_text(arena: &BuddyArena) -> String {
    let mut text = String::new();
    arenabuf::write_prometheus(&mut text, &[("upload_bodies", arena.arena_metrics())])
        .expect("writing to a String cannot fail");
    text
}

async fn metrics(State(arena): State<BuddyArena>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics_text(&arena),
    )
}

/// [`app`](crate::app) behind `layer`, plus `GET /metrics` for the layer's
/// arena, answered without going through the layer.
pub fn app_with_metrics(layer: ArenaBodyLayer<BuddyArena>) -> Router {
    let arena = layer.source().clone();
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(arena)
        .fallback_service(crate::app(layer))
}

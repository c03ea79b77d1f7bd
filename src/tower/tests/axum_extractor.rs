//! The `ArenaBytes` extractor behind `Router::layer`, and without the layer.

use ::axum::Router;
use ::axum::body::Body as AxumBody;
use ::axum::routing::post;

use super::*;

async fn upload(ArenaBytes(body): ArenaBytes) -> String {
    format!(
        "{}:{}",
        body.len(),
        body.iter().map(|&b| u64::from(b)).sum::<u64>()
    )
}

#[tokio::test]
async fn arena_bytes_gets_the_block_past_axums_default_limit() {
    let arena = buddy(8 << 20);
    let layer = ArenaBodyLayer::new(arena.clone());
    let app = Router::new().route("/", post(upload)).layer(layer);
    let data = pattern(3 << 20);
    let sum: u64 = data.iter().map(|&b| u64::from(b)).sum();
    let res = app
        .oneshot(
            Request::post("/")
                .body(AxumBody::from(data.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, format!("{}:{sum}", data.len()));
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn arena_bytes_without_the_layer_is_a_500_that_reads_nothing() {
    let app = Router::new().route("/", post(upload));
    let res = app
        .oneshot(Request::post("/").body(AxumBody::from("hello")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text(res).await.contains("ArenaBodyLayer"));
}

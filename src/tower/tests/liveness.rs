//! Memory for bytes received, bounded waits and the idle timeout, with a
//! body the test feeds frame by frame (tokio's paused clock turns the
//! timeouts into steps, not sleeps).

use tokio::sync::mpsc;

use super::*;

/// A body whose frames the test sends through a channel; it ends when the
/// sender drops.
struct Fed {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|b| Ok(Frame::data(b))))
    }
}

fn fed() -> (mpsc::UnboundedSender<Bytes>, Fed) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Fed { rx })
}

fn post(version: http::Version, content_length: Option<usize>, body: Fed) -> Request<Fed> {
    let mut req = Request::post("/").version(version);
    if let Some(n) = content_length {
        req = req.header("content-length", n);
    }
    req.body(body).unwrap()
}

/// Lets the spawned request run until it waits on its body or the arena.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn header_only_requests_hold_no_memory_and_honest_ones_pass() {
    // Arena = limit = 1 MiB: one reservation of the declared length would
    // lock everybody else out.
    let arena = buddy(1 << 20);
    let layer = ArenaBodyLayer::new(arena.clone());
    let mut silent = Vec::new();
    for _ in 0..4 {
        let (tx, body) = fed();
        let svc = layer.layer(echo(Vec::new()));
        let req = post(http::Version::HTTP_11, Some(1 << 20), body);
        silent.push((tx, tokio::spawn(svc.oneshot(req))));
    }
    settle().await;
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0), "{m:?}");
    let data = pattern(5);
    let (body, _) = Scripted::chunks(&data, 5);
    let req = Request::post("/")
        .header("content-length", "5")
        .body(body)
        .unwrap();
    let res = layer.layer(echo(data)).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Header-only requests are never timed out by the layer (they cost it
    // nothing): still pending after far more than every timeout.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    for (_, task) in &silent {
        assert!(!task.is_finished());
    }
    for (tx, task) in silent {
        drop(tx);
        task.abort();
    }
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn memory_follows_the_bytes_received() {
    let arena = buddy(16 << 20);
    let layer = ArenaBodyLayer::new(arena.clone());
    for content_length in [Some(8 << 20), None] {
        let (tx, body) = fed();
        let data = pattern(8 << 20);
        let task = tokio::spawn(layer.layer(echo(data.clone())).oneshot(post(
            http::Version::HTTP_11,
            content_length,
            body,
        )));
        let mut sent = 0;
        for chunk in data.chunks(16 * 1024) {
            tx.send(Bytes::copy_from_slice(chunk)).unwrap();
            sent += chunk.len();
            settle().await;
            let live = arena.metrics().live_bytes;
            // Nothing until a stage's worth has arrived; then the declared
            // length, or at most 8x what arrived.
            let bound = content_length.unwrap_or(8 * sent);
            assert!(
                live <= bound,
                "{live} bytes held after {sent} received ({content_length:?})"
            );
            if sent <= collect::STAGE_BYTES {
                assert_eq!(live, 0, "a block before the stage filled");
            }
        }
        drop(tx);
        let res = task.await.unwrap().unwrap();
        assert_eq!(text(res).await, (8 << 20).to_string());
        assert_eq!(arena.metrics().live_bytes, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_body_that_holds_memory_gets_408_and_gives_it_back() {
    let arena = buddy(1 << 20);
    let layer = ArenaBodyLayer::builder(arena.clone())
        .body_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        let (tx, body) = fed();
        let task = tokio::spawn(layer.layer(echo(Vec::new())).oneshot(post(
            version,
            Some(1 << 20),
            body,
        )));
        // Past the stage: the request takes its whole declared block.
        for _ in 0..9 {
            tx.send(Bytes::from(pattern(16 * 1024))).unwrap();
        }
        settle().await;
        assert_eq!(arena.metrics().live_bytes, 1 << 20);
        // Then nothing: after body_timeout the memory goes back.
        let res = task.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT, "{version:?}");
        assert!(matches!(
            res.extensions().get::<BodyRejection>(),
            Some(BodyRejection::BodyTimeout { .. })
        ));
        assert_eq!(
            res.headers().get("connection").map(|v| v.as_bytes()),
            (version == http::Version::HTTP_11).then_some(&b"close"[..])
        );
        assert_eq!(arena.metrics().live_bytes, 0);
        drop(tx);
    }
}

#[tokio::test(start_paused = true)]
async fn growing_bodies_cannot_deadlock_with_the_default_layer() {
    // Four chunked bodies of 1.5 MiB into a 4 MiB arena: each takes a 1 MiB
    // block, then all need a 2 MiB one while holding theirs. Without a
    // bound they would wait on each other forever; with the default one the
    // first to time out give their memory back and the rest finish.
    let arena = buddy(4 << 20);
    let layer = ArenaBodyLayer::new(arena.clone());
    let data = pattern(3 << 19);
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (tx, body) = fed();
        tasks.push(tokio::spawn(layer.layer(echo(data.clone())).oneshot(post(
            http::Version::HTTP_11,
            None,
            body,
        ))));
        senders.push(tx);
    }
    // The bodies send in turn, a little apart, so that all hold blocks at
    // once and their waits start at different times.
    for chunk in data.chunks(16 * 1024) {
        for tx in &senders {
            let _ = tx.send(Bytes::copy_from_slice(chunk));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(arena.metrics().wait_count > 0, "the bodies never waited");
    drop(senders);
    let mut statuses = Vec::new();
    for task in tasks {
        let res = tokio::time::timeout(Duration::from_secs(600), task)
            .await
            .expect("a request hung")
            .unwrap()
            .unwrap();
        statuses.push(res.status());
    }
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0), "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn an_http2_request_still_sending_waits_only_the_short_bound() {
    let arena = buddy(1 << 20);
    let hog = arena.allocate(nz(1 << 20)).unwrap();
    let layer = ArenaBodyLayer::builder(arena.clone())
        .wait_timeout(Duration::from_secs(600))
        .http2_wait_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    for (version, still_sending, bound) in [
        (http::Version::HTTP_2, true, Duration::from_millis(250)),
        // A finished body holds no connection window: the long bound.
        (http::Version::HTTP_2, false, Duration::from_secs(600)),
        (http::Version::HTTP_11, true, Duration::from_secs(600)),
    ] {
        let (tx, body) = fed();
        // Still sending: past the stage, so a 512 KiB block is needed while
        // the client sends on. Finished: a 64 KiB body, all staged.
        let (length, chunks) = if still_sending {
            (512 << 10, 9)
        } else {
            (64 << 10, 4)
        };
        let task = tokio::spawn(layer.layer(echo(Vec::new())).oneshot(post(
            version,
            Some(length),
            body,
        )));
        for _ in 0..chunks {
            tx.send(Bytes::from(pattern(16 * 1024))).unwrap();
        }
        let tx = if still_sending {
            Some(tx)
        } else {
            drop(tx);
            None
        };
        settle().await;
        assert_eq!(arena.metrics().waiting_tasks, 1);
        if let Some(tx) = &tx {
            // After the 503 the rest is read and discarded, giving the
            // window back; the client finishes sending.
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(bound).await;
                while tx.send(Bytes::from_static(&[0; 1024])).is_ok() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
        let res = task.await.unwrap().unwrap();
        drop(tx);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        match res.extensions().get::<BodyRejection>() {
            Some(BodyRejection::CapacityTimeout { timeout, .. }) => {
                assert_eq!(
                    *timeout, bound,
                    "{version:?}, still sending {still_sending}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(arena.metrics().waiting_tasks, 0);
    }
    drop(hog);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn a_chunked_body_that_cannot_grow_beside_its_block_gets_413() {
    // Limit = arena: a chunked body past half of it would need its block and
    // a larger one at once.
    let arena = buddy(1 << 20);
    let data = pattern(1 << 20);
    let (body, _) = Scripted::chunks(&data, 1024);
    let res = ArenaBodyLayer::new(arena.clone())
        .layer(echo(Vec::new()))
        .oneshot(Request::post("/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(matches!(
        res.extensions().get::<BodyRejection>(),
        Some(BodyRejection::TooLargeToGrow { .. })
    ));
    assert_eq!(arena.metrics().live_bytes, 0);
    // With a Content-Length the same body fits.
    let (body, _) = Scripted::chunks(&data, 1024);
    let req = Request::post("/")
        .header("content-length", data.len())
        .body(body)
        .unwrap();
    let res = ArenaBodyLayer::new(arena.clone())
        .layer(echo(data))
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[test]
fn the_defaults_bound_every_wait() {
    let layer = ArenaBodyLayer::new(buddy(1 << 20));
    assert_eq!(layer.wait_timeout(), DEFAULT_WAIT_TIMEOUT);
    assert_eq!(layer.http2_wait_timeout(), DEFAULT_HTTP2_WAIT_TIMEOUT);
    assert_eq!(layer.body_timeout(), DEFAULT_BODY_TIMEOUT);
    assert!(DEFAULT_HTTP2_WAIT_TIMEOUT < DEFAULT_WAIT_TIMEOUT);
    let built = ArenaBodyLayer::builder(buddy(1 << 20)).build().unwrap();
    assert_eq!(built.wait_timeout(), DEFAULT_WAIT_TIMEOUT);
    assert_eq!(built.body_timeout(), DEFAULT_BODY_TIMEOUT);
}

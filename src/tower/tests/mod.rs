//! The layer's behaviour against in-memory bodies: sizing, limits,
//! backpressure, errors, and that every path gives its memory back.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::{BuddyArena, FixedArena};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn buddy(total: usize) -> BuddyArena {
    BuddyArena::builder(nz(total), nz(256)).build().unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A body that hands out scripted frames and counts how many were taken.
struct Scripted {
    frames: VecDeque<Result<Frame<Bytes>, std::io::Error>>,
    taken: Arc<AtomicUsize>,
    hint: SizeHint,
}

impl Scripted {
    fn chunks(data: &[u8], chunk: usize) -> (Self, Arc<AtomicUsize>) {
        let frames = data
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let taken = Arc::new(AtomicUsize::new(0));
        let body = Self {
            frames,
            taken: taken.clone(),
            hint: SizeHint::default(),
        };
        (body, taken)
    }
}

impl Body for Scripted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let next = self.frames.pop_front();
        if next.is_some() {
            self.taken.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(next)
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// Answers with the body's length, and checks it against `expect`.
fn echo(
    expect: Vec<u8>,
) -> impl Service<
    Request<ArenaBody>,
    Response = Response<http_body_util::Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let expect = Arc::new(expect);
    service_fn(move |req: Request<ArenaBody>| {
        let expect = expect.clone();
        async move {
            let body = req.into_body().into_bytes();
            assert_eq!(&body[..], &expect[..], "body corrupted");
            Ok(Response::new(http_body_util::Full::new(Bytes::from(
                body.len().to_string(),
            ))))
        }
    })
}

async fn text<B: Body<Data = Bytes>>(res: Response<B>) -> String
where
    B::Error: std::fmt::Debug,
{
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn content_length_allocates_once_at_the_exact_rounded_size() {
    let arena = buddy(1 << 20);
    let data = pattern(5000);
    let (body, _) = Scripted::chunks(&data, 1000);
    let seen = Arc::new(AtomicUsize::new(0));
    let (arena2, seen2) = (arena.clone(), seen.clone());
    let inner = service_fn(move |req: Request<ArenaBody>| {
        // While the handler holds the body, it is arena memory.
        seen2.store(arena2.metrics().live_bytes, Ordering::Relaxed);
        async move { Ok::<_, Infallible>(Response::new(req.into_body())) }
    });
    let svc = ArenaBodyLayer::new(arena.clone()).layer(inner);
    let req = Request::post("/")
        .header("content-length", "5000")
        .body(body)
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(seen.load(Ordering::Relaxed), 8192);
    assert_eq!(arena.metrics().alloc_count, 1);
    let got = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&got[..], &data[..]);
    drop(got);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn chunked_bodies_are_staged_then_grow_and_stay_contiguous() {
    for len in [1, 255, 4096, 16 * 1024 + 1, 300_000, 1 << 20, 3 << 20] {
        let arena = buddy(8 << 20);
        let data = pattern(len);
        let (body, _) = Scripted::chunks(&data, 4096);
        let held = Arc::new(AtomicUsize::new(0));
        let (arena2, held2, expect) = (arena.clone(), held.clone(), data.clone());
        let inner = service_fn(move |req: Request<ArenaBody>| {
            held2.store(arena2.metrics().live_bytes, Ordering::Relaxed);
            let body = req.into_body().into_bytes();
            assert_eq!(&body[..], &expect[..], "body corrupted");
            async move {
                Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                    body.len().to_string(),
                ))))
            }
        });
        let svc = ArenaBodyLayer::new(arena.clone()).layer(inner);
        let res = svc
            .oneshot(Request::post("/").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, len.to_string());
        // Bodies that fit the stage get one exact block; longer ones a
        // block of about 4x what arrived, then doublings: a few
        // allocations, not one per chunk.
        let allocs = arena.metrics().alloc_count;
        let bound = if len <= collect::STAGE_BYTES {
            1
        } else {
            3 + (len / collect::STAGE_BYTES)
                .next_power_of_two()
                .trailing_zeros() as u64
        };
        assert!(allocs <= bound, "{allocs} allocations for {len} bytes");
        // What the handler holds is within 4x the body (rounded).
        let held = held.load(Ordering::Relaxed);
        assert!(
            held <= (4 * len).next_power_of_two().max(256),
            "{held} bytes held for a {len}-byte body"
        );
        assert_eq!(arena.metrics().live_bytes, 0);
    }
}

#[tokio::test]
async fn exact_size_hint_counts_as_a_known_length() {
    let arena = buddy(1 << 20);
    let data = pattern(3000);
    let (mut body, _) = Scripted::chunks(&data, 100);
    body.hint = SizeHint::with_exact(3000);
    let svc = ArenaBodyLayer::new(arena.clone()).layer(echo(data));
    let res = svc
        .oneshot(Request::post("/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(arena.metrics().alloc_count, 1);
}

#[tokio::test]
async fn a_body_longer_than_its_content_length_still_arrives_whole() {
    let arena = buddy(1 << 20);
    let data = pattern(10_000);
    let (body, _) = Scripted::chunks(&data, 3000);
    let svc = ArenaBodyLayer::new(arena.clone()).layer(echo(data));
    let req = Request::post("/")
        .header("content-length", "100")
        .body(body)
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(text(res).await, "10000");
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn empty_bodies_allocate_nothing() {
    let arena = buddy(1 << 20);
    let (body, _) = Scripted::chunks(&[], 1);
    let svc = ArenaBodyLayer::new(arena.clone()).layer(echo(Vec::new()));
    let req = Request::post("/")
        .header("content-length", "0")
        .body(body)
        .unwrap();
    assert_eq!(text(svc.oneshot(req).await.unwrap()).await, "0");
    assert_eq!(arena.metrics().alloc_count, 0);
}

#[tokio::test]
async fn content_length_over_the_limit_is_refused_before_reading_or_allocating() {
    let arena = buddy(1 << 20);
    let (body, taken) = Scripted::chunks(&pattern(5000), 1000);
    let layer = ArenaBodyLayer::builder(arena.clone())
        .max_body_size(4096)
        .build()
        .unwrap();
    let svc = layer.layer(echo(Vec::new()));
    let req = Request::post("/")
        .header("content-length", "5000")
        .body(body)
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(matches!(
        res.extensions().get::<BodyRejection>(),
        Some(BodyRejection::LengthTooLarge {
            declared: 5000,
            limit: 4096
        })
    ));
    assert!(res.body().is_rejection());
    assert_eq!(taken.load(Ordering::Relaxed), 0);
    assert_eq!(arena.metrics().alloc_count, 0);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_stops_being_read() {
    let arena = buddy(1 << 20);
    let (body, taken) = Scripted::chunks(&pattern(100_000), 1000);
    let layer = ArenaBodyLayer::builder(arena.clone())
        .max_body_size(4500)
        .build()
        .unwrap();
    let res = layer
        .layer(echo(Vec::new()))
        .oneshot(Request::post("/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(taken.load(Ordering::Relaxed), 5, "read past the limit");
    assert_eq!(text(res).await, "request body too large\n");
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn exhausted_arena_and_wait_timeout_answer_503_with_retry_after() {
    let arena = buddy(64 * 1024);
    let hog = arena.allocate(nz(64 * 1024)).unwrap();
    let layer = ArenaBodyLayer::builder(arena.clone())
        .wait_timeout(Duration::from_millis(20))
        .retry_after(Duration::from_millis(2500))
        .build()
        .unwrap();
    let (body, taken) = Scripted::chunks(&pattern(1000), 1000);
    let req = Request::post("/")
        .header("content-length", "1000")
        .body(body)
        .unwrap();
    let res = layer.layer(echo(Vec::new())).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "3");
    assert!(matches!(
        res.extensions().get::<BodyRejection>(),
        Some(BodyRejection::CapacityTimeout {
            retry_after_secs: 3,
            ..
        })
    ));
    // The body was read and discarded, so the client can read the answer.
    assert_eq!(taken.load(Ordering::Relaxed), 1);
    let m = arena.metrics();
    assert_eq!((m.waiting_tasks, m.live_bytes), (0, 64 * 1024));
    drop(hog);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn a_waiting_request_proceeds_when_capacity_comes_back() {
    let arena = buddy(64 * 1024);
    let hog = arena.allocate(nz(64 * 1024)).unwrap();
    let data = pattern(2000);
    let (body, _) = Scripted::chunks(&data, 700);
    let svc = ArenaBodyLayer::new(arena.clone()).layer(echo(data));
    let req = Request::post("/")
        .header("content-length", "2000")
        .body(body)
        .unwrap();
    let task = tokio::spawn(svc.oneshot(req));
    while arena.metrics().waiting_tasks == 0 {
        tokio::task::yield_now().await;
    }
    drop(hog);
    let res = task.await.unwrap().unwrap();
    assert_eq!(text(res).await, "2000");
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn dropping_a_waiting_request_gives_up_its_place() {
    let arena = buddy(64 * 1024);
    let hog = arena.allocate(nz(64 * 1024)).unwrap();
    let (body, _) = Scripted::chunks(&pattern(10), 10);
    let svc = ArenaBodyLayer::new(arena.clone()).layer(echo(Vec::new()));
    let req = Request::post("/")
        .header("content-length", "10")
        .body(body)
        .unwrap();
    let mut fut = Box::pin(svc.oneshot(req));
    assert!(futures::poll!(fut.as_mut()).is_pending());
    assert_eq!(arena.metrics().waiting_tasks, 1);
    drop(fut);
    assert_eq!(arena.metrics().waiting_tasks, 0);
    drop(hog);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn a_failing_body_is_answered_400_and_releases_everything() {
    let arena = buddy(1 << 20);
    let (mut body, _) = Scripted::chunks(&pattern(8000), 4000);
    body.frames.push_back(Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "client went away",
    )));
    let called = Arc::new(AtomicUsize::new(0));
    let called2 = called.clone();
    let inner = service_fn(move |_req: Request<ArenaBody>| {
        called2.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, Infallible>(Response::new(http_body_util::Empty::<Bytes>::new())) }
    });
    let res = ArenaBodyLayer::new(arena.clone())
        .layer(inner)
        .oneshot(Request::post("/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    match res.extensions().get::<BodyRejection>() {
        Some(BodyRejection::Body { source }) => assert!(source.to_string().contains("went away")),
        other => panic!("unexpected rejection {other:?}"),
    }
    assert_eq!(called.load(Ordering::Relaxed), 0);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn a_malformed_content_length_is_answered_400() {
    for bad in [
        "three",
        "+3",
        "-1",
        "",
        "3, 3",
        " 3",
        "99999999999999999999999",
    ] {
        let arena = buddy(1 << 20);
        let (body, taken) = Scripted::chunks(b"abc", 3);
        let req = Request::post("/")
            .header("content-length", bad)
            .body(body)
            .unwrap();
        let res = ArenaBodyLayer::new(arena.clone())
            .layer(echo(Vec::new()))
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(matches!(
            res.extensions().get::<BodyRejection>(),
            Some(BodyRejection::InvalidContentLength)
        ));
        assert_eq!(taken.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test]
async fn trailers_reach_the_inner_service() {
    let arena = buddy(1 << 20);
    let (mut body, _) = Scripted::chunks(b"payload", 4);
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "42".parse().unwrap());
    body.frames.push_back(Ok(Frame::trailers(trailers)));
    let inner = service_fn(|req: Request<ArenaBody>| async move {
        let body = req.into_body();
        assert_eq!(body.trailers().unwrap()["x-checksum"], "42");
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-checksum"], "42");
        assert_eq!(collected.to_bytes(), "payload");
        Ok::<_, Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
    });
    let res = ArenaBodyLayer::new(arena)
        .layer(inner)
        .oneshot(Request::post("/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_fixed_arena_serves_bodies_up_to_its_slot_size() {
    let arena = FixedArena::builder(nz(4), nz(8192)).build().unwrap();
    let data = pattern(8192);
    let (body, _) = Scripted::chunks(&data, 1024);
    let svc = ArenaBodyLayer::new(arena.clone()).layer(echo(data));
    assert_eq!(
        svc.clone()
            .oneshot(Request::post("/").body(body).unwrap())
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let (body, _) = Scripted::chunks(&pattern(8193), 1024);
    let res = svc
        .oneshot(Request::post("/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(arena.metrics().live_slots, 0);
}

#[test]
fn max_body_size_above_the_source_is_a_config_error() {
    let arena = buddy(1 << 20);
    let err = ArenaBodyLayer::builder(arena)
        .max_body_size(2 << 20)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::MaxBodyExceedsSource {
            max_body_size: 2 << 20,
            source_max: 1 << 20
        }
    );
    assert!(err.to_string().contains("lower it"));
}

#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    #[derive(Clone)]
    struct NotReady;
    impl Service<Request<ArenaBody>> for NotReady {
        type Response = Response<ArenaBody>;
        type Error = &'static str;
        type Future = std::future::Ready<Result<Response<ArenaBody>, &'static str>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
            Poll::Ready(Err("overloaded"))
        }
        fn call(&mut self, _: Request<ArenaBody>) -> Self::Future {
            unreachable!("never ready")
        }
    }
    let mut svc = ArenaBodyLayer::new(buddy(1 << 20)).layer(NotReady);
    let ready = std::future::poll_fn(|cx| {
        <_ as Service<Request<http_body_util::Empty<Bytes>>>>::poll_ready(&mut svc, cx)
    })
    .await;
    assert_eq!(ready, Err("overloaded"));
}

#[tokio::test]
async fn a_503_drain_stops_at_the_limit() {
    let arena = buddy(64 * 1024);
    let hog = arena.allocate(nz(64 * 1024)).unwrap();
    let layer = ArenaBodyLayer::builder(arena.clone())
        .max_body_size(10_000)
        .wait_timeout(Duration::from_millis(10))
        .build()
        .unwrap();
    // Chunked: eight chunks are staged, the ninth needs a block and waits;
    // after the 503 the drain reads on only until the limit is passed.
    let (body, taken) = Scripted::chunks(&pattern(100_000), 1000);
    let res = layer
        .layer(echo(Vec::new()))
        .oneshot(Request::post("/").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(taken.load(Ordering::Relaxed), 11);
    assert_eq!(arena.metrics().waiting_tasks, 0);
    drop(hog);
    assert_eq!(arena.metrics().live_bytes, 0);
}

mod liveness;

#[cfg(feature = "axum")]
mod axum_extractor;

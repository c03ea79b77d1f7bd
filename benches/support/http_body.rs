//! What `http_body` (timings) and `http_body_allocs` (allocation counts)
//! share: the request bodies, the two services and a poll-once executor.
//!
//! Request bodies of 4 KiB, 64 KiB and 1 MiB arrive as a stream of 16 KiB
//! chunks (`http_body_util::StreamBody`, as hyper delivers them), with a
//! `Content-Length` header (`content-length`) and without one (`chunked`).
//! The chunks are `Bytes` prepared once; both sides use the same limit, the
//! same handler and the same executor (the futures complete at once and are
//! polled with a no-op waker).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use arenabuf::BuddyArena;
use arenabuf::tower::{ArenaBody, ArenaBodyLayer};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use tower::{Layer, Service, service_fn};
use tower_http::body::Limited;
use tower_http::limit::RequestBodyLimitLayer;

pub const CHUNK: usize = 16 * 1024;
pub const LIMIT: usize = 8 << 20;
pub const SIZES: [(usize, &str); 3] = [(4 << 10, "4KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];
pub const MODES: [(bool, &str); 2] = [(true, "content-length"), (false, "chunked")];

type Chunks = std::iter::Cloned<std::slice::Iter<'static, Bytes>>;
type ChunkStream =
    futures::stream::Iter<std::iter::Map<Chunks, fn(Bytes) -> Result<Frame<Bytes>, Infallible>>>;
pub type Body = StreamBody<ChunkStream>;

/// The body's 16 KiB chunks, made once: static `Bytes`, so handing one to a
/// request is a pointer copy on both sides.
pub fn chunks(size: usize) -> &'static [Bytes] {
    let data: &'static [u8] = Box::leak((0..size).map(|i| (i % 251) as u8).collect());
    let chunks: Vec<Bytes> = data.chunks(CHUNK).map(Bytes::from_static).collect();
    Box::leak(chunks.into_boxed_slice())
}

pub fn request(chunks: &'static [Bytes], size: usize, content_length: bool) -> Request<Body> {
    fn frame(chunk: Bytes) -> Result<Frame<Bytes>, Infallible> {
        Ok(Frame::data(chunk))
    }
    let frames: ChunkStream =
        futures::stream::iter(chunks.iter().cloned().map(frame as fn(_) -> _));
    let mut req = Request::post("/upload");
    if content_length {
        req = req.header("content-length", size);
    }
    req.body(StreamBody::new(frames)).unwrap()
}

/// Polls a future that completes without waiting.
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the bench's futures never wait"),
    }
}

/// The handler both sides share: look at the collected bytes.
fn look(body: &Bytes) {
    black_box(body.len());
    black_box(body.last());
}

/// The arena (to check it ends whole) and the two request runners:
/// `ArenaBodyLayer`, and `collect()` behind `RequestBodyLimitLayer`.
pub fn services() -> (
    BuddyArena,
    impl FnMut(Request<Body>),
    impl FnMut(Request<Body>),
) {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    let arena = BuddyArena::builder(nz(64 << 20), nz(4096)).build().unwrap();
    let layer = ArenaBodyLayer::builder(arena.clone())
        .max_body_size(LIMIT)
        .build()
        .unwrap();
    let mut arena_svc = layer.layer(service_fn(|req: Request<ArenaBody>| async move {
        let body = req.into_body().into_bytes();
        look(&body);
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let mut usual_svc = RequestBodyLimitLayer::new(LIMIT).layer(service_fn(
        |req: Request<Limited<Body>>| async move {
            let body = req.into_body().collect().await?.to_bytes();
            look(&body);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(Empty::<Bytes>::new()))
        },
    ));
    let run_arena = move |req: Request<Body>| {
        let res = now(arena_svc.call(req)).unwrap();
        assert!(res.status().is_success());
    };
    let run_usual = move |req: Request<Body>| {
        let res = now(usual_svc.call(req)).unwrap();
        assert!(res.status().is_success());
    };
    (arena, run_arena, run_usual)
}

//! `ArenaBodyLayer` against the usual way of collecting a request body:
//! `http_body_util::BodyExt::collect().await?.to_bytes()` behind tower-http's
//! `RequestBodyLimitLayer`, in the same run.
//!
//! Request bodies of 4 KiB, 64 KiB and 1 MiB arrive as a stream of 16 KiB
//! chunks (`http_body_util::StreamBody`, as hyper delivers them), with a
//! `Content-Length` header (`content-length`) and without one (`chunked`).
//! The chunks are `Bytes` prepared once outside the timed part; each
//! iteration builds the request in criterion's untimed setup and times the
//! service call, the body collection, the handler's look at the bytes and the
//! drop of everything. Both sides use the same limit, the same handler and the
//! same executor (the futures complete at once and are polled with a no-op
//! waker).
//!
//! A counting global allocator prints, before the timings, the heap
//! allocations per request of each side (request construction excluded),
//! and writes them to `<target>/criterion/http_body_allocs.json` for
//! `tools/bench-report`.
//!
//! `cargo bench --bench http_body --features tower -- --noplot`

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

mod support;

use arenabuf::BuddyArena;
use arenabuf::tower::{ArenaBody, ArenaBodyLayer};
use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use tower::{Layer, Service, service_fn};
use tower_http::body::Limited;
use tower_http::limit::RequestBodyLimitLayer;

#[global_allocator]
static GLOBAL: support::Counting = support::Counting;

const CHUNK: usize = 16 * 1024;
const LIMIT: usize = 8 << 20;
const SIZES: [(usize, &str); 3] = [(4 << 10, "4KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];

type Chunks = std::iter::Cloned<std::slice::Iter<'static, Bytes>>;
type ChunkStream =
    futures::stream::Iter<std::iter::Map<Chunks, fn(Bytes) -> Result<Frame<Bytes>, Infallible>>>;
type Body = StreamBody<ChunkStream>;

/// The body's 16 KiB chunks, made once: static `Bytes`, so handing one to a
/// request is a pointer copy on both sides.
fn chunks(size: usize) -> &'static [Bytes] {
    let data: &'static [u8] = Box::leak((0..size).map(|i| (i % 251) as u8).collect());
    let chunks: Vec<Bytes> = data.chunks(CHUNK).map(Bytes::from_static).collect();
    Box::leak(chunks.into_boxed_slice())
}

fn request(chunks: &'static [Bytes], size: usize, content_length: bool) -> Request<Body> {
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

fn bench(c: &mut Criterion) {
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

    let mut run_arena = move |req: Request<Body>| {
        let res = now(arena_svc.call(req)).unwrap();
        assert!(res.status().is_success());
    };
    let mut run_usual = move |req: Request<Body>| {
        let res = now(usual_svc.call(req)).unwrap();
        assert!(res.status().is_success());
    };

    println!("heap allocations per request (request construction excluded):");
    let mut cases = Vec::new();
    for (size, name) in SIZES {
        let chunks = chunks(size);
        for content_length in [true, false] {
            let count = |run: &mut dyn FnMut(Request<Body>)| {
                const N: u64 = 200;
                let mut total = 0;
                for _ in 0..N {
                    let req = request(chunks, size, content_length);
                    let before = support::allocations();
                    run(req);
                    total += support::allocations() - before;
                }
                total as f64 / N as f64
            };
            let (a, u) = (count(&mut run_arena), count(&mut run_usual));
            let mode = if content_length {
                "content-length"
            } else {
                "chunked"
            };
            println!("  {name:>5} {mode:<14}  arena layer {a:>5.2}   collect+limit {u:>5.2}");
            for (imp, count) in [("arena_layer", a), ("collect_limit", u)] {
                cases.push(format!(
                    "    {{\"id\": \"http_body/{imp}/{name}/{mode}\", \"allocations\": {count}}}"
                ));
            }
        }
    }
    assert_eq!(
        arena.metrics().live_bytes,
        0,
        "the arena layer leaked a body"
    );
    write_allocs(&cases);

    // Counted above, untimed; the timed loops below pay no counter.
    support::stop_counting();
    let mut group = c.benchmark_group("http_body");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (size, name) in SIZES {
        let chunks = chunks(size);
        group.throughput(Throughput::Bytes(size as u64));
        for content_length in [true, false] {
            let mode = if content_length {
                "content-length"
            } else {
                "chunked"
            };
            let param = format!("{name}/{mode}");
            group.bench_function(BenchmarkId::new("arena_layer", &param), |b| {
                b.iter_batched(
                    || request(chunks, size, content_length),
                    &mut run_arena,
                    BatchSize::SmallInput,
                )
            });
            group.bench_function(BenchmarkId::new("collect_limit", &param), |b| {
                b.iter_batched(
                    || request(chunks, size, content_length),
                    &mut run_usual,
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// Records the allocation counts beside criterion's results, for
/// `tools/bench-report` (`<criterion-dir>/http_body_allocs.json`).
fn write_allocs(cases: &[String]) {
    let json = format!("{{\n  \"cases\": [\n{}\n  ]\n}}\n", cases.join(",\n"));
    support::write_criterion_file("http_body_allocs.json", &json);
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The server against hostile and multiplexed clients, over real loopback
//! connections: raw TCP peers that send headers only or go silent holding
//! memory, HTTP/2 streams that wait for memory on a shared connection,
//! many chunked uploads into a too-small arena under the default
//! configuration, and bodies past axum's `DefaultBodyLimit`. Each case ends
//! with the arena whole. Timeouts in these tests only turn a hang into a
//! failure; nothing asserts on time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use arenabuf::BuddyArena;
use axum_upload::Config;
use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use http::{HeaderMap, Request, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type HttpClient = Client<HttpConnector, BoxBody<Bytes, Infallible>>;

/// Turns a hang into a failure; generous, never a timing assertion.
const GUARD: Duration = Duration::from_secs(120);

/// A wait far longer than [`GUARD`]: a request that waited it out would
/// fail the test as a hang.
const FOREVER: Duration = Duration::from_secs(3600);

/// hyper-util's client: HTTP/1.1, or HTTP/2 with prior knowledge (all
/// requests multiplexed on one connection).
fn client(h2: bool) -> HttpClient {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(h2);
    builder.build_http()
}

struct Server {
    addr: SocketAddr,
    arena: BuddyArena,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(config: Config) -> Server {
    let (arena, layer) = config.build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(axum_upload::serve_with_shutdown(
        listener,
        layer,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        arena,
        stop,
        task,
    }
}

impl Server {
    /// Stops it gracefully (which waits for every request in flight) and
    /// checks that the arena is whole.
    async fn shut_down(self) {
        assert_arena_free(&self.arena).await;
        self.stop.send(()).unwrap();
        tokio::time::timeout(GUARD, self.task)
            .await
            .expect("graceful shutdown hung")
            .unwrap()
            .unwrap();
    }
}

fn data(len: usize, seed: usize) -> Bytes {
    (0..len)
        .map(|i| ((i * 131 + seed * 7) % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

fn expected(body: &[u8]) -> String {
    format!("len={} crc32={:08x}", body.len(), crc32fast::hash(body))
}

/// A body the test feeds chunk by chunk; it ends when the sender drops.
fn fed() -> (mpsc::UnboundedSender<Bytes>, BoxBody<Bytes, Infallible>) {
    let (tx, rx) = mpsc::unbounded();
    let body = StreamBody::new(rx.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    (tx, BodyExt::boxed(body))
}

/// A whole body sent chunked (64 KiB frames, no size hint).
fn chunked(data: &Bytes) -> BoxBody<Bytes, Infallible> {
    let frames: Vec<_> = (0..data.len())
        .step_by(64 * 1024)
        .map(|at| Ok(Frame::data(data.slice(at..data.len().min(at + 64 * 1024)))))
        .collect();
    BodyExt::boxed(StreamBody::new(futures::stream::iter(frames)))
}

type Answer = (StatusCode, HeaderMap, String);

/// Sends a POST on its own task.
fn post(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    content_length: Option<usize>,
    body: BoxBody<Bytes, Infallible>,
) -> JoinHandle<Answer> {
    let mut req = Request::post(format!("http://{addr}{path}"));
    if let Some(n) = content_length {
        req = req.header("content-length", n);
    }
    let req = req.body(body).unwrap();
    let client = client.clone();
    tokio::spawn(async move {
        let res = client.request(req).await.expect("request failed");
        let (parts, body) = res.into_parts();
        let text = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&text).into_owned(),
        )
    })
}

async fn answer(task: JoinHandle<Answer>) -> Answer {
    tokio::time::timeout(GUARD, task)
        .await
        .expect("request hung")
        .unwrap()
}

/// Waits (bounded) until `check` holds for the arena's metrics.
async fn until(arena: &BuddyArena, what: &str, check: impl Fn(&arenabuf::BuddyMetrics) -> bool) {
    tokio::time::timeout(GUARD, async {
        while !check(&arena.metrics()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what} ({:?})", arena.metrics()));
}

/// Every body's memory is back (the handler drops its body just before the
/// response goes out), nothing waits, nothing is fragmented.
async fn assert_arena_free(arena: &BuddyArena) {
    until(arena, "arena free", |m| {
        m.live_bytes == 0 && m.waiting_tasks == 0
    })
    .await;
    let m = arena.metrics();
    assert_eq!(
        m.largest_free_block, m.reserved_bytes,
        "arena fragmented: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_only_peers_hold_no_memory_and_honest_clients_pass_at_once() {
    // The case: 4 MiB arena, 1 MiB bodies, 1 s wait. Four peers
    // that declare 1 MiB and send nothing used to hold the whole arena.
    let server = start(Config {
        arena_size: 4 << 20,
        max_body_size: 1 << 20,
        wait_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let addr = server.addr;
    let head = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n";
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(format!("{head}\r\n").as_bytes())
            .await
            .unwrap();
        idle.push(tcp);
    }
    // Expect: 100-continue: the server says "send it" without taking memory.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("{head}Expect: 100-continue\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    while !got.windows(12).any(|w| w == b"100 Continue") {
        let mut buf = [0; 256];
        let n = tokio::time::timeout(GUARD, tcp.read(&mut buf))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    idle.push(tcp);
    // The same over HTTP/2: HEADERS with content-length, no DATA.
    let h2 = client(true);
    let mut silent = Vec::new();
    for _ in 0..4 {
        let (tx, body) = fed();
        silent.push((tx, post(&h2, addr, "/upload", Some(1 << 20), body)));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.arena.metrics().live_bytes, 0);

    // Honest clients get their answer; the whole arena is there for them.
    for h2 in [false, true] {
        let c = client(h2);
        let small = data(5, 1);
        let (status, _, text) = answer(post(
            &c,
            addr,
            "/upload",
            Some(5),
            Full::new(small.clone()).boxed(),
        ))
        .await;
        assert_eq!(
            (status, text),
            (StatusCode::OK, expected(&small)),
            "h2 {h2}"
        );
        let big = data(1 << 20, 2);
        let (status, _, text) = answer(post(
            &c,
            addr,
            "/upload",
            Some(1 << 20),
            Full::new(big.clone()).boxed(),
        ))
        .await;
        assert_eq!((status, text), (StatusCode::OK, expected(&big)), "h2 {h2}");
    }
    assert_eq!(
        server.arena.metrics().wait_count,
        0,
        "an honest request waited"
    );
    for (_, task) in &silent {
        assert!(!task.is_finished());
    }
    drop(idle);
    for (tx, task) in silent {
        drop(tx);
        // The body ended short of its content-length: hyper's error.
        let _ = tokio::time::timeout(GUARD, task).await.expect("hung");
    }
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_silent_holding_memory_gets_408() {
    let server = start(Config {
        arena_size: 4 << 20,
        max_body_size: 1 << 20,
        // Long enough for the test to see the block held on a loaded machine.
        body_timeout: Duration::from_secs(2),
        wait_timeout: FOREVER,
        ..Config::default()
    })
    .await;
    let addr = server.addr;
    // HTTP/1.1 over raw TCP: 256 KiB of a declared 1 MiB, then silence.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&data(256 << 10, 3)).await.unwrap();
    until(&server.arena, "the block reserved", |m| {
        m.live_bytes == 1 << 20
    })
    .await;
    let mut response = Vec::new();
    tokio::time::timeout(GUARD, tcp.read_to_end(&mut response))
        .await
        .expect("no 408, or the connection stayed open")
        .unwrap();
    let response = String::from_utf8_lossy(&response).to_lowercase();
    assert!(response.starts_with("http/1.1 408"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    assert_arena_free(&server.arena).await;

    // HTTP/2: the same on a stream.
    let h2 = client(true);
    let (tx, body) = fed();
    let task = post(&h2, addr, "/upload", Some(1 << 20), body);
    for chunk in data(256 << 10, 4).chunks(16 << 10) {
        tx.unbounded_send(Bytes::copy_from_slice(chunk)).unwrap();
    }
    until(&server.arena, "the block reserved", |m| {
        m.live_bytes == 1 << 20
    })
    .await;
    let (status, _, _) = answer(task).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    drop(tx);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_does_not_stall_the_others_on_its_connection() {
    // The case, behind axum::serve with hyper's default windows
    // (1 MiB per stream and per connection): arena = limit = 1 MiB. The
    // wait timeout is far longer than the test's guard, so a stream stuck
    // behind another's wait fails the test.
    let config = Config {
        arena_size: 1 << 20,
        max_body_size: 1 << 20,
        wait_timeout: FOREVER,
        // Long enough for the test to see B waiting on a loaded machine;
        // far shorter than the guard.
        http2_wait_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let server = start(config).await;
    let addr = server.addr;
    let h2 = client(true);
    let a_data = data(1 << 20, 5);
    let b_data = data(1 << 20, 6);

    // A declares 1 MiB and sends 64 KiB; B sends a whole 1 MiB; then A the
    // rest. A's 64 KiB takes no memory, so B is served, and A after it.
    let (a_tx, a_body) = fed();
    let a = post(&h2, addr, "/upload", Some(1 << 20), a_body);
    a_tx.unbounded_send(a_data.slice(..64 << 10)).unwrap();
    let b = post(
        &h2,
        addr,
        "/upload",
        Some(1 << 20),
        Full::new(b_data.clone()).boxed(),
    );
    let (status, _, text) = answer(b).await;
    assert_eq!(
        (status, text),
        (StatusCode::OK, expected(&b_data)),
        "B got a needless refusal"
    );
    // The rest, and the end of the stream (HTTP/2 ends a body with
    // END_STREAM, not at the content-length).
    a_tx.unbounded_send(a_data.slice(64 << 10..)).unwrap();
    drop(a_tx);
    let (status, _, text) = answer(a).await;
    assert_eq!((status, text), (StatusCode::OK, expected(&a_data)));
    assert_arena_free(&server.arena).await;

    // Now A sends 512 KiB first and so holds the whole arena. B's 1 MiB must
    // wait, and its unread DATA holds connection window that A needs. B
    // waits at most http2_wait_timeout (then 503, and its body is drained,
    // giving the window back), or gets A's memory if A finishes first; A
    // completes either way, long before the wait timeout.
    let (a_tx, a_body) = fed();
    let a = post(&h2, addr, "/upload", Some(1 << 20), a_body);
    a_tx.unbounded_send(a_data.slice(..512 << 10)).unwrap();
    until(&server.arena, "A holds the arena", |m| {
        m.live_bytes == 1 << 20
    })
    .await;
    let b = post(
        &h2,
        addr,
        "/upload",
        Some(1 << 20),
        Full::new(b_data.clone()).boxed(),
    );
    until(&server.arena, "B waits", |m| m.waiting_tasks == 1).await;
    a_tx.unbounded_send(a_data.slice(512 << 10..)).unwrap();
    drop(a_tx);
    let (status, _, text) = answer(a).await;
    assert_eq!((status, text), (StatusCode::OK, expected(&a_data)));
    let (status, headers, text) = answer(b).await;
    match status {
        StatusCode::OK => assert_eq!(text, expected(&b_data)),
        StatusCode::SERVICE_UNAVAILABLE => assert_eq!(headers["retry-after"], "1"),
        other => panic!("B: {other}: {text}"),
    }
    assert_arena_free(&server.arena).await;
    server.shut_down().await;

    // Two concurrent 4 MiB uploads on one connection to a 4 MiB arena, three
    // rounds: each ends (one may be refused), none waits out the timeout.
    let server = start(Config {
        arena_size: 4 << 20,
        max_body_size: 4 << 20,
        wait_timeout: FOREVER,
        ..Config::default()
    })
    .await;
    let h2 = client(true);
    for round in 0..3 {
        let bodies = [data(4 << 20, 10 + round), data(4 << 20, 20 + round)];
        let tasks: Vec<_> = bodies
            .iter()
            .map(|d| {
                post(
                    &h2,
                    server.addr,
                    "/upload",
                    Some(d.len()),
                    Full::new(d.clone()).boxed(),
                )
            })
            .collect();
        let mut ok = 0;
        for (task, d) in tasks.into_iter().zip(&bodies) {
            let (status, headers, text) = answer(task).await;
            match status {
                StatusCode::OK => {
                    assert_eq!(text, expected(d));
                    ok += 1;
                }
                StatusCode::SERVICE_UNAVAILABLE => assert_eq!(headers["retry-after"], "1"),
                other => panic!("round {round}: {other}: {text}"),
            }
        }
        assert!(ok >= 1, "round {round}: neither upload got through");
        assert_arena_free(&server.arena).await;
    }
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_into_a_full_arena_cannot_deadlock_under_the_defaults() {
    // The case: the default configuration (64 MiB arena, default
    // timeouts), 64 connections each uploading 4 MiB chunked. Bodies grow
    // while holding memory; every request must end, and the server must
    // shut down gracefully afterwards.
    for h2 in [false, true] {
        let server = start(Config::default()).await;
        let c = client(h2);
        let uploads = if h2 { 16 } else { 64 };
        let bodies: Vec<_> = (0..uploads).map(|i| data(4 << 20, i)).collect();
        let tasks: Vec<_> = bodies
            .iter()
            .map(|d| post(&c, server.addr, "/upload", None, chunked(d)))
            .collect();
        let mut ok = 0;
        for (task, d) in tasks.into_iter().zip(&bodies) {
            let (status, _, text) = answer(task).await;
            match status {
                StatusCode::OK => {
                    assert_eq!(text, expected(d));
                    ok += 1;
                }
                StatusCode::SERVICE_UNAVAILABLE => {}
                other => panic!("h2 {h2}: {other}: {text}"),
            }
        }
        assert!(ok > 0, "h2 {h2}: no upload got through");
        println!("h2 {h2}: {ok} of {uploads} chunked 4 MiB uploads succeeded, the rest got 503");
        drop(c);
        server.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_axums_default_body_limit_arrive_whole() {
    // 3 MB: over axum's 2 MB DefaultBodyLimit, under the layer's 16 MiB.
    let server = start(Config::default()).await;
    let payload = data(3_000_000, 7);
    for h2 in [false, true] {
        let c = client(h2);
        for path in ["/upload", "/upload-bytes"] {
            for content_length in [true, false] {
                let body = if content_length {
                    Full::new(payload.clone()).boxed()
                } else {
                    chunked(&payload)
                };
                let length = content_length.then_some(payload.len());
                let (status, _, text) = answer(post(&c, server.addr, path, length, body)).await;
                assert_eq!(
                    (status, text),
                    (StatusCode::OK, expected(&payload)),
                    "h2 {h2}, {path}, content-length {content_length}"
                );
            }
        }
    }
    server.shut_down().await;
}

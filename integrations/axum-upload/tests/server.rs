//! The upload server over real loopback connections, driven by hyper-util's
//! client (HTTP/1.1, and HTTP/2 with prior knowledge) and by `curl` (both
//! too): every size from empty to 8 MiB with and without `Content-Length`,
//! the limit (413), an exhausted arena (503 + `Retry-After`), and 500
//! concurrent uploads against a small arena.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use arenabuf::BuddyArena;
use axum_upload::Config;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, BoxBody<Bytes, Infallible>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// HTTP/2 with prior knowledge: every request multiplexed on one connection.
fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Starts the server on an ephemeral loopback port.
async fn start(config: Config) -> (SocketAddr, BuddyArena) {
    let (arena, layer) = config.build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum_upload::serve(listener, layer));
    (addr, arena)
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

/// A body hyper sends with `Content-Length` (exact size hint) or chunked
/// (a stream of 64 KiB frames with no size hint).
fn body(data: &Bytes, content_length: bool) -> BoxBody<Bytes, Infallible> {
    if content_length {
        return Full::new(data.clone()).boxed();
    }
    let frames: Vec<_> = (0..data.len())
        .step_by(64 * 1024)
        .map(|at| Ok(Frame::data(data.slice(at..data.len().min(at + 64 * 1024)))))
        .collect();
    StreamBody::new(futures::stream::iter(frames)).boxed()
}

async fn upload(
    client: &HttpClient,
    addr: SocketAddr,
    query: &str,
    body: BoxBody<Bytes, Infallible>,
) -> (StatusCode, http::HeaderMap, String) {
    let req = Request::post(format!("http://{addr}/upload{query}"))
        .body(body)
        .unwrap();
    let res = client.request(req).await.expect("request failed");
    let (parts, body) = res.into_parts();
    let text = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(text.to_vec()).unwrap(),
    )
}

/// Waits until every body's memory is back (the handler drops its body
/// just before the response goes out) and checks nothing waits.
async fn assert_arena_free(arena: &BuddyArena) {
    for _ in 0..1000 {
        if arena.metrics().live_bytes == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0, "arena memory not returned: {m:?}");
    assert_eq!(m.waiting_tasks, 0);
    assert_eq!(
        m.largest_free_block, m.reserved_bytes,
        "arena fragmented after all bodies dropped"
    );
}

fn roomy() -> Config {
    Config {
        arena_size: 32 << 20,
        min_block: 4096,
        max_body_size: 8 << 20,
        wait_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

const SIZES: [usize; 8] = [0, 1, 1000, 4096, 16 * 1024 + 3, 65537, 1 << 20, 8 << 20];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_uploads_every_size_with_and_without_content_length() {
    let (addr, arena) = start(roomy()).await;
    for (seed, len, client) in SIZES
        .into_iter()
        .enumerate()
        .flat_map(|(seed, len)| [(seed, len, client()), (seed, len, h2_client())])
    {
        let payload = data(len, seed);
        for content_length in [true, false] {
            let (status, _, text) = upload(&client, addr, "", body(&payload, content_length)).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{len} bytes, content-length {content_length}: {text}"
            );
            assert_eq!(
                text,
                expected(&payload),
                "{len} bytes, content-length {content_length}"
            );
        }
    }
    assert!(arena.metrics().alloc_count > 0);
    assert_arena_free(&arena).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let (addr, arena) = start(Config {
        max_body_size: 1 << 20,
        ..roomy()
    })
    .await;
    for client in [client(), h2_client()] {
        over_the_limit(&client, addr, &arena).await;
    }
}

async fn over_the_limit(client: &HttpClient, addr: SocketAddr, arena: &BuddyArena) {
    let fits = data(1 << 20, 1);
    let (status, _, text) = upload(client, addr, "", body(&fits, true)).await;
    assert_eq!((status, text), (StatusCode::OK, expected(&fits)));

    let over = data((1 << 20) + 1, 2);
    let allocs = arena.metrics().alloc_count;
    let (status, _, text) = upload(client, addr, "", body(&over, true)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_eq!(
        arena.metrics().alloc_count,
        allocs,
        "allocated for a refused Content-Length"
    );
    assert_arena_free(arena).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_arena_answers_503_with_retry_after() {
    let (addr, arena) = start(Config {
        arena_size: 1 << 20,
        max_body_size: 1 << 20,
        wait_timeout: Duration::from_millis(100),
        ..roomy()
    })
    .await;
    let hog = arena.allocate(NonZeroUsize::new(1 << 20).unwrap()).unwrap();
    let client = client();
    let payload = data(1000, 3);
    for c in [&client, &h2_client()] {
        for content_length in [true, false] {
            let (status, headers, _) = upload(c, addr, "", body(&payload, content_length)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(headers["retry-after"], "1");
        }
    }
    assert_eq!(arena.metrics().waiting_tasks, 0);
    drop(hog);
    let (status, _, text) = upload(&client, addr, "", body(&payload, true)).await;
    assert_eq!((status, text), (StatusCode::OK, expected(&payload)));
    assert_arena_free(&arena).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_uploads_against_a_small_arena() {
    let (addr, arena) = start(Config {
        arena_size: 1 << 20,
        min_block: 4096,
        max_body_size: 256 << 10,
        wait_timeout: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let client = client();
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let client = client.clone();
            // 1 KiB .. 256 KiB, half of them chunked; each handler holds its
            // body 100 ms (as long as the wait timeout), so the 1 MiB arena
            // runs out, requests wait, and some wait longer than the timeout.
            let payload = data(1024 + (i * 7919) % (255 << 10), i);
            tokio::spawn(async move {
                let (status, headers, text) =
                    upload(&client, addr, "?hold_ms=100", body(&payload, i % 2 == 0)).await;
                match status {
                    StatusCode::OK => assert_eq!(text, expected(&payload), "upload {i} corrupted"),
                    StatusCode::SERVICE_UNAVAILABLE => assert_eq!(headers["retry-after"], "1"),
                    other => panic!("upload {i}: unexpected {other}: {text}"),
                }
                status == StatusCode::OK
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += usize::from(task.await.unwrap());
    }
    assert!(ok > 0, "no upload got through");
    assert!(
        ok < 500,
        "no upload got a 503: the timeout path went untested"
    );
    let m = arena.metrics();
    assert!(
        m.wait_count > 0,
        "the arena never ran out: the test proves nothing ({m:?})"
    );
    println!(
        "{ok} of 500 uploads succeeded, the rest got 503; {} waited for memory",
        m.wait_count
    );
    assert_arena_free(&arena).await;
}

/// Runs curl on `file`, returning (status, response body); `h2`: HTTP/2
/// with prior knowledge.
fn curl(addr: SocketAddr, file: &std::path::Path, chunked: bool, h2: bool) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    if h2 {
        cmd.arg("--http2-prior-knowledge");
    }
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .args([
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            "Expect:",
        ]);
    match (chunked, h2) {
        (true, false) => {
            cmd.args(["-H", "Transfer-Encoding: chunked"]);
        }
        // HTTP/2 has no chunked encoding (the header is forbidden there):
        // curl sends the DATA frames without a content-length instead.
        (true, true) => {
            cmd.args(["-H", "Content-Length:"]);
        }
        _ => {}
    }
    let out = cmd
        .arg(format!("http://{addr}/upload"))
        .output()
        .expect("curl not found: install it (`apt-get install -y curl`); .ci/run does");
    assert!(
        out.status.success(),
        "curl failed (chunked {chunked}, h2 {h2}, {}): {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_with_and_without_content_length_and_over_the_limit() {
    let (addr, arena) = start(roomy()).await;
    let dir = std::env::temp_dir().join(format!("axum-upload-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (seed, len) in [0, 1000, 1 << 20, 8 << 20, (8 << 20) + 1]
        .into_iter()
        .enumerate()
    {
        let payload = data(len, seed);
        let file = dir.join(format!("body-{len}"));
        std::fs::write(&file, &payload).unwrap();
        for (chunked, h2) in [(false, false), (true, false), (false, true), (true, true)] {
            if h2 && len > 8 << 20 {
                // The 413 goes out before the body is read, and hyper then
                // resets the stream, which curl reports as an error rather
                // than showing the 413 (hyper's client reads it: see
                // `bodies_over_the_limit_get_413`).
                continue;
            }
            let path = file.clone();
            let (status, text) =
                tokio::task::spawn_blocking(move || curl(addr, &path, chunked, h2))
                    .await
                    .unwrap();
            if len > 8 << 20 {
                assert_eq!(
                    status, 413,
                    "{len} bytes, chunked {chunked}, h2 {h2}: {text}"
                );
            } else {
                assert_eq!(
                    status, 200,
                    "{len} bytes, chunked {chunked}, h2 {h2}: {text}"
                );
                assert_eq!(
                    text,
                    expected(&payload),
                    "{len} bytes, chunked {chunked}, h2 {h2}"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_arena_free(&arena).await;
}

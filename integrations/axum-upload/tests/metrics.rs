//! `GET /metrics` over real loopback connections with hyper-util's client:
//! the Prometheus text of the upload arena, scraped while an upload holds
//! arena memory and while another waits for it (the route sits outside the
//! arena layer, so it answers when the arena is exhausted).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum_upload::Config;
use bytes::Bytes;
use futures::channel::mpsc;
use http::{Request, StatusCode, header};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, BoxBody<Bytes, Infallible>>;

const HANG_GUARD: Duration = Duration::from_secs(30);

async fn start(config: Config) -> SocketAddr {
    let (_arena, layer) = config.build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum_upload::serve(listener, layer));
    addr
}

/// Scrapes `/metrics`: the content type and the samples, by metric name.
async fn scrape(client: &HttpClient, addr: SocketAddr) -> (String, Vec<(String, u64)>) {
    let req = Request::get(format!("http://{addr}/metrics"))
        .body(Empty::new().boxed())
        .unwrap();
    let res = client.request(req).await.expect("scrape failed");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    let text = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(text.to_vec()).unwrap();
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("`series value`");
            let name = series
                .strip_suffix("{arena=\"upload_bodies\"}")
                .unwrap_or_else(|| panic!("unexpected series {series}"));
            (name.to_owned(), value.parse().expect("an integer"))
        })
        .collect();
    (content_type, samples)
}

fn get(samples: &[(String, u64)], name: &str) -> u64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
        .1
}

/// Scrapes until `done` holds (the server works concurrently with the
/// test); the hang guard turns "never" into a failure.
async fn scrape_until(
    client: &HttpClient,
    addr: SocketAddr,
    done: impl Fn(&[(String, u64)]) -> bool,
) -> Vec<(String, u64)> {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let (_, samples) = scrape(client, addr).await;
            if done(&samples) {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the metrics never showed the expected state")
}

fn upload(
    client: &HttpClient,
    addr: SocketAddr,
    len: usize,
    body: BoxBody<Bytes, Infallible>,
) -> impl Future<Output = (StatusCode, String)> + use<> {
    let req = Request::post(format!("http://{addr}/upload"))
        .header(header::CONTENT_LENGTH, len)
        .body(body)
        .unwrap();
    let res = client.request(req);
    async move {
        let res = res.await.expect("upload failed");
        let status = res.status();
        let text = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(text.to_vec()).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_live_bytes_waiting_uploads_and_counters() {
    let arena_size = 256 << 10;
    let addr = start(Config {
        arena_size,
        min_block: 4096,
        max_body_size: arena_size,
        // Upload B waits while we scrape: far longer than the test takes.
        wait_timeout: Duration::from_secs(600),
        ..Config::default()
    })
    .await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // An idle server: the cap, nothing in use, nothing counted.
    let (content_type, samples) = scrape(&client, addr).await;
    assert!(content_type.starts_with("text/plain; version=0.0.4"));
    assert_eq!(get(&samples, "arenabuf_reserved_bytes"), arena_size as u64);
    assert_eq!(get(&samples, "arenabuf_live_bytes"), 0);
    assert_eq!(get(&samples, "arenabuf_allocations_total"), 0);
    assert_eq!(samples.len(), 7, "{samples:?}");

    // Upload A announces the whole arena and sends its body slowly: once
    // more than the layer stages (128 KiB) has arrived, it allocates the
    // block from `Content-Length` and holds it.
    let (tx, rx) = mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
    let a = tokio::spawn(upload(
        &client,
        addr,
        arena_size,
        StreamBody::new(rx).boxed(),
    ));
    const FIRST: usize = 130 << 10;
    tx.unbounded_send(Ok(Frame::data(Bytes::from(vec![1u8; FIRST]))))
        .unwrap();
    scrape_until(&client, addr, |s| {
        get(s, "arenabuf_live_bytes") == arena_size as u64
    })
    .await;

    // Upload B needs memory the arena does not have: it waits, and the
    // scrape still answers and shows it waiting.
    let b = tokio::spawn(upload(
        &client,
        addr,
        5000,
        Full::new(Bytes::from(vec![2u8; 5000])).boxed(),
    ));
    let samples = scrape_until(&client, addr, |s| get(s, "arenabuf_waiting_tasks") == 1).await;
    assert_eq!(get(&samples, "arenabuf_live_bytes"), arena_size as u64);

    // A's body completes: A is answered, its block goes to B, B is answered.
    tx.unbounded_send(Ok(Frame::data(Bytes::from(vec![1u8; arena_size - FIRST]))))
        .unwrap();
    drop(tx);
    let (status, text) = tokio::time::timeout(HANG_GUARD, a).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.starts_with(&format!("len={arena_size} ")), "{text}");
    let (status, text) = tokio::time::timeout(HANG_GUARD, b).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.starts_with("len=5000 "), "{text}");

    // Both bodies dropped: nothing in use; the counters kept the history.
    let samples = scrape_until(&client, addr, |s| get(s, "arenabuf_live_bytes") == 0).await;
    assert_eq!(get(&samples, "arenabuf_waiting_tasks"), 0);
    assert_eq!(get(&samples, "arenabuf_allocations_total"), 2);
    assert_eq!(get(&samples, "arenabuf_waits_total"), 1);
    assert_eq!(get(&samples, "arenabuf_spills_total"), 0);
}

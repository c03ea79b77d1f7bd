//! The load both tests drive: many real client connections, a slow
//! consumer that checks every frame, and watches on arena and heap memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arenabuf::BufferSource;
use bytes::Bytes;
use futures::SinkExt;
use tcp_ingest::{MAX_FRAME, Mode, check_frame, frame_len, make_frame};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

/// Tracks the process's live heap bytes and their peak.
pub struct PeakHeap;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged; the counters are
// atomics and allocate nothing.
unsafe impl GlobalAlloc for PeakHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's layout contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: as in `dealloc`, with the caller's `new_size` contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What a run saw.
#[derive(Debug)]
pub struct Outcome {
    /// Frames checked by the consumer.
    pub frames: u64,
    /// Payload bytes checked.
    pub bytes: u64,
    /// The highest arena use sampled during the run.
    pub max_live: usize,
    /// How far the process heap rose above its level at the start.
    pub heap_rise: usize,
}

pub const CONNECTIONS: u32 = 100;
pub const FRAMES: u64 = 60;
pub const QUEUE: usize = 64;

/// Serves `mode` from `source` on a loopback port, sends `FRAMES` frames on
/// each of `CONNECTIONS` client connections (with tokio_util's stock
/// encoder), and consumes them slowly, checking each one; then waits until
/// the arena is empty.
pub async fn run<S: BufferSource>(
    source: S,
    mode: Mode,
    live_bytes: impl Fn() -> usize + Send + Sync + 'static,
) -> Outcome {
    let live_bytes = Arc::new(live_bytes);
    let heap_start = LIVE.load(Ordering::Relaxed);
    PEAK.store(heap_start, Ordering::Relaxed);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(QUEUE);
    let server = tokio::spawn(tcp_ingest::serve(listener, source, mode, tx));

    let done = Arc::new(AtomicBool::new(false));
    let max_live = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, max_live, live_bytes) = (done.clone(), max_live.clone(), live_bytes.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                max_live.fetch_max(live_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|conn| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let codec = LengthDelimitedCodec::builder()
                    .max_frame_length(MAX_FRAME)
                    .new_codec();
                let mut sink = FramedWrite::new(stream, codec);
                for seq in 0..FRAMES {
                    sink.send(make_frame(conn, seq, frame_len(conn, seq)))
                        .await
                        .unwrap();
                }
                SinkExt::<Bytes>::close(&mut sink).await.unwrap();
            })
        })
        .collect();

    // The slow consumer: checks every frame and its order within its
    // connection, and pauses 1 ms every 50 frames so the queue stays full.
    let mut next = vec![0u64; CONNECTIONS as usize];
    let (mut frames, mut bytes) = (0u64, 0u64);
    while frames < u64::from(CONNECTIONS) * FRAMES {
        let frame = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("no frame for 60 s: the ingest stalled")
            .expect("the server stopped");
        let (conn, seq) = check_frame(&frame).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(frame.len(), frame_len(conn, seq));
        assert_eq!(
            seq, next[conn as usize],
            "connection {conn}: frames out of order"
        );
        next[conn as usize] += 1;
        frames += 1;
        bytes += frame.len() as u64;
        drop(frame);
        if frames % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for client in clients {
        client.await.unwrap();
    }
    wait_until(|| live_bytes() == 0).await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    server.abort();
    let heap_rise = PEAK.load(Ordering::Relaxed).saturating_sub(heap_start);
    Outcome {
        frames,
        bytes,
        max_live: max_live.load(Ordering::Relaxed),
        heap_rise,
    }
}

/// Polls `cond` every millisecond; panics after 10 s.
pub async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached within 10 s");
}

//! Issue 13, case 3: `FramedRead` over a `FixedArena` under ordinary load,
//! 64 loopback connections and a consumer that holds frames. Each frame is
//! checked against what tokio_util's encoder sent.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use arenabuf::FixedArena;
use arenabuf::codec::{ArenaLengthDelimitedCodec, CodecError, FrameBudget, OnFull};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

use crate::common::*;

const CONNECTIONS: usize = 64;
const FRAMES: usize = 40;
const MAX_FRAME: usize = 2048;
const QUEUE: usize = 64;
/// Frames the consumer keeps alive at once.
const HELD: usize = 32;

fn frame(conn: usize, seq: usize) -> Bytes {
    let len = 1 + (conn * 131 + seq * 977) % MAX_FRAME;
    Bytes::from(
        (0..len)
            .map(|i| (i ^ conn ^ (seq << 3)) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// What a run saw: frames that arrived intact, and the errors that ended
/// connections.
struct Run {
    frames: usize,
    errors: Vec<CodecError>,
}

async fn run(arena: FixedArena, on_full: OnFull) -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::channel::<(usize, usize, Bytes)>(QUEUE);
    let (err_tx, mut err_rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        for conn in 0..CONNECTIONS {
            let (stream, _) = listener.accept().await.unwrap();
            let (arena, tx, err_tx) = (arena.clone(), tx.clone(), err_tx.clone());
            tokio::spawn(async move {
                let mut rx = ArenaLengthDelimitedCodec::builder()
                    .max_frame_length(MAX_FRAME)
                    .on_full(on_full)
                    .new_read(stream, arena)
                    .unwrap();
                let mut seq = 0;
                while let Some(f) = rx.next().await {
                    match f {
                        Ok(f) => {
                            let _ = tx.send((conn, seq, f)).await;
                            seq += 1;
                        }
                        Err(e) => {
                            let _ = err_tx.send(e);
                            return; // the connection ends, as with `?`
                        }
                    }
                }
            });
        }
    });
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(addr).await.unwrap();
        clients.push(stream);
    }
    let _writers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(conn, stream)| {
            tokio::spawn(async move {
                let mut tx = FramedWrite::new(stream, LengthDelimitedCodec::new());
                for seq in 0..FRAMES {
                    if tx.send(frame(conn, seq)).await.is_err() {
                        return; // reset by a failed server connection
                    }
                }
            })
        })
        .collect();
    server.await.unwrap();
    let mut held = VecDeque::new();
    let mut frames = 0;
    // The consumer: checks every frame against what was sent and keeps the
    // last HELD of them alive, until every connection has ended.
    let consume = async {
        while let Some((conn, seq, f)) = rx.recv().await {
            assert!(f == frame(conn, seq), "frame {seq} of {conn} differs");
            frames += 1;
            held.push_back(f);
            if held.len() > HELD {
                held.pop_front();
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), consume)
        .await
        .expect("hang guard");
    drop(held);
    let mut errors = Vec::new();
    while let Ok(e) = err_rx.try_recv() {
        errors.push(e);
    }
    Run { frames, errors }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framed_read_under_load_the_default_never_resets_connections() {
    // 16 slots for 64 connections and a consumer that holds 32 frames: the
    // arena is too small for this load, and the budget check says so.
    let small = fixed(16, MAX_FRAME);
    let budget = FrameBudget::new(CONNECTIONS, QUEUE + CONNECTIONS + HELD + 1, MAX_FRAME);
    let e = budget.check_fixed(&small).unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");

    // The default (`OnFull::Spill`): every frame arrives, as with
    // tokio_util's own codec; the arena was full at times (spills).
    let out = run(small.clone(), OnFull::default()).await;
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.frames, CONNECTIONS * FRAMES);
    let m = small.metrics();
    assert!(m.spill_count > 0, "the arena was never full: {m:?}");
    assert_eq!(m.live_slots, 0);

    // `OnFull::Error` on the same arena: connections fail with OutOfMemory
    // (what the default used to do under ordinary load).
    let out = run(small.clone(), OnFull::Error).await;
    assert!(!out.errors.is_empty(), "no connection failed");
    for e in &out.errors {
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory, "{e}");
    }
    assert_eq!(small.metrics().live_slots, 0);

    // Sized by the budget, `OnFull::Error` never fires and nothing spills.
    let sized = fixed(budget.fixed_slot_count(), MAX_FRAME);
    budget.check_fixed(&sized).unwrap();
    let out = run(sized.clone(), OnFull::Error).await;
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.frames, CONNECTIONS * FRAMES);
    let m = sized.metrics();
    assert_eq!(
        (m.spill_count, m.alloc_failure_count, m.live_slots),
        (0, 0, 0),
        "{m:?}"
    );
}

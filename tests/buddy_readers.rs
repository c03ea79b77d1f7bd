//! The wedge the wait-queue issue found with `ArenaReader`s on a
//! `BuddyArena` (strict FIFO: a large frame's reader at the head of the
//! queue, the blocks it needs pinned by small frames whose consumers wait
//! for their next frame, whose readers wait behind the head). Many
//! connections over in-memory pipes, frames of 10 B and 200 000 B, each
//! consumer keeping its last small frame until the next one arrives: every
//! frame must arrive, and the arena end whole.

#![cfg(feature = "io")]

use std::num::NonZeroUsize;
use std::time::Duration;

use arenabuf::BuddyArena;
use arenabuf::codec::LengthDelimited;
use arenabuf::io::Frames;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

const CONNECTIONS: usize = 24;
const FRAMES: usize = 60;
const BIG: usize = 200_000;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// The size of frame `i` of connection `c`: mostly 10 B, every 7th large.
fn size(c: usize, i: usize) -> usize {
    if (i + c) % 7 == 3 { BIG } else { 10 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_consumers_on_a_small_buddy_arena_never_wedge() {
    run(CONNECTIONS, false).await;
}

/// The same with zero-copy frames, where a kept 10 B frame pins its whole
/// 64 KiB chunk (the pinning the issue saw): with 3 connections the pins
/// (3 x 64 KiB) and one large frame (256 KiB) fit the arena, but only if
/// a reader behind a stuck large-frame reader is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_copy_batching_consumers_never_wedge() {
    run(3, true).await;
}

async fn run(connections: usize, zero_copy: bool) {
    // 512 KiB in 4 KiB blocks, 64 KiB chunks: a 200 000 B frame needs a
    // 256 KiB block, half the arena.
    let arena = BuddyArena::builder(nz(512 << 10), nz(4096))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, server) = tokio::io::duplex(64 << 10);
        tasks.push(tokio::spawn(async move {
            let mut sink = FramedWrite::new(client, LengthDelimitedCodec::new());
            for i in 0..FRAMES {
                let payload = vec![(c * 31 + i) as u8; size(c, i)];
                sink.send(Bytes::from(payload)).await.unwrap();
            }
        }));
        let arena = arena.clone();
        tasks.push(tokio::spawn(async move {
            let mut builder = Frames::builder(arena).chunk_size(nz(64 << 10));
            if zero_copy {
                builder = builder.zero_copy();
            }
            let mut frames = builder
                .length_delimited_with(server, LengthDelimited::builder().max_frame_length(BIG))
                .unwrap();
            // The batching consumer: the last small frame is kept until the
            // next frame arrives.
            let mut kept: Option<Bytes> = None;
            let mut i = 0;
            while let Some(frame) = frames.next().await {
                let frame = frame.unwrap();
                assert_eq!(frame.len(), size(c, i), "connection {c}, frame {i}");
                assert!(frame.iter().all(|&b| b == (c * 31 + i) as u8));
                kept = (frame.len() == 10).then_some(frame);
                i += 1;
            }
            drop(kept);
            assert_eq!(i, FRAMES, "connection {c}");
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("hang guard: the readers wedged");
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0), "{m:?}");
}

//! `ArenaReader` mode: 100 connections into a 1 MiB arena with a slow
//! consumer. The readers run out of memory and wait (backpressure), every
//! frame arrives intact and in order, and all memory comes back.

mod common;

use std::num::NonZeroUsize;

use arenabuf::FixedArena;
use tcp_ingest::Mode;

#[global_allocator]
static HEAP: common::PeakHeap = common::PeakHeap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_and_a_slow_consumer_stay_under_the_cap() {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    // 64 chunks of 16 KiB: far less than the ~25 MiB the clients send.
    let arena = FixedArena::builder(nz(64), nz(16 * 1024)).build().unwrap();
    let watched = arena.clone();
    let out = common::run(
        arena.clone(),
        Mode::Reader {
            chunk_size: nz(16 * 1024),
        },
        move || watched.metrics().live_bytes,
    )
    .await;
    let m = arena.metrics();
    println!("{out:?} {m:?}");
    assert_eq!(out.frames, u64::from(common::CONNECTIONS) * common::FRAMES);
    assert!(
        out.bytes > 8 * m.reserved_bytes as u64,
        "the load does not exceed the arena"
    );
    assert!(out.max_live <= m.reserved_bytes);
    assert!(
        m.wait_count > 0,
        "no reader ever waited: backpressure untested"
    );
    assert_eq!(m.spill_count, 0);
    assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0));
    // The frames did not move to the heap instead: it rose by far less than
    // the data that went through (client and socket buffers included).
    assert!(
        (out.heap_rise as u64) < out.bytes / 2,
        "heap rose {} bytes for {} bytes of frames",
        out.heap_rise,
        out.bytes
    );
}

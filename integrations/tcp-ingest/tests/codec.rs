//! Codec mode (`FramedRead` + `ArenaLengthDelimitedCodec`): 100 connections
//! and a slow consumer, with the arena sized by `codec_budget` (arenabuf's
//! `FrameBudget`). The
//! decoder never finds the arena full, every frame arrives intact and in
//! order, and all memory comes back.

mod common;

use std::num::NonZeroUsize;

use arenabuf::BuddyArena;
use tcp_ingest::{Mode, codec_budget};

#[global_allocator]
static HEAP: common::PeakHeap = common::PeakHeap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_and_a_slow_consumer_stay_under_the_cap() {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    // Frames are at most 8 KiB (`frame_len`), a power of two, so the buddy
    // arena's rounding adds nothing to the largest frame.
    let budget = codec_budget(common::CONNECTIONS as usize, common::QUEUE, 8192);
    let arena = BuddyArena::builder(nz(budget.buddy_total_size(256)), nz(256))
        .build()
        .unwrap();
    budget.check_buddy(&arena).unwrap();
    let need = budget.frames() * 8192;
    let watched = arena.clone();
    let out = common::run(arena.clone(), Mode::Codec, move || {
        watched.metrics().live_bytes
    })
    .await;
    let m = arena.metrics();
    println!("{out:?} {m:?}");
    assert_eq!(out.frames, u64::from(common::CONNECTIONS) * common::FRAMES);
    assert!(
        out.bytes > m.reserved_bytes as u64,
        "the load does not exceed the arena"
    );
    assert!(
        out.max_live <= need,
        "{} live > the bound {need}",
        out.max_live
    );
    assert_eq!(m.alloc_failure_count, 0);
    assert_eq!(m.spill_count, 0);
    assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0));
    assert_eq!(m.largest_free_block, m.reserved_bytes);
    assert!(
        (out.heap_rise as u64) < out.bytes / 2,
        "heap rose {} bytes for {} bytes of frames",
        out.heap_rise,
        out.bytes
    );
}

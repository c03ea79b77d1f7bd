//! Unit tests of the buddy arena (integration tests are in `tests/`).

use super::*;
use crate::error::BuildError;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn arena(total: usize, min: usize) -> BuddyArena {
    BuddyArena::builder(nz(total), nz(min)).build().unwrap()
}

#[test]
fn rounds_up_splits_and_merges_back() {
    let arena = arena(1024, 16);
    let a = arena.allocate(nz(1)).unwrap();
    let b = arena.allocate(nz(17)).unwrap();
    let c = arena.allocate(nz(300)).unwrap();
    assert_eq!((a.capacity(), b.capacity(), c.capacity()), (16, 32, 512));
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 16 + 32 + 512);
    assert!(m.split_count >= 6, "{m:?}");
    drop((a, b, c));
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.largest_free_block), (0, 1024));
    assert!(m.coalesce_count >= 6, "{m:?}");
    assert!(arena.allocate(nz(1024)).is_ok());
}

#[test]
fn full_means_no_block_even_after_merging_free_ones() {
    let arena = arena(256, 16);
    let halves = [
        arena.allocate(nz(128)).unwrap(),
        arena.allocate(nz(128)).unwrap(),
    ];
    assert_eq!(arena.allocate(nz(16)).unwrap_err(), AllocError::ArenaFull);
    drop(halves); // to the lists, merged (an arena this small caches nothing)
    assert_eq!(arena.allocate(nz(256)).unwrap().capacity(), 256);
    assert_eq!(
        arena.allocate(nz(257)).unwrap_err(),
        AllocError::RequestTooLarge {
            requested: 257,
            max: 256
        }
    );
    assert_eq!(arena.metrics().alloc_failure_count, 1);
}

#[test]
fn fragmentation_leaves_only_minimum_blocks() {
    let arena = arena(1024, 16);
    let mut all: Vec<_> = (0..64)
        .map(|_| Some(arena.allocate(nz(16)).unwrap()))
        .collect();
    for b in all.iter_mut().step_by(2) {
        *b = None;
    }
    let m = arena.metrics();
    assert_eq!((m.largest_free_block, m.live_bytes), (16, 512));
    drop(all);
    assert_eq!(arena.metrics().largest_free_block, 1024);
}

#[test]
fn teardown_with_parked_and_live_blocks() {
    let arena = arena(4096, 16); // orders 0..=2 (16..64 B) cached
    let parked = arena.allocate(nz(64)).unwrap();
    let live = arena.allocate(nz(16)).unwrap();
    drop(parked);
    drop(arena); // flushes the parked block; `live` keeps the arena
    drop(live); // closed handle: goes to the lists, frees the arena
}

/// Threads allocate blocks of mixed sizes (splitting and coalescing,
/// through the group caches and the lists), write, freeze and send them to
/// a third thread while the last handle drops: under miri, the
/// data-race detector checks the park/take and lock orderings against
/// the block bytes, and the leak checker checks the teardown.
#[test]
fn threads_split_and_merge_and_drop_the_arena_midway() {
    use bytes::BufMut;

    let rounds: u8 = if cfg!(miri) { 12 } else { 200 };
    // 128 blocks: orders 0 and 1 are cached (groups of two and one).
    let arena = arena(2048, 16);
    let (tx, rx) = std::sync::mpsc::channel::<(u8, bytes::Bytes)>();
    let checker = std::thread::spawn(move || {
        let mut last = None;
        for (tag, bytes) in rx {
            assert!(bytes.iter().all(|&b| b == tag));
            last = Some(bytes); // drops the one before
        }
        last
    });
    let workers: Vec<_> = (0..2u8)
        .map(|id| {
            let (arena, tx) = (arena.clone(), tx.clone());
            std::thread::spawn(move || {
                for r in 0..rounds {
                    let tag = id.wrapping_mul(100).wrapping_add(r);
                    let len = 16 << ((r as usize + id as usize) % 3);
                    match arena.allocate(nz(len)) {
                        Ok(mut buf) => {
                            buf.put_bytes(tag, len);
                            let bytes = buf.freeze();
                            if r % 2 == 0 {
                                tx.send((tag, bytes)).unwrap();
                            } else {
                                assert!(bytes.iter().all(|&b| b == tag));
                            }
                        }
                        Err(AllocError::ArenaFull) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    drop(tx);
    for w in workers {
        w.join().unwrap();
    }
    let last = checker.join().unwrap().expect("round 0 always fits");
    assert_eq!(arena.metrics().live_bytes, last.len());
    drop(last);
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.largest_free_block), (0, 2048));
    let whole = arena.allocate(nz(2048)).unwrap();
    drop(arena);
    drop(whole); // the last lease frees the arena
}

#[cfg(feature = "async-alloc")]
#[test]
fn block_handed_to_a_waiter_and_cancelled_grant() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use bytes::BufMut;

    let arena = arena(64, 16);
    let mut cx = Context::from_waker(Waker::noop());
    let mut held = arena.allocate(nz(64)).unwrap();
    held.put_bytes(7, 64);
    let mut first = Box::pin(arena.allocate_async(nz(32)));
    let mut second = Box::pin(arena.allocate_async(nz(32)));
    let mut third = Box::pin(arena.allocate_async(nz(64)));
    for fut in [&mut first, &mut second] {
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    assert!(third.as_mut().poll(&mut cx).is_pending());
    drop(held.freeze()); // split: one half to each of the first two
    drop(first); // its grant goes back to the lists, unmerged: `second` holds the buddy
    let Poll::Ready(Ok(mut buf)) = second.as_mut().poll(&mut cx) else {
        panic!("the second waiter is served");
    };
    assert!(buf.is_empty());
    buf.put_slice(b"half");
    assert!(third.as_mut().poll(&mut cx).is_pending());
    assert_eq!(buf.freeze(), "half"); // dropped: the halves merge
    let Poll::Ready(Ok(whole)) = third.as_mut().poll(&mut cx) else {
        panic!("the merged block goes to the third waiter");
    };
    assert_eq!((whole.capacity(), whole.len()), (64, 0));
    drop((second, third));
    drop(arena);
    drop(whole); // the last lease frees the arena
}

#[test]
fn bad_geometry_is_a_build_error() {
    let err = BuddyArena::builder(nz(1024), nz(24)).build().unwrap_err();
    assert_eq!(
        err,
        BuildError::MinBlockNotPowerOfTwo {
            min_block_size: 24,
            suggested: 32
        }
    );
    let err = BuddyArena::builder(nz(1000), nz(16)).build().unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::TotalNotPowerOfTwoMultiple { suggested: 512, .. }
        ),
        "{err}"
    );
    let err = BuddyArena::builder(nz(48), nz(16)).build().unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::TotalNotPowerOfTwoMultiple { suggested: 32, .. }
        ),
        "{err}"
    );
    let err = BuddyArena::builder(nz(8), nz(16)).build().unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::TotalNotPowerOfTwoMultiple { suggested: 16, .. }
        ),
        "{err}"
    );
    let err = BuddyArena::builder(nz(1 << 40), nz(1)).build().unwrap_err();
    assert!(matches!(err, BuildError::TooManyBlocks { .. }), "{err}");
    let err = BuddyArena::builder(nz(1 << 63), nz(1 << 62))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::TotalNotPowerOfTwoMultiple { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Group caches (`cache.rs`)
// ---------------------------------------------------------------------------

/// 2048 blocks of 256 B (max_order 11): orders 0..=5 are cached, order 0 in
/// groups of 32 blocks (8 KiB), order 5 in groups of one.
const CACHED_TOTAL: usize = 1 << 19;
const CACHED_MIN: usize = 256;

/// Bytes the free lists hold, without flushing the caches.
fn listed_bytes(arena: &BuddyArena) -> usize {
    sync::lock(&arena.inner().lists).free_bytes
}

/// Runs `f` on a new thread whose cache shard differs from this thread's
/// (threads are spawned until one does; their shards are hashed indices).
fn on_other_shard<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
    arena: &BuddyArena,
    mut f: F,
) -> T {
    let mine = arena.inner().shard(sync::thread_index());
    for _ in 0..1024 {
        let probe = arena.clone();
        let out = std::thread::spawn(move || {
            if probe.inner().shard(sync::thread_index()) == mine {
                Err(f)
            } else {
                Ok(f())
            }
        })
        .join()
        .unwrap();
        match out {
            Ok(t) => return t,
            Err(back) => f = back,
        }
    }
    panic!("no thread of another shard");
}

#[test]
fn cross_thread_releases_return_whole_groups_that_the_next_carve_reuses() {
    let arena = arena(CACHED_TOTAL, CACHED_MIN);
    // Two groups of order 0: the first carve keeps 32 blocks, the 33rd
    // allocation carves the second group.
    let bufs: Vec<_> = (0..64).map(|_| arena.allocate(nz(1)).unwrap()).collect();
    let first: std::collections::BTreeSet<usize> =
        bufs[..32].iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(
        listed_bytes(&arena),
        CACHED_TOTAL - 64 * CACHED_MIN,
        "two carves of 32 blocks, none left in this shard's handles"
    );
    on_other_shard(&arena, move || drop(bufs));
    // The consumer's handle collected the first group, then swapped it for
    // the second and returned the first to the lists (merged) under one
    // lock: only the second group is still cached.
    assert_eq!(arena.inner().cached_bytes(), 32 * CACHED_MIN);
    assert_eq!(listed_bytes(&arena), CACHED_TOTAL - 32 * CACHED_MIN);
    // The next carve on this thread takes the group that came back last:
    // the same (warm) memory.
    let again: Vec<_> = (0..32).map(|_| arena.allocate(nz(1)).unwrap()).collect();
    let again_set: std::collections::BTreeSet<usize> =
        again.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(again_set, first);
    drop(again);
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.largest_free_block), (0, CACHED_TOTAL));
    assert_eq!(m.alloc_count, 96, "carved blocks count once allocated");
    assert_eq!(arena.inner().cached_bytes(), 0, "metrics() flushed");
    // Carved and flushed unallocated: not counted.
    let one = arena.allocate(nz(1)).unwrap();
    assert_eq!(arena.metrics().alloc_count, 97);
    drop(one);
    let m = arena.metrics();
    assert_eq!((m.alloc_count, m.live_bytes), (97, 0));
}

#[test]
fn full_means_full_after_every_cache_is_flushed() {
    let arena = arena(CACHED_TOTAL, CACHED_MIN);
    let blocks = CACHED_TOTAL / CACHED_MIN;
    let mut bufs: Vec<_> = (0..blocks)
        .map(|i| arena.allocate(nz(1)).unwrap_or_else(|e| panic!("{i}: {e}")))
        .collect();
    assert_eq!(arena.allocate(nz(1)).unwrap_err(), AllocError::ArenaFull);
    // Release everything on four threads of other shards, in interleaved
    // order, so that blocks stay parked in several shards' handles.
    let quarters: Vec<Vec<_>> = (0..4)
        .map(|q| {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut bufs)
                .into_iter()
                .enumerate()
                .partition(|(i, _)| i % (4 - q) == 0);
            bufs = rest.into_iter().map(|(_, b)| b).collect();
            mine.into_iter().map(|(_, b)| b).collect()
        })
        .collect();
    for q in quarters {
        on_other_shard(&arena, move || drop(q));
    }
    assert!(arena.inner().cached_bytes() > 0, "blocks stay parked");
    // The whole arena in one block: only after every parked block merged.
    let whole = arena.allocate(nz(CACHED_TOTAL)).unwrap();
    assert_eq!(arena.allocate(nz(1)).unwrap_err(), AllocError::ArenaFull);
    assert_eq!(arena.metrics().alloc_failure_count, 2);
    drop(whole);
    // Every block again, then full: no spurious failure, no double lease.
    let bufs: Vec<_> = (0..blocks)
        .map(|i| arena.allocate(nz(1)).unwrap_or_else(|e| panic!("{i}: {e}")))
        .collect();
    let distinct: std::collections::BTreeSet<usize> =
        bufs.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(distinct.len(), blocks);
    assert_eq!(arena.allocate(nz(1)).unwrap_err(), AllocError::ArenaFull);
}

#[cfg(feature = "async-alloc")]
#[test]
fn nothing_is_parked_while_tasks_wait() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let arena = arena(CACHED_TOTAL, CACHED_MIN);
    let mut cx = Context::from_waker(Waker::noop());
    let blocks = CACHED_TOTAL / CACHED_MIN;
    let mut bufs: Vec<_> = (0..blocks)
        .map(|_| Some(arena.allocate(nz(1)).unwrap()))
        .collect();
    // Two blocks parked (one group), the rest held.
    bufs[100] = None;
    bufs[101] = None;
    assert_eq!(arena.inner().cached_bytes(), 2 * CACHED_MIN);
    // An allocation that finds the lists empty flushes them there (merged)
    // and is served from them.
    let mut first = Box::pin(arena.allocate_async(nz(512)));
    let Poll::Ready(Ok(got)) = first.as_mut().poll(&mut cx) else {
        panic!("the parked buddies merge for the waiter");
    };
    assert_eq!(got.capacity(), 512);
    // A waiter that cannot be served: every handle holds its marker.
    let mut waiter = Box::pin(arena.allocate_async(nz(1024)));
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    for buf in &mut bufs[200..203] {
        *buf = None; // to the lists, not parked
        assert_eq!(arena.inner().cached_bytes(), 0);
    }
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    bufs[203] = None; // 200..204 merge into the waiter's block
    let Poll::Ready(Ok(got2)) = waiter.as_mut().poll(&mut cx) else {
        panic!("the waiter is served from the merged releases");
    };
    assert_eq!(got2.capacity(), 1024);
    assert_eq!(arena.metrics().waiting_tasks, 0);
    // The queue emptied: releases park again.
    bufs[300] = None;
    assert_eq!(arena.inner().cached_bytes(), CACHED_MIN);
    drop((got, got2, bufs));
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.largest_free_block), (0, CACHED_TOTAL));
}

#[test]
fn teardown_with_cached_blocks_on_several_shards() {
    let arena = arena(CACHED_TOTAL, CACHED_MIN);
    let mut bufs: Vec<_> = (0..100)
        .map(|i| arena.allocate(nz(1 + i % 600)).unwrap())
        .collect();
    let theirs = bufs.split_off(50);
    on_other_shard(&arena, move || drop(theirs));
    let live = bufs.split_off(40);
    drop(bufs); // parked in this shard's handles (or returned with a group)
    assert!(arena.inner().cached_bytes() > 0);
    let frozen = {
        let mut b = arena.allocate(nz(256)).unwrap();
        bytes::BufMut::put_bytes(&mut b, 9, 256);
        b.freeze()
    };
    drop(arena); // the closer flushes every handle, leaving CLOSED_MARK
    let late = drop_half_elsewhere(live);
    drop(late);
    assert!(frozen.iter().all(|&b| b == 9));
    drop(frozen); // the last lease frees the arena (miri checks the leak)
}

/// Drops every other buffer of `bufs` on another thread (any shard: the
/// arena is closed) and returns the rest.
fn drop_half_elsewhere(bufs: Vec<Buffer>) -> Vec<Buffer> {
    let (keep, drop_there): (Vec<_>, Vec<_>) =
        bufs.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    std::thread::spawn(move || drop(drop_there)).join().unwrap();
    keep.into_iter().map(|(_, b)| b).collect()
}

#[test]
fn groups_shrink_near_the_top_order_and_small_arenas_cache_nothing() {
    // 256 blocks of 16 B (max_order 8): orders 0..=2 cached, each in groups
    // of order 2 (4, 2 and 1 blocks); order 3 and up are not.
    let arena = arena(4096, 16);
    assert_eq!(arena.inner().cached_orders, 3);
    let a = arena.allocate(nz(16)).unwrap();
    assert_eq!(
        arena.inner().cached_bytes(),
        3 * 16,
        "a group of four blocks"
    );
    let b = arena.allocate(nz(32)).unwrap();
    assert_eq!(arena.inner().cached_bytes(), 3 * 16 + 32, "a group of two");
    let (c, d) = (
        arena.allocate(nz(64)).unwrap(),
        arena.allocate(nz(64)).unwrap(),
    );
    assert_eq!(arena.inner().cached_bytes(), 3 * 16 + 32, "groups of one");
    drop(c); // parked
    assert_eq!(arena.inner().cached_bytes(), 3 * 16 + 32 + 64);
    let listed = listed_bytes(&arena);
    drop(d); // another group: swapped in, `c` goes to the lists
    assert_eq!(arena.inner().cached_bytes(), 3 * 16 + 32 + 64);
    assert_eq!(listed_bytes(&arena), listed + 64);
    let e = arena.allocate(nz(128)).unwrap();
    let listed = listed_bytes(&arena);
    drop(e); // not cached
    assert_eq!(listed_bytes(&arena), listed + 128);
    drop((a, b));
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.largest_free_block), (0, 4096));

    let small = self::arena(1024, 16); // max_order 6: order 0 in groups of one
    assert_eq!(small.inner().cached_orders, 1);
    let tiny = self::arena(512, 16);
    assert_eq!(tiny.inner().cached_orders, 0);
    let x = tiny.allocate(nz(16)).unwrap();
    let listed = listed_bytes(&tiny);
    drop(x);
    assert_eq!(listed_bytes(&tiny), listed + 16);
    assert_eq!(tiny.inner().cached_bytes(), 0);
}

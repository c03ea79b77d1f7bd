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
fn full_means_no_block_even_after_merging_parked_ones() {
    let arena = arena(256, 16);
    let halves = [
        arena.allocate(nz(128)).unwrap(),
        arena.allocate(nz(128)).unwrap(),
    ];
    assert_eq!(arena.allocate(nz(16)).unwrap_err(), AllocError::ArenaFull);
    drop(halves); // both parked in caches, unmerged
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
    let arena = arena(1024, 16);
    let parked = arena.allocate(nz(64)).unwrap();
    let live = arena.allocate(nz(16)).unwrap();
    drop(parked);
    drop(arena); // flushes the parked block; `live` keeps the arena
    drop(live); // closed slot: goes to the lists, frees the arena
}

/// Threads allocate blocks of mixed sizes (splitting and coalescing,
/// through the caches and the lists), write, freeze and send them to
/// a third thread while the last handle drops: under miri, the
/// data-race detector checks the park/take and lock orderings against
/// the block bytes, and the leak checker checks the teardown.
#[test]
fn threads_split_and_merge_and_drop_the_arena_midway() {
    use bytes::BufMut;

    let rounds: u8 = if cfg!(miri) { 12 } else { 200 };
    let arena = arena(128, 16);
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
    assert_eq!((m.live_bytes, m.largest_free_block), (0, 128));
    let whole = arena.allocate(nz(128)).unwrap();
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

//! Unit tests of the fixed arena (integration tests are in `tests/`).

use bytes::BufMut;

use super::*;
use crate::error::BuildError;

fn arena(slots: usize, cap: usize) -> FixedArena {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    FixedArena::builder(nz(slots), nz(cap)).build().unwrap()
}

#[test]
fn every_slot_once_across_word_boundaries() {
    for slots in [1, 62, 63, 64, 126, 127, 130] {
        let arena = arena(slots, 3);
        let mut held: Vec<_> = (0..slots).map(|_| arena.allocate().unwrap()).collect();
        assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
        let mut starts: Vec<_> = held
            .iter_mut()
            .map(|b| b.chunk_mut().as_mut_ptr())
            .collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), slots, "distinct slots for {slots}");
        let m = arena.metrics();
        assert_eq!(
            (m.live_slots, m.live_bytes, m.alloc_failure_count),
            (slots, slots * 3, 1)
        );
        held.truncate(slots / 2);
        assert_eq!(arena.metrics().live_slots, slots / 2);
        drop(held);
        let m = arena.metrics();
        assert_eq!((m.live_slots, m.alloc_count), (0, slots as u64));
    }
}

#[test]
fn teardown_waits_for_every_word() {
    // Live slots in the first and last words, none in between; closing
    // counts the empty words and the two releases return the rest.
    let arena = arena(200, 1);
    let mut all: Vec<_> = (0..200).map(|_| arena.allocate().unwrap()).collect();
    let last = all.pop().unwrap();
    let first = all.remove(0);
    drop(all);
    drop(arena);
    drop(last);
    drop(first); // frees the arena (miri checks for the leak or double free)
}

/// Buffers taken on this thread and dropped on others sit in those
/// threads' slot caches: they count as free (not live) and are found
/// before `ArenaFull`; the last handle returns them, and the arena is
/// freed once, after the last buffer (miri checks the leak and the double
/// free).
#[test]
fn threads_drop_buffers_into_caches_then_teardown() {
    let arena = arena(100, 8);
    let mut bufs: Vec<_> = (0..100)
        .map(|_| arena.allocate().unwrap().freeze())
        .collect();
    let kept = bufs.split_off(90);
    let droppers: Vec<_> = (0..3)
        .map(|_| {
            let chunk: Vec<_> = bufs.drain(..30).collect();
            std::thread::spawn(move || drop(chunk))
        })
        .collect();
    droppers.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(arena.metrics().live_slots, 10);
    let again: Vec<_> = (0..90).map(|_| arena.allocate().unwrap()).collect();
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
    drop(again);
    // Some slots are cached on this thread now, some on the (finished)
    // dropper threads' shards; the last handle goes while 10 are leased.
    drop(arena);
    std::thread::spawn(move || drop(kept)).join().unwrap();
}

/// Two threads drop buffers whose slots alternate between runs, so that
/// nearly every release swaps its slot into its cache and returns the run
/// the cache held, while the last handle drops: the closer must wait for
/// those runs to land, and the arena is freed once, by the last release
/// (miri, with many schedules in CI, checks for use after free).
#[test]
fn threads_flush_caches_while_the_last_handle_drops() {
    let rounds = if cfg!(miri) { 4 } else { 200 };
    for _ in 0..rounds {
        let arena = arena(124, 1);
        let mut all: Vec<_> = (0..124).map(|_| arena.allocate().unwrap()).collect();
        // Slot i of run 0 next to slot i of run 1, and so on.
        let mut orders = [Vec::new(), Vec::new()];
        for (i, buf) in all.drain(..).enumerate() {
            orders[i % 2].push(buf);
        }
        for order in &mut orders {
            let half = order.len() / 2;
            let (a, b) = order.split_at_mut(half);
            // Interleave the two halves: runs alternate on every drop.
            for i in 0..a.len().min(b.len()) {
                if i % 2 == 1 {
                    std::mem::swap(&mut a[i], &mut b[i]);
                }
            }
        }
        let droppers: Vec<_> = orders
            .into_iter()
            .map(|order| std::thread::spawn(move || order.into_iter().for_each(drop)))
            .collect();
        drop(arena);
        droppers.into_iter().for_each(|t| t.join().unwrap());
    }
}

#[test]
fn clones_share_one_arena() {
    let a = arena(1, 8);
    let b = a.clone();
    let buf = a.allocate().unwrap();
    drop(a);
    assert_eq!(b.allocate().unwrap_err(), AllocError::ArenaFull);
    drop(buf);
    assert!(b.allocate().is_ok());
}

/// Threads claim, write, freeze, send and release slots of one word
/// while the last handle drops: under miri, the data-race detector
/// checks the claim/release orderings against the slot bytes themselves
/// and the leak checker checks the teardown.
#[test]
fn threads_share_slots_and_drop_the_arena_midway() {
    let rounds: u8 = if cfg!(miri) { 12 } else { 200 };
    let arena = arena(3, 8);
    let (tx, rx) = std::sync::mpsc::channel::<(u8, bytes::Bytes)>();
    let checker = std::thread::spawn(move || {
        for (tag, bytes) in rx {
            assert_eq!(&bytes[..], &[tag; 8]);
        }
    });
    let workers: Vec<_> = (0..2u8)
        .map(|id| {
            let (arena, tx) = (arena.clone(), tx.clone());
            std::thread::spawn(move || {
                for r in 0..rounds {
                    let tag = id.wrapping_mul(100).wrapping_add(r);
                    match arena.allocate() {
                        Ok(mut buf) => {
                            buf.put_bytes(tag, 8);
                            let bytes = buf.freeze();
                            assert_eq!(&bytes[..], &[tag; 8]);
                            tx.send((tag, bytes)).unwrap();
                        }
                        Err(AllocError::ArenaFull) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    drop((arena, tx));
    for w in workers {
        w.join().unwrap();
    }
    checker.join().unwrap();
}

#[cfg(feature = "async-alloc")]
#[test]
fn slot_handed_to_a_waiter_and_cancelled_grant() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let arena = arena(1, 4);
    let mut cx = Context::from_waker(Waker::noop());
    let mut held = arena.allocate().unwrap();
    held.put_slice(b"held");
    let mut first = Box::pin(arena.allocate_async());
    let mut second = Box::pin(arena.allocate_async());
    assert!(first.as_mut().poll(&mut cx).is_pending());
    assert!(second.as_mut().poll(&mut cx).is_pending());
    drop(held.freeze()); // handed to `first`, never back in the bitmap
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
    drop(first); // granted but not picked up: handed on to `second`
    let Poll::Ready(mut buf) = second.as_mut().poll(&mut cx) else {
        panic!("the cancelled grant goes to the next waiter");
    };
    assert!(buf.is_empty());
    buf.put_slice(b"next");
    assert_eq!(&buf[..], b"next");
    drop(second);
    drop(arena); // the buffer keeps the memory alive
    assert_eq!(buf.freeze(), "next");
}

#[test]
fn sizes_that_overflow_are_build_errors() {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    let err = FixedArena::builder(nz(usize::MAX / 2), nz(4))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::FixedSizeOverflow { .. }), "{err}");
    assert!(err.to_string().contains("overflow"));
}

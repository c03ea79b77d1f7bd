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

/// Runs `f` on a thread; fails if it has not returned within a generous
/// hang guard (a deadlock or a spin turned into a failure).
fn returns(what: &str, f: impl FnOnce() + Send + 'static) {
    let worker = std::thread::spawn(f);
    let start = std::time::Instant::now();
    while !worker.is_finished() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "hang guard: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    worker.join().expect("no panic");
}

/// A release that met `WAITERS` hands its slot over under the queue lock.
/// If, before it gets the lock, the last waiter cancels and the last handle
/// drops, the slot is the last one in a closed word: the hand-over finds
/// nobody to grant it to, clears it and owes that word's teardown count.
/// (It used to assert that this cannot happen and drop the count: a panic
/// in debug builds, the whole arena leaked in release builds.) The release
/// is cut at that point here to force the interleaving; miri checks that
/// the arena is freed exactly once.
#[cfg(feature = "async-alloc")]
#[test]
fn hand_over_after_the_last_waiter_and_handle_left_frees_the_arena() {
    use std::future::Future;
    use std::task::{Context, Waker};

    use super::bitmap::{Batch, Returned, return_bits};

    let arena = arena(1, 4);
    let held = arena.allocate().unwrap();
    let mut waiter = Box::pin(arena.allocate_async());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(waiter.as_mut().poll(&mut cx).is_pending());
    // `held`'s release, up to its hand-over: the word has `WAITERS`, so
    // the bit stays set, to be granted under the queue lock.
    let inner = arena.inner;
    std::mem::forget(held);
    {
        let bitmap = &arena.inner().slots.bitmap;
        let met = return_bits(bitmap.at(0), 1, bitmap.pad(0));
        assert!(matches!(met, Returned::Waiting));
    }
    // Meanwhile the waiter gives up and the last handle goes.
    drop(waiter);
    drop(arena);
    // The hand-over: nobody waits; the slot was the last hold on the arena.
    let mut hand = shared::HandOver::new(inner);
    hand.batch(Batch { word: 0, mask: 1 });
    hand.finish(0);
}

/// While tasks wait, a run a cache still holds (the marks go in one shard
/// at a time) can meet `WAITERS` on its way back to the bitmap, inside a
/// *move*; its slots are handed to waiters, whose wakers run user code.
/// That code must not run inside the move: a panicking waker used to leave
/// the move in flight forever, and the last handle's drop then spun forever
/// waiting for it (as would a failing allocation on that arena). The
/// window between the flag and the marks is forced here.
#[cfg(feature = "async-alloc")]
#[test]
fn a_panicking_waker_woken_by_a_returned_run_leaves_no_move_in_flight() {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Panics;
    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("this waker panics");
        }
    }

    let arena = arena(62, 1);
    let mut all: Vec<Buffer> = (0..62).map(|_| arena.allocate().unwrap()).collect();
    all.sort_by_key(|b| b.as_ptr() as usize);
    let in_run_1 = all.pop().unwrap();
    let in_run_0 = all.remove(0);
    let waker = Waker::from(Arc::new(Panics));
    let mut waiter = Box::pin(arena.allocate_async());
    assert!(
        waiter
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    {
        // A waiter, `WAITERS` set, this shard's handles not marked yet.
        let slots = &arena.inner().slots;
        slots.set_waiting(false, &mut |_| {});
        slots.bitmap.flag_waiters(true);
    }
    drop(in_run_0); // parks in this thread's `freed` handle
    // Returns run 0 (it meets `WAITERS`: handed to the waiter, woken).
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(in_run_1)));
    assert!(dropped.is_err(), "the waker's panic reaches the releaser");
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(buf) = waiter.as_mut().poll(&mut cx) else {
        panic!("the waiter was granted the returned slot");
    };
    drop((buf, waiter, all));
    let a2 = arena.clone();
    returns("an allocation on a full arena", move || {
        let held: Vec<_> = (0..62).map(|_| a2.allocate().unwrap()).collect();
        assert_eq!(a2.allocate().unwrap_err(), AllocError::ArenaFull);
        drop(held);
    });
    returns("the last handle's drop", move || drop(arena));
}

/// As above, with a waker that owns its task (a future of
/// `BufferSource::allocate_wait`, which owns the last arena handle) and
/// drops it when woken, as a task of a stopped executor would: the woken
/// future cancels, hands its grant back, and drops the last handle, whose
/// drop waits for moves in flight. Inside the releaser's own move that
/// used to wait forever.
#[cfg(feature = "async-alloc")]
#[test]
fn a_waker_that_drops_the_last_handle_does_not_wait_for_its_own_move() {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Wake, Waker};

    use crate::BufferSource;

    type Task = Mutex<Option<Pin<Box<crate::source::FixedWait>>>>;
    struct Dropped(Task);
    impl Wake for Dropped {
        fn wake(self: Arc<Self>) {} // drops the task, if ours was the last
    }

    let arena = arena(62, 1);
    let mut all: Vec<Buffer> = (0..62).map(|_| arena.allocate().unwrap()).collect();
    all.sort_by_key(|b| b.as_ptr() as usize);
    let in_run_1 = all.pop().unwrap();
    let in_run_0 = all.remove(0);
    let fut = Box::pin(arena.allocate_wait(NonZeroUsize::MIN));
    let task = Arc::new(Dropped(Mutex::new(Some(fut))));
    let waker = Waker::from(Arc::clone(&task));
    let polled = task
        .0
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .as_mut()
        .poll(&mut Context::from_waker(&waker));
    assert!(polled.is_pending());
    drop((waker, task)); // the queued waker holds the task alone now
    {
        // A waiter, `WAITERS` set, this shard's handles not marked yet.
        let slots = &arena.inner().slots;
        slots.set_waiting(false, &mut |_| {});
        slots.bitmap.flag_waiters(true);
    }
    drop(arena); // the task's future holds the last handle
    drop(in_run_0); // parks in this thread's `freed` handle
    // Returns run 0: granted to the task, which is dropped when woken.
    returns("a release whose waker drops the last handle", move || {
        drop(in_run_1)
    });
    drop(all); // the last buffers free the arena (miri checks it)
}

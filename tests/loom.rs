//! loom models of the allocators' atomic protocols.
//!
//! Run with `RUSTFLAGS="--cfg arenabuf_loom" cargo test --release --test loom`.
//! Each model explores every interleaving (up to `LOOM_MAX_PREEMPTIONS`) of
//! a few threads; loom reports data races on slot memory through the
//! patterns checked here, and leaks (an arena that is never torn down)
//! through the `Track` each arena carries under `cfg(arenabuf_loom)`.
#![cfg(arenabuf_loom)]

use std::num::NonZeroUsize;

use arenabuf::{AllocError, BuddyArena, FixedArena};
use bytes::BufMut;
use loom::thread;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// Two threads race to claim the only slot; a winner's bytes are its own.
#[test]
fn fixed_claim_release_race() {
    loom::model(|| {
        let arena = FixedArena::builder(nz(1), nz(4)).build().unwrap();
        let workers: Vec<_> = (0..2u8)
            .map(|id| {
                let arena = arena.clone();
                thread::spawn(move || match arena.allocate() {
                    Ok(mut buf) => {
                        buf.put_slice(&[id; 4]);
                        let bytes = buf.freeze();
                        assert_eq!(&bytes[..], &[id; 4]);
                        true
                    }
                    Err(AllocError::ArenaFull) => false,
                    Err(e) => panic!("{e}"),
                })
            })
            .collect();
        let wins = workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .filter(|&w| w)
            .count();
        assert!(wins >= 1);
        assert_eq!(arena.metrics().live_slots, 0);
        assert!(arena.allocate().is_ok());
    });
}

/// The last handle drops while two frozen `Bytes` in the same bitmap word
/// drop on two other threads: the arena is freed exactly once, by whoever
/// finishes last.
#[test]
fn fixed_teardown_races_releases() {
    loom::model(|| {
        let arena = FixedArena::builder(nz(2), nz(1)).build().unwrap();
        let a = arena.allocate().unwrap().freeze();
        let b = arena.allocate().unwrap().freeze();
        let ta = thread::spawn(move || drop(a));
        let tb = thread::spawn(move || drop(b));
        drop(arena);
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

/// The last handle drops while a release on another thread swaps its slot
/// into the slot cache and returns the run the cache held to the bitmap:
/// the closer waits for that run to land, and the arena is freed exactly
/// once, by the last release.
#[test]
fn fixed_teardown_races_cache_flush() {
    loom::model(|| {
        // 32 slots: run 0 holds slots 0..=30, run 1 slot 31 alone.
        let arena = FixedArena::builder(nz(32), nz(1)).build().unwrap();
        let mut held: Vec<_> = (0..32).map(|_| arena.allocate().unwrap()).collect();
        assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
        let last = held.pop().unwrap();
        let first = held.remove(0);
        // 30 slots of run 0 go into the cache.
        drop(held);
        let t = thread::spawn(move || drop(last));
        drop(arena);
        t.join().unwrap();
        drop(first);
    });
}

/// A released slot is seen free by a concurrent claimer, and the claimer
/// sees the bytes it writes, not the previous holder's.
#[test]
fn fixed_release_then_claim_hand_over() {
    loom::model(|| {
        let arena = FixedArena::builder(nz(1), nz(1)).build().unwrap();
        let mut buf = arena.allocate().unwrap();
        buf.put_u8(1);
        let held = buf.freeze();
        let t = thread::spawn(move || drop(held));
        let got = loop {
            match arena.allocate() {
                Ok(mut buf) => {
                    buf.put_u8(2);
                    break buf.freeze();
                }
                Err(_) => thread::yield_now(),
            }
        };
        assert_eq!(&got[..], &[2]);
        t.join().unwrap();
    });
}

/// A release parks its block in the cache while the last handle closes the
/// arena: either the closer flushes the parked block, or the release finds
/// the slot closed and frees under the lock. Freed exactly once either way.
#[test]
fn buddy_park_races_close() {
    loom::model(|| {
        let arena = BuddyArena::builder(nz(64), nz(16)).build().unwrap();
        let a = arena.allocate(nz(16)).unwrap().freeze();
        let b = arena.allocate(nz(32)).unwrap();
        let t = thread::spawn(move || drop(a));
        drop(arena);
        drop(b);
        t.join().unwrap();
    });
}

/// Two threads allocate, write, check and release blocks of one small
/// arena; parked blocks move between them without overlap.
#[test]
fn buddy_alloc_release_race() {
    loom::model(|| {
        let arena = BuddyArena::builder(nz(32), nz(16)).build().unwrap();
        let workers: Vec<_> = (0..2u8)
            .map(|id| {
                let arena = arena.clone();
                thread::spawn(move || {
                    for round in 0..2u8 {
                        if let Ok(mut buf) = arena.allocate(nz(16)) {
                            buf.put_bytes(id * 2 + round, 16);
                            assert!(buf.iter().all(|&x| x == id * 2 + round));
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let m = arena.metrics();
        assert_eq!((m.live_bytes, m.largest_free_block), (0, 32));
    });
}

/// A frozen `Bytes` cloned to another thread: the slot comes back only
/// after both the original and the clone dropped.
#[test]
fn frozen_clone_dropped_across_threads() {
    loom::model(|| {
        let arena = FixedArena::builder(nz(1), nz(2)).build().unwrap();
        let mut buf = arena.allocate().unwrap();
        buf.put_slice(b"hi");
        let bytes = buf.freeze();
        let clone = bytes.clone();
        let t = thread::spawn(move || assert_eq!(&clone[..], b"hi"));
        drop(bytes);
        t.join().unwrap();
        assert_eq!(arena.metrics().live_slots, 0);
    });
}

/// Split and coalesce under races. Block 0 (16 bytes) and block 2 (32
/// bytes) are held, block 1 is free in the lists. One thread releases
/// block 0 (it parks, or goes to the lists where it merges with block 1)
/// and allocates 16 bytes again (from the cache, or split from the lists);
/// another allocates 32 bytes, which exists only once blocks 0 and 1 have
/// merged; the main thread releases block 2 meanwhile. Every block a thread
/// gets is written, then checked after a yield (an overlapping block would
/// have overwritten it), and at the end everything has coalesced back.
#[test]
fn buddy_split_coalesce_race() {
    loom::model(|| {
        let arena = BuddyArena::builder(nz(64), nz(16)).build().unwrap();
        let a = arena.allocate(nz(16)).unwrap();
        let c = arena.allocate(nz(32)).unwrap();
        let use_block = |arena: &BuddyArena, len: usize, tag: u8| {
            if let Ok(mut buf) = arena.allocate(nz(len)) {
                assert_eq!(buf.capacity(), len);
                buf.put_bytes(tag, len);
                thread::yield_now();
                assert!(buf.iter().all(|&x| x == tag), "block overlap");
            }
        };
        let t1 = {
            let arena = arena.clone();
            thread::spawn(move || {
                drop(a);
                use_block(&arena, 16, 1);
            })
        };
        let t2 = {
            let arena = arena.clone();
            thread::spawn(move || use_block(&arena, 32, 2))
        };
        drop(c);
        t1.join().unwrap();
        t2.join().unwrap();
        let m = arena.metrics();
        assert_eq!((m.live_bytes, m.largest_free_block), (0, 64));
        assert!(m.coalesce_count >= 2, "{m:?}");
        assert!(arena.allocate(nz(64)).is_ok());
    });
}

/// The owner behind a frozen `Bytes`: a clone and a slice go to two
/// threads while the main thread drops its own piece and then waits for
/// the slot. The slot comes back exactly once (`alloc_count`, which is
/// releases + live slots, stays 1 until the main thread takes it again),
/// and only after the last piece dropped: the readers check their bytes
/// before dropping them, so a premature release would let the main
/// thread's new writes show through.
#[test]
fn frozen_owner_pieces_dropped_across_threads() {
    loom::model(|| {
        let arena = FixedArena::builder(nz(1), nz(4)).build().unwrap();
        let mut buf = arena.allocate().unwrap();
        buf.put_slice(b"abcd");
        let bytes = buf.freeze();
        let (whole, tail) = (bytes.clone(), bytes.slice(2..));
        let ta = thread::spawn(move || assert_eq!(&whole[..], b"abcd"));
        let tb = thread::spawn(move || assert_eq!(&tail[..], b"cd"));
        drop(bytes);
        let again = loop {
            match arena.allocate() {
                Ok(mut buf) => {
                    buf.put_slice(b"zzzz");
                    break buf;
                }
                Err(AllocError::ArenaFull) => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        ta.join().unwrap();
        tb.join().unwrap();
        assert_eq!(arena.metrics().alloc_count, 2);
        drop(again);
        let m = arena.metrics();
        assert_eq!((m.live_slots, m.alloc_count), (0, 2));
    });
}

/// The last arena handle drops before the frozen pieces, which drop on
/// other threads: the memory stays valid for the readers and is freed
/// exactly once, by whoever drops last (loom's leak tracking reports an
/// arena never freed).
#[test]
fn fixed_handle_dropped_before_frozen_pieces() {
    loom::model(|| {
        let arena = FixedArena::builder(nz(2), nz(2)).build().unwrap();
        let mut buf = arena.allocate().unwrap();
        buf.put_slice(b"hi");
        let bytes = buf.freeze();
        let other = arena.allocate().unwrap().freeze();
        let clone = bytes.slice(1..);
        let ta = thread::spawn(move || assert_eq!(&clone[..], b"i"));
        let tb = thread::spawn(move || drop(other));
        drop(arena);
        assert_eq!(&bytes[..], b"hi");
        drop(bytes);
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

/// As above, for a buddy arena: the closer flushes the caches while frozen
/// pieces are released (parked, or merged under the lock) on two threads.
#[test]
fn buddy_handle_dropped_before_frozen_pieces() {
    loom::model(|| {
        let arena = BuddyArena::builder(nz(32), nz(16)).build().unwrap();
        let mut buf = arena.allocate(nz(16)).unwrap();
        buf.put_slice(b"hi");
        let bytes = buf.freeze();
        let other = arena.allocate(nz(16)).unwrap().freeze();
        let clone = bytes.clone();
        let ta = thread::spawn(move || assert_eq!(&clone[..], b"hi"));
        let tb = thread::spawn(move || drop(other));
        drop(arena);
        drop(bytes);
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

/// The waiter hand-off (feature `async-alloc`).
#[cfg(feature = "async-alloc")]
mod waiting {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// A release races a task that finds the arena full and queues: the
    /// slot is handed over whichever comes first (no lost wake-up: loom
    /// reports a deadlock if `block_on` is never woken).
    #[test]
    fn fixed_release_races_waiter_registration() {
        loom::model(|| {
            let arena = FixedArena::builder(nz(1), nz(1)).build().unwrap();
            let held = arena.allocate().unwrap().freeze();
            let waiter = {
                let arena = arena.clone();
                thread::spawn(move || {
                    let mut buf = loom::future::block_on(arena.allocate_async());
                    buf.put_u8(7);
                    assert_eq!(&buf[..], &[7]);
                })
            };
            drop(held);
            waiter.join().unwrap();
            let m = arena.metrics();
            assert_eq!((m.live_slots, m.waiting_tasks), (0, 0));
            assert!(arena.allocate().is_ok());
        });
    }

    /// A waiter polls once and is cancelled while the slot is released:
    /// whether or not the slot was already granted to it, it ends up free.
    #[test]
    fn fixed_cancel_races_release() {
        loom::model(|| {
            let arena = FixedArena::builder(nz(1), nz(1)).build().unwrap();
            let held = arena.allocate().unwrap();
            let canceller = {
                let arena = arena.clone();
                thread::spawn(move || {
                    let mut fut = pin!(arena.allocate_async());
                    let mut cx = Context::from_waker(Waker::noop());
                    let first = fut.as_mut().poll(&mut cx);
                    drop(first);
                    // dropped here: pending, granted, or already done
                })
            };
            drop(held);
            canceller.join().unwrap();
            let m = arena.metrics();
            assert_eq!((m.live_slots, m.waiting_tasks), (0, 0));
            assert!(arena.allocate().is_ok());
        });
    }

    /// Two releases race one waiter: it gets exactly one slot, the other
    /// slot goes back to the bitmap.
    #[test]
    fn fixed_two_releases_one_waiter() {
        loom::model(|| {
            let arena = FixedArena::builder(nz(2), nz(1)).build().unwrap();
            let a = arena.allocate().unwrap().freeze();
            let b = arena.allocate().unwrap().freeze();
            let ta = thread::spawn(move || drop(a));
            let tb = thread::spawn(move || drop(b));
            let buf = loom::future::block_on(arena.allocate_async());
            ta.join().unwrap();
            tb.join().unwrap();
            assert_eq!(arena.metrics().live_slots, 1);
            drop(buf);
            assert_eq!(arena.metrics().live_slots, 0);
        });
    }

    /// Buddy: a release that parks its block races the first waiter's
    /// registration (which flushes the caches): the waiter gets the block.
    #[test]
    fn buddy_park_races_waiter_registration() {
        loom::model(|| {
            let arena = BuddyArena::builder(nz(16), nz(16)).build().unwrap();
            let held = arena.allocate(nz(16)).unwrap().freeze();
            let waiter = {
                let arena = arena.clone();
                thread::spawn(move || {
                    let buf = loom::future::block_on(arena.allocate_async(nz(16))).unwrap();
                    assert_eq!(buf.capacity(), 16);
                })
            };
            drop(held);
            waiter.join().unwrap();
            let m = arena.metrics();
            assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0));
            assert!(arena.allocate(nz(16)).is_ok());
        });
    }

    /// Buddy: a waiter cancelled while the block is released.
    #[test]
    fn buddy_cancel_races_release() {
        loom::model(|| {
            let arena = BuddyArena::builder(nz(16), nz(16)).build().unwrap();
            let held = arena.allocate(nz(16)).unwrap();
            let canceller = {
                let arena = arena.clone();
                thread::spawn(move || {
                    let mut fut = pin!(arena.allocate_async(nz(16)));
                    let mut cx = Context::from_waker(Waker::noop());
                    if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                        drop(r.unwrap());
                    }
                })
            };
            drop(held);
            canceller.join().unwrap();
            let m = arena.metrics();
            assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0));
            assert!(arena.allocate(nz(16)).is_ok());
        });
    }

    /// A grant races its waiter's re-poll: the waiter registered with one
    /// waker and polls again with another (in `block_on`) while the slot is
    /// released on another thread. The waker update and the grant are
    /// ordered by the node's lock, so the wake-up is never lost (loom
    /// reports a deadlock if `block_on` sleeps forever).
    #[test]
    fn fixed_grant_races_pickup() {
        loom::model(|| {
            let arena = FixedArena::builder(nz(1), nz(1)).build().unwrap();
            let held = arena.allocate().unwrap();
            let mut fut = Box::pin(arena.allocate_async());
            let mut cx = Context::from_waker(Waker::noop());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            let releaser = thread::spawn(move || drop(held));
            let mut buf = loom::future::block_on(fut);
            buf.put_u8(1);
            releaser.join().unwrap();
            drop(buf);
            let m = arena.metrics();
            assert_eq!((m.live_slots, m.waiting_tasks), (0, 0));
        });
    }

    /// A waiter is cancelled while a release grants it its slot, with a
    /// second waiter behind it: the slot reaches the second waiter (handed
    /// on by the cancel, or granted directly), exactly once.
    #[test]
    fn fixed_cancel_during_grant_hands_on() {
        loom::model(|| {
            let arena = FixedArena::builder(nz(1), nz(1)).build().unwrap();
            let held = arena.allocate().unwrap();
            let mut cx = Context::from_waker(Waker::noop());
            // An owned ('static) future, to be dropped on another thread.
            let mut first = Box::pin(arenabuf::BufferSource::allocate_wait(&arena, nz(1)));
            assert!(first.as_mut().poll(&mut cx).is_pending());
            let mut second = Box::pin(arena.allocate_async());
            assert!(second.as_mut().poll(&mut cx).is_pending());
            let releaser = thread::spawn(move || drop(held));
            let canceller = thread::spawn(move || drop(first));
            let buf = loom::future::block_on(second);
            releaser.join().unwrap();
            canceller.join().unwrap();
            assert_eq!(arena.metrics().live_slots, 1);
            drop(buf);
            let m = arena.metrics();
            assert_eq!((m.live_slots, m.waiting_tasks), (0, 0));
        });
    }

    /// Buddy: the same cancel-during-grant race, where the cancel also
    /// serves the queue (the head left).
    #[test]
    fn buddy_cancel_during_grant_hands_on() {
        loom::model(|| {
            let arena = BuddyArena::builder(nz(16), nz(16)).build().unwrap();
            let held = arena.allocate(nz(16)).unwrap();
            let mut cx = Context::from_waker(Waker::noop());
            let mut first = Box::pin(arenabuf::BufferSource::allocate_wait(&arena, nz(16)));
            assert!(first.as_mut().poll(&mut cx).is_pending());
            let mut second = Box::pin(arena.allocate_async(nz(16)));
            assert!(second.as_mut().poll(&mut cx).is_pending());
            let releaser = thread::spawn(move || drop(held));
            let canceller = thread::spawn(move || drop(first));
            let buf = loom::future::block_on(second).unwrap();
            releaser.join().unwrap();
            canceller.join().unwrap();
            drop(buf);
            let m = arena.metrics();
            assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0));
        });
    }
}

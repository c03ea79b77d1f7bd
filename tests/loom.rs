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

//! loom models of the slot cache protocol (see `mod.rs` for the command).

use loom::sync::Arc;
use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::*;

fn no_waiters(b: Batch) {
    panic!("no task waits, yet {b:?} was handed over");
}

/// Two slots. Shard 0 allocates both, releases one into shard 1's
/// cache from another thread while shard 0 allocates again: each slot is
/// held by one holder at a time, and the allocation fails only if both
/// are held.
#[test]
fn cross_shard_release_and_allocate() {
    loom::model(|| {
        let bm = Arc::new(CachedBitmap::new(2, 2));
        let held = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let a = bm.allocate(0, &mut no_waiters).unwrap();
        let b = bm.allocate(0, &mut no_waiters).unwrap();
        held[a.index()].store(true, Ordering::Relaxed);
        held[b.index()].store(true, Ordering::Relaxed);
        let t = {
            let (bm, held) = (bm.clone(), held.clone());
            thread::spawn(move || {
                held[a.index()].store(false, Ordering::Relaxed);
                bm.release_slot(1, a, &mut no_waiters);
            })
        };
        let got = bm.allocate(0, &mut no_waiters);
        if let Some(s) = got {
            assert!(
                !held[s.index()].swap(true, Ordering::Relaxed),
                "double lease"
            );
        }
        t.join().unwrap();
        if got.is_none() {
            // Failed: the release had not happened; it has now, and the
            // slot sits in shard 1's cache: it must be found.
            let s = bm.allocate(0, &mut no_waiters).expect("cached slot found");
            assert_eq!(s, a);
        }
    });
}

/// A release races with the first waiter's registration: the slot is
/// either collected by `set_waiting` or handed over by the release;
/// never left in a cache, never cleared.
#[test]
fn release_races_waiting() {
    loom::model(|| {
        let bm = Arc::new(CachedBitmap::new(1, 2));
        let s = bm.allocate(0, &mut no_waiters).unwrap();
        let t = {
            let bm = bm.clone();
            thread::spawn(move || {
                let mut handed = Vec::new();
                bm.release_slot(1, s, &mut |b| handed.push(b));
                handed.len()
            })
        };
        let mut collected = Vec::new();
        bm.set_waiting(true, &mut |b| collected.push(b));
        let by_release = t.join().unwrap();
        assert_eq!(
            collected.len() + by_release,
            1,
            "the slot reaches the queue once"
        );
        assert_eq!(bm.cached_slots(), 0);
        assert_eq!(
            bm.allocate(0, &mut no_waiters),
            None,
            "still granted, not free"
        );
    });
}

/// The closer races with a release and with a producer's refill of its
/// cache: after both, no slot is cached and only the held one is set.
#[test]
fn close_races_release() {
    loom::model(|| {
        let bm = Arc::new(CachedBitmap::new(3, 2));
        let a = bm.allocate(0, &mut no_waiters).unwrap(); // caches the other two
        let b = bm.allocate(0, &mut no_waiters).unwrap();
        let t = {
            let bm = bm.clone();
            thread::spawn(move || bm.release_slot(1, a, &mut no_waiters))
        };
        bm.close();
        t.join().unwrap();
        assert_eq!(bm.cached_slots(), 0);
        assert_eq!(bm.live_slots(), 1);
        bm.release_slot(0, b, &mut no_waiters);
        assert_eq!(bm.live_slots(), 0);
    });
}

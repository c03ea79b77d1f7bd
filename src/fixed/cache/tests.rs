//! Unit tests of the slot cache prototype, single- and multi-threaded.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};

use super::*;

fn no_waiters(b: Batch) {
    panic!("no task waits, yet {b:?} was handed over");
}

/// Operations per thread in the threaded tests (far fewer under miri,
/// which interprets every one).
const ITERS: usize = if cfg!(miri) { 300 } else { 20_000 };

#[test]
fn every_slot_once_then_full_then_all_back() {
    for slots in [1, 31, 32, 62, 63, 130] {
        let bm = CachedBitmap::new(slots, 4);
        let mut got = BTreeSet::new();
        for i in 0..slots {
            let slot = bm.allocate(i % 4, &mut no_waiters).expect("a free slot");
            assert!(got.insert(slot), "{slot:?} leased twice");
            assert!(slot.index() < slots);
        }
        for shard in 0..4 {
            assert_eq!(bm.allocate(shard, &mut no_waiters), None, "{slots} slots");
        }
        assert_eq!(bm.live_slots(), slots);
        for (i, slot) in got.iter().enumerate() {
            bm.release_slot(i % 3, *slot, &mut no_waiters);
        }
        assert_eq!(bm.live_slots(), 0, "cached slots are not live");
        assert!(bm.cached_slots() <= 3 * 31);
    }
}

#[test]
fn cached_slots_are_found_before_full() {
    // 62 slots: shard 0 refills a whole run, takes one and caches 30;
    // shard 1 must still get all 61 others.
    let bm = CachedBitmap::new(62, 2);
    let first = bm.allocate(0, &mut no_waiters).unwrap();
    assert_eq!(bm.cached_slots(), 30);
    let mut rest: Vec<_> = (0..61)
        .map(|_| bm.allocate(1, &mut no_waiters).expect("cached slot found"))
        .collect();
    assert_eq!(bm.allocate(1, &mut no_waiters), None);
    assert_eq!(bm.cached_slots(), 0);
    rest.push(first);
    let distinct: BTreeSet<_> = rest.iter().collect();
    assert_eq!(distinct.len(), 62);
}

#[test]
fn a_thread_gets_back_what_it_released() {
    let bm = CachedBitmap::new(1000, 4);
    let a = bm.allocate(2, &mut no_waiters).unwrap();
    let b = bm.allocate(2, &mut no_waiters).unwrap();
    bm.release_slot(2, b, &mut no_waiters);
    bm.release_slot(2, a, &mut no_waiters);
    // `alloc` still holds the refilled run; then the freed run comes.
    let mut seen = BTreeSet::new();
    for _ in 0..31 {
        seen.insert(bm.allocate(2, &mut no_waiters).unwrap());
    }
    assert!(seen.contains(&a) && seen.contains(&b), "{seen:?}");
}

#[test]
fn runs_freed_on_another_thread_come_back_whole_and_warm() {
    // Producer on shard 1 (its own place is word 50), consumer on shard
    // 0. The producer fills word 0, then takes a run of word 50.
    let bm = CachedBitmap::new(62 * 100, 2);
    let held: Vec<_> = (0..93)
        .map(|_| bm.allocate(1, &mut no_waiters).unwrap())
        .collect();
    assert!(held[..62].iter().all(|s| s.word == 0));
    assert!(held[62..].iter().all(|s| s.word == 50));
    // The consumer releases word 0: each run goes back whole when the
    // next release is of another run.
    for s in &held[..31] {
        bm.release_slot(0, *s, &mut no_waiters);
    }
    assert_eq!(bm.cached_slots(), 31);
    for s in &held[31..63] {
        bm.release_slot(0, *s, &mut no_waiters);
    }
    assert_eq!(bm.cached_slots(), 1, "both runs of word 0 went back whole");
    // The producer's next run is the warm one, not word 50's next.
    let again = bm.allocate(1, &mut no_waiters).unwrap();
    assert_eq!(again.word, 0, "the refill starts where runs came back");
}

#[test]
fn waiting_sends_every_cached_and_released_slot_to_the_queue() {
    let bm = CachedBitmap::new(62, 2);
    let all: Vec<_> = (0..62)
        .map(|_| bm.allocate(0, &mut no_waiters).unwrap())
        .collect();
    for s in &all[..5] {
        bm.release_slot(1, *s, &mut no_waiters);
    }
    let mut handed = Vec::new();
    bm.set_waiting(true, &mut |b| handed.push(b));
    let collected: u32 = handed.iter().map(|b| b.mask.count_ones()).sum();
    assert_eq!(collected, 5, "the cached slots go to the waiters");
    // A release while tasks wait is handed over, not cached.
    handed.clear();
    bm.release_slot(1, all[10], &mut |b| handed.push(b));
    assert_eq!(
        handed,
        [Batch {
            word: all[10].word,
            mask: 1 << all[10].bit
        }]
    );
    assert_eq!(bm.cached_slots(), 0);
    // Nothing was cleared: the waiters own those slots now.
    assert_eq!(bm.allocate(1, &mut no_waiters), None);
    bm.bitmap.clear(handed[0]);
    bm.set_waiting(false, &mut no_waiters);
    assert_eq!(bm.allocate(1, &mut no_waiters), Some(all[10]));
}

#[test]
fn close_returns_every_cached_slot_and_stops_caching() {
    let bm = CachedBitmap::new(200, 4);
    let held: Vec<_> = (0..100)
        .map(|i| bm.allocate(i % 4, &mut no_waiters).unwrap())
        .collect();
    for (i, s) in held[..50].iter().enumerate() {
        bm.release_slot(i % 4, *s, &mut no_waiters);
    }
    bm.close();
    assert_eq!(bm.cached_slots(), 0);
    let set = |bm: &CachedBitmap| bm.bitmap.set_slots();
    assert_eq!(set(&bm), 50, "only leased slots stay set");
    for (i, s) in held[50..].iter().enumerate() {
        bm.release_slot(i % 4, *s, &mut no_waiters);
    }
    assert_eq!(set(&bm), 0, "after close, releases go straight back");
}

/// Producer threads allocate, write a tag into their slot and send it to
/// consumer threads that check the tag and release: no slot is ever held
/// twice (the `held` flags) and nothing is lost.
#[test]
fn threads_hand_slots_across() {
    const SLOTS: usize = 300;
    let bm = Arc::new(CachedBitmap::new(SLOTS, 4));
    let held: Arc<Vec<AtomicBool>> = Arc::new((0..SLOTS).map(|_| AtomicBool::new(false)).collect());
    let full = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::sync_channel::<Slot>(64);
    let rx = Arc::new(Mutex::new(rx));
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (bm, held, tx, full) = (bm.clone(), held.clone(), tx.clone(), full.clone());
            std::thread::spawn(move || {
                for _ in 0..ITERS {
                    match bm.allocate(p, &mut no_waiters) {
                        Some(slot) => {
                            let i = slot.index();
                            assert!(!held[i].swap(true, Ordering::AcqRel), "{slot:?} twice");
                            tx.send(slot).unwrap();
                        }
                        None => {
                            full.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                        }
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let consumers: Vec<_> = (2..4)
        .map(|c| {
            let (bm, held, rx) = (bm.clone(), held.clone(), rx.clone());
            std::thread::spawn(move || {
                loop {
                    let Ok(slot) = rx.lock().unwrap().recv() else {
                        break;
                    };
                    let i = slot.index();
                    assert!(held[i].swap(false, Ordering::AcqRel));
                    bm.release_slot(c, slot, &mut no_waiters);
                }
            })
        })
        .collect();
    for t in producers.into_iter().chain(consumers) {
        t.join().unwrap();
    }
    assert_eq!(bm.live_slots(), 0);
    // The channel holds 64 and each side a few: never all 300, so a
    // failure would be a spurious ArenaFull.
    assert_eq!(full.load(Ordering::Relaxed), 0, "spurious full");
}

/// Four threads hold at most 12 slots each of 64, on shards that change
/// every operation, while the shards can cache all 64: most allocations
/// go through refills, returns and steals, and none may fail.
#[test]
fn no_spurious_full_while_caches_could_hold_everything() {
    const SLOTS: usize = 64;
    let bm = Arc::new(CachedBitmap::new(SLOTS, 4));
    let held: Arc<Vec<AtomicBool>> = Arc::new((0..SLOTS).map(|_| AtomicBool::new(false)).collect());
    let threads: Vec<_> = (0..4usize)
        .map(|t| {
            let (bm, held) = (bm.clone(), held.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..ITERS {
                    let shard = (t + i) % 4;
                    if mine.len() < 12 && (i / 7 + t) % 3 != 0 {
                        let slot = bm
                            .allocate(shard, &mut no_waiters)
                            .expect("at most 48 of 64 slots are leased");
                        let k = slot.index();
                        assert!(!held[k].swap(true, Ordering::AcqRel), "{slot:?} twice");
                        mine.push(slot);
                    } else if let Some(slot) = mine.pop() {
                        let k = slot.index();
                        assert!(held[k].swap(false, Ordering::AcqRel));
                        bm.release_slot((shard + 1) % 4, slot, &mut no_waiters);
                    }
                }
                for slot in mine {
                    let k = slot.index();
                    assert!(held[k].swap(false, Ordering::AcqRel));
                    bm.release_slot(t, slot, &mut no_waiters);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(bm.live_slots(), 0);
}

//! Multi-threaded stress: every buffer carries a pattern that is checked
//! after freezing and again just before release, buffers are held several at
//! a time and dropped on other threads, and a shared map of live address
//! ranges proves that no two live buffers ever overlap.
//!
//! `ARENABUF_STRESS_ITERS` sets the per-thread iteration count (default kept
//! small enough for a debug build; raise it with `--release`).

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use arenabuf::{AllocError, BuddyArena, Buffer, FixedArena};
use bytes::{BufMut, Bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const THREADS: usize = 4;
const HOLD: usize = 4;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn iters(default: usize) -> usize {
    std::env::var("ARENABUF_STRESS_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Live address ranges: start -> (end, owner tag).
#[derive(Default)]
struct LiveRanges(Mutex<BTreeMap<usize, (usize, u64)>>);

impl LiveRanges {
    fn insert(&self, start: usize, end: usize, tag: u64) {
        let mut map = self.0.lock().expect("lock");
        // Live ranges are disjoint, so the one with the greatest start below
        // `end` is the only candidate for an overlap.
        if let Some((&s, &(e, other))) = map.range(..end).next_back() {
            assert!(
                e <= start,
                "overlap: new [{start:#x}, {end:#x}) tag {tag:#x} vs live [{s:#x}, {e:#x}) tag {other:#x}"
            );
        }
        map.insert(start, (end, tag));
    }

    fn remove(&self, start: usize, tag: u64) {
        let mut map = self.0.lock().expect("lock");
        let (_, owner) = map.remove(&start).expect("range registered");
        assert_eq!(owner, tag, "range owned by someone else");
    }

    fn is_empty(&self) -> bool {
        self.0.lock().expect("lock").is_empty()
    }
}

fn tag_of(thread: usize, counter: usize) -> u64 {
    ((thread as u64) << 48) | counter as u64
}

fn byte_at(tag: u64, i: usize) -> u8 {
    if i < 8 {
        tag.to_le_bytes()[i]
    } else {
        (tag as u8) ^ (tag >> 48) as u8 ^ (i as u8).wrapping_mul(7)
    }
}

fn write_pattern(buf: &mut Buffer, tag: u64, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| byte_at(tag, i)).collect();
    buf.put_slice(&data);
}

fn check_pattern(data: &[u8], tag: u64, offset: usize) {
    for (i, &b) in data.iter().enumerate() {
        assert_eq!(
            b,
            byte_at(tag, offset + i),
            "tag {tag:#x}: byte {} corrupted",
            offset + i
        );
    }
}

/// A frozen buffer whose range is registered in `LiveRanges`.
struct Held {
    bytes: Bytes,
    start: usize,
    tag: u64,
}

impl Held {
    /// Checks the data, unregisters the range, then drops the bytes. The
    /// range is removed before the handle drops, so it is gone before the
    /// memory can possibly be handed out again.
    fn release(self, ranges: &LiveRanges) {
        check_pattern(&self.bytes, self.tag, 0);
        ranges.remove(self.start, self.tag);
        drop(self.bytes);
    }
}

enum Msg {
    Held(Held),
    /// An extra clone/slice; it can drop anywhere, any time.
    Loose(Bytes, u64, usize),
}

#[derive(Default)]
struct Totals {
    allocs: AtomicU64,
    full: AtomicU64,
}

/// Runs the workload on `THREADS` threads plus a dropper thread; `allocate`
/// takes the arena and the thread's RNG (for sizes).
fn run_stress<A>(
    arena: A,
    per_thread: usize,
    max_len: usize,
    allocate: fn(&A, &mut StdRng) -> Result<Buffer, AllocError>,
) -> (A, Arc<Totals>)
where
    A: Clone + Send + Sync + 'static,
{
    let ranges = Arc::new(LiveRanges::default());
    let totals = Arc::new(Totals::default());
    let (tx, rx) = mpsc::channel::<Msg>();

    let dropper = {
        let ranges = Arc::clone(&ranges);
        thread::spawn(move || {
            for msg in rx {
                match msg {
                    Msg::Held(h) => h.release(&ranges),
                    Msg::Loose(b, tag, offset) => {
                        check_pattern(&b, tag, offset);
                        drop(b);
                    }
                }
            }
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let arena = arena.clone();
            let ranges = Arc::clone(&ranges);
            let totals = Arc::clone(&totals);
            let tx = tx.clone();
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(0x5EED + t as u64);
                let mut held: VecDeque<Held> = VecDeque::new();
                let mut loose: Vec<(Bytes, u64, usize)> = Vec::new();
                for counter in 0..per_thread {
                    let tag = tag_of(t, counter);
                    let mut spins = 0u64;
                    let mut buf = loop {
                        match allocate(&arena, &mut rng) {
                            Ok(buf) => break buf,
                            Err(AllocError::ArenaFull) => {
                                totals.full.fetch_add(1, Ordering::Relaxed);
                                if let Some(h) = held.pop_front() {
                                    h.release(&ranges);
                                } else {
                                    loose.clear();
                                    thread::yield_now();
                                }
                                spins += 1;
                                assert!(spins < 50_000_000, "no progress: arena never frees up");
                            }
                            Err(e) => panic!("unexpected allocation error {e:?}"),
                        }
                    };
                    totals.allocs.fetch_add(1, Ordering::Relaxed);
                    assert!(buf.is_empty(), "fresh buffer not empty");
                    assert!(!buf.is_spilled());
                    let cap = buf.capacity();
                    let len = rng.random_range(1..=cap.min(max_len));
                    write_pattern(&mut buf, tag, len);
                    check_pattern(&buf, tag, 0);
                    let start = buf.as_ptr() as usize;
                    ranges.insert(start, start + cap, tag);

                    let bytes = buf.freeze();
                    assert_eq!(bytes.as_ptr() as usize, start, "freeze copied");
                    check_pattern(&bytes, tag, 0);

                    // Sometimes make an extra handle that lives elsewhere.
                    match rng.random_range(0..8) {
                        0 => {
                            let off = len / 2;
                            tx.send(Msg::Loose(bytes.slice(off..), tag, off))
                                .expect("dropper alive");
                        }
                        1 if loose.len() < 2 => loose.push((bytes.clone(), tag, 0)),
                        _ => {}
                    }
                    if rng.random_range(0..16) == 0 {
                        for (b, tag, off) in loose.drain(..) {
                            check_pattern(&b, tag, off);
                        }
                    }

                    let item = Held { bytes, start, tag };
                    match rng.random_range(0..4) {
                        0 => item.release(&ranges),
                        1 => tx.send(Msg::Held(item)).expect("dropper alive"),
                        _ => {
                            held.push_back(item);
                            if held.len() > HOLD {
                                let oldest = held.pop_front().expect("non-empty");
                                if rng.random_bool(0.5) {
                                    oldest.release(&ranges);
                                } else {
                                    tx.send(Msg::Held(oldest)).expect("dropper alive");
                                }
                            }
                        }
                    }
                }
                for h in held {
                    h.release(&ranges);
                }
                drop(loose);
            })
        })
        .collect();
    drop(tx);
    for w in workers {
        w.join().expect("worker panicked");
    }
    dropper.join().expect("dropper panicked");
    assert!(ranges.is_empty(), "ranges left registered");
    (arena, totals)
}

#[test]
fn fixed_arena_stress() {
    let per_thread = iters(60_000);
    let slot = 128;
    let slots = 16;
    let arena = FixedArena::builder(nz(slots), nz(slot))
        .build()
        .expect("valid configuration");
    let (arena, totals) = run_stress(arena, per_thread, slot, |a, _| a.allocate());
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0, "{m:?}");
    assert_eq!(m.alloc_count, totals.allocs.load(Ordering::Relaxed));
    assert_eq!(m.alloc_count, (THREADS * per_thread) as u64);
    assert_eq!(m.alloc_failure_count, totals.full.load(Ordering::Relaxed));
    assert_eq!(m.spill_count, 0);
    // Every slot is free again.
    let all: Vec<Buffer> = (0..slots)
        .map(|_| arena.allocate().expect("free slot"))
        .collect();
    assert!(arena.allocate().is_err());
    drop(all);
}

#[test]
fn buddy_arena_stress() {
    let per_thread = iters(40_000);
    let total = 16 * 1024;
    let min = 64;
    let arena = BuddyArena::builder(nz(total), nz(min))
        .build()
        .expect("valid configuration");
    fn allocate(a: &BuddyArena, rng: &mut StdRng) -> Result<Buffer, AllocError> {
        // Mostly small requests, sometimes up to 2 KiB.
        let size = if rng.random_bool(0.8) {
            rng.random_range(1..=256)
        } else {
            rng.random_range(1..=2048)
        };
        let buf = a.allocate(nz(size))?;
        assert_eq!(buf.capacity(), size.next_power_of_two().max(64));
        Ok(buf)
    }
    let (arena, totals) = run_stress(arena, per_thread, 300, allocate);
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0, "{m:?}");
    assert_eq!(m.alloc_count, totals.allocs.load(Ordering::Relaxed));
    assert_eq!(m.alloc_count, (THREADS * per_thread) as u64);
    assert_eq!(m.alloc_failure_count, totals.full.load(Ordering::Relaxed));
    assert!(m.split_count > 0 && m.coalesce_count > 0, "{m:?}");
    assert_eq!(
        m.largest_free_block, total,
        "not coalesced after stress: {m:?}"
    );
    let whole = arena.allocate(nz(total)).expect("whole arena after stress");
    drop(whole);
}

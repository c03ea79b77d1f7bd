//! Soak test: many tasks on a multi-thread runtime allocate from both arenas
//! (synchronously, and through `allocate_async` with waits and
//! cancellations), write a pattern, freeze, clone, slice, and pass the
//! pieces to other tasks that check and drop them, for a fixed duration.
//! At the end both arenas must be whole, their metrics must balance with
//! what the tasks counted, and no piece may ever have seen a corrupted
//! pattern.
//!
//! Ignored by default; run it with
//! `ARENABUF_SOAK_SECS=60 cargo test --release --test soak -- --ignored`
//! (`ARENABUF_SOAK_SECS` defaults to 60; the duration only bounds the
//! workload, nothing asserts on time).

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arenabuf::{AllocError, BuddyArena, Buffer, FixedArena};
use bytes::{BufMut, Bytes};
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

/// Tasks allocating from each arena.
const WORKERS: u64 = 48;
/// Tasks checking and dropping the pieces the workers send them.
const DROPPERS: usize = 4;
/// Fixed arena: slots and their capacity (small, so tasks have to wait).
const SLOTS: usize = 16;
const SLOT_CAP: usize = 512;
/// Buddy arena: total size and smallest block.
const BUDDY_TOTAL: usize = 64 * 1024;
const BUDDY_MIN: usize = 64;
/// Longest buddy request: a quarter of the arena, so large requests queue
/// behind small ones.
const BUDDY_MAX_LEN: usize = BUDDY_TOTAL / 4;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn soak_duration() -> Duration {
    let secs = std::env::var("ARENABUF_SOAK_SECS")
        .ok()
        .map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("ARENABUF_SOAK_SECS={v:?} is not a number of seconds"))
        })
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Byte `i` of the pattern of allocation `tag`: differs between tags at
/// every offset, so an overlapping writer is caught wherever it writes.
fn byte_at(tag: u64, i: usize) -> u8 {
    let x = tag
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    (x >> 56) as u8
}

fn fill(buf: &mut Buffer, tag: u64, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| byte_at(tag, i)).collect();
    // Write in two pieces, one through the `chunk_mut` path.
    let split = len / 3;
    buf.put_slice(&data[..split]);
    for &b in &data[split..] {
        buf.put_u8(b);
    }
}

fn check(data: &[u8], tag: u64, offset: usize) {
    for (i, &b) in data.iter().enumerate() {
        assert_eq!(
            b,
            byte_at(tag, offset + i),
            "allocation {tag:#x}: byte {} corrupted",
            offset + i
        );
    }
}

/// A piece of a frozen buffer on its way to another task.
struct Piece {
    bytes: Bytes,
    tag: u64,
    offset: usize,
}

#[derive(Default)]
struct Counts {
    fixed_allocs: AtomicU64,
    fixed_spills: AtomicU64,
    buddy_allocs: AtomicU64,
    buddy_spills: AtomicU64,
    fixed_cancelled: AtomicU64,
    buddy_cancelled: AtomicU64,
    full: AtomicU64,
    pieces_checked: AtomicU64,
}

/// Awaits `alloc` plainly, under a short timeout, or raced against a yield
/// in `select!`, or polls it once and drops it if pending; `None` when it
/// was cancelled.
async fn maybe_cancelled<T>(rng: &mut StdRng, alloc: impl Future<Output = T>) -> Option<T> {
    match rng.random_range(0..8) {
        0..=3 => Some(alloc.await),
        4 => tokio::time::timeout(Duration::from_micros(rng.random_range(0..200)), alloc)
            .await
            .ok(),
        5 => tokio::time::timeout(Duration::ZERO, alloc).await.ok(),
        6 => alloc.now_or_never(),
        _ => tokio::select! {
            got = alloc => Some(got),
            () = tokio::task::yield_now() => None,
        },
    }
}

/// Holds a buffer for a moment: a few yields or a short sleep.
async fn hold(rng: &mut StdRng) {
    if rng.random_bool(0.2) {
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..300))).await;
    } else {
        for _ in 0..rng.random_range(0..3) {
            tokio::task::yield_now().await;
        }
    }
}

/// Writes, freezes, clones and slices `buf`, checking the pattern at every
/// step, and sends some pieces to the droppers; the rest drop here.
async fn use_buffer(
    rng: &mut StdRng,
    mut buf: Buffer,
    tag: u64,
    len: usize,
    droppers: &[mpsc::UnboundedSender<Piece>],
) {
    assert!(buf.is_empty(), "a new buffer shows no bytes");
    fill(&mut buf, tag, len);
    check(&buf, tag, 0);
    hold(rng).await;
    check(&buf, tag, 0);
    let bytes = buf.freeze();
    assert_eq!(bytes.len(), len);
    let mut pieces = vec![(bytes.clone(), 0)];
    for _ in 0..rng.random_range(0..3) {
        let start = rng.random_range(0..=len);
        let end = rng.random_range(start..=len);
        pieces.push((bytes.slice(start..end), start));
    }
    pieces.push((bytes, 0));
    for (piece, offset) in pieces {
        if rng.random_bool(0.5) {
            let to = &droppers[rng.random_range(0..droppers.len())];
            to.send(Piece {
                bytes: piece,
                tag,
                offset,
            })
            .expect("droppers outlive the workers");
        } else {
            hold(rng).await;
            check(&piece, tag, offset);
        }
    }
}

async fn fixed_worker(
    id: u64,
    arena: FixedArena,
    deadline: Instant,
    counts: Arc<Counts>,
    droppers: Vec<mpsc::UnboundedSender<Piece>>,
) {
    let mut rng = StdRng::seed_from_u64(0xF1ED ^ id);
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let tag = (id << 40) | n;
        let buf = if rng.random_bool(0.3) {
            match arena.allocate() {
                Ok(buf) => buf,
                Err(AllocError::ArenaFull) => {
                    counts.full.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => panic!("fixed allocate: {e}"),
            }
        } else {
            match maybe_cancelled(&mut rng, arena.allocate_async()).await {
                Some(buf) => buf,
                None => {
                    counts.fixed_cancelled.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        };
        counts.fixed_allocs.fetch_add(1, Ordering::Relaxed);
        // One in twenty writes past the slot: the buffer spills to the heap.
        let len = if rng.random_bool(0.05) {
            counts.fixed_spills.fetch_add(1, Ordering::Relaxed);
            rng.random_range(SLOT_CAP + 1..=2 * SLOT_CAP)
        } else {
            rng.random_range(0..=SLOT_CAP)
        };
        use_buffer(&mut rng, buf, tag, len, &droppers).await;
    }
}

async fn buddy_worker(
    id: u64,
    arena: BuddyArena,
    deadline: Instant,
    counts: Arc<Counts>,
    droppers: Vec<mpsc::UnboundedSender<Piece>>,
) {
    let mut rng = StdRng::seed_from_u64(0xB0DD ^ id);
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let tag = (1 << 63) | (id << 40) | n;
        // Mostly small requests, some large: sizes spread over every order.
        let want = 1usize << rng.random_range(0..=BUDDY_MAX_LEN.trailing_zeros());
        let want = rng.random_range(want / 2 + 1..=want);
        let buf = if rng.random_bool(0.3) {
            match arena.allocate(nz(want)) {
                Ok(buf) => buf,
                Err(AllocError::ArenaFull) => {
                    counts.full.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => panic!("buddy allocate({want}): {e}"),
            }
        } else {
            match maybe_cancelled(&mut rng, arena.allocate_async(nz(want))).await {
                Some(got) => got.unwrap_or_else(|e| panic!("buddy allocate_async({want}): {e}")),
                None => {
                    counts.buddy_cancelled.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        };
        counts.buddy_allocs.fetch_add(1, Ordering::Relaxed);
        let cap = buf.capacity();
        assert!(cap >= want.max(BUDDY_MIN) && cap.is_power_of_two(), "{cap}");
        let len = if rng.random_bool(0.05) {
            counts.buddy_spills.fetch_add(1, Ordering::Relaxed);
            cap + rng.random_range(1..=cap)
        } else {
            want
        };
        use_buffer(&mut rng, buf, tag, len, &droppers).await;
    }
}

#[test]
#[ignore = "soak test: run with --ignored (ARENABUF_SOAK_SECS, default 60)"]
fn soak_both_arenas() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .expect("runtime");
    let fixed = FixedArena::builder(nz(SLOTS), nz(SLOT_CAP))
        .auto_spill()
        .build()
        .expect("fixed arena");
    let buddy = BuddyArena::builder(nz(BUDDY_TOTAL), nz(BUDDY_MIN))
        .auto_spill()
        .build()
        .expect("buddy arena");
    let counts = Arc::new(Counts::default());
    let duration = soak_duration();

    runtime.block_on(async {
        let deadline = Instant::now() + duration;
        let mut senders = Vec::new();
        let mut dropper_tasks = Vec::new();
        for d in 0..DROPPERS {
            let (tx, mut rx) = mpsc::unbounded_channel::<Piece>();
            senders.push(tx);
            let counts = Arc::clone(&counts);
            dropper_tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(0xD0 ^ d as u64);
                while let Some(piece) = rx.recv().await {
                    if rng.random_bool(0.2) {
                        tokio::task::yield_now().await;
                    }
                    check(&piece.bytes, piece.tag, piece.offset);
                    counts.pieces_checked.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let mut workers = Vec::new();
        for id in 0..WORKERS {
            workers.push(tokio::spawn(fixed_worker(
                id,
                fixed.clone(),
                deadline,
                Arc::clone(&counts),
                senders.clone(),
            )));
            workers.push(tokio::spawn(buddy_worker(
                id,
                buddy.clone(),
                deadline,
                Arc::clone(&counts),
                senders.clone(),
            )));
        }
        drop(senders);
        // A hang guard, not a timing assertion: a lost wake-up would leave
        // a worker waiting for ever.
        let guard = duration + Duration::from_secs(120);
        tokio::time::timeout(guard, async {
            for w in workers {
                w.await.expect("worker panicked");
            }
            for d in dropper_tasks {
                d.await.expect("dropper panicked");
            }
        })
        .await
        .expect("hang guard: the soak did not wind down (lost wake-up?)");
    });
    drop(runtime);

    let c = &*counts;
    let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
    let (fixed_allocs, buddy_allocs) = (load(&c.fixed_allocs), load(&c.buddy_allocs));
    eprintln!(
        "soak: {fixed_allocs} fixed and {buddy_allocs} buddy allocations, {} + {} cancelled \
         waits, {} ArenaFull, {} pieces checked by other tasks",
        load(&c.fixed_cancelled),
        load(&c.buddy_cancelled),
        load(&c.full),
        load(&c.pieces_checked),
    );
    assert!(fixed_allocs > 0 && buddy_allocs > 0, "the soak did nothing");

    let m = fixed.metrics();
    assert_eq!(
        (m.live_slots, m.live_bytes, m.waiting_tasks),
        (0, 0, 0),
        "{m:?}"
    );
    // alloc_count is releases + live slots: with nothing live, every lease
    // was released exactly once. Leases are the allocations the tasks got,
    // plus grants to waiters cancelled before they picked them up (at most
    // one per cancelled wait).
    let cancelled = load(&c.fixed_cancelled);
    assert!(
        (fixed_allocs..=fixed_allocs + cancelled).contains(&m.alloc_count),
        "{fixed_allocs} allocations, {cancelled} cancelled waits: {m:?}"
    );
    assert_eq!(m.spill_count, load(&c.fixed_spills), "{m:?}");
    assert!(
        m.wait_count > 0,
        "no task ever waited: the soak is too gentle"
    );
    let all: Vec<_> = (0..SLOTS)
        .map(|i| {
            fixed
                .allocate()
                .unwrap_or_else(|e| panic!("slot {i} not back: {e}"))
        })
        .collect();
    assert_eq!(fixed.allocate().unwrap_err(), AllocError::ArenaFull);
    drop(all);

    let m = buddy.metrics();
    assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0), "{m:?}");
    assert_eq!(m.largest_free_block, BUDDY_TOTAL, "not coalesced: {m:?}");
    let cancelled = load(&c.buddy_cancelled);
    assert!(
        (buddy_allocs..=buddy_allocs + cancelled).contains(&m.alloc_count),
        "{buddy_allocs} allocations, {cancelled} cancelled waits: {m:?}"
    );
    assert_eq!(m.spill_count, load(&c.buddy_spills), "{m:?}");
    assert!(
        m.wait_count > 0,
        "no task ever waited: the soak is too gentle"
    );
    assert!(m.split_count > 0 && m.coalesce_count > 0, "{m:?}");
    drop(
        buddy
            .allocate(nz(BUDDY_TOTAL))
            .expect("the whole arena is free"),
    );
}

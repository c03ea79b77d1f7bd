//! The allocator benchmark groups, shared by `allocator.rs` (system
//! allocator) and `allocator_mimalloc.rs` (mimalloc); each binary names its
//! groups with its `GROUP_SUFFIX`.
//!
//! Every group measures `arenabuf` next to two baselines in the same run:
//!
//! * `bytesmut`: `BytesMut::with_capacity(..)` + write + `freeze` + drop, i.e.
//!   what users do today without a pool (global heap allocator);
//! * `arena_alligator`: the `arena-alligator` crate with the same geometry.
//!
//! Benchmark IDs are `<group>/<implementation>/<parameter>`, for example
//! `fixed_roundtrip/arenabuf/1024` or `fixed_contention/arenabuf/t2_held75`,
//! so Criterion stores the estimates under
//! `target/criterion/<group>/<implementation>/<parameter>/new/estimates.json`.
//!
//! Environment:
//!
//! `cross_thread` is the server pattern: a producer thread allocates,
//! writes and freezes, a consumer thread drops (see [`cross_thread`]).
//!
//! * `ARENA_BENCH_EXTREME=1` adds an oversubscribed thread count to the
//!   contention groups; `ARENA_BENCH_EXTREME_THREADS=<n>` picks it (default 40).

use std::fmt::Debug;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};

// ---------------------------------------------------------------------------
// Geometry
// ---------------------------------------------------------------------------

/// Fixed arena geometry shared by `fixed_roundtrip` and `fixed_contention`.
const FIXED_SLOTS: usize = 65_536;
const FIXED_SLOT_CAPACITY: usize = 4096;
const FIXED_ROUNDTRIP_SIZES: [usize; 3] = [256, 1024, 4096];

/// Buddy arena geometry shared by `buddy_roundtrip` and `buddy_contention`.
const BUDDY_TOTAL: usize = 64 * 1024 * 1024;
const BUDDY_MIN_BLOCK: usize = 256;
const BUDDY_ROUNDTRIP_SIZES: [usize; 4] = [256, 1024, 4096, 16_384];

/// Fixed arena used as the "our fixed at the same write size" reference in
/// `buddy_roundtrip` (4096 x 16 KiB = 64 MiB, same footprint as the buddy arena).
const BUDDY_REF_FIXED_SLOTS: usize = 4096;
const BUDDY_REF_FIXED_SLOT_CAPACITY: usize = 16_384;

/// Contention workload: every operation writes this many bytes.
const CONTENTION_WRITE: usize = 256;
/// Buddy contention request size (fixed contention uses whole 4096 B slots).
const BUDDY_CONTENTION_REQUEST: usize = 4096;
/// Percentages of arena capacity held live while measuring.
const HELD_PERCENTS: [usize; 2] = [0, 75];

/// Auto-spill workload: a write twice the slot capacity forces a spill.
const SPILL_SLOTS: usize = 1024;
const SPILL_SLOT_CAPACITY: usize = 4096;
const SPILL_WRITE: usize = 8192;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("benchmark geometry must be non-zero")
}

/// Deterministic, non-constant source data for writes.
fn source(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

// ---------------------------------------------------------------------------
// Arena constructors (ours and the baseline, identical geometry)
// ---------------------------------------------------------------------------

fn ours_fixed(slots: usize, capacity: usize) -> arenabuf::FixedArena {
    arenabuf::FixedArena::builder(nz(slots), nz(capacity))
        .build()
        .expect("build arenabuf FixedArena")
}

fn ours_buddy(total: usize, min_block: usize) -> arenabuf::BuddyArena {
    arenabuf::BuddyArena::builder(nz(total), nz(min_block))
        .build()
        .expect("build arenabuf BuddyArena")
}

fn alligator_fixed(slots: usize, capacity: usize) -> arena_alligator::FixedArena {
    arena_alligator::FixedArena::with_slot_capacity(nz(slots), nz(capacity))
        .build()
        .expect("build arena-alligator FixedArena")
}

fn alligator_buddy(total: usize, min_block: usize) -> arena_alligator::BuddyArena {
    let geometry = arena_alligator::BuddyGeometry::exact(nz(total), nz(min_block))
        .expect("valid arena-alligator buddy geometry");
    arena_alligator::BuddyArena::builder(geometry)
        .build()
        .expect("build arena-alligator BuddyArena")
}

// ---------------------------------------------------------------------------
// Shared measurement helpers
// ---------------------------------------------------------------------------

/// Runs one allocate + write + freeze operation and checks it produced the
/// expected payload, so a misconfigured benchmark fails loudly instead of
/// measuring something else.
fn check_op<F>(op: &F, src: &[u8])
where
    F: Fn(&[u8]) -> Bytes,
{
    let bytes = op(src);
    assert_eq!(
        &bytes[..],
        src,
        "benchmark operation wrote the wrong payload"
    );
}

/// Give up on a contention case after this many consecutive failed
/// allocations: the arena is really full, not just contended.
const MAX_CONSECUTIVE_FAILURES: u64 = 10_000_000;

/// Allocates with `alloc`, retrying (with a spin hint) while it fails.
///
/// Under contention an arena can report `ArenaFull` transiently even though
/// only a handful of buffers are live (arena-alligator's buddy arena does at
/// two threads). Contention cases retry for every implementation alike, so a
/// measured operation is always a *successful* allocate + write + freeze +
/// drop; retries are counted in `failures` and printed after the case.
#[inline]
fn alloc_retrying<T, E: Debug>(failures: &AtomicU64, mut alloc: impl FnMut() -> Result<T, E>) -> T {
    let mut consecutive = 0u64;
    loop {
        match alloc() {
            Ok(buf) => return buf,
            Err(err) => {
                failures.fetch_add(1, Ordering::Relaxed);
                consecutive += 1;
                assert!(
                    consecutive < MAX_CONSECUTIVE_FAILURES,
                    "allocation kept failing under contention: {err:?}"
                );
                std::hint::spin_loop();
            }
        }
    }
}

/// Single-threaded roundtrip: `op` allocates, writes `src` and freezes; the
/// resulting `Bytes` is passed through `black_box` and dropped inside the
/// timed loop, so the release path is measured too.
fn bench_roundtrip<F>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, src: &[u8], op: F)
where
    F: Fn(&[u8]) -> Bytes,
{
    check_op(&op, src);
    group.bench_with_input(BenchmarkId::new(name, src.len()), src, |b, src| {
        b.iter(|| {
            let bytes = op(black_box(src));
            drop(black_box(bytes));
        });
    });
}

/// Runs `iters` operations split across `threads` scoped threads and returns
/// the wall time from the first thread starting work to the last finishing.
///
/// Threads are spawned once per sample and released together by a barrier;
/// spawn cost is excluded because each thread takes its start timestamp after
/// the barrier.
fn run_contended<F>(
    iters: u64,
    threads: usize,
    src: &[u8],
    failures: &AtomicU64,
    op: &F,
) -> Duration
where
    F: Fn(&[u8], &AtomicU64) -> Bytes + Sync,
{
    let barrier = Barrier::new(threads);
    let per_thread = iters / threads as u64;
    let remainder = iters % threads as u64;
    let spans: Vec<(Instant, Instant)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let barrier = &barrier;
                let n = per_thread + u64::from(t < remainder);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..n {
                        let bytes = op(black_box(src), failures);
                        drop(black_box(bytes));
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("contention worker panicked"))
            .collect()
    });
    let start = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    end.duration_since(start)
}

/// One contention measurement: `threads` threads with `held` buffers
/// (`held_percent` of the arena's capacity) kept live throughout.
#[derive(Clone, Copy)]
struct Case {
    group: &'static str,
    threads: usize,
    held_percent: usize,
    held: usize,
}

/// One contention case for one implementation: holds `case.held` buffers
/// (produced by `op` with a one-byte write, so they stay live in the arena)
/// and then measures the aggregate throughput of `case.threads` threads
/// running `op` with a `CONTENTION_WRITE` byte write. Transient allocation
/// failures that `op` retried (see [`alloc_retrying`]) are reported on stderr.
fn bench_contention<F>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, case: Case, op: F)
where
    F: Fn(&[u8], &AtomicU64) -> Bytes + Sync,
{
    let src = source(CONTENTION_WRITE);
    let failures = AtomicU64::new(0);
    check_op(&|src: &[u8]| op(src, &failures), &src);
    let held_buffers: Vec<Bytes> = (0..case.held).map(|_| op(&src[..1], &failures)).collect();
    let param = format!("t{}_held{}", case.threads, case.held_percent);
    group.bench_function(BenchmarkId::new(name, &param), |b| {
        b.iter_custom(|iters| run_contended(iters, case.threads, &src, &failures, &op));
    });
    drop(held_buffers);
    let failures = failures.load(Ordering::Relaxed);
    if failures > 0 {
        eprintln!(
            "{}/{name}/{param}: {failures} transient allocation failures retried",
            case.group
        );
    }
}

/// Thread counts: 1, 2 and `available_parallelism()`, plus the extreme count
/// when `ARENA_BENCH_EXTREME=1`.
fn thread_counts() -> Vec<usize> {
    let parallelism = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    support::with_extreme(vec![1, 2, parallelism])
}

/// `name` with the binary's global-allocator suffix (`fixed_roundtrip`, or
/// `fixed_roundtrip_mimalloc`).
fn group_name(name: &str) -> String {
    format!("{name}{}", crate::GROUP_SUFFIX)
}

fn roundtrip_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(group_name(name));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    group
}

fn contention_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(group_name(name));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    group
}

// ---------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------

/// `fixed_roundtrip`: 65 536 slots x 4096 B; writes of 256, 1024 and 4096 B.
pub fn fixed_roundtrip(c: &mut Criterion) {
    let ours = ours_fixed(FIXED_SLOTS, FIXED_SLOT_CAPACITY);
    let alligator = alligator_fixed(FIXED_SLOTS, FIXED_SLOT_CAPACITY);
    let data = source(FIXED_SLOT_CAPACITY);

    let mut group = roundtrip_group(c, "fixed_roundtrip");
    for size in FIXED_ROUNDTRIP_SIZES {
        let src = &data[..size];
        group.throughput(Throughput::Bytes(size as u64));
        bench_roundtrip(&mut group, "arenabuf", src, |src| {
            let mut buf = ours.allocate().expect("arenabuf slot");
            buf.put_slice(src);
            buf.freeze()
        });
        bench_roundtrip(&mut group, "bytesmut", src, |src| {
            let mut buf = BytesMut::with_capacity(FIXED_SLOT_CAPACITY);
            buf.put_slice(src);
            buf.freeze()
        });
        bench_roundtrip(&mut group, "arena_alligator", src, |src| {
            let mut buf = alligator.allocate().expect("arena-alligator slot");
            buf.put_slice(src);
            buf.freeze()
        });
    }
    group.finish();
}

/// `buddy_roundtrip`: 64 MiB / 256 B buddy arena, allocating exactly the write
/// size (256 B .. 16 KiB). `arenabuf_fixed` is our fixed arena (4096 x 16 KiB)
/// at the same write size, the reference for the "buddy <= 1.5x fixed" target.
pub fn buddy_roundtrip(c: &mut Criterion) {
    let ours = ours_buddy(BUDDY_TOTAL, BUDDY_MIN_BLOCK);
    let ours_ref_fixed = ours_fixed(BUDDY_REF_FIXED_SLOTS, BUDDY_REF_FIXED_SLOT_CAPACITY);
    let alligator = alligator_buddy(BUDDY_TOTAL, BUDDY_MIN_BLOCK);
    let data = source(BUDDY_REF_FIXED_SLOT_CAPACITY);

    let mut group = roundtrip_group(c, "buddy_roundtrip");
    for size in BUDDY_ROUNDTRIP_SIZES {
        let src = &data[..size];
        let request = nz(size);
        group.throughput(Throughput::Bytes(size as u64));
        bench_roundtrip(&mut group, "arenabuf", src, |src| {
            let mut buf = ours.allocate(request).expect("arenabuf buddy block");
            buf.put_slice(src);
            buf.freeze()
        });
        bench_roundtrip(&mut group, "arenabuf_fixed", src, |src| {
            let mut buf = ours_ref_fixed.allocate().expect("arenabuf slot");
            buf.put_slice(src);
            buf.freeze()
        });
        bench_roundtrip(&mut group, "bytesmut", src, |src| {
            let mut buf = BytesMut::with_capacity(size);
            buf.put_slice(src);
            buf.freeze()
        });
        bench_roundtrip(&mut group, "arena_alligator", src, |src| {
            let mut buf = alligator
                .allocate(request)
                .expect("arena-alligator buddy block");
            buf.put_slice(src);
            buf.freeze()
        });
    }
    group.finish();
}

/// `fixed_contention`: 65 536 x 4096 B slots; each operation allocates a slot,
/// writes 256 B, freezes and drops. Throughput is aggregate operations/s.
pub fn fixed_contention(c: &mut Criterion) {
    let mut group = contention_group(c, "fixed_contention");
    for threads in thread_counts() {
        for held_percent in HELD_PERCENTS {
            let case = Case {
                group: "fixed_contention",
                threads,
                held_percent,
                held: FIXED_SLOTS * held_percent / 100,
            };
            // Each arena is fresh for its case and dropped right after it.
            {
                let ours = ours_fixed(FIXED_SLOTS, FIXED_SLOT_CAPACITY);
                bench_contention(&mut group, "arenabuf", case, |src, failures| {
                    let mut buf = alloc_retrying(failures, || ours.allocate());
                    buf.put_slice(src);
                    buf.freeze()
                });
            }
            bench_contention(&mut group, "bytesmut", case, |src, _| {
                let mut buf = BytesMut::with_capacity(FIXED_SLOT_CAPACITY);
                buf.put_slice(src);
                buf.freeze()
            });
            {
                let alligator = alligator_fixed(FIXED_SLOTS, FIXED_SLOT_CAPACITY);
                bench_contention(&mut group, "arena_alligator", case, |src, failures| {
                    let mut buf = alloc_retrying(failures, || alligator.allocate());
                    buf.put_slice(src);
                    buf.freeze()
                });
            }
        }
    }
    group.finish();
}

/// `buddy_contention`: 64 MiB / 256 B buddy arena; each operation requests a
/// 4096 B block, writes 256 B, freezes and drops.
pub fn buddy_contention(c: &mut Criterion) {
    let request = nz(BUDDY_CONTENTION_REQUEST);
    let blocks = BUDDY_TOTAL / BUDDY_CONTENTION_REQUEST;
    let mut group = contention_group(c, "buddy_contention");
    for threads in thread_counts() {
        for held_percent in HELD_PERCENTS {
            let case = Case {
                group: "buddy_contention",
                threads,
                held_percent,
                held: blocks * held_percent / 100,
            };
            // Each arena is fresh for its case and dropped right after it.
            {
                let ours = ours_buddy(BUDDY_TOTAL, BUDDY_MIN_BLOCK);
                bench_contention(&mut group, "arenabuf", case, |src, failures| {
                    let mut buf = alloc_retrying(failures, || ours.allocate(request));
                    buf.put_slice(src);
                    buf.freeze()
                });
            }
            bench_contention(&mut group, "bytesmut", case, |src, _| {
                let mut buf = BytesMut::with_capacity(BUDDY_CONTENTION_REQUEST);
                buf.put_slice(src);
                buf.freeze()
            });
            {
                let alligator = alligator_buddy(BUDDY_TOTAL, BUDDY_MIN_BLOCK);
                bench_contention(&mut group, "arena_alligator", case, |src, failures| {
                    let mut buf = alloc_retrying(failures, || alligator.allocate(request));
                    buf.put_slice(src);
                    buf.freeze()
                });
            }
        }
    }
    group.finish();
}

/// `auto_spill`: 4096 B slots with auto-spill; an 8192 B write forces a spill
/// to the heap before `freeze`. The heap baseline starts at 4096 B capacity
/// and grows.
pub fn auto_spill(c: &mut Criterion) {
    let ours = arenabuf::FixedArena::builder(nz(SPILL_SLOTS), nz(SPILL_SLOT_CAPACITY))
        .auto_spill()
        .build()
        .expect("build arenabuf FixedArena with auto_spill");
    let alligator =
        arena_alligator::FixedArena::with_slot_capacity(nz(SPILL_SLOTS), nz(SPILL_SLOT_CAPACITY))
            .auto_spill()
            .build()
            .expect("build arena-alligator FixedArena with auto_spill");
    let data = source(SPILL_WRITE);
    let src = &data[..];

    // The benchmark must actually spill, otherwise it measures a plain roundtrip.
    let mut probe = ours.allocate().expect("arenabuf slot");
    probe.put_slice(src);
    assert!(probe.is_spilled(), "arenabuf buffer did not spill");
    drop(probe);
    let mut probe = alligator.allocate().expect("arena-alligator slot");
    probe.put_slice(src);
    assert!(probe.is_spilled(), "arena-alligator buffer did not spill");
    drop(probe);

    let mut group = roundtrip_group(c, "auto_spill");
    group.throughput(Throughput::Bytes(SPILL_WRITE as u64));
    bench_roundtrip(&mut group, "arenabuf", src, |src| {
        let mut buf = ours.allocate().expect("arenabuf slot");
        buf.put_slice(src);
        buf.freeze()
    });
    bench_roundtrip(&mut group, "bytesmut", src, |src| {
        let mut buf = BytesMut::with_capacity(SPILL_SLOT_CAPACITY);
        buf.put_slice(src);
        buf.freeze()
    });
    bench_roundtrip(&mut group, "arena_alligator", src, |src| {
        let mut buf = alligator.allocate().expect("arena-alligator slot");
        buf.put_slice(src);
        buf.freeze()
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// Where the memory comes from: first touch and huge pages (issue 15)
// ---------------------------------------------------------------------------

/// `first_touch` arena: 2048 slots of 4096 B (8 MiB), every slot once.
const TOUCH_SLOTS: usize = 2048;
const TOUCH_SLOT: usize = 4096;

/// The region kinds of `first_touch`, by implementation name: how each
/// fresh arena is built (outside the timed section).
fn touch_arena(kind: &str) -> Option<arenabuf::FixedArena> {
    use arenabuf::PagePolicy;
    let builder = arenabuf::FixedArena::builder(nz(TOUCH_SLOTS), nz(TOUCH_SLOT));
    let builder = match kind {
        "arenabuf" => builder,
        "arenabuf_zeroed" => builder.zero_on_release(),
        "arenabuf_mapped" => builder.pages(PagePolicy::Mapped),
        "arenabuf_prefaulted" => builder.pages(PagePolicy::Mapped).prefault(),
        "arenabuf_thp" => builder.pages(PagePolicy::TransparentHuge),
        "arenabuf_thp_prefaulted" => builder.pages(PagePolicy::TransparentHuge).prefault(),
        "arenabuf_huge" => builder.pages(PagePolicy::Huge),
        _ => unreachable!("unknown first_touch kind {kind}"),
    };
    builder.build().ok()
}

/// `first_touch`: the first pass over a fresh arena: allocate every slot,
/// write 4096 B into it and freeze it (the `Bytes` are kept, and dropped
/// with the arena outside the timed section). Building the arena is not
/// timed: that is where `prefault()` and zero-at-build pay the page faults
/// the others pay here. `bytesmut` does the same with `BytesMut`s from the
/// global allocator. `arenabuf_huge` runs only where huge pages are
/// reserved.
///
/// `arenabuf_mapped` is the cold first touch (a fresh mapping every time).
/// `arenabuf` is the default as users get it, which is not always cold:
/// glibc raises its mmap threshold after a large block is freed, and then
/// serves the next region from its heap, whose pages an earlier iteration
/// already touched (the same holds for `bytesmut`).
pub fn first_touch(c: &mut Criterion) {
    let data = source(TOUCH_SLOT);
    let mut group = c.benchmark_group(group_name("first_touch"));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Bytes((TOUCH_SLOTS * TOUCH_SLOT) as u64));
    let param = format!("{}MiB", (TOUCH_SLOTS * TOUCH_SLOT) >> 20);
    for kind in [
        "arenabuf",
        "arenabuf_zeroed",
        "arenabuf_mapped",
        "arenabuf_prefaulted",
        "arenabuf_thp",
        "arenabuf_thp_prefaulted",
        "arenabuf_huge",
    ] {
        if touch_arena(kind).is_none() {
            eprintln!("first_touch: {kind} unavailable here (no huge pages reserved?), skipped");
            continue;
        }
        group.bench_function(BenchmarkId::new(kind, &param), |b| {
            b.iter_batched(
                || {
                    let arena = touch_arena(kind).expect("built once above");
                    (arena, Vec::with_capacity(TOUCH_SLOTS))
                },
                |(arena, mut kept)| {
                    for _ in 0..TOUCH_SLOTS {
                        let mut buf = arena.allocate().expect("a fresh arena has every slot");
                        buf.put_slice(black_box(&data));
                        kept.push(buf.freeze());
                    }
                    (arena, kept)
                },
                criterion::BatchSize::PerIteration,
            );
        });
    }
    group.bench_function(BenchmarkId::new("bytesmut", &param), |b| {
        b.iter_batched(
            || Vec::with_capacity(TOUCH_SLOTS),
            |mut kept| {
                for _ in 0..TOUCH_SLOTS {
                    let mut buf = BytesMut::with_capacity(TOUCH_SLOT);
                    buf.put_slice(black_box(&data));
                    kept.push(buf.freeze());
                }
                kept
            },
            criterion::BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// `pages_roundtrip` arena: 16 384 slots of 4096 B (64 MiB), of which
/// `PAGES_RING` are held at any time (32 MiB, beyond what the TLB covers
/// with 4 KiB pages).
const PAGES_SLOTS: usize = 16_384;
const PAGES_RING: usize = 8192;

/// `pages_roundtrip`: steady state over a large working set: each iteration
/// drops the oldest of `PAGES_RING` held `Bytes`, allocates a buffer,
/// writes 4096 B and freezes it into the ring, so the writes walk a 32 MiB
/// working set. `arenabuf` is the default heap region, `arenabuf_thp` a
/// prefaulted transparent-huge-page region, `arenabuf_huge` explicit huge
/// pages (only where reserved), `bytesmut` the global allocator.
pub fn pages_roundtrip(c: &mut Criterion) {
    use arenabuf::PagePolicy;
    use std::collections::VecDeque;

    let data = source(TOUCH_SLOT);
    let mut group = roundtrip_group(c, "pages_roundtrip");
    group.throughput(Throughput::Bytes(TOUCH_SLOT as u64));
    let param = format!("ring{PAGES_RING}");
    let builder = || arenabuf::FixedArena::builder(nz(PAGES_SLOTS), nz(TOUCH_SLOT));
    let arenas = [
        ("arenabuf", builder().prefault().build().ok()),
        (
            "arenabuf_thp",
            builder()
                .pages(PagePolicy::TransparentHuge)
                .prefault()
                .build()
                .ok(),
        ),
        (
            "arenabuf_huge",
            builder().pages(PagePolicy::Huge).prefault().build().ok(),
        ),
    ];
    for (name, arena) in &arenas {
        let Some(arena) = arena else {
            eprintln!(
                "pages_roundtrip: {name} unavailable here (no huge pages reserved?), skipped"
            );
            continue;
        };
        let mut ring: VecDeque<Bytes> = (0..PAGES_RING)
            .map(|_| {
                let mut buf = arena.allocate().expect("slot");
                buf.put_slice(&data);
                buf.freeze()
            })
            .collect();
        group.bench_function(BenchmarkId::new(*name, &param), |b| {
            b.iter(|| {
                drop(ring.pop_front());
                let mut buf = arena.allocate().expect("a slot was just released");
                buf.put_slice(black_box(&data));
                ring.push_back(buf.freeze());
            });
        });
    }
    let mut ring: VecDeque<Bytes> = (0..PAGES_RING).map(|_| Bytes::from(data.clone())).collect();
    group.bench_function(BenchmarkId::new("bytesmut", &param), |b| {
        b.iter(|| {
            drop(ring.pop_front());
            let mut buf = BytesMut::with_capacity(TOUCH_SLOT);
            buf.put_slice(black_box(&data));
            ring.push_back(buf.freeze());
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// cross_thread: allocate and freeze on one thread, drop on another
// ---------------------------------------------------------------------------

/// Buffers per message on the channel.
const CROSS_BATCH: usize = 256;
/// Buffers the bounded channel holds (its capacity is this over
/// [`CROSS_BATCH`] batches).
const CROSS_IN_FLIGHT: [usize; 2] = [1024, 16_384];
/// Buffer sizes: the write, the `BytesMut` capacity, the fixed arena's slot
/// and the buddy request.
const CROSS_SIZES: [usize; 2] = [256, 4096];
/// Slots of the fixed arena, and the buddy arena's size in buffers: enough
/// for the largest in-flight count plus the batch being filled, the batch
/// blocked in `send` and the batch being dropped, so no case fills its arena.
const CROSS_CAPACITY: usize = 32_768;

/// A consumer thread that drops every batch it receives and answers each
/// empty batch (the end-of-sample marker) once everything before it is
/// dropped.
struct Consumer<T: Send + 'static = Bytes> {
    tx: Option<mpsc::SyncSender<Vec<T>>>,
    done: mpsc::Receiver<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Consumer<T> {
    fn spawn(in_flight: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Vec<T>>(in_flight / CROSS_BATCH);
        let (done_tx, done) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("cross_thread consumer".into())
            .spawn(move || {
                for batch in rx {
                    if batch.is_empty() {
                        done_tx.send(()).expect("producer waits for the marker");
                    }
                    drop(black_box(batch));
                }
            })
            .expect("spawn the consumer thread");
        Self {
            tx: Some(tx),
            done,
            thread: Some(thread),
        }
    }

    /// Produces `iters` buffers with `op` in batches, sends them, and
    /// returns the time until the consumer has dropped the last one.
    fn run<F: Fn(&[u8]) -> T>(&self, iters: u64, src: &[u8], op: &F) -> Duration {
        let tx = self.tx.as_ref().expect("open until drop");
        let start = Instant::now();
        let mut left = iters;
        while left > 0 {
            let n = left.min(CROSS_BATCH as u64) as usize;
            let mut batch = Vec::with_capacity(n);
            for _ in 0..n {
                batch.push(op(black_box(src)));
            }
            tx.send(batch).expect("consumer alive");
            left -= n as u64;
        }
        tx.send(Vec::new()).expect("consumer alive");
        self.done.recv().expect("consumer answers the marker");
        start.elapsed()
    }
}

impl<T: Send + 'static> Drop for Consumer<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("consumer thread panicked");
        }
    }
}

/// One `cross_thread` case: a consumer thread for this case, then the
/// measurement of `op` on this thread. Time is per buffer.
fn bench_cross<F>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    param: &str,
    in_flight: usize,
    src: &[u8],
    op: F,
) where
    F: Fn(&[u8]) -> Bytes,
{
    check_op(&op, src);
    bench_cross_any(group, name, param, in_flight, src, op);
}

/// [`bench_cross`] for any item type (`Buffer`s that are never frozen).
fn bench_cross_any<T, F>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    param: &str,
    in_flight: usize,
    src: &[u8],
    op: F,
) where
    T: Send + 'static,
    F: Fn(&[u8]) -> T,
{
    let consumer = Consumer::<T>::spawn(in_flight);
    group.bench_function(BenchmarkId::new(name, param), |b| {
        b.iter_custom(|iters| consumer.run(iters, src, &op));
    });
}

/// `cross_thread`: the pattern of a server whose reader task fills and
/// freezes a buffer and hands the `Bytes` to a worker on another thread,
/// which drops it. The producer (the bench thread) allocates, writes the
/// whole size, freezes, and sends batches of 256 over a bounded
/// `std::sync::mpsc` channel holding 1024 or 16 384 buffers; a consumer
/// thread drops them. Parameters are `s<size>_f<in flight>`.
///
/// Implementations: `arenabuf_fixed` (slots of the size), `arenabuf_buddy`
/// (requests of the size), `bytesmut` (`BytesMut::with_capacity(size)`),
/// and two floors that allocate no buffer: `channel_floor`
/// (`Bytes::from_static`, the loop and channel alone; subtract it for net
/// costs) and `from_owner_floor` (`Bytes::from_owner` of a static slice: the
/// channel plus the one owner box every arena `freeze()` allocates and the
/// consumer frees, which no arena change can remove).
///
/// `arenabuf_fixed_unfrozen` and `arenabuf_buddy_unfrozen` send the written
/// `Buffer` itself, not frozen: the arena's own cost without the owner box.
pub fn cross_thread(c: &mut Criterion) {
    let data = source(*CROSS_SIZES.iter().max().expect("sizes"));
    let statics: &'static [u8] = Box::leak(data.clone().into_boxed_slice());
    let failures = AtomicU64::new(0);
    let mut group = c.benchmark_group(group_name("cross_thread"));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .throughput(Throughput::Elements(1));
    for size in CROSS_SIZES {
        let src = &data[..size];
        let static_src = &statics[..size];
        for in_flight in CROSS_IN_FLIGHT {
            let param = format!("s{size}_f{in_flight}");
            // Each arena is fresh for its case and dropped right after it.
            {
                let fixed = ours_fixed(CROSS_CAPACITY, size);
                let name = "arenabuf_fixed";
                bench_cross(&mut group, name, &param, in_flight, src, |src| {
                    let mut buf = alloc_retrying(&failures, || fixed.allocate());
                    buf.put_slice(src);
                    buf.freeze()
                });
            }
            {
                let buddy = ours_buddy(CROSS_CAPACITY * size, BUDDY_MIN_BLOCK.min(size));
                let request = nz(size);
                let name = "arenabuf_buddy";
                bench_cross(&mut group, name, &param, in_flight, src, |src| {
                    let mut buf = alloc_retrying(&failures, || buddy.allocate(request));
                    buf.put_slice(src);
                    buf.freeze()
                });
            }
            {
                let fixed = ours_fixed(CROSS_CAPACITY, size);
                let name = "arenabuf_fixed_unfrozen";
                bench_cross_any(&mut group, name, &param, in_flight, src, |src| {
                    let mut buf = alloc_retrying(&failures, || fixed.allocate());
                    buf.put_slice(src);
                    buf
                });
            }
            {
                let buddy = ours_buddy(CROSS_CAPACITY * size, BUDDY_MIN_BLOCK.min(size));
                let request = nz(size);
                let name = "arenabuf_buddy_unfrozen";
                bench_cross_any(&mut group, name, &param, in_flight, src, |src| {
                    let mut buf = alloc_retrying(&failures, || buddy.allocate(request));
                    buf.put_slice(src);
                    buf
                });
            }
            bench_cross(&mut group, "bytesmut", &param, in_flight, src, |src| {
                let mut buf = BytesMut::with_capacity(size);
                buf.put_slice(src);
                buf.freeze()
            });
            bench_cross(&mut group, "channel_floor", &param, in_flight, src, |_| {
                Bytes::from_static(black_box(static_src))
            });
            bench_cross(
                &mut group,
                "from_owner_floor",
                &param,
                in_flight,
                src,
                |_| Bytes::from_owner(black_box(static_src)),
            );
        }
    }
    group.finish();
    let failures = failures.load(Ordering::Relaxed);
    if failures > 0 {
        eprintln!("cross_thread: {failures} transient allocation failures retried");
    }
}

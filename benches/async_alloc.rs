//! `allocate_async` benchmarks (feature `async-alloc`), with the baselines in
//! the same run.
//!
//! Baseline `semaphore_pool`: the pool users build today, a
//! `tokio::sync::Semaphore` (fair, FIFO) in front of a `Mutex<Vec<BytesMut>>`
//! holding one buffer per permit: acquire a permit, pop a buffer, write,
//! push it back, release the permit. (It cannot hand out `Bytes`: freezing
//! would take the buffer out of the pool.)
//!
//! Groups (IDs are `<group>/<implementation>/<parameter>`, estimates under
//! `target/criterion/<group>/<implementation>/<parameter>/new/estimates.json`):
//!
//! * `async_uncontended`: one task on a current-thread runtime; each
//!   operation allocates, writes 256 B, freezes and drops (ours) or does the
//!   pool round trip. `arenabuf_async/*` uses `allocate_async().await`,
//!   `arenabuf_sync/*` the synchronous `allocate()` doing the same work, so
//!   their ratio is the price of the async path when a slot is free.
//! * `async_contended`: 64 tasks on a 2-worker runtime share 8 slots (8
//!   permits and 8 buffers for the pool); each task does `ROUNDS` rounds of
//!   allocate, write 256 B, yield once while holding the buffer (so that
//!   the slots really are contended: without a yield, two workers never hold
//!   more than two), freeze and drop. Measured with `iter_custom` as total
//!   wall time from the first spawn to the last join; throughput is
//!   operations.
//! * `wait_storm`: `n` waiters (10 000 and 80 000) queued on an arena whose
//!   `n` slots (or `n` 64 B blocks) are all held; the timed part is one
//!   burst of `n` frees, each handing its slot to a waiter, then every
//!   waiter polled once in arrival order to pick its buffer up (and drop
//!   it). Setup (holding, queueing) is outside the timing. Throughput is
//!   waiters, so a flat time per element across `n` means linear scaling.
//!   Baseline `semaphore`: `n` `Semaphore::acquire_owned` futures queued,
//!   `add_permits(n)`, each polled once.
//!
//! Environment: `ARENA_BENCH_EXTREME=1` adds an oversubscribed point to
//! `async_contended`: the same 64 tasks and 8 slots on
//! `ARENA_BENCH_EXTREME_THREADS` worker threads (default 40), parameter
//! `t64_w<threads>_s8`.

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use arenabuf::{BuddyArena, FixedArena};
use bytes::{BufMut, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::Semaphore;

mod support;

/// Bytes written per operation.
const WRITE: usize = 256;
/// Uncontended geometry: plenty of room, as a server would size it.
const UNCONTENDED_SLOTS: usize = 1024;
const SLOT_CAPACITY: usize = 4096;
const BUDDY_TOTAL: usize = 4 << 20;
const BUDDY_MIN_BLOCK: usize = 256;
/// Contended geometry.
const TASKS: usize = 64;
const WORKERS: usize = 2;
const SHARED_SLOTS: usize = 8;
const ROUNDS: usize = 200;

/// Deterministic, non-constant source data for writes.
static SRC: [u8; WRITE] = {
    let mut a = [0u8; WRITE];
    let mut i = 0;
    while i < WRITE {
        a[i] = (i % 251) as u8;
        i += 1;
    }
    a
};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("benchmark geometry must be non-zero")
}

fn fixed(slots: usize) -> FixedArena {
    FixedArena::builder(nz(slots), nz(SLOT_CAPACITY))
        .build()
        .expect("build FixedArena")
}

/// The baseline pool: a fair semaphore in front of a locked stack of
/// buffers, one buffer per permit.
struct SemaphorePool {
    permits: Semaphore,
    buffers: Mutex<Vec<BytesMut>>,
}

impl SemaphorePool {
    fn new(buffers: usize, capacity: usize) -> Self {
        Self {
            permits: Semaphore::new(buffers),
            buffers: Mutex::new(
                (0..buffers)
                    .map(|_| BytesMut::with_capacity(capacity))
                    .collect(),
            ),
        }
    }

    /// Acquire, pop, write, (optionally yield while holding), push back,
    /// release.
    async fn roundtrip(&self, hold: bool) {
        let permit = self.permits.acquire().await.expect("semaphore open");
        let mut buf = self
            .buffers
            .lock()
            .expect("pool lock")
            .pop()
            .expect("one buffer per permit");
        buf.clear();
        buf.put_slice(black_box(&SRC));
        if hold {
            tokio::task::yield_now().await;
        }
        black_box(&buf);
        self.buffers.lock().expect("pool lock").push(buf);
        drop(permit);
    }
}

/// Ours, async: allocate_async, write, (optionally yield while holding),
/// freeze, drop.
async fn fixed_async_roundtrip(arena: &FixedArena, hold: bool) {
    let mut buf = arena.allocate_async().await;
    buf.put_slice(black_box(&SRC));
    if hold {
        tokio::task::yield_now().await;
    }
    drop(black_box(buf.freeze()));
}

fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

fn async_uncontended(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("async_uncontended");
    group.throughput(Throughput::Elements(1));
    let param = format!("fixed_{WRITE}");

    let arena = fixed(UNCONTENDED_SLOTS);
    group.bench_function(BenchmarkId::new("arenabuf_async", &param), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    fixed_async_roundtrip(&arena, false).await;
                }
                start.elapsed()
            })
        });
    });
    group.bench_function(BenchmarkId::new("arenabuf_sync", &param), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut buf = arena.allocate().expect("a free slot");
                    buf.put_slice(black_box(&SRC));
                    drop(black_box(buf.freeze()));
                }
                start.elapsed()
            })
        });
    });
    let pool = SemaphorePool::new(UNCONTENDED_SLOTS, SLOT_CAPACITY);
    group.bench_function(BenchmarkId::new("semaphore_pool", &param), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    pool.roundtrip(false).await;
                }
                start.elapsed()
            })
        });
    });

    let param = format!("buddy_{WRITE}");
    let buddy = BuddyArena::builder(nz(BUDDY_TOTAL), nz(BUDDY_MIN_BLOCK))
        .build()
        .expect("build BuddyArena");
    group.bench_function(BenchmarkId::new("arenabuf_async", &param), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut buf = buddy.allocate_async(nz(WRITE)).await.expect("a free block");
                    buf.put_slice(black_box(&SRC));
                    drop(black_box(buf.freeze()));
                }
                start.elapsed()
            })
        });
    });
    group.bench_function(BenchmarkId::new("arenabuf_sync", &param), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut buf = buddy.allocate(nz(WRITE)).expect("a free block");
                    buf.put_slice(black_box(&SRC));
                    drop(black_box(buf.freeze()));
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

/// Worker thread counts for `async_contended`: `WORKERS`, plus the extreme
/// count when `ARENA_BENCH_EXTREME=1` (as in `benches/allocator.rs`).
fn worker_counts() -> Vec<usize> {
    support::with_extreme(vec![WORKERS])
}

fn multi_thread(workers: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("multi-thread runtime")
}

/// Runs `TASKS` tasks of `ROUNDS` rounds each, `iters` times; returns the
/// total wall time from the first spawn to the last join.
fn contended<S, F, Fut>(rt: &Runtime, shared: &Arc<S>, iters: u64, round: F) -> Duration
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        for _ in 0..ROUNDS {
                            round(shared.clone()).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("benchmark task panicked");
            }
            start.elapsed()
        });
    }
    total
}

fn async_contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("async_contended");
    group.throughput(Throughput::Elements((TASKS * ROUNDS) as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(6));
    for workers in worker_counts() {
        let rt = multi_thread(workers);
        let param = format!("t{TASKS}_w{workers}_s{SHARED_SLOTS}");

        let arena = Arc::new(fixed(SHARED_SLOTS));
        group.bench_function(BenchmarkId::new("arenabuf_async", &param), |b| {
            b.iter_custom(|iters| {
                contended(&rt, &arena, iters, |arena: Arc<FixedArena>| async move {
                    fixed_async_roundtrip(&arena, true).await;
                })
            });
        });
        let stats = arena.metrics();
        assert_eq!(stats.live_slots, 0, "{stats:?}");
        // (A filter that skips this benchmark leaves the arena untouched.)
        assert!(
            stats.alloc_count == 0 || stats.wait_count > 0,
            "the slots were never contended"
        );

        let pool = Arc::new(SemaphorePool::new(SHARED_SLOTS, SLOT_CAPACITY));
        group.bench_function(BenchmarkId::new("semaphore_pool", &param), |b| {
            b.iter_custom(|iters| {
                contended(&rt, &pool, iters, |pool: Arc<SemaphorePool>| async move {
                    pool.roundtrip(true).await;
                })
            });
        });
    }
    group.finish();
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future>(fut: Pin<&mut F>) -> bool {
    fut.poll(&mut Context::from_waker(Waker::noop())).is_ready()
}

/// Times one storm per iteration: `queue` sets up (untimed) the held
/// capacity and the queued waiters, each polled once; the timed part is
/// `free` (one burst releasing everything held) and one poll of every
/// waiter in arrival order, each of which must then be ready.
fn time_storms<H, F: Future>(
    iters: u64,
    mut queue: impl FnMut() -> (H, Vec<Pin<Box<F>>>),
    mut free: impl FnMut(H),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (held, mut waiters) = queue();
        for w in &mut waiters {
            assert!(!poll_once(w.as_mut()));
        }
        let start = Instant::now();
        free(held);
        for w in &mut waiters {
            assert!(poll_once(w.as_mut()));
        }
        total += start.elapsed();
        drop(waiters);
    }
    total
}

fn wait_storm(c: &mut Criterion) {
    let mut group = c.benchmark_group("wait_storm");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    for n in [10_000usize, 80_000] {
        group.throughput(Throughput::Elements(n as u64));
        let param = format!("w{n}");
        group.bench_function(BenchmarkId::new("arenabuf_fixed", &param), |b| {
            let arena = FixedArena::builder(nz(n), nz(64)).build().unwrap();
            b.iter_custom(|iters| {
                time_storms(
                    iters,
                    || {
                        let held: Vec<_> = (0..n).map(|_| arena.allocate().unwrap()).collect();
                        (
                            held,
                            (0..n).map(|_| Box::pin(arena.allocate_async())).collect(),
                        )
                    },
                    drop,
                )
            });
        });
        group.bench_function(BenchmarkId::new("arenabuf_buddy", &param), |b| {
            let arena = BuddyArena::builder(nz((n * 64).next_power_of_two()), nz(64))
                .build()
                .unwrap();
            b.iter_custom(|iters| {
                time_storms(
                    iters,
                    || {
                        let blocks = arena.total_size() / 64;
                        let held: Vec<_> = (0..blocks)
                            .map(|_| arena.allocate(nz(64)).unwrap())
                            .collect();
                        let waiters = (0..n).map(|_| Box::pin(arena.allocate_async(nz(64))));
                        (held, waiters.collect())
                    },
                    drop,
                )
            });
        });
        group.bench_function(BenchmarkId::new("semaphore", &param), |b| {
            b.iter_custom(|iters| {
                time_storms(
                    iters,
                    || {
                        // A fresh semaphore each time: the permits go back to
                        // it when the polled futures' outputs drop.
                        let sem = Arc::new(Semaphore::new(0));
                        let waiters = (0..n)
                            .map(|_| Box::pin(sem.clone().acquire_owned()))
                            .collect();
                        (sem, waiters)
                    },
                    |sem| sem.add_permits(n),
                )
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = async_uncontended, async_contended, wait_storm
}
criterion_main!(benches);

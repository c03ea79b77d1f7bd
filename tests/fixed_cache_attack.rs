//! Hostile tests of the fixed arena's per-shard slot caches, through the
//! public API: more threads than shards, tight arenas, threads that only
//! free, short-lived threads, frozen buffers split and dropped in pieces on
//! several threads, waiters fed by releases from many threads, and the
//! last handle dropped while other threads free.
//!
//! The invariant checked everywhere: a token bounds the buffers alive, and
//! a token goes back only after its buffer (every piece of it) has been
//! dropped, so an allocation made while holding a token can never find the
//! arena full, wherever the freed slots sit in caches.
//!
//! `ARENABUF_STRESS_ITERS` scales the rounds (default 2000 per producer;
//! raise it with `--release`).

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use arenabuf::{AllocError, Buffer, FixedArena};
use bytes::{BufMut, Bytes};

const HANG_GUARD: Duration = Duration::from_secs(120);

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn iters() -> usize {
    std::env::var("ARENABUF_STRESS_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// More threads than the arena has cache shards (about four per CPU).
fn many_threads() -> usize {
    let cpus = thread::available_parallelism().map_or(2, NonZeroUsize::get);
    (cpus * 4 + 3).min(40)
}

/// `n` threads that drop whatever buffers are sent to them; they end when
/// the sender is dropped.
fn dropper_pool(n: usize) -> (mpsc::Sender<Buffer>, Vec<thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<Buffer>();
    let rx = Arc::new(Mutex::new(rx));
    let droppers = (0..n)
        .map(|_| {
            let rx = Arc::clone(&rx);
            thread::spawn(move || {
                while let Ok(buf) = { rx.lock().unwrap().recv() } {
                    drop(buf);
                }
            })
        })
        .collect();
    (tx, droppers)
}

/// Live buffers allowed: a token is taken before allocating and given back
/// (by `Token::drop`) after the buffer's last piece dropped.
struct Tokens {
    live: AtomicUsize,
    max: usize,
}

impl Tokens {
    fn take(self: &Arc<Self>) -> Token {
        let start = Instant::now();
        loop {
            let n = self.live.load(Ordering::SeqCst);
            if n < self.max
                && self
                    .live
                    .compare_exchange(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                return Token(Arc::clone(self));
            }
            assert!(start.elapsed() < HANG_GUARD, "hang guard: no token back");
            thread::yield_now();
        }
    }
}

struct Token(Arc<Tokens>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A piece of a frozen buffer; the token goes back when the last piece of
/// the buffer drops (fields drop in order: the bytes before the token).
struct Piece {
    bytes: Bytes,
    tag: u8,
    _token: Arc<Token>,
}

impl Drop for Piece {
    fn drop(&mut self) {
        assert!(
            self.bytes.iter().all(|&b| b == self.tag),
            "a piece changed under its holder"
        );
    }
}

/// `producers` threads allocate while holding a token and send the frozen
/// buffers, split in two, to two of the dropper threads (or drop them
/// themselves, or hand them to a short-lived thread); returns the number of
/// allocations. Panics on any `ArenaFull`.
fn storm(arena: &FixedArena, slots: usize, producers: usize, droppers: usize) -> usize {
    let tokens = Arc::new(Tokens {
        live: AtomicUsize::new(0),
        max: slots,
    });
    let n = iters();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..droppers).map(|_| mpsc::channel::<Piece>()).unzip();
    let dropper_threads: Vec<_> = rxs
        .into_iter()
        .map(|rx| thread::spawn(move || rx.into_iter().for_each(drop)))
        .collect();
    let producer_threads: Vec<_> = (0..producers)
        .map(|p| {
            let (arena, tokens, txs) = (arena.clone(), Arc::clone(&tokens), txs.clone());
            thread::spawn(move || {
                let cap = arena.slot_capacity();
                for i in 0..n {
                    let token = tokens.take();
                    let mut buf = arena.allocate().unwrap_or_else(|e| {
                        panic!("{slots} slots, producer {p}, round {i}: spurious {e:?}")
                    });
                    let tag = (p * 31 + i) as u8;
                    buf.put_bytes(tag, cap);
                    match i % 5 {
                        // Dropped here, unfrozen.
                        0 => drop((buf, token)),
                        // Dropped by a thread that lives for one buffer.
                        1 => {
                            let piece = Piece {
                                bytes: buf.freeze(),
                                tag,
                                _token: Arc::new(token),
                            };
                            thread::spawn(move || drop(piece)).join().unwrap();
                        }
                        // Split in two, dropped by two droppers.
                        _ => {
                            let mut bytes = buf.freeze();
                            let head = bytes.split_to(cap / 2);
                            let token = Arc::new(token);
                            let a = (p + i) % txs.len();
                            let b = (p + i + 1) % txs.len();
                            for (to, bytes) in [(a, head), (b, bytes)] {
                                let piece = Piece {
                                    bytes,
                                    tag,
                                    _token: Arc::clone(&token),
                                };
                                txs[to].send(piece).expect("droppers alive");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    drop(txs);
    for t in producer_threads.into_iter().chain(dropper_threads) {
        t.join().expect("no panic");
    }
    n * producers
}

/// After a storm: the counters tell the truth, and every slot can be taken
/// again from this one thread (whatever the other threads' caches hold).
fn check_quiescent(arena: &FixedArena, slots: usize, allocations: usize) {
    check_quiescent_after_failures(arena, slots, allocations, 0);
}

fn check_quiescent_after_failures(
    arena: &FixedArena,
    slots: usize,
    allocations: usize,
    failures: u64,
) {
    let m = arena.metrics();
    assert_eq!(m.alloc_failure_count, failures, "{slots} slots: {m:?}");
    assert_eq!(m.alloc_count, allocations as u64, "{slots} slots: {m:?}");
    assert_eq!(m.live_slots, 0, "{slots} slots: {m:?}");
    let all: Vec<Buffer> = (0..slots)
        .map(|i| {
            arena
                .allocate()
                .unwrap_or_else(|e| panic!("{slots} slots: slot {i} of a free arena: {e:?}"))
        })
        .collect();
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
    let m = arena.metrics();
    assert_eq!((m.live_slots, m.alloc_failure_count), (slots, failures + 1));
    drop(all);
    assert_eq!(arena.metrics().live_slots, 0);
}

#[test]
fn tight_arenas_never_full_with_more_threads_than_shards() {
    for slots in [1, 2, 31, 32, 62, 63, 124] {
        let arena = FixedArena::builder(nz(slots), nz(16)).build().unwrap();
        let producers = many_threads();
        let n = storm(&arena, slots, producers, 3);
        check_quiescent(&arena, slots, n);
    }
}

#[test]
fn zeroing_arena_never_full_and_hands_out_zeroed_slots() {
    let slots = 63;
    let arena = FixedArena::builder(nz(slots), nz(64))
        .zero_on_release()
        .build()
        .unwrap();
    let n = storm(&arena, slots, many_threads(), 3);
    check_quiescent(&arena, slots, n);
    // Every slot was written in full by the storm; each comes back zeroed.
    let mut all: Vec<Buffer> = (0..slots).map(|_| arena.allocate().unwrap()).collect();
    for buf in &mut all {
        let spare = buf.chunk_mut();
        // SAFETY: `zero_on_release` initialises every slot (the builder's
        // documented contract); the read stays within the spare capacity.
        let bytes = unsafe { std::slice::from_raw_parts(spare.as_mut_ptr(), spare.len()) };
        assert!(bytes.iter().all(|&b| b == 0), "a slot came back unscrubbed");
    }
}

/// Buffers that outgrow their slot spill to the heap and give the slot
/// back at once, on whatever thread wrote them; spilled and unspilled
/// buffers are dropped on other threads.
#[test]
fn auto_spill_gives_slots_back_across_threads() {
    let slots = 31;
    let arena = FixedArena::builder(nz(slots), nz(16))
        .auto_spill()
        .build()
        .unwrap();
    let tokens = Arc::new(Tokens {
        live: AtomicUsize::new(0),
        max: slots,
    });
    let n = iters();
    let (tx, rx) = mpsc::channel::<(Buffer, Option<Token>)>();
    let dropper = thread::spawn(move || rx.into_iter().for_each(drop));
    let workers: Vec<_> = (0..many_threads())
        .map(|w| {
            let (arena, tokens, tx) = (arena.clone(), Arc::clone(&tokens), tx.clone());
            thread::spawn(move || {
                let mut spilled = 0;
                for i in 0..n {
                    let token = tokens.take();
                    let mut buf = arena
                        .allocate()
                        .unwrap_or_else(|e| panic!("worker {w}, round {i}: spurious {e:?}"));
                    let len = if i % 3 == 0 { 40 } else { 16 };
                    buf.put_bytes(i as u8, len);
                    if buf.is_spilled() {
                        spilled += 1;
                        // The slot went back when the bytes moved: the
                        // token may go now, and the spilled buffer lives on.
                        drop(token);
                        tx.send((buf, None)).unwrap();
                        continue;
                    }
                    tx.send((buf, Some(token))).unwrap();
                }
                spilled
            })
        })
        .collect();
    drop(tx);
    let spilled: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    dropper.join().unwrap();
    let m = arena.metrics();
    assert_eq!(m.spill_count, spilled, "{m:?}");
    assert!(spilled > 0);
    check_quiescent(&arena, slots, n * many_threads());
}

/// The last handle drops while many threads still hold and free buffers
/// (frozen and split, unfrozen), so their releases race the closer's
/// emptying of the caches: nothing may be freed twice or leaked (run under
/// ASan or miri to see it).
#[test]
fn last_handle_drops_while_threads_free() {
    let rounds = if cfg!(miri) { 2 } else { 50 };
    for round in 0..rounds {
        let slots = [62, 63, 124][round % 3];
        let arena = FixedArena::builder(nz(slots), nz(8)).build().unwrap();
        let mut bufs: Vec<Bytes> = (0..slots)
            .map(|i| {
                let mut b = arena.allocate().unwrap();
                b.put_bytes(i as u8, 8);
                b.freeze()
            })
            .collect();
        let threads = if cfg!(miri) {
            3
        } else {
            many_threads().min(12)
        };
        let mut shares: Vec<Vec<Bytes>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, mut b) in bufs.drain(..).enumerate() {
            let tail = b.split_off(4);
            shares[i % threads].push(b);
            shares[(i + 1) % threads].push(tail);
        }
        let go = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let go = Arc::clone(&go);
                thread::spawn(move || {
                    while !go.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    share.into_iter().for_each(drop);
                })
            })
            .collect();
        go.store(true, Ordering::SeqCst);
        drop(arena);
        workers.into_iter().for_each(|w| w.join().unwrap());
    }
}

// ---------------------------------------------------------------------------
// Waiters
// ---------------------------------------------------------------------------

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let f = Arc::new(Flag(AtomicBool::new(false)));
    (Arc::clone(&f), Waker::from(f))
}

fn poll_with<F: Future>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

/// Waiters queue in order; each slot comes back from a different thread
/// (a different cache shard, some that freed into their caches before the
/// waiters came); each goes to the earliest waiter, and neither a
/// synchronous `allocate()` nor a new `allocate_async()` gets it first.
#[test]
fn releases_from_many_threads_serve_waiters_in_arrival_order() {
    let slots = 62;
    let arena = FixedArena::builder(nz(slots), nz(8)).build().unwrap();
    // Park slots in other threads' caches first, then take them all back.
    let mut warm: Vec<Buffer> = (0..slots).map(|_| arena.allocate().unwrap()).collect();
    let cache_fillers: Vec<_> = (0..many_threads())
        .map(|_| {
            let take = warm.len().min(3);
            let mine: Vec<Buffer> = warm.drain(..take).collect();
            thread::spawn(move || drop(mine))
        })
        .collect();
    cache_fillers.into_iter().for_each(|t| t.join().unwrap());
    drop(warm);
    let mut held: Vec<Buffer> = (0..slots).map(|_| arena.allocate().unwrap()).collect();
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);

    let waiters = 12;
    let mut futs: Vec<_> = (0..waiters)
        .map(|_| Box::pin(arena.allocate_async()))
        .collect();
    let flags: Vec<_> = futs
        .iter_mut()
        .map(|f| {
            let (flag, waker) = flag();
            assert!(poll_with(f.as_mut(), &waker).is_pending());
            flag
        })
        .collect();
    assert_eq!(arena.metrics().waiting_tasks, waiters);
    let mut got = Vec::new();
    for (served, fut) in futs.iter_mut().enumerate() {
        let buf = held.pop().unwrap();
        thread::spawn(move || drop(buf)).join().unwrap();
        assert_eq!(
            arena.allocate().unwrap_err(),
            AllocError::ArenaFull,
            "release {served}: a synchronous caller overtook a waiter"
        );
        if served + 1 < waiters {
            let mut newcomer = pin!(arena.allocate_async());
            assert!(
                poll_with(newcomer.as_mut(), Waker::noop()).is_pending(),
                "release {served}: a new async caller overtook a waiter"
            );
        }
        for (i, f) in flags.iter().enumerate() {
            assert_eq!(
                f.0.load(Ordering::SeqCst),
                i <= served,
                "release {served}: waiter {i} woken out of order"
            );
        }
        let Poll::Ready(buf) = poll_with(fut.as_mut(), Waker::noop()) else {
            panic!("waiter {served} was woken with its slot");
        };
        got.push(buf); // kept: its drop would serve the next waiter
    }
    drop(futs);
    assert_eq!(arena.metrics().live_slots, slots);
    drop((held, got));
    let m = arena.metrics();
    assert_eq!((m.live_slots, m.waiting_tasks), (0, 0), "{m:?}");
}

/// Many tasks on a multi-threaded runtime wait on a tight arena; their
/// buffers are dropped on plain threads (into those threads' caches while
/// nobody waits), some futures are cancelled mid-wait, some tasks only
/// poll once. Nothing may wedge, and every slot must come back.
#[test]
fn waiters_fed_by_cross_thread_releases_with_cancellations_finish() {
    for slots in [1, 2, 31, 63] {
        let arena = FixedArena::builder(nz(slots), nz(32)).build().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_time()
            .build()
            .unwrap();
        let (tx, droppers) = dropper_pool(3);
        let tasks = if cfg!(miri) { 8 } else { 200 };
        let rounds = iters() / 100 + 2;
        let done = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|t| {
                    let (arena, tx, done) = (arena.clone(), tx.clone(), Arc::clone(&done));
                    tokio::spawn(async move {
                        for r in 0..rounds {
                            if (t + r) % 7 == 0 {
                                // Cancelled while (probably) waiting.
                                let fut = arena.allocate_async();
                                let _ = tokio::time::timeout(Duration::from_micros(50), fut).await;
                                continue;
                            }
                            let mut buf = arena.allocate_async().await;
                            buf.put_bytes(t as u8, 32);
                            tokio::task::yield_now().await;
                            assert!(buf.iter().all(|&b| b == t as u8), "slot shared");
                            if r % 2 == 0 {
                                tx.send(buf).unwrap();
                            } else {
                                drop(buf);
                            }
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            let all = async {
                for h in handles {
                    h.await.expect("task panicked");
                }
            };
            tokio::time::timeout(HANG_GUARD, all)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{slots} slots: hang guard, {} of {tasks} tasks done, {:?}",
                        done.load(Ordering::SeqCst),
                        arena.metrics()
                    )
                });
        });
        drop(tx);
        droppers.into_iter().for_each(|d| d.join().unwrap());
        drop(rt);
        let m = arena.metrics();
        assert_eq!((m.waiting_tasks, m.alloc_failure_count), (0, 0), "{m:?}");
        check_quiescent(&arena, slots, m.alloc_count as usize);
    }
}

/// More threads than slots, each taking what it can and handing it to
/// another thread to drop: `ArenaFull` is a fair answer here, but every
/// call must return (a failing allocation retries while it sees runs
/// moving between caches and the bitmap; churn must not keep it there).
/// Prints the slowest call (`--nocapture`), asserts nothing on time.
#[test]
fn oversubscribed_arena_every_call_returns() {
    for slots in [1, 31, 62] {
        let arena = FixedArena::builder(nz(slots), nz(16)).build().unwrap();
        let (tx, droppers) = dropper_pool(2);
        let n = iters();
        let workers: Vec<_> = (0..many_threads())
            .map(|_| {
                let (arena, tx) = (arena.clone(), tx.clone());
                thread::spawn(move || {
                    let (mut ok, mut full, mut slowest) = (0u64, 0u64, Duration::ZERO);
                    for i in 0..n {
                        let start = Instant::now();
                        let got = arena.allocate();
                        slowest = slowest.max(start.elapsed());
                        match got {
                            Ok(buf) if i % 2 == 0 => {
                                ok += 1;
                                tx.send(buf).unwrap();
                            }
                            Ok(buf) => {
                                ok += 1;
                                drop(buf);
                            }
                            Err(AllocError::ArenaFull) => full += 1,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    (ok, full, slowest)
                })
            })
            .collect();
        drop(tx);
        let start = Instant::now();
        let (mut ok, mut full, mut slowest) = (0, 0, Duration::ZERO);
        for w in workers {
            while !w.is_finished() {
                assert!(start.elapsed() < HANG_GUARD, "hang guard: {slots} slots");
                thread::sleep(Duration::from_millis(5));
            }
            let (o, f, s) = w.join().unwrap();
            (ok, full, slowest) = (ok + o, full + f, slowest.max(s));
        }
        droppers.into_iter().for_each(|d| d.join().unwrap());
        println!("{slots} slots: {ok} ok, {full} full, slowest call {slowest:?}");
        check_quiescent_after_failures(&arena, slots, ok as usize, full);
    }
}

thread_local! {
    static KEPT: std::cell::RefCell<Vec<Buffer>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffers kept in thread-locals are released while their threads exit
/// (during thread-local destruction): the release must still work there,
/// and every slot is found again afterwards.
#[test]
fn buffers_released_by_thread_local_destructors() {
    let slots = 63;
    let arena = FixedArena::builder(nz(slots), nz(8)).build().unwrap();
    for _ in 0..4 {
        let mut all: Vec<Buffer> = (0..slots).map(|_| arena.allocate().unwrap()).collect();
        let threads: Vec<_> = (0..many_threads())
            .map(|_| {
                let take = all.len().min(5);
                let mine: Vec<Buffer> = all.drain(..take).collect();
                thread::spawn(move || KEPT.with(|k| k.borrow_mut().extend(mine)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(all);
        assert_eq!(arena.metrics().live_slots, 0);
    }
    check_quiescent(&arena, slots, 4 * slots);
}

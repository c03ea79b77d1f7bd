//! `allocate_async` (feature `async-alloc`): many tasks contending for a few
//! slots or blocks, a cancellation storm, strict FIFO hand-over, no barging
//! by synchronous `allocate()`, cancellation after a grant, no starvation of
//! a large buddy waiter, and `RequestTooLarge` at once.
//!
//! Waiters whose registration order matters are polled once by hand (with
//! `Waker::noop()` or a flag waker) or registered on a current-thread
//! runtime and checked with `metrics().waiting_tasks`, so the order is
//! known, not hoped for. Timeouts in this file are hang guards only, never
//! performance assertions.

#![cfg(feature = "async-alloc")]

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use arenabuf::{AllocError, BuddyArena, Buffer, FixedArena};
use bytes::{BufMut, Bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Generous bound for a whole multi-task scenario: a hang guard only.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Awaits every task, failing the test if one panicked or if they have not
/// all finished within [`HANG_GUARD`].
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>, what: &str) {
    tokio::time::timeout(HANG_GUARD, async {
        for task in tasks {
            task.await
                .unwrap_or_else(|e| panic!("{what}: a task panicked: {e}"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hang guard: {what} did not finish"));
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn fixed(slots: usize, cap: usize) -> FixedArena {
    FixedArena::builder(nz(slots), nz(cap))
        .build()
        .expect("valid fixed configuration")
}

fn buddy(total: usize, min: usize) -> BuddyArena {
    BuddyArena::builder(nz(total), nz(min))
        .build()
        .expect("valid buddy configuration")
}

/// Polls `fut` once with `waker`.
fn poll_with<F: Future>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

/// Polls `fut` once with a waker that does nothing.
fn poll_noop<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    poll_with(fut, Waker::noop())
}

/// A waker that records whether it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Flag {
    fn waker() -> (Arc<Self>, Waker) {
        let flag = Arc::new(Self::default());
        (flag.clone(), Waker::from(flag))
    }

    fn woken(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn pattern(tag: u64, i: usize) -> u8 {
    (tag.wrapping_mul(0x9E37_79B9) as u8)
        .wrapping_mul(31)
        .wrapping_add(i as u8)
}

/// Writes `len` pattern bytes for `tag` into `buf`.
fn fill(buf: &mut Buffer, tag: u64, len: usize) {
    assert!(buf.is_empty(), "a fresh buffer is empty");
    assert!(buf.capacity() >= len, "capacity {} < {len}", buf.capacity());
    let data: Vec<u8> = (0..len).map(|i| pattern(tag, i)).collect();
    buf.put_slice(&data);
}

fn check(data: &[u8], tag: u64, len: usize) {
    assert_eq!(data.len(), len, "length of tag {tag}");
    for (i, b) in data.iter().enumerate() {
        assert_eq!(*b, pattern(tag, i), "byte {i} of tag {tag} overwritten");
    }
}

/// Holds for a random short time: a sleep of 0..200 µs or a few yields.
async fn hold(rng: &mut StdRng) {
    if rng.random_bool(0.5) {
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..200))).await;
    } else {
        for _ in 0..rng.random_range(0..4) {
            tokio::task::yield_now().await;
        }
    }
}

/// Asserts that a fixed arena is quiet and completely free: no task waits,
/// no slot is live, every slot can be taken synchronously.
fn assert_fixed_all_free(arena: &FixedArena) {
    let m = arena.metrics();
    assert_eq!((m.live_slots, m.live_bytes), (0, 0), "{m:?}");
    assert_eq!(m.waiting_tasks, 0, "{m:?}");
    let all: Vec<_> = (0..arena.slot_count())
        .map(|i| {
            arena
                .allocate()
                .unwrap_or_else(|e| panic!("slot {i} not back: {e}"))
        })
        .collect();
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
    drop(all);
}

/// Asserts that a buddy arena is quiet and completely free and coalesced.
fn assert_buddy_all_free(arena: &BuddyArena) {
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0, "{m:?}");
    assert_eq!(m.largest_free_block, arena.total_size(), "{m:?}");
    assert_eq!(m.waiting_tasks, 0, "{m:?}");
    let whole = arena
        .allocate(nz(arena.total_size()))
        .expect("the whole arena is free");
    drop(whole);
}

// ---------------------------------------------------------------------------
// Many tasks, few slots
// ---------------------------------------------------------------------------

const TASKS: u64 = 512;
const ROUNDS: u64 = 3;

/// 512 tasks on two workers, `ROUNDS` allocations each, 8 slots: everyone
/// finishes, no two live buffers share memory (pattern checks, live count),
/// and afterwards the arena is whole and `alloc_count` is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_many_tasks_share_eight_slots() {
    const SLOTS: usize = 8;
    const CAP: usize = 256;
    let arena = fixed(SLOTS, CAP);
    let live = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (arena, live, done) = (arena.clone(), live.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0xF1 ^ t);
            for round in 0..ROUNDS {
                let tag = t * ROUNDS + round;
                let len = rng.random_range(1..=CAP);
                let mut buf = arena.allocate_async().await;
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(now <= SLOTS, "{now} buffers live from {SLOTS} slots");
                assert_eq!(buf.capacity(), CAP);
                fill(&mut buf, tag, len);
                hold(&mut rng).await;
                let bytes: Bytes = buf.freeze();
                check(&bytes, tag, len);
                hold(&mut rng).await;
                check(&bytes, tag, len);
                live.fetch_sub(1, Ordering::SeqCst);
                drop(bytes);
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    join_all(tasks, "tasks").await;

    let total = TASKS * ROUNDS;
    assert_eq!(done.load(Ordering::SeqCst), total);
    let m = arena.metrics();
    assert_eq!(m.alloc_count, total, "every allocation counted once: {m:?}");
    assert_eq!(m.alloc_failure_count, 0, "{m:?}");
    assert!(m.wait_count > 0, "512 tasks on 8 slots must wait: {m:?}");
    assert!(m.wait_count <= total, "{m:?}");
    assert_fixed_all_free(&arena);
}

/// The buddy variant: 8 KiB, 256 B blocks, requests of 1 B..2 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buddy_many_tasks_share_a_small_arena() {
    const TOTAL: usize = 8 * 1024;
    const MAX_REQ: usize = 2048;
    let arena = buddy(TOTAL, 256);
    let live_bytes = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (arena, live_bytes, done) = (arena.clone(), live_bytes.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0xB0 ^ t);
            for round in 0..ROUNDS {
                let tag = t * ROUNDS + round;
                let len = rng.random_range(1..=MAX_REQ);
                let mut buf = arena.allocate_async(nz(len)).await.expect("fits the arena");
                let cap = buf.capacity();
                assert!(cap >= len.max(256) && cap.is_power_of_two(), "{cap}");
                let now = live_bytes.fetch_add(cap, Ordering::SeqCst) + cap;
                assert!(now <= TOTAL, "{now} bytes live in a {TOTAL} B arena");
                fill(&mut buf, tag, len);
                hold(&mut rng).await;
                let bytes: Bytes = buf.freeze();
                check(&bytes, tag, len);
                hold(&mut rng).await;
                check(&bytes, tag, len);
                live_bytes.fetch_sub(cap, Ordering::SeqCst);
                drop(bytes);
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    join_all(tasks, "tasks").await;

    let total = TASKS * ROUNDS;
    assert_eq!(done.load(Ordering::SeqCst), total);
    let m = arena.metrics();
    assert_eq!(m.alloc_count, total, "every allocation counted once: {m:?}");
    assert!(m.wait_count > 0, "512 tasks on 8 KiB must wait: {m:?}");
    assert!(m.wait_count <= total, "{m:?}");
    assert_buddy_all_free(&arena);
}

// ---------------------------------------------------------------------------
// Cancellation storm
// ---------------------------------------------------------------------------

const STORM_TASKS: u64 = 64;
const STORM_CALLS: u64 = 50; // 3200 allocate_async calls in all

#[derive(Default)]
struct StormCounts {
    got: AtomicU64,
    cancelled: AtomicU64,
}

/// One call of the storm: plain, under a tiny timeout, or raced in
/// `select!` against a branch that is ready at once or after one yield.
/// Returns the buffer if the allocation won.
async fn storm_call<F>(rng: &mut StdRng, alloc: F) -> Option<Buffer>
where
    F: Future<Output = Buffer>,
{
    match rng.random_range(0..6) {
        0..=2 => Some(alloc.await),
        3 => tokio::time::timeout(Duration::from_micros(rng.random_range(0..50)), alloc)
            .await
            .ok(),
        4 => tokio::time::timeout(Duration::ZERO, alloc).await.ok(),
        _ => {
            // Unbiased: either branch may be polled first, so the loser can
            // be dropped unpolled, pending, or holding a grant it never
            // picked up.
            tokio::select! {
                buf = alloc => Some(buf),
                () = tokio::task::yield_now() => None,
            }
        }
    }
}

/// Runs the storm: `STORM_TASKS` tasks, `STORM_CALLS` calls each, half of
/// the calls cancellable; winners hold the buffer briefly, half of them
/// passing the frozen bytes to a dropper task that drops them concurrently.
async fn storm<F, Fut>(alloc: F, len: usize) -> StormCounts
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Buffer> + Send + 'static,
{
    let counts = Arc::new(StormCounts::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Bytes, u64)>();
    let dropper = tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(0xD0);
        while let Some((bytes, tag)) = rx.recv().await {
            if rng.random_bool(0.3) {
                tokio::task::yield_now().await;
            }
            check(&bytes, tag, len);
            drop(bytes);
        }
    });
    let mut tasks = Vec::new();
    for t in 0..STORM_TASKS {
        let (alloc, counts, tx) = (alloc.clone(), counts.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0x5707 ^ t);
            for call in 0..STORM_CALLS {
                let tag = t * STORM_CALLS + call;
                let Some(mut buf) = storm_call(&mut rng, alloc()).await else {
                    counts.cancelled.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                counts.got.fetch_add(1, Ordering::SeqCst);
                fill(&mut buf, tag, len);
                if rng.random_bool(0.5) {
                    tokio::task::yield_now().await;
                }
                let bytes = buf.freeze();
                check(&bytes, tag, len);
                if rng.random_bool(0.5) {
                    tx.send((bytes, tag)).expect("dropper alive");
                }
            }
        }));
    }
    drop(tx);
    tokio::time::timeout(HANG_GUARD, async {
        for task in tasks {
            task.await.expect("task panicked");
        }
        dropper.await.expect("dropper panicked");
    })
    .await
    .expect("hang guard: storm did not finish");
    let counts = Arc::into_inner(counts).expect("every task joined");
    let calls = counts.got.load(Ordering::SeqCst) + counts.cancelled.load(Ordering::SeqCst);
    assert_eq!(calls, STORM_TASKS * STORM_CALLS);
    assert!(
        counts.cancelled.load(Ordering::SeqCst) > 0,
        "the storm cancelled nothing"
    );
    counts
}

/// After the storm a fresh `allocate_async` must be ready on its first poll,
/// and (on the runtime) complete well within a hang guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_cancellation_storm_leaves_arena_whole() {
    let arena = fixed(8, 128);
    let a = arena.clone();
    let counts = storm(
        move || {
            let a = a.clone();
            async move { a.allocate_async().await }
        },
        100,
    )
    .await;
    let got = counts.got.load(Ordering::SeqCst);
    let m = arena.metrics();
    assert_eq!(
        (m.live_slots, m.live_bytes, m.waiting_tasks),
        (0, 0, 0),
        "{m:?}"
    );
    assert!(m.wait_count > 0, "{m:?}");
    // Grants that were cancelled before pickup may be counted (the slot was
    // carved for them); nothing else may be.
    assert!(m.alloc_count >= got, "{m:?}, {got} allocations succeeded");
    assert!(
        m.alloc_count - got <= counts.cancelled.load(Ordering::SeqCst),
        "{m:?}, {got} allocations succeeded"
    );

    let mut fresh = pin!(arena.allocate_async());
    let Poll::Ready(buf) = poll_noop(fresh.as_mut()) else {
        panic!("a fresh allocate_async on a free arena must be ready at once");
    };
    drop(buf);
    let buf = tokio::time::timeout(Duration::from_secs(5), arena.allocate_async())
        .await
        .expect("fresh allocate_async completes");
    drop(buf);
    assert_fixed_all_free(&arena);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buddy_cancellation_storm_leaves_arena_whole() {
    // 8 blocks of 1 KiB, requests of 600 B (rounded to 1 KiB).
    let arena = buddy(8 * 1024, 256);
    let a = arena.clone();
    let counts = storm(
        move || {
            let a = a.clone();
            async move { a.allocate_async(nz(600)).await.expect("fits") }
        },
        600,
    )
    .await;
    let got = counts.got.load(Ordering::SeqCst);
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0), "{m:?}");
    assert_eq!(m.largest_free_block, arena.total_size(), "{m:?}");
    assert!(m.wait_count > 0, "{m:?}");
    assert!(m.alloc_count >= got, "{m:?}, {got} allocations succeeded");
    assert!(
        m.alloc_count - got <= counts.cancelled.load(Ordering::SeqCst),
        "{m:?}, {got} allocations succeeded"
    );

    let mut fresh = pin!(arena.allocate_async(nz(arena.total_size())));
    let Poll::Ready(res) = poll_noop(fresh.as_mut()) else {
        panic!("a fresh allocate_async on a free arena must be ready at once");
    };
    drop(res.expect("the whole arena"));
    let buf = tokio::time::timeout(Duration::from_secs(5), arena.allocate_async(nz(600)))
        .await
        .expect("fresh allocate_async completes")
        .expect("fits");
    drop(buf);
    assert_buddy_all_free(&arena);
}

// ---------------------------------------------------------------------------
// FIFO
// ---------------------------------------------------------------------------

const FIFO_WAITERS: usize = 16;

/// Yields until `waiting()` reports `n` waiters (current-thread runtime:
/// each yield lets the spawned tasks run).
async fn until_waiting(n: usize, waiting: impl Fn() -> usize) {
    for _ in 0..1000 {
        if waiting() == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("expected {n} waiters, found {}", waiting());
}

/// One slot held; waiters 0..N registered in that order get it in that
/// order, each releasing after recording.
#[tokio::test(flavor = "current_thread")]
async fn fixed_waiters_are_served_in_arrival_order() {
    let arena = fixed(1, 64);
    let held = arena.allocate().expect("the only slot");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..FIFO_WAITERS {
        let (a, order) = (arena.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let buf = a.allocate_async().await;
            order.lock().unwrap().push(i);
            tokio::task::yield_now().await;
            drop(buf);
        }));
        until_waiting(i + 1, || arena.metrics().waiting_tasks).await;
    }
    assert_eq!(arena.metrics().wait_count, FIFO_WAITERS as u64);
    drop(held);
    for task in tasks {
        task.await.expect("waiter panicked");
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(order, (0..FIFO_WAITERS).collect::<Vec<_>>());
    assert_fixed_all_free(&arena);
}

/// The wedge strict FIFO caused (issue: a batching consumer keeps a small
/// frame that pins a block in each half of the arena): the head needs half
/// the arena and cannot get it until some connection reads on, but the
/// connection behind it needs a block that sits free. It is served, its
/// progress releases the pins, and the head follows.
#[test]
fn buddy_free_memory_serves_a_waiter_behind_a_head_that_cannot_be_carved() {
    const K: usize = 1024;
    let arena = buddy(512 * K, 4 * K);
    let pin_a = arena.allocate(nz(256 * K)).expect("a pinned chunk");
    let pin_b = arena.allocate(nz(64 * K)).expect("a pinned chunk");
    assert_eq!(arena.metrics().largest_free_block, 128 * K);
    let (head_flag, head_waker) = Flag::waker();
    let mut head = pin!(arena.allocate_async(nz(200_000)));
    assert!(poll_with(head.as_mut(), &head_waker).is_pending());
    let mut behind = pin!(arena.allocate_async(nz(64 * K)));
    let Poll::Ready(Ok(next_chunk)) = poll_noop(behind.as_mut()) else {
        panic!("192 KiB are free: the 64 KiB waiter must not wait behind the head");
    };
    // That connection reads on; the consumer lets go of its older frames.
    drop(pin_a);
    assert!(head_flag.woken(), "the head gets the half that came free");
    let Poll::Ready(Ok(big)) = poll_noop(head.as_mut()) else {
        panic!("the head is granted 256 KiB");
    };
    assert_eq!(big.capacity(), 256 * K);
    drop((big, next_chunk, pin_b));
    assert_buddy_all_free(&arena);
}

// ---------------------------------------------------------------------------
// No barging by synchronous allocate
// ---------------------------------------------------------------------------

#[test]
fn fixed_sync_allocate_does_not_take_a_slot_handed_to_a_waiter() {
    let arena = fixed(1, 64);
    let holder = arena.allocate().expect("the only slot");
    let (flag, waker) = Flag::waker();
    let mut waiter = pin!(arena.allocate_async());
    assert!(poll_with(waiter.as_mut(), &waker).is_pending());
    assert_eq!(arena.metrics().waiting_tasks, 1);
    drop(holder);
    assert!(flag.woken(), "the release wakes the waiter");
    assert_eq!(
        arena.allocate().unwrap_err(),
        AllocError::ArenaFull,
        "the slot belongs to the waiter now"
    );
    let m = arena.metrics();
    assert_eq!(
        (m.waiting_tasks, m.live_slots, m.wait_count),
        (0, 1, 1),
        "{m:?}"
    );
    let Poll::Ready(buf) = poll_noop(waiter.as_mut()) else {
        panic!("the waiter was granted the slot");
    };
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
    drop(buf);
    let again = arena.allocate().expect("free once the waiter drops it");
    drop(again);
    let m = arena.metrics();
    assert_eq!((m.alloc_count, m.live_slots), (3, 0), "{m:?}");
}

#[test]
fn buddy_sync_allocate_does_not_take_a_block_handed_to_a_waiter() {
    let arena = buddy(1024, 256);
    let holder = arena.allocate(nz(1024)).expect("the whole arena");
    let (flag, waker) = Flag::waker();
    let mut waiter = pin!(arena.allocate_async(nz(256)));
    assert!(poll_with(waiter.as_mut(), &waker).is_pending());
    drop(holder);
    assert!(flag.woken());
    // The waiter holds a granted 256 B block; 768 B are free, no barging
    // rules apply any more (the queue is empty).
    assert_eq!(arena.metrics().live_bytes, 256);
    let Poll::Ready(Ok(buf)) = poll_noop(waiter.as_mut()) else {
        panic!("the waiter was granted a block");
    };
    assert_eq!(
        arena.allocate(nz(1024)).unwrap_err(),
        AllocError::ArenaFull,
        "the waiter's block is still out"
    );
    drop(buf);
    drop(arena.allocate(nz(1024)).expect("whole again"));
    assert_eq!(arena.metrics().alloc_count, 3);
}

// ---------------------------------------------------------------------------
// Cancellation after a grant
// ---------------------------------------------------------------------------

#[test]
fn fixed_grant_cancelled_before_pickup_goes_to_next_waiter() {
    let arena = fixed(1, 64);
    let holder = arena.allocate().expect("the only slot");
    let (a_flag, a_waker) = Flag::waker();
    let (b_flag, b_waker) = Flag::waker();
    let mut a = Box::pin(arena.allocate_async());
    let mut b = pin!(arena.allocate_async());
    assert!(poll_with(a.as_mut(), &a_waker).is_pending());
    assert!(poll_with(b.as_mut(), &b_waker).is_pending());
    drop(holder);
    assert!(a_flag.woken() && !b_flag.woken(), "the grant goes to A");
    drop(a); // never polled again: the grant is released and handed on
    assert!(b_flag.woken(), "B is woken with A's slot");
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
    let Poll::Ready(buf) = poll_noop(b.as_mut()) else {
        panic!("B must get the slot A gave up");
    };
    drop(buf);
    assert_fixed_all_free(&arena);
}

#[test]
fn buddy_grant_cancelled_before_pickup_goes_to_next_waiter() {
    let arena = buddy(1024, 256);
    let holder = arena.allocate(nz(1024)).expect("the whole arena");
    let (a_flag, a_waker) = Flag::waker();
    let (b_flag, b_waker) = Flag::waker();
    let mut a = Box::pin(arena.allocate_async(nz(1024)));
    let mut b = pin!(arena.allocate_async(nz(1024)));
    assert!(poll_with(a.as_mut(), &a_waker).is_pending());
    assert!(poll_with(b.as_mut(), &b_waker).is_pending());
    drop(holder);
    assert!(a_flag.woken() && !b_flag.woken(), "the grant goes to A");
    drop(a);
    assert!(b_flag.woken(), "B is woken with A's block");
    let Poll::Ready(Ok(buf)) = poll_noop(b.as_mut()) else {
        panic!("B must get the block A gave up");
    };
    assert_eq!(buf.capacity(), 1024);
    drop(buf);
    assert_buddy_all_free(&arena);
}

/// Cancelling a waiter that was not granted yet gives up its place: the
/// next release goes to the one behind it.
#[test]
fn cancelled_waiting_ticket_is_skipped() {
    let arena = fixed(1, 64);
    let holder = arena.allocate().expect("the only slot");
    let mut a = Box::pin(arena.allocate_async());
    let (b_flag, b_waker) = Flag::waker();
    let mut b = pin!(arena.allocate_async());
    assert!(poll_noop(a.as_mut()).is_pending());
    assert!(poll_with(b.as_mut(), &b_waker).is_pending());
    drop(a);
    assert_eq!(arena.metrics().waiting_tasks, 1);
    drop(holder);
    assert!(b_flag.woken());
    assert!(poll_noop(b.as_mut()).is_ready());
    assert_fixed_all_free(&arena);

    // The buddy arena's version: `wait::tests` (it needs the test clock).
}

// ---------------------------------------------------------------------------
// Buddy: a large waiter is not starved by small allocations
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buddy_large_waiter_is_not_starved_by_small_ones() {
    const TOTAL: usize = 64 * 1024;
    const SMALL: usize = 1024;
    const SMALL_TASKS: u64 = 16;
    let arena = buddy(TOTAL, SMALL);
    let stop = Arc::new(AtomicBool::new(false));
    let smalls_done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..SMALL_TASKS {
        let (arena, stop, smalls_done) = (arena.clone(), stop.clone(), smalls_done.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(0x5A ^ t);
            while !stop.load(Ordering::SeqCst) {
                let mut buf = arena.allocate_async(nz(SMALL)).await.expect("fits");
                smalls_done.fetch_add(1, Ordering::SeqCst);
                fill(&mut buf, t, SMALL);
                hold(&mut rng).await;
                check(&buf, t, SMALL);
                drop(buf);
            }
        }));
    }
    // Let the smalls get going, and hold one small block ourselves so the
    // large request certainly has to wait.
    while smalls_done.load(Ordering::SeqCst) < 4 * SMALL_TASKS {
        tokio::task::yield_now().await;
    }
    let ours = arena
        .allocate(nz(SMALL))
        .expect("plenty of room for smalls");
    let mut large = pin!(arena.allocate_async(nz(TOTAL)));
    let first = std::future::poll_fn(|cx| Poll::Ready(large.as_mut().poll(cx))).await;
    assert!(
        first.is_pending(),
        "a small block is live: 64 KiB cannot fit"
    );

    assert_eq!(
        arena.allocate(nz(SMALL)).unwrap_err(),
        AllocError::ArenaFull,
        "no barging past a waiting large request"
    );
    drop(ours);
    let big = tokio::time::timeout(Duration::from_secs(10), large)
        .await
        .expect("hang guard: the large waiter was starved")
        .expect("fits");
    assert_eq!(big.capacity(), TOTAL);
    // Served in bounded time (the hang guard above): the smalls may
    // overtake it only within its allowance and during its open windows,
    // and every reserved window (growing each time) lets it drain.
    stop.store(true, Ordering::SeqCst);
    drop(big);
    join_all(tasks, "small tasks").await;
    let m = arena.metrics();
    assert!(m.wait_count >= 1, "{m:?}");
    assert_buddy_all_free(&arena);
}

// ---------------------------------------------------------------------------
// RequestTooLarge
// ---------------------------------------------------------------------------

#[test]
fn buddy_allocate_async_too_large_fails_at_once() {
    let arena = buddy(4096, 256);
    // Even while the arena is full and a task waits, an impossible request
    // fails on its first poll instead of queueing.
    let holder = arena.allocate(nz(4096)).expect("the whole arena");
    let mut waiter = pin!(arena.allocate_async(nz(256)));
    assert!(poll_noop(waiter.as_mut()).is_pending());
    let mut too_large = pin!(arena.allocate_async(nz(4097)));
    match poll_noop(too_large.as_mut()) {
        Poll::Ready(Err(e)) => assert_eq!(
            e,
            AllocError::RequestTooLarge {
                requested: 4097,
                max: 4096
            }
        ),
        Poll::Ready(Ok(_)) => panic!("4097 B from a 4096 B arena"),
        Poll::Pending => panic!("an impossible request must not wait"),
    }
    let m = arena.metrics();
    assert_eq!((m.waiting_tasks, m.wait_count), (1, 1), "{m:?}");
    drop(holder);
    assert!(matches!(poll_noop(waiter.as_mut()), Poll::Ready(Ok(_))));
    assert_buddy_all_free(&arena);
}

#[tokio::test(flavor = "current_thread")]
async fn buddy_allocate_async_too_large_on_runtime() {
    let arena = buddy(1 << 16, 1 << 10);
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        arena.allocate_async(nz((1 << 16) + 1)),
    )
    .await
    .expect("returns at once")
    .unwrap_err();
    assert!(matches!(err, AllocError::RequestTooLarge { .. }), "{err}");
    assert_eq!(arena.metrics().wait_count, 0);
}

// ---------------------------------------------------------------------------
// Panicking wakers, polls after completion
// ---------------------------------------------------------------------------

/// A waker whose `wake` panics.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("this waker panics");
    }
}

/// One release grants three waiters; the first one's waker panics. The
/// other two are still woken and get their blocks, and nothing is stranded.
#[test]
fn buddy_panicking_waker_does_not_strand_other_waiters() {
    let arena = buddy(64, 16);
    let held = arena.allocate(nz(64)).expect("the whole arena");
    let panicking = Waker::from(Arc::new(PanickingWaker));
    let mut first = Box::pin(arena.allocate_async(nz(16)));
    assert!(poll_with(first.as_mut(), &panicking).is_pending());
    let (second_flag, second_waker) = Flag::waker();
    let mut second = pin!(arena.allocate_async(nz(16)));
    assert!(poll_with(second.as_mut(), &second_waker).is_pending());
    let (third_flag, third_waker) = Flag::waker();
    let mut third = pin!(arena.allocate_async(nz(16)));
    assert!(poll_with(third.as_mut(), &third_waker).is_pending());
    let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(held)));
    assert!(released.is_err(), "the waker's panic propagates");
    assert!(
        second_flag.woken() && third_flag.woken(),
        "every grant is woken"
    );
    assert!(matches!(poll_noop(second.as_mut()), Poll::Ready(Ok(_))));
    assert!(matches!(poll_noop(third.as_mut()), Poll::Ready(Ok(_))));
    assert!(matches!(poll_noop(first.as_mut()), Poll::Ready(Ok(_))));
    assert_buddy_all_free(&arena);
}

/// Polling a future again after it returned `Ready` panics with a message
/// that says so, on both arenas and the `BufferSource` future, whether it
/// completed at once or after waiting.
#[test]
fn polling_after_completion_panics_on_every_future() {
    fn assert_panics(what: &str, poll: impl FnOnce()) {
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(poll)).expect_err(what);
        let msg = err
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| err.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(msg.contains("polled after it completed"), "{what}: {msg}");
    }
    use arenabuf::BufferSource;

    let f = fixed(1, 64);
    let mut at_once = Box::pin(f.allocate_async());
    let Poll::Ready(buf) = poll_noop(at_once.as_mut()) else {
        panic!("a slot is free");
    };
    assert_panics("fixed, ready at once", || drop(poll_noop(at_once.as_mut())));
    let mut waited = Box::pin(f.allocate_async());
    assert!(poll_noop(waited.as_mut()).is_pending());
    drop(buf);
    assert!(poll_noop(waited.as_mut()).is_ready());
    assert_panics("fixed, after waiting", || drop(poll_noop(waited.as_mut())));
    let mut source = Box::pin(f.allocate_wait(nz(64)));
    assert!(poll_noop(source.as_mut()).is_ready());
    assert_panics("BufferSource wait", || drop(poll_noop(source.as_mut())));
    let mut too_large = Box::pin(f.allocate_wait(nz(65)));
    assert!(matches!(poll_noop(too_large.as_mut()), Poll::Ready(Err(_))));
    assert_panics("BufferSource wait, error", || {
        drop(poll_noop(too_large.as_mut()))
    });

    let b = buddy(1024, 256);
    let mut at_once = Box::pin(b.allocate_async(nz(1024)));
    let Poll::Ready(Ok(buf)) = poll_noop(at_once.as_mut()) else {
        panic!("the arena is free");
    };
    assert_panics("buddy, ready at once", || drop(poll_noop(at_once.as_mut())));
    let mut waited = Box::pin(b.allocate_async(nz(1024)));
    assert!(poll_noop(waited.as_mut()).is_pending());
    drop(buf);
    assert!(poll_noop(waited.as_mut()).is_ready());
    assert_panics("buddy, after waiting", || drop(poll_noop(waited.as_mut())));
    let mut too_large = Box::pin(b.allocate_async(nz(2048)));
    assert!(matches!(poll_noop(too_large.as_mut()), Poll::Ready(Err(_))));
    assert_panics("buddy, error", || drop(poll_noop(too_large.as_mut())));
}

// ---------------------------------------------------------------------------
// Wakers that misbehave: user code never runs under the arena's locks
// ---------------------------------------------------------------------------

/// A waker whose clone or drop panics when told to.
mod bad_waker {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{RawWaker, RawWakerVTable, Waker};

    /// `[clone panics, drop panics]`.
    pub type Flags = [AtomicBool; 2];

    fn flags(p: *const ()) -> &'static Flags {
        // SAFETY: `p` is the leaked `Flags` of `new`, never freed.
        unsafe { &*p.cast::<Flags>() }
    }

    static VTABLE: RawWakerVTable = RawWakerVTable::new(
        |p| {
            assert!(!flags(p)[0].load(Ordering::SeqCst), "waker clone panics");
            RawWaker::new(p, &VTABLE)
        },
        |_| {},
        |_| {},
        |p| assert!(!flags(p)[1].load(Ordering::SeqCst), "waker drop panics"),
    );

    pub fn new() -> (&'static Flags, Waker) {
        let flags: &'static Flags = Box::leak(Box::default());
        let raw = RawWaker::new(std::ptr::from_ref(flags).cast(), &VTABLE);
        // SAFETY: the vtable's functions keep the `RawWaker` contract for
        // a pointer to leaked, immutable (atomic) data.
        (flags, unsafe { Waker::from_raw(raw) })
    }
}

/// Runs `f` on a thread; fails the test if it has not returned within a
/// generous hang guard (a deadlock or a spin).
fn returns(what: &str, f: impl FnOnce() + Send + 'static) {
    let worker = std::thread::spawn(f);
    let start = std::time::Instant::now();
    while !worker.is_finished() {
        assert!(start.elapsed() < HANG_GUARD, "hang guard: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    worker.join().expect("no panic");
}

/// A waker whose clone panics when the task first queues: the panic
/// reaches the caller, nothing is left queued, and a release afterwards
/// returns (it used to spin forever on a flag left set).
#[test]
fn waker_clone_panic_while_queueing_leaves_the_arena_usable() {
    let fixed = fixed(1, 8);
    let held = fixed.allocate().unwrap();
    let (flags, waker) = bad_waker::new();
    flags[0].store(true, Ordering::SeqCst);
    let mut fut = Box::pin(fixed.allocate_async());
    let queued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_with(fut.as_mut(), &waker)
    }));
    assert!(queued.is_err());
    drop(fut);
    assert_eq!(fixed.metrics().waiting_tasks, 0);
    let f2 = fixed.clone();
    returns("a release after the panic", move || drop(held));
    assert!(f2.allocate().is_ok());

    let buddy = buddy(64, 16);
    let held = buddy.allocate(nz(64)).unwrap();
    let mut fut = Box::pin(buddy.allocate_async(nz(64)));
    let queued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_with(fut.as_mut(), &waker)
    }));
    assert!(queued.is_err());
    drop(fut);
    assert_eq!(buddy.metrics().waiting_tasks, 0);
    let b2 = buddy.clone();
    returns("a release after the panic", move || drop(held));
    assert_buddy_all_free(&b2);
}

/// A waker whose drop panics when its future is cancelled: the place is
/// still given up (no ghost waiter is granted the next release), and that
/// release returns (it used to deadlock on the arena's own lock).
#[test]
fn waker_drop_panic_on_cancel_leaves_no_ghost() {
    let fixed = fixed(1, 8);
    let held = fixed.allocate().unwrap();
    let (flags, waker) = bad_waker::new();
    let mut fut = Box::pin(fixed.allocate_async());
    assert!(poll_with(fut.as_mut(), &waker).is_pending());
    flags[1].store(true, Ordering::SeqCst);
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(fut))).is_err());
    flags[1].store(false, Ordering::SeqCst);
    assert_eq!(fixed.metrics().waiting_tasks, 0);
    let f2 = fixed.clone();
    returns("a release after the cancel", move || drop(held));
    assert_fixed_all_free(&f2);

    let buddy = buddy(64, 16);
    let held = buddy.allocate(nz(64)).unwrap();
    let mut fut = Box::pin(buddy.allocate_async(nz(64)));
    assert!(poll_with(fut.as_mut(), &waker).is_pending());
    flags[1].store(true, Ordering::SeqCst);
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(fut))).is_err());
    flags[1].store(false, Ordering::SeqCst);
    assert_eq!(buddy.metrics().waiting_tasks, 0);
    let b2 = buddy.clone();
    returns("a release after the cancel", move || drop(held));
    assert_buddy_all_free(&b2);
}

/// A waker that owns a buffer of the same arena, dropped by the arena when
/// the task polls again with another waker or cancels: the buffer's
/// release must not run under a lock the arena holds.
#[test]
fn waker_owning_arena_memory_is_dropped_outside_the_locks() {
    struct Owner(#[allow(dead_code)] Mutex<Option<Buffer>>);
    impl Wake for Owner {
        fn wake(self: Arc<Self>) {}
    }
    let arena = buddy(64, 16);
    let a2 = arena.clone();
    returns(
        "re-poll and cancel with a waker owning arena memory",
        move || {
            let arena = a2;
            let _rest = arena.allocate(nz(32)).unwrap();
            let first = arena.allocate(nz(16)).unwrap();
            let second = arena.allocate(nz(16)).unwrap();
            let owner = Waker::from(Arc::new(Owner(Mutex::new(Some(first)))));
            let mut fut = Box::pin(arena.allocate_async(nz(64)));
            assert!(poll_with(fut.as_mut(), &owner).is_pending());
            drop(owner); // the node's clone is the last reference now
            let (_flag, other) = Flag::waker();
            assert!(poll_with(fut.as_mut(), &other).is_pending()); // drops `owner`
            let owner = Waker::from(Arc::new(Owner(Mutex::new(Some(second)))));
            assert!(poll_with(fut.as_mut(), &owner).is_pending());
            drop(owner);
            drop(fut); // the cancel drops the last `owner`
        },
    );
    assert_buddy_all_free(&arena);
}

/// A wait is not an `ArenaFull` answer: neither arena counts it in
/// `alloc_failure_count`.
#[test]
fn waits_are_not_counted_as_failures() {
    let fixed = fixed(1, 8);
    let held = fixed.allocate().unwrap();
    let mut fut = Box::pin(fixed.allocate_async());
    assert!(poll_noop(fut.as_mut()).is_pending());
    drop(held);
    assert!(poll_noop(fut.as_mut()).is_ready());
    assert_eq!(fixed.metrics().alloc_failure_count, 0);

    let buddy = buddy(64, 16);
    let held = buddy.allocate(nz(64)).unwrap();
    let mut fut = Box::pin(buddy.allocate_async(nz(64)));
    assert!(poll_noop(fut.as_mut()).is_pending());
    drop(held);
    assert!(poll_noop(fut.as_mut()).is_ready());
    assert_eq!(buddy.metrics().alloc_failure_count, 0);
    assert_eq!(buddy.allocate(nz(64)).map(drop), Ok(()));
}

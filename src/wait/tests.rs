//! The queue at scale: memory after many cancellations, pickups without
//! the arena's lock. (Miri runs these with fewer iterations.)

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::{BuddyArena, FixedArena};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn poll<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Cancellation cycles behind a live head: many under the interpreter would
/// take minutes, so miri runs a few hundred.
const CYCLES: usize = if cfg!(miri) { 300 } else { 200_000 };

/// A bound on the queue's buffers with one live waiter: a small constant,
/// whatever the number of cancellations.
const SMALL: usize = 128;

#[test]
fn fixed_cancelled_waiters_behind_a_live_head_keep_no_memory() {
    let arena = FixedArena::builder(nz(1), nz(8)).build().unwrap();
    let held = arena.allocate().unwrap();
    let mut head = Box::pin(arena.allocate_async());
    assert!(poll(head.as_mut()).is_pending());
    for _ in 0..CYCLES {
        let mut waiter = Box::pin(arena.allocate_async());
        assert!(poll(waiter.as_mut()).is_pending());
    }
    assert_eq!(arena.metrics().waiting_tasks, 1);
    assert!(
        arena.queue_capacity() <= SMALL,
        "{}",
        arena.queue_capacity()
    );
    drop(held);
    assert!(poll(head.as_mut()).is_ready());
    drop(head);
    assert!(arena.queue_capacity() <= SMALL);
    assert_eq!(arena.metrics().live_slots, 0);
}

#[test]
fn buddy_cancelled_waiters_behind_a_live_head_keep_no_memory() {
    let arena = BuddyArena::builder(nz(64), nz(16)).build().unwrap();
    let held = arena.allocate(nz(64)).unwrap();
    let mut head = Box::pin(arena.allocate_async(nz(64)));
    assert!(poll(head.as_mut()).is_pending());
    for i in 0..CYCLES {
        // Mixed sizes: the cancelled entries sit in several classes.
        let mut waiter = Box::pin(arena.allocate_async(nz(16 << (i % 3))));
        assert!(poll(waiter.as_mut()).is_pending());
    }
    assert_eq!(arena.metrics().waiting_tasks, 1);
    assert!(
        arena.queue_capacity() <= SMALL,
        "{}",
        arena.queue_capacity()
    );
    drop(held);
    assert!(matches!(poll(head.as_mut()), Poll::Ready(Ok(_))));
    drop(head);
    assert!(arena.queue_capacity() <= SMALL);
    assert_eq!(arena.metrics().live_bytes, 0);
}

/// Picks up a grant on another thread while this one holds the arena's
/// queue lock: the pickup must not need it. (The buffer picked up is
/// dropped after the lock: its release may need the lock.)
fn pick_up_while_locked<F>(lock: impl Sized, mut waiter: Pin<Box<F>>)
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let picker = std::thread::spawn(move || {
        let out = poll(waiter.as_mut());
        tx.send(out.is_ready()).unwrap();
        (waiter, out)
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("hang guard: the pickup waited for the queue lock");
    assert!(ready, "the grant is there to pick up");
    drop(lock);
    drop(picker.join().unwrap());
}

#[test]
fn fixed_grant_is_picked_up_without_the_queue_lock() {
    let arena = FixedArena::builder(nz(1), nz(8)).build().unwrap();
    let held = arena.allocate().unwrap();
    let mut waiter = Box::pin(crate::FixedAllocate::owned(arena.clone()));
    assert!(poll(waiter.as_mut()).is_pending());
    drop(held);
    pick_up_while_locked(arena.lock_queue(), waiter);
    assert_eq!(arena.metrics().live_slots, 0);
}

#[test]
fn buddy_grant_is_picked_up_without_the_queue_lock() {
    let arena = BuddyArena::builder(nz(64), nz(16)).build().unwrap();
    let held = arena.allocate(nz(64)).unwrap();
    let mut waiter = Box::pin(crate::BuddyAllocate::owned(arena.clone(), nz(64)));
    assert!(poll(waiter.as_mut()).is_pending());
    drop(held);
    pick_up_while_locked(arena.lock_queue(), waiter);
    assert_eq!(arena.metrics().live_bytes, 0);
}

// ---------------------------------------------------------------------------
// The buddy arena's stuck head, on a frozen clock
// ---------------------------------------------------------------------------

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Wake;

use crate::buddy::HEAD_WINDOW;
use crate::sync::advance_clock;

/// A waker that records whether it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let f = Arc::new(Flag::default());
    (f.clone(), Waker::from(f))
}

fn poll_with<F: Future>(fut: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(waker))
}

fn assert_buddy_all_free(arena: &BuddyArena) {
    let m = arena.metrics();
    assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0), "{m:?}");
    assert_eq!(m.largest_free_block, arena.total_size(), "{m:?}");
}

/// While the head's window is reserved, a waiter behind it gets only the
/// memory that was free when the head got stuck; what is released goes
/// to the head. The waiter that fits is woken to tick, and is served when
/// the window opens: it cannot be held longer than that.
#[test]
fn buddy_reserved_window_keeps_releases_for_the_head() {
    advance_clock(Duration::ZERO);
    let arena = BuddyArena::builder(nz(4096), nz(1024)).build().unwrap();
    let half = arena.allocate(nz(2048)).expect("half");
    let quarter = arena.allocate(nz(1024)).expect("a quarter");
    let (large_flag, large_waker) = flag();
    let mut large = Box::pin(arena.allocate_async(nz(4096)));
    assert!(poll_with(large.as_mut(), &large_waker).is_pending());
    let mut first = Box::pin(arena.allocate_async(nz(1024)));
    let Poll::Ready(Ok(first_buf)) = poll(first.as_mut()) else {
        panic!("the 1 KiB free when the head got stuck serves a waiter behind it");
    };
    let (small_flag, small_waker) = flag();
    let mut small = Box::pin(arena.allocate_async(nz(1024)));
    assert!(poll_with(small.as_mut(), &small_waker).is_pending());
    assert!(
        !small_flag.0.load(Ordering::SeqCst),
        "nothing free: no tick"
    );
    assert_eq!(
        arena.allocate(nz(1024)).unwrap_err(),
        crate::AllocError::ArenaFull,
        "sync allocate never takes memory a waiter is owed"
    );
    drop(quarter);
    assert!(
        small_flag.0.load(Ordering::SeqCst),
        "it fits: woken to tick"
    );
    assert!(
        poll_with(small.as_mut(), &small_waker).is_pending(),
        "in the reserved window a released block is the head's"
    );
    drop(first_buf);
    drop(half);
    assert!(large_flag.0.load(Ordering::SeqCst));
    let Poll::Ready(Ok(big)) = poll(large.as_mut()) else {
        panic!("the large waiter was granted the whole arena");
    };
    assert!(poll_with(small.as_mut(), &small_waker).is_pending());
    drop(big);
    assert!(matches!(poll(small.as_mut()), Poll::Ready(Ok(_))));
    assert_buddy_all_free(&arena);
}

/// The attack that wedged the allowance-only rule: the allowance is spent
/// by ordinary traffic, then a holder whose block the head needs waits
/// behind it for a block that sits free. When the reserved window lapses
/// it is served, it lets go, and the head follows.
#[test]
fn buddy_holder_behind_head_is_served_when_the_window_opens() {
    advance_clock(Duration::ZERO);
    let arena = BuddyArena::builder(nz(128), nz(16)).build().unwrap();
    let a = arena.allocate(nz(16)).unwrap(); // its owner lets go once `c` is served
    let (head_flag, head_waker) = flag();
    let mut head = Box::pin(arena.allocate_async(nz(128)));
    assert!(poll_with(head.as_mut(), &head_waker).is_pending());
    for _ in 0..7 {
        // Ordinary traffic spends the allowance (112 B).
        let mut x = Box::pin(arena.allocate_async(nz(16)));
        let Poll::Ready(Ok(b)) = poll(x.as_mut()) else {
            panic!("within the allowance");
        };
        drop(b);
    }
    let (c_flag, c_waker) = flag();
    let mut c = Box::pin(arena.allocate_async(nz(16)));
    assert!(poll_with(c.as_mut(), &c_waker).is_pending());
    assert!(c_flag.0.load(Ordering::SeqCst), "woken to tick");
    advance_clock(HEAD_WINDOW);
    let Poll::Ready(Ok(c_buf)) = poll_with(c.as_mut(), &c_waker) else {
        panic!("the window opened: the holder's request is served");
    };
    drop(a);
    drop(c_buf);
    assert!(head_flag.0.load(Ordering::SeqCst));
    assert!(matches!(poll(head.as_mut()), Poll::Ready(Ok(_))));
    assert_buddy_all_free(&arena);
}

/// A waiter that fits free memory but is held by a reserved window does not
/// poll in a loop (which burnt a core and took the arena's lock on every
/// turn while a head was stuck): a poll arms a timer for the window's
/// opening, and the task is woken then, by the timer's thread, not before.
#[test]
#[cfg_attr(miri, ignore = "a real timer thread and a real sleep")]
fn buddy_ticking_waiter_sleeps_until_the_window_opens() {
    advance_clock(Duration::ZERO);
    let arena = BuddyArena::builder(nz(128), nz(16)).build().unwrap();
    let a = arena.allocate(nz(16)).unwrap();
    let mut head = Box::pin(arena.allocate_async(nz(128)));
    assert!(poll(head.as_mut()).is_pending());
    let spend: Vec<_> = (0..7).map(|_| arena.allocate_async(nz(16))).collect();
    let spent: Vec<_> = spend
        .into_iter()
        .map(|f| {
            let mut f = Box::pin(f);
            let Poll::Ready(Ok(b)) = poll(f.as_mut()) else {
                panic!("within the allowance");
            };
            b
        })
        .collect();
    drop(spent);
    let (c_flag, c_waker) = flag();
    let mut c = Box::pin(arena.allocate_async(nz(16)));
    assert!(poll_with(c.as_mut(), &c_waker).is_pending());
    assert!(c_flag.0.swap(false, Ordering::SeqCst), "woken to tick");
    for _ in 0..3 {
        // The window is still reserved (the clock is frozen): each poll
        // arms the timer and does not wake the task itself.
        assert!(poll_with(c.as_mut(), &c_waker).is_pending());
        assert!(
            !c_flag.0.load(Ordering::SeqCst),
            "no self-wake while the window is reserved"
        );
    }
    // The timer wakes it once the window's time has passed (a hang guard,
    // not a timing check).
    let start = std::time::Instant::now();
    while !c_flag.0.load(Ordering::SeqCst) {
        assert!(start.elapsed() < Duration::from_secs(60), "never woken");
        std::thread::sleep(Duration::from_millis(1));
    }
    advance_clock(HEAD_WINDOW);
    let Poll::Ready(Ok(c_buf)) = poll_with(c.as_mut(), &c_waker) else {
        panic!("the window opened: served");
    };
    drop((a, c_buf));
    assert!(matches!(poll(head.as_mut()), Poll::Ready(Ok(_))));
    assert_buddy_all_free(&arena);
}

/// Reserved windows grow (2, 4, 8 ... ms, up to 64) between open ones of
/// one window each.
#[test]
fn buddy_head_windows_alternate_and_grow() {
    advance_clock(Duration::ZERO);
    let arena = BuddyArena::builder(nz(64), nz(16)).build().unwrap();
    let held = arena.allocate(nz(16)).unwrap();
    let mut head = Box::pin(arena.allocate_async(nz(64)));
    assert!(poll(head.as_mut()).is_pending());
    let mut spend = Box::pin(arena.allocate_async(nz(32)));
    let Poll::Ready(Ok(spent)) = poll(spend.as_mut()) else {
        panic!("allowance");
    };
    let mut more = Box::pin(arena.allocate_async(nz(16)));
    let Poll::Ready(Ok(more_buf)) = poll(more.as_mut()) else {
        panic!("allowance");
    };
    drop(spent); // 32 B free, reserved for the head
    let w = HEAD_WINDOW;
    // (time from the head getting stuck, whether a 16 B waiter is served)
    let mut probe = |at: Duration| {
        let mut f = Box::pin(arena.allocate_async(nz(16)));
        match poll(f.as_mut()) {
            Poll::Ready(Ok(buf)) => {
                drop(buf);
                let _ = at;
                true
            }
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => false,
        }
    };
    let mut t = Duration::ZERO;
    let mut expect = |to: Duration, served: bool, probe: &mut dyn FnMut(Duration) -> bool| {
        advance_clock(to - t);
        t = to;
        assert_eq!(probe(t), served, "at {t:?}");
    };
    expect(w / 2, false, &mut probe); // reserved: 0..w
    expect(w + w / 2, true, &mut probe); // open: w..2w
    expect(2 * w + w, false, &mut probe); // reserved: 2w..4w
    expect(4 * w + w / 2, true, &mut probe); // open: 4w..5w
    expect(5 * w + 7 * w, false, &mut probe); // reserved: 5w..9w
    drop((held, more_buf));
    assert!(matches!(poll(head.as_mut()), Poll::Ready(Ok(_))));
}

/// Cancelling a stuck head serves the next waiter at once.
#[test]
fn buddy_cancelled_head_is_skipped() {
    advance_clock(Duration::ZERO);
    let arena = BuddyArena::builder(nz(1024), nz(256)).build().unwrap();
    let holder = arena.allocate(nz(512)).expect("half");
    let quarter = arena.allocate(nz(256)).expect("a quarter");
    let mut a = Box::pin(arena.allocate_async(nz(1024)));
    let (b_flag, b_waker) = flag();
    let mut b = Box::pin(arena.allocate_async(nz(512)));
    assert!(poll(a.as_mut()).is_pending());
    assert!(poll_with(b.as_mut(), &b_waker).is_pending());
    drop(quarter);
    assert!(
        poll_with(b.as_mut(), &b_waker).is_pending(),
        "reserved for A"
    );
    drop(a);
    assert!(
        b_flag.0.load(Ordering::SeqCst),
        "cancelling the head serves B"
    );
    assert!(matches!(poll(b.as_mut()), Poll::Ready(Ok(_))));
    drop(holder);
    assert_buddy_all_free(&arena);
}

/// A waker that panics when woken.
struct Panicking;

impl Wake for Panicking {
    fn wake(self: Arc<Self>) {
        panic!("this waker panics");
    }
}

/// A future dropped with a grant it never picked up hands it on: two
/// waiters behind it are served at once, and the first one's waker panics.
/// The second is still woken and served.
#[test]
fn buddy_panicking_waker_on_the_cancel_path() {
    let arena = BuddyArena::builder(nz(64), nz(16)).build().unwrap();
    let x = arena.allocate(nz(32)).expect("half");
    let y = arena.allocate(nz(32)).expect("half");
    let mut h = Box::pin(arena.allocate_async(nz(32)));
    assert!(poll(h.as_mut()).is_pending());
    let panicking = Waker::from(Arc::new(Panicking));
    let mut a = Box::pin(arena.allocate_async(nz(16)));
    assert!(poll_with(a.as_mut(), &panicking).is_pending());
    let (b_flag, b_waker) = flag();
    let mut b = Box::pin(arena.allocate_async(nz(16)));
    assert!(poll_with(b.as_mut(), &b_waker).is_pending());
    drop(x); // granted to `h`, never picked up
    let cancelled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(h)));
    assert!(cancelled.is_err(), "the waker's panic propagates");
    assert!(
        b_flag.0.load(Ordering::SeqCst),
        "the second grant is woken too"
    );
    assert!(matches!(poll(a.as_mut()), Poll::Ready(Ok(_))));
    assert!(matches!(poll(b.as_mut()), Poll::Ready(Ok(_))));
    drop(y);
    assert_buddy_all_free(&arena);
}

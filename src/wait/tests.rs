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
/// queue lock: the pickup must not need it.
fn pick_up_while_locked<F>(lock: impl Sized, mut waiter: Pin<Box<F>>)
where
    F: Future + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let picker = std::thread::spawn(move || {
        let ready = poll(waiter.as_mut()).is_ready();
        tx.send(ready).unwrap();
        waiter
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

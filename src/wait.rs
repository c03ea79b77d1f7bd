//! The queue of tasks waiting for capacity (feature `async-alloc`).
//!
//! Each arena keeps one [`Waiters`] behind a mutex. A task that finds the
//! arena full takes a ticket; tickets are served strictly in order. Capacity
//! is handed over, not announced: a release that finds waiters moves its
//! slot or block straight into the head waiter's grant and wakes it, so the
//! memory never goes back to the free pool where a newcomer could take it
//! first. A granted task picks its lease up on its next poll.
//!
//! Cancellation: dropping a waiting future removes its ticket; dropping a
//! future whose grant arrived but was not picked up yet releases that lease
//! again (after the lock is dropped), and the release path hands it to the
//! next waiter. Either way no capacity is stranded and no wake-up is lost.
//!
//! Wakers are never called with the lock held.

use std::collections::BTreeMap;
use std::task::Waker;

use crate::buffer::Lease;

struct Entry<R> {
    request: R,
    waker: Waker,
}

/// Tickets in arrival order, and the grants not picked up yet.
///
/// `R` is what a waiter asked for (nothing for a fixed arena, a block order
/// for a buddy arena).
pub(crate) struct Waiters<R> {
    next_ticket: u64,
    waiting: BTreeMap<u64, Entry<R>>,
    granted: BTreeMap<u64, Lease>,
    wait_count: u64,
}

impl<R: Copy> Waiters<R> {
    pub(crate) fn new() -> Self {
        Self {
            next_ticket: 0,
            waiting: BTreeMap::new(),
            granted: BTreeMap::new(),
            wait_count: 0,
        }
    }

    /// Whether no task is waiting (grants not picked up do not count).
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Tasks waiting now.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Allocations that had to wait, since the arena was built.
    pub(crate) fn wait_count(&self) -> u64 {
        self.wait_count
    }

    /// Queues a new waiter at the tail and returns its ticket.
    pub(crate) fn register(&mut self, request: R, waker: &Waker) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.wait_count += 1;
        self.waiting.insert(
            ticket,
            Entry {
                request,
                waker: waker.clone(),
            },
        );
        ticket
    }

    /// What the head waiter asked for.
    pub(crate) fn head(&self) -> Option<R> {
        self.waiting.first_key_value().map(|(_, e)| e.request)
    }

    /// Gives `lease` to the head waiter and returns its waker, to be woken
    /// after unlocking. The caller checked that there is a head.
    pub(crate) fn grant_head(&mut self, lease: Lease) -> Waker {
        let (ticket, entry) = self
            .waiting
            .pop_first()
            .expect("grant_head is only called with a waiter queued");
        self.granted.insert(ticket, lease);
        entry.waker
    }

    /// Picks up the grant of `ticket` if it arrived; otherwise remembers
    /// `waker` for it.
    pub(crate) fn poll(&mut self, ticket: u64, waker: &Waker) -> Option<Lease> {
        if let Some(lease) = self.granted.remove(&ticket) {
            return Some(lease);
        }
        if let Some(entry) = self.waiting.get_mut(&ticket) {
            entry.waker.clone_from(waker);
        }
        None
    }

    /// Withdraws `ticket`. Returns the grant it had not picked up yet, if
    /// any: the caller releases it after unlocking, which hands it on.
    pub(crate) fn cancel(&mut self, ticket: u64) -> Option<Lease> {
        self.waiting.remove(&ticket);
        self.granted.remove(&ticket)
    }
}

/// The arena a waiting future works on: borrowed from `allocate_async`, or
/// owned (a handle clone) where the future must be `'static`.
pub(crate) enum ArenaRef<'a, A> {
    Borrowed(&'a A),
    Owned(A),
}

impl<A> std::ops::Deref for ArenaRef<'_, A> {
    type Target = A;

    fn deref(&self) -> &A {
        match self {
            ArenaRef::Borrowed(a) => a,
            ArenaRef::Owned(a) => a,
        }
    }
}

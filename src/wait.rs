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

use std::collections::VecDeque;
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
///
/// Tickets are consecutive numbers, so the queue is a ring indexed by
/// `ticket - front`: registering, serving the head and cancelling are O(1)
/// and, once the ring has grown to the largest queue seen, allocate nothing.
/// A cancelled ticket leaves a hole (`None`) that is skipped when it reaches
/// the front. Grants wait in a short list until their task polls: at most
/// one per task woken and not yet run.
pub(crate) struct Waiters<R> {
    /// The ticket of `waiting[0]`.
    front: u64,
    /// Tickets `front..front + waiting.len()`; `None` once cancelled.
    waiting: VecDeque<Option<Entry<R>>>,
    /// How many entries of `waiting` are `Some`.
    live: usize,
    granted: Vec<(u64, Lease)>,
    wait_count: u64,
}

impl<R: Copy> Waiters<R> {
    pub(crate) fn new() -> Self {
        Self {
            front: 0,
            waiting: VecDeque::new(),
            live: 0,
            granted: Vec::new(),
            wait_count: 0,
        }
    }

    /// Whether no task is waiting (grants not picked up do not count).
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Tasks waiting now.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Allocations that had to wait, since the arena was built.
    pub(crate) fn wait_count(&self) -> u64 {
        self.wait_count
    }

    /// Queues a new waiter at the tail and returns its ticket.
    pub(crate) fn register(&mut self, request: R, waker: &Waker) -> u64 {
        let ticket = self.front + self.waiting.len() as u64;
        self.waiting.push_back(Some(Entry {
            request,
            waker: waker.clone(),
        }));
        self.live += 1;
        self.wait_count += 1;
        ticket
    }

    /// Drops the holes that cancelled tickets left at the front, so that
    /// `waiting[0]`, if any, is the head waiter.
    fn skip_cancelled(&mut self) {
        while let Some(None) = self.waiting.front() {
            self.waiting.pop_front();
            self.front += 1;
        }
    }

    /// What the head waiter asked for.
    pub(crate) fn head(&mut self) -> Option<R> {
        self.skip_cancelled();
        self.waiting
            .front()
            .map(|e| e.as_ref().expect("skipped holes").request)
    }

    /// Gives `lease` to the head waiter and returns its waker, to be woken
    /// after unlocking. The caller checked that there is a head.
    pub(crate) fn grant_head(&mut self, lease: Lease) -> Waker {
        self.skip_cancelled();
        let entry = self
            .waiting
            .pop_front()
            .flatten()
            .expect("grant_head is only called with a waiter queued");
        self.granted.push((self.front, lease));
        self.front += 1;
        self.live -= 1;
        entry.waker
    }

    /// The entry of `ticket`, if it is still waiting.
    fn entry_mut(&mut self, ticket: u64) -> Option<&mut Option<Entry<R>>> {
        let index = usize::try_from(ticket.checked_sub(self.front)?).ok()?;
        self.waiting.get_mut(index)
    }

    /// Takes the grant of `ticket` out of the list, if it arrived.
    fn take_grant(&mut self, ticket: u64) -> Option<Lease> {
        let at = self.granted.iter().position(|(t, _)| *t == ticket)?;
        Some(self.granted.swap_remove(at).1)
    }

    /// Picks up the grant of `ticket` if it arrived; otherwise remembers
    /// `waker` for it.
    pub(crate) fn poll(&mut self, ticket: u64, waker: &Waker) -> Option<Lease> {
        if let Some(lease) = self.take_grant(ticket) {
            return Some(lease);
        }
        if let Some(Some(entry)) = self.entry_mut(ticket) {
            entry.waker.clone_from(waker);
        }
        None
    }

    /// Withdraws `ticket`. Returns the grant it had not picked up yet, if
    /// any: the caller releases it after unlocking, which hands it on.
    pub(crate) fn cancel(&mut self, ticket: u64) -> Option<Lease> {
        if let Some(slot) = self.entry_mut(ticket) {
            if slot.take().is_some() {
                self.live -= 1;
            }
            self.skip_cancelled();
            return None;
        }
        self.take_grant(ticket)
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

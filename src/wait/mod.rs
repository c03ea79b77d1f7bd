//! Waiting for capacity (feature `async-alloc`).
//!
//! Each arena keeps one [`Waiters`] queue behind a mutex (the fixed arena's
//! own, the buddy arena's free-list lock). A task that finds the arena full
//! registers a [`Node`]: a small shared cell that the task and the queue
//! both point to. Capacity is handed over, not announced: a release that
//! finds waiters moves its slot or block straight into the chosen waiter's
//! node and wakes it, so the memory never goes back to the free pool where
//! a newcomer could take it first.
//!
//! - [`node`]: one waiter's state (waiting, granted with its lease, taken,
//!   cancelled) and waker, behind a lock of its own. The task polls and
//!   picks its grant up there, without the arena's lock: a pickup is O(1)
//!   however many tasks wait.
//! - [`queue`]: the waiters in arrival order, one FIFO per size class (one
//!   class for a fixed arena, one per block order for a buddy arena), each
//!   entry stamped with its arrival number. Registering, serving and
//!   cancelling are amortised O(1); the queue's memory stays within a small
//!   constant of the number of live waiters and is given back as it empties.
//!
//! Which waiter a release serves is the arena's decision (strict arrival
//! order on a fixed arena; arrival order with a bounded bypass on a buddy
//! arena, see `crate::buddy`).
//!
//! # Invariants
//!
//! - Lock order: the arena's queue lock, then a node's lock. A task polling
//!   its own node takes only the node's lock.
//! - A node's state goes `Waiting → Granted → Taken` or
//!   `Waiting → Cancelled`, and leaves `Waiting` only under the queue lock;
//!   a `Waiting` node is in the queue, and no other is counted as live.
//! - A lease is in exactly one place: the arena, a node (`Granted`), or a
//!   buffer. A future dropped with a `Granted` node releases that lease,
//!   which hands it to the next waiter or back to the arena.
//! - Wakers are called with no lock held, and every waker collected is
//!   called even if one of them panics ([`wake_all`]).

pub(crate) mod node;
pub(crate) mod queue;
#[cfg(all(test, not(arenabuf_loom)))]
mod tests;

pub(crate) use node::Node;
pub(crate) use queue::{Waiters, Wake};

/// Wakes every waker, even if some of them panic; the first panic is
/// resumed once all have been called, so no granted waiter is left
/// sleeping on capacity that is already its own.
pub(crate) fn wake_all(wakes: Vec<Wake>) {
    let mut panic = None;
    for wake in wakes {
        let Some(waker) = wake.waker else { continue };
        if let Err(payload) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()))
        {
            panic.get_or_insert(payload);
        }
    }
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
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

/// Where a waiting future is: not queued yet, queued with its node, or
/// finished. Polling a finished future panics, the same on every arena and
/// future type (as `async fn` futures do).
pub(crate) enum WaitState {
    Start,
    Queued(crate::sync::Arc<Node>),
    Done,
}

impl WaitState {
    /// Panics unless the future may still be polled.
    #[inline]
    pub(crate) fn check_not_done(&self) {
        if matches!(self, WaitState::Done) {
            polled_after_completion();
        }
    }
}

#[cold]
#[inline(never)]
pub(crate) fn polled_after_completion() -> ! {
    panic!(
        "an arenabuf allocation future was polled after it completed; \
         call allocate_async() again for another buffer"
    )
}

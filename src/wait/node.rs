//! One waiting task's node: what the queue and the task share.
//!
//! # Invariants
//!
//! - `state` leaves [`State::Waiting`] only under the arena's queue lock
//!   (a grant or a cancel), so the queue's count of live waiters is exact.
//! - A [`State::Granted`] lease belongs to the task: only the task takes it
//!   out (a pickup, or a cancel that then releases it).
//! - `waker` is the task's latest waker while it waits; a grant or a cancel
//!   takes it out.
//! - Nothing user-supplied runs under a lock: wakers are cloned before a
//!   lock is taken, and the wakers and leases taken out are woken, dropped
//!   or released by the caller once every lock is dropped (a waker's clone,
//!   wake or drop may panic, or release arena memory of its own).

use std::task::Waker;

use crate::buffer::Lease;
use crate::sync::{self, AtomicBool, Mutex, Ordering};

enum State {
    Waiting,
    Granted(Lease),
    Taken,
    Cancelled,
}

struct Slot {
    state: State,
    waker: Option<Waker>,
}

/// A waiting task, shared (through an `Arc`) by the task's future and the
/// arena's queue.
pub(crate) struct Node {
    /// Arrival number: lower is earlier.
    pub(crate) seq: u64,
    /// The queue's size class (a block order; 0 on a fixed arena).
    pub(crate) class: usize,
    /// Set (under the queue lock) while this waiter fits free memory that
    /// is reserved for a stuck head: its task then polls the arena again
    /// until the reservation lapses (see `crate::buddy`).
    ticking: AtomicBool,
    slot: Mutex<Slot>,
}

/// What withdrawing a node found.
pub(crate) enum Withdrawn {
    /// It was still waiting: it is cancelled now.
    Waiting,
    /// Capacity had been granted and not picked up: the caller releases it.
    Granted(Lease),
    /// Already picked up or cancelled.
    Gone,
}

impl Node {
    /// A waiting node; `waker` was cloned by the caller before it locked
    /// the queue.
    pub(crate) fn new(seq: u64, class: usize, waker: Waker) -> Self {
        Self {
            seq,
            class,
            ticking: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                state: State::Waiting,
                waker: Some(waker),
            }),
        }
    }

    /// Takes the grant if it has arrived. Takes only this node's lock.
    pub(crate) fn take_grant(&self) -> Option<Lease> {
        let mut slot = sync::lock(&self.slot);
        if !matches!(slot.state, State::Granted(_)) {
            return None;
        }
        match std::mem::replace(&mut slot.state, State::Taken) {
            State::Granted(lease) => Some(lease),
            _ => unreachable!("checked above"),
        }
    }

    /// The task's poll: takes the grant if it has arrived, otherwise
    /// remembers `waker` for the wake-up (cloned, and the old one dropped,
    /// outside the lock). Takes only this node's lock.
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Lease> {
        {
            let slot = sync::lock(&self.slot);
            if matches!(slot.state, State::Granted(_)) {
                drop(slot);
                return self.take_grant();
            }
            if slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                return None;
            }
        }
        let new = waker.clone();
        let old = {
            let mut slot = sync::lock(&self.slot);
            match slot.state {
                State::Waiting => slot.waker.replace(new),
                _ => Some(new),
            }
        };
        drop(old);
        self.take_grant()
    }

    /// Whether the node still waits. Called under the queue lock, where the
    /// answer cannot change.
    pub(crate) fn is_waiting(&self) -> bool {
        matches!(sync::lock(&self.slot).state, State::Waiting)
    }

    /// Hands `lease` to this waiting node; returns the waker to call once
    /// every lock is dropped. Called under the queue lock.
    pub(crate) fn grant(&self, lease: Lease) -> Option<Waker> {
        self.ticking.store(false, Ordering::Relaxed);
        let mut slot = sync::lock(&self.slot);
        debug_assert!(matches!(slot.state, State::Waiting));
        slot.state = State::Granted(lease);
        slot.waker.take()
    }

    /// Withdraws the node (its future is being dropped). Called under the
    /// queue lock; the lease and waker returned must be dropped after
    /// unlocking.
    pub(crate) fn withdraw(&self) -> (Withdrawn, Option<Waker>) {
        let mut slot = sync::lock(&self.slot);
        let waker = slot.waker.take();
        let found = match std::mem::replace(&mut slot.state, State::Cancelled) {
            State::Waiting => Withdrawn::Waiting,
            State::Granted(lease) => Withdrawn::Granted(lease),
            State::Taken | State::Cancelled => Withdrawn::Gone,
        };
        (found, waker)
    }

    /// Whether the task must poll the arena again (see `ticking`).
    pub(crate) fn is_ticking(&self) -> bool {
        self.ticking.load(Ordering::Relaxed)
    }

    /// Marks or unmarks the node as ticking; when marking, takes its waker
    /// out, to be woken after unlocking so that the task polls (and
    /// leaves a fresh waker). Called under the queue lock.
    pub(crate) fn set_ticking(&self, on: bool) -> Option<Waker> {
        if self.ticking.swap(on, Ordering::Relaxed) == on || !on {
            return None;
        }
        sync::lock(&self.slot).waker.take()
    }
}

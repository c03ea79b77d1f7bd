//! One waiting task's node: what the queue and the task share.
//!
//! # Invariants
//!
//! - `state` leaves [`State::Waiting`] only under the arena's queue lock
//!   (a grant or a cancel), so the queue's count of live waiters is exact.
//! - A [`State::Granted`] lease belongs to the task: only the task takes it
//!   out (a pickup, or a cancel that then releases it).
//! - `waker` is the task's latest waker while it waits; a grant takes it
//!   out to be called after every lock is dropped.

use std::task::Waker;

use crate::buffer::Lease;
use crate::sync::{self, Mutex};

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
    pub(crate) fn new(seq: u64, class: usize, waker: &Waker) -> Self {
        Self {
            seq,
            class,
            slot: Mutex::new(Slot {
                state: State::Waiting,
                waker: Some(waker.clone()),
            }),
        }
    }

    /// The task's poll: takes the grant if it has arrived, otherwise
    /// remembers `waker` for the wake-up. Takes only this node's lock.
    pub(crate) fn poll(&self, waker: &Waker) -> Option<Lease> {
        let mut slot = sync::lock(&self.slot);
        if let State::Granted(_) = slot.state {
            let State::Granted(lease) = std::mem::replace(&mut slot.state, State::Taken) else {
                unreachable!("checked above")
            };
            return Some(lease);
        }
        match &mut slot.waker {
            Some(w) if w.will_wake(waker) => {}
            w => *w = Some(waker.clone()),
        }
        None
    }

    /// Whether the node still waits. Called under the queue lock, where the
    /// answer cannot change.
    pub(crate) fn is_waiting(&self) -> bool {
        matches!(sync::lock(&self.slot).state, State::Waiting)
    }

    /// Hands `lease` to this waiting node; returns the waker to call once
    /// every lock is dropped. Called under the queue lock.
    pub(crate) fn grant(&self, lease: Lease) -> Option<Waker> {
        let mut slot = sync::lock(&self.slot);
        debug_assert!(matches!(slot.state, State::Waiting));
        slot.state = State::Granted(lease);
        slot.waker.take()
    }

    /// Withdraws the node (its future is being dropped). Called under the
    /// queue lock; a returned lease must be dropped after unlocking.
    pub(crate) fn withdraw(&self) -> Withdrawn {
        let mut slot = sync::lock(&self.slot);
        slot.waker = None;
        match std::mem::replace(&mut slot.state, State::Cancelled) {
            State::Waiting => Withdrawn::Waiting,
            State::Granted(lease) => Withdrawn::Granted(lease),
            State::Taken | State::Cancelled => Withdrawn::Gone,
        }
    }
}

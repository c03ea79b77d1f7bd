//! The queue of waiting tasks, in arrival order.
//!
//! One FIFO per size class (a block order; a fixed arena has one class),
//! each holding `Arc<Node>`s in arrival order, with arrival numbers that
//! increase across classes. The head of the whole queue is the earliest of
//! the classes' fronts, found in O(classes).
//!
//! A cancelled node is marked and left where it is (O(1)); it is skipped
//! when it reaches its class's front. Once cancelled entries outnumber live
//! ones (plus a small slack), every class is compacted, so the entries kept
//! stay within `2 * live + SLACK` whatever the number of cancellations, and
//! each class's buffer shrinks back when it is mostly empty.
//!
//! # Invariants
//!
//! - `live` is the number of entries whose node is `Waiting`, `dead` the
//!   number of the others still stored; both change only under the arena's
//!   queue lock, which guards this whole structure.
//! - Within a class, arrival numbers increase from front to back.

use std::collections::VecDeque;
use std::task::Waker;

use super::node::{Node, Withdrawn};
use crate::buffer::Lease;
use crate::sync::Arc;

/// A waiter to wake once every lock is dropped: its waker, and the queue's
/// reference to its node (whose last reference may go with it, and must not
/// go under a lock).
pub(crate) struct Wake {
    pub(crate) waker: Option<Waker>,
    pub(crate) _node: Option<Arc<Node>>,
}

/// What a cancel took out of a node, to be dropped once every lock is
/// dropped: a grant not picked up (its release hands it on) and a waker
/// (whose drop is user code).
#[must_use = "drop it after unlocking"]
pub(crate) struct Cancelled {
    _lease: Option<Lease>,
    _waker: Option<Waker>,
}

/// Cancelled entries tolerated beyond the live ones before compaction.
const SLACK: usize = 32;

pub(crate) struct Waiters {
    classes: Vec<VecDeque<Arc<Node>>>,
    next_seq: u64,
    live: usize,
    dead: usize,
    wait_count: u64,
}

impl Waiters {
    /// An empty queue; allocates nothing until the first task waits.
    pub(crate) const fn new() -> Self {
        Self {
            classes: Vec::new(),
            next_seq: 0,
            live: 0,
            dead: 0,
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

    /// Waits that queued (served or cancelled), since the arena was built.
    pub(crate) fn wait_count(&self) -> u64 {
        self.wait_count
    }

    /// Queues a new waiter of size class `class` at the tail; `waker` was
    /// cloned before the lock was taken.
    pub(crate) fn register(&mut self, class: usize, waker: Waker) -> Arc<Node> {
        if self.classes.len() <= class {
            self.classes.resize_with(class + 1, VecDeque::new);
        }
        let node = Arc::new(Node::new(self.next_seq, class, waker));
        self.next_seq += 1;
        self.classes[class].push_back(node.clone());
        self.live += 1;
        self.wait_count += 1;
        node
    }

    /// Drops the cancelled entries at the front of `class`.
    fn skip_dead(&mut self, class: usize) {
        let queue = &mut self.classes[class];
        while queue.front().is_some_and(|n| !n.is_waiting()) {
            queue.pop_front();
            self.dead -= 1;
        }
    }

    /// The earliest waiter of `class`, if one waits.
    pub(crate) fn front_of(&mut self, class: usize) -> Option<&Arc<Node>> {
        self.skip_dead(class);
        self.classes[class].front()
    }

    /// The size class of the earliest waiter among classes `0..=max_class`.
    pub(crate) fn first_up_to(&mut self, max_class: usize) -> Option<usize> {
        if self.live == 0 {
            return None;
        }
        let mut best: Option<(u64, usize)> = None;
        for class in 0..self.classes.len().min(max_class.saturating_add(1)) {
            if let Some(node) = self.front_of(class) {
                if best.is_none_or(|(seq, _)| node.seq < seq) {
                    best = Some((node.seq, class));
                }
            }
        }
        best.map(|(_, class)| class)
    }

    /// The head waiter: its size class and arrival number.
    pub(crate) fn head(&mut self) -> Option<(usize, u64)> {
        let class = self.first_up_to(usize::MAX)?;
        let seq = self.front_of(class).expect("found above").seq;
        Some((class, seq))
    }

    /// Gives `lease` to the earliest waiter of `class` (the caller checked
    /// there is one). The returned [`Wake`] is to be woken after unlocking.
    pub(crate) fn grant(&mut self, class: usize, lease: Lease) -> Wake {
        self.skip_dead(class);
        let node = self.classes[class]
            .pop_front()
            .expect("grant is only called for a class with a waiter");
        self.live -= 1;
        let waker = node.grant(lease);
        self.shrink(class);
        Wake {
            waker,
            _node: Some(node),
        }
    }

    /// Withdraws `node`, whose future is being dropped. The returned
    /// [`Cancelled`] (a grant not picked up, the node's waker) is to be
    /// dropped after unlocking: releasing the grant hands it on.
    pub(crate) fn cancel(&mut self, node: &Node) -> Cancelled {
        let (found, waker) = node.withdraw();
        let lease = match found {
            Withdrawn::Waiting => {
                self.live -= 1;
                self.dead += 1;
                self.skip_dead(node.class);
                if self.dead > self.live + SLACK {
                    self.compact();
                } else {
                    self.shrink(node.class);
                }
                None
            }
            Withdrawn::Granted(lease) => Some(lease),
            Withdrawn::Gone => None,
        };
        Cancelled {
            _lease: lease,
            _waker: waker,
        }
    }

    /// Removes every cancelled entry.
    fn compact(&mut self) {
        for class in 0..self.classes.len() {
            self.classes[class].retain(|n| n.is_waiting());
            self.shrink(class);
        }
        self.dead = 0;
    }

    /// Gives memory back once `class` uses a small part of its buffer.
    fn shrink(&mut self, class: usize) {
        let queue = &mut self.classes[class];
        if queue.capacity() > 4 * queue.len() + SLACK {
            queue.shrink_to(2 * queue.len() + SLACK / 2);
        }
    }

    /// Bytes of heap this queue holds now (its buffers, not the nodes the
    /// tasks own), for tests.
    #[cfg(all(test, not(arenabuf_loom)))]
    pub(crate) fn heap_entries(&self) -> usize {
        self.classes.iter().map(VecDeque::capacity).sum()
    }
}

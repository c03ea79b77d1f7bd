//! [`BuddyAllocate`]: the future of
//! [`BuddyArena::allocate_async`](super::BuddyArena::allocate_async).
//!
//! The wait queue lives under the same mutex as the free lists. While tasks
//! wait, every cache handle holds the `WAIT_MARK` marker, so releases go to
//! the mutex: they merge their block, then serve the queue. The rule:
//!
//! 1. The head waiter (the earliest) is served as soon as its block can be
//!    carved.
//! 2. While the head cannot be carved, it is *stuck*, and time after that
//!    alternates between windows. In a **reserved** window, memory
//!    released goes to the head (it merges towards the head's block), and
//!    waiters behind it are served only from its **allowance**: the bytes
//!    that were free when it got stuck, each bypass spending its block's
//!    size. In an **open** window, the earliest waiters behind it whose
//!    blocks fit are served from whatever is free. The first reserved
//!    window lasts `HEAD_WINDOW` (2 ms), each next one twice the last, up
//!    to 64 ms; open windows last 2 ms.
//! 3. A waiter that fits free memory but must wait for a reserved window
//!    to end is woken to *tick*: its task arms a timer for the moment the
//!    next open window starts (`futures-timer`: one global timer thread,
//!    no runtime needed) and looks again then (one such task at a time),
//!    so it is served then even if nothing else happens in the arena,
//!    without polling in between.
//!
//! Why: strict first-come-first-served (the earlier rule) wedges a server
//! when the head's block is pinned by memory whose owner waits *behind* the
//! head for a block that sits free (a batching consumer keeping one frame
//! per connection is enough): such a waiter now waits at most one reserved
//! window. Yet a large request is not starved by a churn of smaller ones:
//! each reserved window lets everything that holds its block only briefly
//! drain into it, and the windows grow until they outlast any such hold.
//! A synchronous [`BuddyArena::allocate`](super::BuddyArena::allocate)
//! that would need the lists answers
//! [`AllocError::ArenaFull`](crate::AllocError::ArenaFull) while tasks
//! wait, rather than take memory a waiter is owed.

use core::fmt;
use core::num::NonZeroUsize;

use crate::buffer::Buffer;
use crate::error::AllocError;
use crate::sync;

use super::BuddyArena;

/// The future of [`BuddyArena::allocate_async`].
///
/// `BuddyAllocate<'static>` (from the [`BufferSource`](crate::BufferSource)
/// impl) owns a handle instead of borrowing one.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics (one future, one
/// result); call `allocate_async()` again for another buffer.
#[cfg(feature = "async-alloc")]
#[must_use = "futures do nothing unless polled"]
pub struct BuddyAllocate<'a> {
    pub(super) arena: crate::wait::ArenaRef<'a, BuddyArena>,
    pub(super) len: NonZeroUsize,
    pub(super) state: crate::wait::WaitState,
    /// While this waiter ticks: the timer of the head's next open window.
    pub(super) tick: Option<futures_timer::Delay>,
}

#[cfg(feature = "async-alloc")]
impl BuddyAllocate<'static> {
    /// A waiting future that owns a handle, for `'static` contexts.
    pub(crate) fn owned(arena: BuddyArena, len: NonZeroUsize) -> Self {
        Self {
            arena: crate::wait::ArenaRef::Owned(arena),
            len,
            state: crate::wait::WaitState::Start,
            tick: None,
        }
    }
}

#[cfg(feature = "async-alloc")]
impl std::future::Future for BuddyAllocate<'_> {
    type Output = Result<Buffer, AllocError>;

    /// A block that can be had now is taken here, inlined into the caller
    /// like `allocate()`; queueing and picking up a grant are out of line.
    #[inline]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        if let crate::wait::WaitState::Start = this.state {
            match this.arena.allocate_with(this.len, false) {
                Err(AllocError::ArenaFull) => {}
                done => {
                    this.state = crate::wait::WaitState::Done;
                    return std::task::Poll::Ready(done);
                }
            }
        }
        this.poll_wait(cx)
    }
}

#[cfg(feature = "async-alloc")]
impl BuddyAllocate<'_> {
    /// Picks up a grant (once queued), or queues (after `allocate` found
    /// the arena full).
    #[cold]
    #[inline(never)]
    fn poll_wait(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Buffer, AllocError>> {
        use crate::wait::WaitState;
        use std::task::Poll;

        let this = self;
        this.state.check_not_done();
        let handle: &BuddyArena = &this.arena;
        let arena = handle.inner();
        if let WaitState::Queued(node) = &this.state {
            // The grant is written into our node: no arena lock needed.
            let mut lease = node.poll(cx.waker());
            if lease.is_none() && node.is_ticking() {
                // We fit memory reserved for a stuck head: look again, in
                // case its window has opened, and else sleep until it does.
                let mut lists = sync::lock(&arena.lists);
                let wake = arena.serve_waiters(handle.inner, &mut lists);
                let until_open = lists.stuck_head.and_then(|s| s.until_open());
                drop(lists);
                lease = node.take_grant();
                if lease.is_none() && node.is_ticking() {
                    arm_tick(&mut this.tick, until_open, cx);
                } else {
                    this.tick = None;
                }
                crate::wait::wake_all(wake);
            }
            return match lease {
                Some(lease) => {
                    this.state = WaitState::Done;
                    Poll::Ready(Ok(Buffer::from_lease(lease, arena.auto_spill)))
                }
                None => Poll::Pending,
            };
        }
        let k = match handle.order_for(this.len.get()) {
            Ok(k) => k,
            Err(e) => {
                this.state = WaitState::Done;
                return Poll::Ready(Err(e));
            }
        };
        // Cloned before locking: a waker's clone is user code.
        let waker = cx.waker().clone();
        let mut lists = sync::lock(&arena.lists);
        let first = lists.waiters.is_empty();
        let node = lists.waiters.register(k as usize, waker);
        this.state = WaitState::Queued(node.clone());
        if first {
            // Park nothing from now on, and move what is parked to the
            // lists, where the queue can use it.
            arena.flush(&mut lists);
        }
        let wake = arena.serve_waiters(handle.inner, &mut lists);
        drop(lists);
        let poll = match node.take_grant() {
            Some(lease) => {
                this.state = WaitState::Done;
                Poll::Ready(Ok(Buffer::from_lease(lease, arena.auto_spill)))
            }
            None => Poll::Pending,
        };
        crate::wait::wake_all(wake);
        poll
    }
}

/// Sleeps until the stuck head's next open window (`until_open` from now;
/// `None`: no clock, under loom): one wake-up then, not a poll per turn of
/// the executor.
#[cfg(feature = "async-alloc")]
fn arm_tick(
    tick: &mut Option<futures_timer::Delay>,
    until_open: Option<std::time::Duration>,
    cx: &mut std::task::Context<'_>,
) {
    use std::future::Future;

    let Some(until_open) = until_open else {
        *tick = None;
        return;
    };
    if cfg!(miri) {
        // The timer's global thread outlives a test, which miri reports;
        // under the interpreter the task polls again instead.
        cx.waker().wake_by_ref();
        return;
    }
    // A window opening within a millisecond is as good as open: sleep that
    // long rather than poll in a loop.
    let mut timer = futures_timer::Delay::new(until_open.max(std::time::Duration::from_millis(1)));
    if std::pin::Pin::new(&mut timer).poll(cx).is_ready() {
        cx.waker().wake_by_ref();
        *tick = None;
    } else {
        *tick = Some(timer);
    }
}

#[cfg(feature = "async-alloc")]
impl Drop for BuddyAllocate<'_> {
    fn drop(&mut self) {
        let crate::wait::WaitState::Queued(node) = &self.state else {
            return;
        };
        let arena = self.arena.inner();
        let mut lists = sync::lock(&arena.lists);
        let cancelled = lists.waiters.cancel(node);
        // The head may have left: serve whoever can be served now.
        let wake = arena.serve_waiters(self.arena.inner, &mut lists);
        drop(lists);
        // A grant we never picked up goes back through the release path;
        // our waker is dropped outside the lock too.
        drop(cancelled);
        crate::wait::wake_all(wake);
    }
}

#[cfg(feature = "async-alloc")]
impl fmt::Debug for BuddyAllocate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuddyAllocate")
            .field("len", &self.len)
            .field(
                "waiting",
                &matches!(self.state, crate::wait::WaitState::Queued(_)),
            )
            .finish()
    }
}

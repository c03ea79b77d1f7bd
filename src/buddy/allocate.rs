//! [`BuddyAllocate`]: the future of
//! [`BuddyArena::allocate_async`](super::BuddyArena::allocate_async).
//!
//! The wait queue lives under the same mutex as the free lists. While tasks
//! wait, every cache slot holds the `WAIT_SLOT` marker, so releases go to
//! the mutex: they merge their block, then serve the queue. The rule:
//!
//! 1. The head waiter (the earliest) is served as soon as its block can be
//!    carved.
//! 2. While the head cannot be carved, the earliest waiter behind it whose
//!    block can be carved is served, within the head's **bypass
//!    allowance**: the bytes that were free when the head got stuck. Each
//!    bypass spends its block's size; memory released after the head got
//!    stuck is never spent on others, so it accumulates for the head.
//!
//! Why both halves: strict first-come-first-served (the earlier rule)
//! wedges a server when the head's block is pinned by data whose owner
//! waits *behind* the head for a block that sits free (a batching consumer
//! keeping one small frame per connection is enough). Rule 2 serves it from
//! idle memory. Yet a large request is not starved by a churn of smaller
//! ones: they can overtake it by at most its allowance, after which every
//! release merges towards it. A synchronous [`BuddyArena::allocate`] that
//! would need the lists answers [`AllocError::ArenaFull`] while tasks wait,
//! rather than take memory a waiter is owed.
//!

use std::fmt;
use std::num::NonZeroUsize;

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
}

#[cfg(feature = "async-alloc")]
impl BuddyAllocate<'static> {
    /// A waiting future that owns a handle, for `'static` contexts.
    pub(crate) fn owned(arena: BuddyArena, len: NonZeroUsize) -> Self {
        Self {
            arena: crate::wait::ArenaRef::Owned(arena),
            len,
            state: crate::wait::WaitState::Start,
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
            match this.arena.allocate(this.len) {
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
            return match node.poll(cx.waker()) {
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
        let mut lists = sync::lock(&arena.lists);
        let first = lists.waiters.is_empty();
        let node = lists.waiters.register(k as usize, cx.waker());
        if first {
            // Park nothing from now on, and move what is parked to the
            // lists, where the queue can use it.
            arena.flush(&mut lists);
        }
        let wake = arena.serve_waiters(handle.inner, &mut lists);
        drop(lists);
        let poll = match node.poll(cx.waker()) {
            Some(lease) => {
                this.state = WaitState::Done;
                Poll::Ready(Ok(Buffer::from_lease(lease, arena.auto_spill)))
            }
            None => {
                this.state = WaitState::Queued(node);
                Poll::Pending
            }
        };
        crate::wait::wake_all(wake);
        poll
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
        // A grant we never picked up goes back through the release path.
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

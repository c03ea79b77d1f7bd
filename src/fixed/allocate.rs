//! [`FixedAllocate`]: the future of
//! [`FixedArena::allocate_async`](super::FixedArena::allocate_async).
//!
//! Invariants: a future holds at most one ticket; a grant it has not picked
//! up is released (handed on) when it is dropped; its fast path is the same
//! claim as `allocate()`.

use core::fmt;

use crate::buffer::Buffer;
use crate::sync;

use super::FixedArena;

/// The future of [`FixedArena::allocate_async`].
///
/// `FixedAllocate<'static>` (from the [`BufferSource`](crate::BufferSource)
/// impl) owns a handle instead of borrowing one.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics (one future, one
/// buffer); call `allocate_async()` again for another.
#[cfg(feature = "async-alloc")]
#[must_use = "futures do nothing unless polled"]
pub struct FixedAllocate<'a> {
    pub(super) arena: crate::wait::ArenaRef<'a, FixedArena>,
    pub(super) state: crate::wait::WaitState,
}

#[cfg(feature = "async-alloc")]
impl FixedAllocate<'static> {
    /// A waiting future that owns a handle, for `'static` contexts.
    pub(crate) fn owned(arena: FixedArena) -> Self {
        Self {
            arena: crate::wait::ArenaRef::Owned(arena),
            state: crate::wait::WaitState::Start,
        }
    }
}

#[cfg(feature = "async-alloc")]
impl std::future::Future for FixedAllocate<'_> {
    type Output = Buffer;

    /// A free slot is claimed here, inlined into the caller like
    /// `allocate()`; queueing and picking up a grant are out of line.
    #[inline]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Buffer> {
        let this = &mut *self;
        if let crate::wait::WaitState::Start = this.state {
            let handle: &FixedArena = &this.arena;
            let arena = handle.inner();
            if arena.has_waiters() {
                // Queue behind them without searching a full bitmap.
                return this.poll_wait(cx);
            }
            if let Some(buffer) = arena.claim(handle.inner) {
                this.state = crate::wait::WaitState::Done;
                return std::task::Poll::Ready(buffer);
            }
        }
        this.poll_wait(cx)
    }
}

#[cfg(feature = "async-alloc")]
impl FixedAllocate<'_> {
    /// Picks up a grant (once queued), or queues (after a failed claim).
    #[cold]
    #[inline(never)]
    fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Buffer> {
        use crate::wait::WaitState;
        use std::task::Poll;

        let this = self;
        this.state.check_not_done();
        let handle: &FixedArena = &this.arena;
        let arena = handle.inner();
        if let WaitState::Queued(node) = &this.state {
            // The grant is written into our node: no arena lock needed.
            return match node.poll(cx.waker()) {
                Some(lease) => {
                    this.state = WaitState::Done;
                    Poll::Ready(Buffer::from_lease(lease, arena.auto_spill))
                }
                None => Poll::Pending,
            };
        }
        // Cloned before locking: a waker's clone is user code.
        let waker = cx.waker().clone();
        let mut queue = sync::lock(&arena.waiters);
        let first = queue.is_empty();
        let node = queue.register(0, waker);
        this.state = WaitState::Queued(node.clone());
        // The first waiter sets WAITERS and marks the caches, then serves
        // the queue from what they held and what is free: a slot released
        // before the flag was set is found here. While the flag is set
        // every release hands over, so no slot can come free behind a
        // later waiter's back: it need not search.
        let wake = if first {
            arena.start_waiting(handle.inner, &mut queue)
        } else {
            Vec::new()
        };
        drop(queue);
        let poll = match node.take_grant() {
            Some(lease) => {
                this.state = WaitState::Done;
                Poll::Ready(Buffer::from_lease(lease, arena.auto_spill))
            }
            None => Poll::Pending,
        };
        crate::wait::wake_all(wake);
        poll
    }
}

#[cfg(feature = "async-alloc")]
impl Drop for FixedAllocate<'_> {
    fn drop(&mut self) {
        let crate::wait::WaitState::Queued(node) = &self.state else {
            return;
        };
        let arena = self.arena.inner();
        let mut queue = sync::lock(&arena.waiters);
        let cancelled = queue.cancel(node);
        arena.stop_waiting_if_empty(&queue);
        drop(queue);
        // A grant we never picked up: releasing it hands it to the next
        // waiter, or back to the arena (outside the lock, as is dropping
        // our waker).
        drop(cancelled);
    }
}

#[cfg(feature = "async-alloc")]
impl fmt::Debug for FixedAllocate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedAllocate")
            .field(
                "waiting",
                &matches!(self.state, crate::wait::WaitState::Queued(_)),
            )
            .finish()
    }
}

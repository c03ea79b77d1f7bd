//! Where copied frames live: [`CopyBudget`], a capped, metered heap store
//! for frames whose source would round them up to far more than their size
//! (a `FixedArena` slot for a 100-byte frame).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A cap on the heap memory that [`Frames`](super::Frames) readers copy
/// frames into, and a gauge of what is in use (feature `io`).
///
/// A reader in its default (compact) mode copies each frame that is small
/// against its chunk out of the chunk as it is cut, so that a frame the
/// application keeps costs about its own size. Where the reader's source
/// would round such a copy up to much more than its size (a slot of a
/// [`FixedArena`](crate::FixedArena)), the copy goes to the heap instead,
/// in exactly its size, counted here: a copy takes `len` bytes of the
/// budget until its last `Bytes` drops. When the budget is spent the reader
/// waits (without reading its socket) until held copies are dropped, as it
/// waits for arena memory. Copies that fit a source tightly (a
/// [`BuddyArena`](crate::BuddyArena) block) live in the source and count
/// against the arena's own cap instead.
///
/// Share one budget among all the readers of a server (it is a cheap
/// `Clone` handle) so that the heap they may use together is one number;
/// without one, each reader makes its own (see
/// [`FramesBuilder::copy_budget`](super::FramesBuilder::copy_budget)).
///
/// ```
/// use arenabuf::io::CopyBudget;
///
/// let budget = CopyBudget::new(4096);
/// let copy = budget.try_copy(b"a frame kept for later").unwrap();
/// assert_eq!(budget.in_use(), 22);
/// drop(copy);
/// assert_eq!(budget.in_use(), 0);
/// ```
#[derive(Clone)]
pub struct CopyBudget {
    sem: Arc<Semaphore>,
    capacity: usize,
}

/// The waiting side of a budget: resolves with a permit for the bytes.
pub(crate) type BudgetWait = Pin<
    Box<
        dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>>
            + Send
            + 'static,
    >,
>;

/// The owner of a heap copy: its bytes and its share of the budget.
struct HeapCopy {
    data: Box<[u8]>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for HeapCopy {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl CopyBudget {
    /// A budget of `bytes` bytes (at most `u32::MAX`, the largest single
    /// copy is `u32::MAX` bytes too).
    pub fn new(bytes: usize) -> Self {
        let capacity = bytes.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Self {
            sem: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// The budget's size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of copies alive now (a snapshot).
    pub fn in_use(&self) -> usize {
        self.capacity - self.sem.available_permits()
    }

    /// Copies `data` into heap memory of exactly its size, counted against
    /// the budget until its last `Bytes` drops; `None` when the budget has
    /// no room for it now.
    pub fn try_copy(&self, data: &[u8]) -> Option<Bytes> {
        if data.is_empty() {
            return Some(Bytes::new());
        }
        let n = u32::try_from(data.len()).ok()?;
        let permit = self.sem.clone().try_acquire_many_owned(n).ok()?;
        Some(copy_with(data, permit))
    }

    /// Whether a copy of `len` bytes could ever fit.
    pub(crate) fn fits(&self, len: usize) -> bool {
        len <= self.capacity
    }

    /// Waits for room for `len` bytes (which must [`fit`](Self::fits)).
    pub(crate) fn wait(&self, len: usize) -> BudgetWait {
        let n = u32::try_from(len).expect("fits() was checked");
        Box::pin(self.sem.clone().acquire_many_owned(n))
    }
}

/// The copy of `data`, holding `permit` until its last `Bytes` drops.
pub(crate) fn copy_with(data: &[u8], permit: OwnedSemaphorePermit) -> Bytes {
    Bytes::from_owner(HeapCopy {
        data: data.into(),
        _permit: permit,
    })
}

/// Polls a budget wait; the budget's semaphore is never closed.
pub(crate) fn poll_budget(
    wait: &mut BudgetWait,
    cx: &mut Context<'_>,
) -> Poll<OwnedSemaphorePermit> {
    wait.as_mut()
        .poll(cx)
        .map(|r| r.expect("a CopyBudget's semaphore is never closed"))
}

impl fmt::Debug for CopyBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyBudget")
            .field("capacity", &self.capacity)
            .field("in_use", &self.in_use())
            .finish()
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests {
    use super::*;

    #[test]
    fn copies_count_until_the_last_clone_drops() {
        let budget = CopyBudget::new(10);
        let a = budget.try_copy(b"hello").unwrap();
        let b = a.slice(1..3);
        assert_eq!(budget.in_use(), 5);
        assert!(budget.try_copy(b"123456").is_none());
        drop(a);
        assert_eq!(budget.in_use(), 5);
        assert_eq!(b, "el");
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(budget.try_copy(b"").unwrap().len(), 0);
    }
}

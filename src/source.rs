//! [`BufferSource`]: where the I/O adapters get their buffers.
//!
//! The codecs, the `AsyncRead` adapter and the tower layer are generic over
//! it, so each connection class can use a [`FixedArena`], a [`BuddyArena`],
//! or a type of your own (say, one that picks an arena by size).

use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::trace::WaitTimer;
use crate::{
    AllocError, ArenaMetrics, BuddyAllocate, BuddyArena, BuddyMetrics, Buffer, FixedAllocate,
    FixedArena, FixedMetrics,
};

/// Hands out [`Buffer`]s of at least a given length, now or by waiting.
///
/// Implemented by [`FixedArena`] (any length up to its slot capacity) and
/// [`BuddyArena`] (any length up to its total size). Implement it for your
/// own type to route requests between arenas; the adapters only need these
/// three methods.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{BufferSource, FixedArena};
///
/// let arena = FixedArena::builder(NonZeroUsize::new(4).unwrap(), NonZeroUsize::new(1024).unwrap())
///     .build()?;
/// fn frame_buffer<S: BufferSource>(source: &S, len: usize) -> Option<arenabuf::Buffer> {
///     source.try_allocate(NonZeroUsize::new(len)?).ok()
/// }
/// assert_eq!(frame_buffer(&arena, 100).unwrap().capacity(), 1024);
/// assert!(frame_buffer(&arena, 4096).is_none()); // RequestTooLarge: never fits a slot
/// assert_eq!(arena.max_len(), 1024);
///
/// // Metrics, generic over the source: the fields every arena has.
/// fn in_use<S: BufferSource>(source: &S) -> usize {
///     source.arena_metrics().live_bytes
/// }
/// let held = arena.allocate()?;
/// assert_eq!(in_use(&arena), 1024);
/// # drop(held);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait BufferSource: Clone + Send + Sync + 'static {
    /// The future of [`allocate_wait`](BufferSource::allocate_wait).
    type Wait: Future<Output = Result<Buffer, AllocError>> + Send + Unpin + 'static;

    /// The source's own metrics snapshot ([`FixedMetrics`],
    /// [`BuddyMetrics`], or a type of yours), which converts into the
    /// common view, [`ArenaMetrics`].
    type Metrics: Into<ArenaMetrics> + std::fmt::Debug + Clone + Send + 'static;

    /// A snapshot of the source's metrics: for a [`FixedArena`] or
    /// [`BuddyArena`], the same as its inherent `metrics()`, with every
    /// field of [`FixedMetrics`] or [`BuddyMetrics`].
    fn metrics(&self) -> Self::Metrics;

    /// The common view of [`metrics`](BufferSource::metrics): the fields
    /// every arena has, for code generic over the source (a status line,
    /// [`write_prometheus`](crate::write_prometheus)).
    fn arena_metrics(&self) -> ArenaMetrics {
        self.metrics().into()
    }

    /// The longest buffer this source can ever hand out. Requests above it
    /// fail with [`AllocError::RequestTooLarge`], now and forever.
    fn max_len(&self) -> usize;

    /// A buffer of at least `len` bytes, now.
    ///
    /// # Errors
    ///
    /// [`AllocError::ArenaFull`] when none is free now;
    /// [`AllocError::RequestTooLarge`] when `len > max_len()`.
    fn try_allocate(&self, len: NonZeroUsize) -> Result<Buffer, AllocError>;

    /// Waits for a buffer of at least `len` bytes. Resolves at once with
    /// [`AllocError::RequestTooLarge`] if it can never fit; otherwise waits
    /// (fairly, and cancellation-safe) until it can be served.
    fn allocate_wait(&self, len: NonZeroUsize) -> Self::Wait;

    /// The most memory this source hands out in all, in bytes (an arena's
    /// size); the default says [`max_len`](Self::max_len). Readers size
    /// their default copy budget by it.
    fn capacity(&self) -> usize {
        self.max_len()
    }

    /// How many bytes a request of `len` bytes takes from this source (the
    /// buffer's capacity): a whole slot on a [`FixedArena`], the block's
    /// power of two on a [`BuddyArena`]. Readers use it to decide where a
    /// frame they copy is cheapest to keep; the default says `len`.
    fn allocation_size(&self, len: NonZeroUsize) -> usize {
        len.get()
    }

    /// Notes that a caller fell back to heap memory because this source was
    /// full (for its metrics); does nothing by default.
    fn note_spill(&self) {}
}

impl BufferSource for FixedArena {
    type Wait = FixedWait;
    type Metrics = FixedMetrics;

    fn metrics(&self) -> FixedMetrics {
        FixedArena::metrics(self)
    }

    fn max_len(&self) -> usize {
        self.slot_capacity()
    }

    fn try_allocate(&self, len: NonZeroUsize) -> Result<Buffer, AllocError> {
        self.check_len(len.get())?;
        self.allocate()
    }

    fn allocate_wait(&self, len: NonZeroUsize) -> FixedWait {
        FixedWait {
            wait: match self.check_len(len.get()) {
                Ok(()) => Ok(FixedAllocate::owned(self.clone())),
                Err(e) => Err(Some(e)),
            },
            timer: WaitTimer::new("fixed", len.get()),
        }
    }

    fn capacity(&self) -> usize {
        self.slot_count().saturating_mul(self.slot_capacity())
    }

    fn allocation_size(&self, _len: NonZeroUsize) -> usize {
        self.slot_capacity()
    }

    fn note_spill(&self) {
        self.count_spill();
    }
}

/// The [`BufferSource::Wait`] future of a [`FixedArena`]: its
/// [`allocate_async`](FixedArena::allocate_async), after a length check.
/// With the `tracing` feature, a wait that lasts past the threshold is
/// reported when it ends (see `set_slow_wait_threshold`).
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct FixedWait {
    wait: Result<FixedAllocate<'static>, Option<AllocError>>,
    timer: WaitTimer,
}

impl Future for FixedWait {
    type Output = Result<Buffer, AllocError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match &mut this.wait {
            Ok(wait) => match Pin::new(wait).poll(cx) {
                Poll::Ready(buf) => {
                    this.timer.done("served");
                    Poll::Ready(Ok(buf))
                }
                Poll::Pending => {
                    this.timer.pending(cx);
                    Poll::Pending
                }
            },
            Err(e) => match e.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => crate::wait::polled_after_completion(),
            },
        }
    }
}

impl BufferSource for BuddyArena {
    type Wait = BuddyWait;
    type Metrics = BuddyMetrics;

    fn metrics(&self) -> BuddyMetrics {
        BuddyArena::metrics(self)
    }

    fn max_len(&self) -> usize {
        self.total_size()
    }

    fn try_allocate(&self, len: NonZeroUsize) -> Result<Buffer, AllocError> {
        self.allocate(len)
    }

    fn allocate_wait(&self, len: NonZeroUsize) -> BuddyWait {
        BuddyWait {
            wait: BuddyAllocate::owned(self.clone(), len),
            timer: WaitTimer::new("buddy", len.get()),
        }
    }

    fn capacity(&self) -> usize {
        self.total_size()
    }

    fn allocation_size(&self, len: NonZeroUsize) -> usize {
        len.get()
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .max(self.min_block_size())
    }

    fn note_spill(&self) {
        self.count_spill();
    }
}

/// The [`BufferSource::Wait`] future of a [`BuddyArena`]: its
/// [`allocate_async`](BuddyArena::allocate_async). With the `tracing`
/// feature, a wait that lasts past the threshold is reported when it ends
/// (see `set_slow_wait_threshold`).
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct BuddyWait {
    wait: BuddyAllocate<'static>,
    timer: WaitTimer,
}

impl Future for BuddyWait {
    type Output = Result<Buffer, AllocError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.wait).poll(cx) {
            Poll::Ready(result) => {
                this.timer
                    .done(if result.is_ok() { "served" } else { "failed" });
                Poll::Ready(result)
            }
            Poll::Pending => {
                this.timer.pending(cx);
                Poll::Pending
            }
        }
    }
}

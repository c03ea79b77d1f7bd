//! Events for operators' logs (feature `tracing`), so that backpressure shows
//! where they look.
//!
//! With the feature, the crate emits [`tracing`](https://docs.rs/tracing)
//! events with target `arenabuf`:
//!
//! | level | message | when | fields |
//! |---|---|---|---|
//! | `WARN` | `arena full` | an allocation fails with `ArenaFull` and the arena had not reported full since its last successful `allocate()` (edge-triggered: one event per episode, not one per failure) | `arena` (`"fixed"`/`"buddy"`), `reserved_bytes`, `alloc_failure_count` |
//! | `WARN` | `slow wait for arena memory` | a wait through [`BufferSource::allocate_wait`](crate::BufferSource::allocate_wait) (what the codecs, `ArenaReader` and the tower layer use) that lasted at least the threshold ends, served or cancelled | `arena`, `len` (bytes asked for), `waited_ms`, `outcome` (`"served"`, `"failed"` or `"cancelled"`) |
//! | `WARN` | `still waiting for arena memory` | a wait through `allocate_wait` has lasted the threshold and is not served yet (once per wait; a timer wakes the task then, so a wait that never ends is reported too) | `arena`, `len`, `waited_ms` |
//!
//! The threshold is 1 s; [`set_slow_wait_threshold`] changes it.
//!
//! Without the feature every macro here expands to nothing: the field
//! expressions are type-checked but never evaluated, and the helper types
//! are zero-sized. Crate code calls [`event!`](crate::trace::event) with a
//! level, a message and `name = value` fields:
//!
//! ```text
//! crate::trace::event!(warn, "arena full", arena = "fixed", reserved_bytes = n);
//! ```

#[cfg(feature = "tracing")]
use std::sync::atomic::AtomicBool;
#[cfg(feature = "tracing")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "tracing")]
use std::time::{Duration, Instant};

/// A `tracing` event with target `arenabuf` (feature `tracing`):
/// `event!(warn, "message", field = value, ...)`, the level being one of
/// `trace`, `debug`, `info`, `warn`, `error`, and each value a
/// `tracing::Value` (integers, `bool`, `&str`, `f64`). Without the feature
/// it expands to nothing.
#[allow(unused_macros)] // a shim for every module; not all feature sets call it
macro_rules! event {
    ($level:ident, $msg:literal $(, $k:ident = $v:expr)* $(,)?) => {{
        #[cfg(feature = "tracing")]
        {
            ::tracing::$level!(target: "arenabuf", $($k = $v,)* $msg);
        }
        #[cfg(not(feature = "tracing"))]
        {
            if false {
                $(let _ = &$v;)*
            }
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use event;

/// Edge detection for the `arena full` event: set by the first failure,
/// cleared by the next success. Zero-sized without the feature; with it, on
/// a cache line of its own, so the load every successful `allocate()` makes
/// does not share a line with the failure and spill counters.
#[derive(Debug, Default)]
#[cfg_attr(feature = "tracing", repr(align(64)))]
pub(crate) struct FullEdge {
    #[cfg(feature = "tracing")]
    reported: AtomicBool,
}

impl FullEdge {
    /// Called on every `ArenaFull`: emits the event when this is the first
    /// failure since the last success.
    #[inline]
    pub(crate) fn failed(&self, arena: &'static str, reserved_bytes: usize, failures: u64) {
        #[cfg(feature = "tracing")]
        if !self.reported.swap(true, Ordering::Relaxed) {
            event!(
                warn,
                "arena full",
                arena = arena,
                reserved_bytes = reserved_bytes,
                alloc_failure_count = failures,
            );
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (arena, reserved_bytes, failures);
    }

    /// Called on every successful `allocate()`: re-arms the event. With the
    /// feature, one relaxed load of a flag written only at the edges.
    #[inline]
    pub(crate) fn succeeded(&self) {
        #[cfg(feature = "tracing")]
        if self.reported.load(Ordering::Relaxed) {
            self.reported.store(false, Ordering::Relaxed);
        }
    }
}

/// Nanoseconds a wait must last to be reported (default 1 s).
#[cfg(feature = "tracing")]
static SLOW_WAIT_NANOS: AtomicU64 = AtomicU64::new(1_000_000_000);

/// Sets how long a wait for arena memory must last before its end is
/// reported as a `slow wait for arena memory` event (feature `tracing`;
/// default 1 s). Applies to every arena in the process, from the next wait
/// that ends. `Duration::ZERO` reports every wait that was not served at
/// once; `Duration::MAX` reports none.
///
/// ```
/// arenabuf::set_slow_wait_threshold(std::time::Duration::from_millis(250));
/// ```
#[cfg(feature = "tracing")]
pub fn set_slow_wait_threshold(threshold: Duration) {
    let nanos = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
    SLOW_WAIT_NANOS.store(nanos, Ordering::Relaxed);
}

/// Times one wait for memory, for the `slow wait` event: started by the
/// first `Pending`, reported when the wait ends (or is dropped) if it lasted
/// at least the threshold. Zero-sized and free without the feature.
#[derive(Debug)]
#[cfg_attr(not(feature = "async-alloc"), allow(dead_code))]
pub(crate) struct WaitTimer {
    #[cfg(feature = "tracing")]
    since: Option<Instant>,
    #[cfg(feature = "tracing")]
    arena: &'static str,
    #[cfg(feature = "tracing")]
    len: usize,
    /// Until the wait has lasted the threshold: the timer that wakes the
    /// task then, to report a wait that is still not served.
    #[cfg(all(feature = "tracing", feature = "async-alloc"))]
    alarm: Option<futures_timer::Delay>,
    /// Whether the `still waiting` event was emitted.
    #[cfg(feature = "tracing")]
    reported: bool,
}

#[cfg_attr(not(feature = "async-alloc"), allow(dead_code))]
impl WaitTimer {
    #[inline]
    pub(crate) fn new(arena: &'static str, len: usize) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = (arena, len);
        Self {
            #[cfg(feature = "tracing")]
            since: None,
            #[cfg(feature = "tracing")]
            arena,
            #[cfg(feature = "tracing")]
            len,
            #[cfg(all(feature = "tracing", feature = "async-alloc"))]
            alarm: None,
            #[cfg(feature = "tracing")]
            reported: false,
        }
    }

    /// The wait was polled (with `cx`) and is not served yet. The first
    /// time, starts the clock and a timer for the threshold; once the wait
    /// has lasted that long, reports that it still waits.
    #[inline]
    #[cfg(feature = "async-alloc")]
    pub(crate) fn pending(&mut self, cx: &mut core::task::Context<'_>) {
        #[cfg(feature = "tracing")]
        self.pending_traced(cx);
        #[cfg(not(feature = "tracing"))]
        let _ = cx;
    }

    #[cfg(all(feature = "tracing", feature = "async-alloc"))]
    fn pending_traced(&mut self, cx: &mut core::task::Context<'_>) {
        use std::future::Future;

        let threshold = Duration::from_nanos(SLOW_WAIT_NANOS.load(Ordering::Relaxed));
        let Some(since) = self.since else {
            self.since = Some(Instant::now());
            if threshold != Duration::MAX && !cfg!(miri) {
                // One wake-up at the threshold (a global timer thread; not
                // under miri, where that thread would outlive a test).
                let mut alarm = futures_timer::Delay::new(threshold);
                if std::pin::Pin::new(&mut alarm).poll(cx).is_pending() {
                    self.alarm = Some(alarm);
                }
            }
            return;
        };
        if let Some(alarm) = &mut self.alarm {
            if std::pin::Pin::new(alarm).poll(cx).is_ready() {
                self.alarm = None;
            }
        }
        let waited = since.elapsed();
        if !self.reported && waited >= threshold {
            self.reported = true;
            event!(
                warn,
                "still waiting for arena memory",
                arena = self.arena,
                len = self.len,
                waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            );
        }
    }

    /// The wait ended with `outcome` (`"served"`, `"failed"`).
    #[inline]
    pub(crate) fn done(&mut self, outcome: &'static str) {
        #[cfg(feature = "tracing")]
        if let Some(since) = self.since.take() {
            let waited = since.elapsed();
            let threshold = Duration::from_nanos(SLOW_WAIT_NANOS.load(Ordering::Relaxed));
            if waited >= threshold {
                event!(
                    warn,
                    "slow wait for arena memory",
                    arena = self.arena,
                    len = self.len,
                    waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    outcome = outcome,
                );
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = outcome;
    }
}

#[cfg(feature = "tracing")]
impl Drop for WaitTimer {
    fn drop(&mut self) {
        // Still timing: the future was dropped before it was served.
        self.done("cancelled");
    }
}

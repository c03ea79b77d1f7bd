//! Metrics snapshots, their Prometheus text rendering, and the sharded
//! counter that keeps counting off the shared cache lines of the hot path.

use core::fmt;

use crate::sync::{AtomicU64, Ordering};

/// A snapshot of a [`FixedArena`](crate::FixedArena)'s counters.
///
/// Taken without stopping the arena: while other threads allocate and
/// release, the fields are each accurate but may be a few operations apart
/// from one another. When the arena is quiet they balance exactly:
/// `alloc_count` = releases + live slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FixedMetrics {
    /// Successful allocations since the arena was built: slots and blocks
    /// handed out, including one handed to a waiting task whose future was
    /// dropped before it picked the buffer up (that one goes straight on to
    /// the next waiter or back to the arena, and counts as released too).
    pub alloc_count: u64,
    /// Synchronous allocations answered [`AllocError::ArenaFull`](crate::AllocError::ArenaFull)
    /// (`allocate()`, `BufferSource::try_allocate`; the I/O layers try
    /// that first, then wait). An `allocate_async()` that waits is not a
    /// failure: `wait_count` counts it.
    pub alloc_failure_count: u64,
    /// Buffers that outgrew their slot and moved to the heap (`auto_spill`).
    pub spill_count: u64,
    /// Slots in use now (by a `Buffer` or a frozen `Bytes`).
    pub live_slots: usize,
    /// Arena bytes in use now: `live_slots * slot_capacity`.
    pub live_bytes: usize,
    /// Total arena bytes: `slot_count * slot_capacity`.
    pub reserved_bytes: usize,
    /// Tasks waiting in `allocate_async` now (feature `async-alloc`).
    pub waiting_tasks: usize,
    /// Waits that queued for capacity (feature `async-alloc`), whether they
    /// were served or cancelled (a dropped future, a timeout) since.
    pub wait_count: u64,
}

/// A snapshot of a [`BuddyArena`](crate::BuddyArena)'s counters.
///
/// Same consistency rules as [`FixedMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BuddyMetrics {
    /// Successful allocations since the arena was built: slots and blocks
    /// handed out, including one handed to a waiting task whose future was
    /// dropped before it picked the buffer up (that one goes straight on to
    /// the next waiter or back to the arena, and counts as released too).
    pub alloc_count: u64,
    /// Synchronous allocations answered [`AllocError::ArenaFull`](crate::AllocError::ArenaFull)
    /// (`allocate()`, `BufferSource::try_allocate`; the I/O layers try
    /// that first, then wait). An `allocate_async()` that waits is not a
    /// failure: `wait_count` counts it.
    pub alloc_failure_count: u64,
    /// Buffers that outgrew their block and moved to the heap (`auto_spill`).
    pub spill_count: u64,
    /// Arena bytes in use now (block sizes, after rounding up).
    pub live_bytes: usize,
    /// Total arena bytes (`total_size`).
    pub reserved_bytes: usize,
    /// Times a larger free block was split in two to serve a smaller request.
    pub split_count: u64,
    /// Times two free buddies were merged into their parent block.
    pub coalesce_count: u64,
    /// The largest block that can be allocated now (0 when full).
    pub largest_free_block: usize,
    /// Tasks waiting in `allocate_async` now (feature `async-alloc`).
    pub waiting_tasks: usize,
    /// Waits that queued for capacity (feature `async-alloc`), whether they
    /// were served or cancelled (a dropped future, a timeout) since.
    pub wait_count: u64,
}

/// The metrics every arena has: the fields [`FixedMetrics`] and
/// [`BuddyMetrics`] share, for code generic over the arena (a
/// `BufferSource`'s `metrics()` (feature `async-alloc`) converts into it)
/// and for export ([`write_prometheus`]).
///
/// Built with `From` from either snapshot; the arena-specific fields
/// (`live_slots`, `largest_free_block`, split and coalesce counts) stay on
/// those.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{ArenaMetrics, BuddyArena, FixedArena};
///
/// let nz = |n| NonZeroUsize::new(n).unwrap();
/// let fixed = FixedArena::builder(nz(4), nz(1024)).build()?;
/// let buddy = BuddyArena::builder(nz(4096), nz(256)).build()?;
/// let _held = (fixed.allocate()?, buddy.allocate(nz(1000))?);
/// let both: [ArenaMetrics; 2] = [fixed.metrics().into(), buddy.metrics().into()];
/// assert_eq!(both.map(|m| m.live_bytes), [1024, 1024]);
/// assert_eq!(both.map(|m| m.reserved_bytes), [4096, 4096]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ArenaMetrics {
    /// Successful allocations since the arena was built (see
    /// [`FixedMetrics::alloc_count`]).
    pub alloc_count: u64,
    /// Synchronous allocations answered [`AllocError::ArenaFull`](crate::AllocError::ArenaFull)
    /// (`allocate()`, `BufferSource::try_allocate`; the I/O layers try
    /// that first, then wait). An `allocate_async()` that waits is not a
    /// failure: `wait_count` counts it.
    pub alloc_failure_count: u64,
    /// Buffers that outgrew their arena memory and moved to the heap, and
    /// heap fallbacks noted through `BufferSource::note_spill`.
    pub spill_count: u64,
    /// Arena bytes in use now.
    pub live_bytes: usize,
    /// Total arena bytes (the cap).
    pub reserved_bytes: usize,
    /// Tasks waiting for memory now (feature `async-alloc`; 0 without).
    pub waiting_tasks: usize,
    /// Waits that queued for memory, served or cancelled since (feature
    /// `async-alloc`; 0 without).
    pub wait_count: u64,
}

impl From<FixedMetrics> for ArenaMetrics {
    fn from(m: FixedMetrics) -> Self {
        Self {
            alloc_count: m.alloc_count,
            alloc_failure_count: m.alloc_failure_count,
            spill_count: m.spill_count,
            live_bytes: m.live_bytes,
            reserved_bytes: m.reserved_bytes,
            waiting_tasks: m.waiting_tasks,
            wait_count: m.wait_count,
        }
    }
}

impl From<BuddyMetrics> for ArenaMetrics {
    fn from(m: BuddyMetrics) -> Self {
        Self {
            alloc_count: m.alloc_count,
            alloc_failure_count: m.alloc_failure_count,
            spill_count: m.spill_count,
            live_bytes: m.live_bytes,
            reserved_bytes: m.reserved_bytes,
            waiting_tasks: m.waiting_tasks,
            wait_count: m.wait_count,
        }
    }
}

/// Each exported metric: name, type, help text, and its value.
#[allow(clippy::type_complexity)]
const FAMILIES: [(&str, &str, &str, fn(&ArenaMetrics) -> u64); 7] = [
    (
        "arenabuf_live_bytes",
        "gauge",
        "Arena bytes in use now.",
        |m| m.live_bytes as u64,
    ),
    (
        "arenabuf_reserved_bytes",
        "gauge",
        "Total arena bytes (the cap).",
        |m| m.reserved_bytes as u64,
    ),
    (
        "arenabuf_waiting_tasks",
        "gauge",
        "Tasks waiting for arena memory now.",
        |m| m.waiting_tasks as u64,
    ),
    (
        "arenabuf_allocations_total",
        "counter",
        "Successful allocations since the arena was built.",
        |m| m.alloc_count,
    ),
    (
        "arenabuf_allocation_failures_total",
        "counter",
        "Allocations that failed because the arena was full.",
        |m| m.alloc_failure_count,
    ),
    (
        "arenabuf_spills_total",
        "counter",
        "Buffers that moved to, or fell back on, the heap.",
        |m| m.spill_count,
    ),
    (
        "arenabuf_waits_total",
        "counter",
        "Waits that queued for arena memory (served or cancelled).",
        |m| m.wait_count,
    ),
];

/// Writes `arenas`' metrics in the Prometheus text exposition format
/// (version 0.0.4, what a `/metrics` endpoint serves with
/// `Content-Type: text/plain; version=0.0.4`), one sample per arena per
/// metric, labelled `arena="<name>"`.
///
/// The metrics, all of [`ArenaMetrics`]: gauges `arenabuf_live_bytes`,
/// `arenabuf_reserved_bytes` (bytes) and `arenabuf_waiting_tasks`; counters
/// `arenabuf_allocations_total`, `arenabuf_allocation_failures_total`,
/// `arenabuf_spills_total` and `arenabuf_waits_total`. Each family has its
/// `# HELP` and `# TYPE` line once, however many arenas. Names are escaped as
/// the format requires (`\`, `"`, newline); give each arena a distinct
/// name. Rendering takes no lock and allocates nothing of its own; take the
/// snapshots at scrape time, not per request.
///
/// # Errors
///
/// Only `out`'s own (writing to a `String` never fails).
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{FixedArena, write_prometheus};
///
/// let nz = |n| NonZeroUsize::new(n).unwrap();
/// let arena = FixedArena::builder(nz(4), nz(1024)).build()?;
/// let _held = arena.allocate()?;
/// let mut text = String::new();
/// write_prometheus(&mut text, &[("frames", arena.metrics().into())])?;
/// assert!(text.contains("# TYPE arenabuf_live_bytes gauge\n"));
/// assert!(text.contains("arenabuf_live_bytes{arena=\"frames\"} 1024\n"));
/// assert!(text.contains("arenabuf_allocations_total{arena=\"frames\"} 1\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_prometheus<W: fmt::Write + ?Sized>(
    out: &mut W,
    arenas: &[(&str, ArenaMetrics)],
) -> fmt::Result {
    for (name, kind, help, value) in FAMILIES {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} {kind}")?;
        for (arena, m) in arenas {
            write!(out, "{name}{{arena=\"")?;
            for c in arena.chars() {
                match c {
                    '\\' => out.write_str("\\\\")?,
                    '"' => out.write_str("\\\"")?,
                    '\n' => out.write_str("\\n")?,
                    c => out.write_char(c)?,
                }
            }
            writeln!(out, "\"}} {}", value(m))?;
        }
    }
    Ok(())
}

const SHARDS: usize = 16;

#[repr(align(64))]
struct Shard(AtomicU64);

/// A counter split over cache-line-sized shards: each thread adds to the
/// shard its thread index picks, so threads on different cores do not contend
/// on one line. Reading sums the shards.
pub(crate) struct ShardedCounter {
    shards: [Shard; SHARDS],
}

impl ShardedCounter {
    pub(crate) fn new() -> Self {
        Self {
            shards: core::array::from_fn(|_| Shard(AtomicU64::new(0))),
        }
    }

    #[inline]
    pub(crate) fn add(&self, hint: usize) {
        self.shards[hint % SHARDS].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` (wrapping: `n.wrapping_neg()` subtracts; the sum wraps too).
    pub(crate) fn add_n(&self, hint: usize, n: u64) {
        self.shards[hint % SHARDS].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests {
    use super::{ArenaMetrics, write_prometheus};

    fn metrics(live_bytes: usize, alloc_count: u64) -> ArenaMetrics {
        ArenaMetrics {
            live_bytes,
            alloc_count,
            reserved_bytes: 4096,
            ..ArenaMetrics::default()
        }
    }

    #[test]
    fn prometheus_text_has_each_family_once_and_every_arena() {
        let mut text = String::new();
        write_prometheus(&mut text, &[("a", metrics(10, 3)), ("b", metrics(20, 4))]).unwrap();
        for name in [
            "arenabuf_live_bytes",
            "arenabuf_reserved_bytes",
            "arenabuf_waiting_tasks",
            "arenabuf_allocations_total",
            "arenabuf_allocation_failures_total",
            "arenabuf_spills_total",
            "arenabuf_waits_total",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
        }
        assert!(text.contains("arenabuf_live_bytes{arena=\"a\"} 10\n"));
        assert!(text.contains("arenabuf_live_bytes{arena=\"b\"} 20\n"));
        assert!(text.contains("arenabuf_allocations_total{arena=\"b\"} 4\n"));
        assert!(text.contains("# TYPE arenabuf_allocations_total counter\n"));
        // Every line is a comment or `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.ends_with("\"}"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }

    #[test]
    fn prometheus_label_values_are_escaped() {
        let mut text = String::new();
        write_prometheus(&mut text, &[("a\"b\\c\nd", metrics(1, 1))]).unwrap();
        assert!(text.contains(r#"arenabuf_live_bytes{arena="a\"b\\c\nd"} 1"#));
        assert_eq!(text.lines().count(), 7 * 3);
    }
}

//! What the report knows about the project's benches: the groups, which
//! implementation is ours and which are baselines, and the targets of the
//! issues, as data. Edit here when a bench or a target changes; never edit
//! the generated `docs/benchmarks.md`.

/// How a group's results are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Time per operation: the ratio is ours / baseline time, lower is better.
    Time,
    /// Throughput: the ratio is ours / baseline throughput (baseline time /
    /// ours time), higher is better.
    Throughput,
}

/// A criterion group of the project.
#[derive(Debug, Clone, Copy)]
pub struct GroupSpec {
    /// The criterion group name (first part of the benchmark IDs).
    pub name: &'static str,
    /// The issue whose targets it measures.
    pub issue: u32,
    /// The bench file and the command that runs it.
    pub bench: &'static str,
    /// One sentence on what an iteration does.
    pub about: &'static str,
    /// How ratios are shown.
    pub metric: Metric,
    /// The ratios shown: (ours, baseline) pairs of implementation names.
    pub pairs: &'static [(&'static str, &'static str)],
}

/// `cargo bench` for the allocator groups.
const ALLOCATOR: &str = "cargo bench --bench allocator -- --noplot";
/// `cargo bench` for the allocator groups with mimalloc as the global
/// allocator (group names end in `_mimalloc`).
const ALLOCATOR_MIMALLOC: &str = "cargo bench --bench allocator_mimalloc -- --noplot";
/// `cargo bench` for the async groups.
const ASYNC: &str = "cargo bench --bench async_alloc --features async-alloc -- --noplot";
/// `cargo bench` for the tokio I/O groups.
const IO: &str = "cargo bench --bench io --features io -- --noplot";
/// `cargo bench` for the tower layer groups.
const HTTP: &str =
    "cargo bench --bench http_body --bench http_body_allocs --features tower -- --noplot";

/// The commands that produce every result, in order, then the report itself.
pub const REGENERATE: &[&str] = &[
    ALLOCATOR,
    ALLOCATOR_MIMALLOC,
    ASYNC,
    IO,
    HTTP,
    "cargo run -p bench-report",
];

/// The project's groups, in report order. Groups found in the results but
/// not listed here are reported too, after these, comparing every
/// `arenabuf*` implementation with every other one.
pub const GROUPS: &[GroupSpec] = &[
    GroupSpec {
        name: "fixed_roundtrip",
        issue: 2,
        bench: ALLOCATOR,
        about: "65 536 slots of 4096 B: allocate, write the parameter's bytes, freeze, drop, on one thread.",
        metric: Metric::Time,
        pairs: &[("arenabuf", "bytesmut"), ("arenabuf", "arena_alligator")],
    },
    GroupSpec {
        name: "buddy_roundtrip",
        issue: 2,
        bench: ALLOCATOR,
        about: "64 MiB buddy arena, 256 B minimum block: allocate exactly the write size, write, freeze, drop. \
                `arenabuf_fixed` is our fixed arena (16 KiB slots) doing the same writes.",
        metric: Metric::Time,
        pairs: &[
            ("arenabuf", "arenabuf_fixed"),
            ("arenabuf", "bytesmut"),
            ("arenabuf", "arena_alligator"),
        ],
    },
    GroupSpec {
        name: "fixed_contention",
        issue: 2,
        bench: ALLOCATOR,
        about: "`tN_heldP`: N threads each allocate a 4096 B slot, write 256 B, freeze and drop, with P% of the \
                65 536 slots held live throughout. Throughput is operations per second across all threads.",
        metric: Metric::Throughput,
        pairs: &[("arenabuf", "bytesmut"), ("arenabuf", "arena_alligator")],
    },
    GroupSpec {
        name: "buddy_contention",
        issue: 2,
        bench: ALLOCATOR,
        about: "`tN_heldP`: N threads each allocate a 4096 B block of a 64 MiB buddy arena, write 256 B, freeze \
                and drop, with P% of the arena held live. Throughput is operations per second across all threads.",
        metric: Metric::Throughput,
        pairs: &[("arenabuf", "bytesmut"), ("arenabuf", "arena_alligator")],
    },
    GroupSpec {
        name: "auto_spill",
        issue: 2,
        bench: ALLOCATOR,
        about: "4096 B slots with auto-spill; an 8192 B write spills to the heap before freeze.",
        metric: Metric::Time,
        pairs: &[("arenabuf", "bytesmut"), ("arenabuf", "arena_alligator")],
    },
    GroupSpec {
        name: "cross_thread",
        issue: 14,
        bench: ALLOCATOR,
        about: "`sS_fF`: a producer thread allocates S bytes, writes them, freezes, and sends batches of 256 `Bytes` \
                over a bounded `std::sync::mpsc` channel holding F buffers; a consumer thread drops them. Time per \
                buffer. `channel_floor` sends `Bytes::from_static` (the loop and channel alone; targets are net of \
                it); `from_owner_floor` sends `Bytes::from_owner` of a static slice: the owner box every arena \
                `freeze()` allocates, freed on the consumer, with no buffer memory. `*_unfrozen` send the written \
                `Buffer` without freezing it: the arena's own cost.",
        metric: Metric::Time,
        pairs: &[
            ("arenabuf_fixed", "bytesmut"),
            ("arenabuf_buddy", "bytesmut"),
            ("arenabuf_fixed_unfrozen", "bytesmut"),
            ("arenabuf_buddy_unfrozen", "bytesmut"),
            ("from_owner_floor", "bytesmut"),
            ("channel_floor", "bytesmut"),
        ],
    },
    GroupSpec {
        name: "fixed_roundtrip_mimalloc",
        issue: 14,
        bench: ALLOCATOR_MIMALLOC,
        about: "`fixed_roundtrip` with mimalloc as the global allocator.",
        metric: Metric::Time,
        pairs: &[("arenabuf", "bytesmut"), ("arenabuf", "arena_alligator")],
    },
    GroupSpec {
        name: "buddy_roundtrip_mimalloc",
        issue: 14,
        bench: ALLOCATOR_MIMALLOC,
        about: "`buddy_roundtrip` with mimalloc as the global allocator.",
        metric: Metric::Time,
        pairs: &[
            ("arenabuf", "arenabuf_fixed"),
            ("arenabuf", "bytesmut"),
            ("arenabuf", "arena_alligator"),
        ],
    },
    GroupSpec {
        name: "cross_thread_mimalloc",
        issue: 14,
        bench: ALLOCATOR_MIMALLOC,
        about: "`cross_thread` with mimalloc as the global allocator.",
        metric: Metric::Time,
        pairs: &[
            ("arenabuf_fixed", "bytesmut"),
            ("arenabuf_buddy", "bytesmut"),
            ("arenabuf_fixed_unfrozen", "bytesmut"),
            ("arenabuf_buddy_unfrozen", "bytesmut"),
            ("from_owner_floor", "bytesmut"),
            ("channel_floor", "bytesmut"),
        ],
    },
    GroupSpec {
        name: "first_touch",
        issue: 15,
        bench: ALLOCATOR,
        about: "The first pass over a fresh 8 MiB fixed arena (2048 x 4096 B): allocate every slot, write it, freeze, keep; \
                the arena is built outside the timing, with each region kind (heap, zeroed, mapped, prefaulted, \
                transparent huge pages, explicit huge pages where reserved); `bytesmut` from the global allocator.",
        metric: Metric::Time,
        pairs: &[
            ("arenabuf", "bytesmut"),
            ("arenabuf_zeroed", "arenabuf"),
            ("arenabuf_mapped", "arenabuf"),
            ("arenabuf_prefaulted", "arenabuf_mapped"),
            ("arenabuf_thp", "arenabuf_mapped"),
            ("arenabuf_thp_prefaulted", "arenabuf_mapped"),
            ("arenabuf_huge", "arenabuf_mapped"),
            ("arenabuf_prefaulted", "bytesmut"),
        ],
    },
    GroupSpec {
        name: "pages_roundtrip",
        issue: 15,
        bench: ALLOCATOR,
        about: "Steady state over a 32 MiB working set: drop the oldest of 8192 held 4096 B `Bytes`, allocate, write 4096 B, \
                freeze into the ring; a prefaulted heap region, transparent huge pages, explicit huge pages where reserved.",
        metric: Metric::Time,
        pairs: &[
            ("arenabuf_thp", "arenabuf"),
            ("arenabuf_huge", "arenabuf"),
            ("arenabuf", "bytesmut"),
            ("arenabuf_thp", "bytesmut"),
        ],
    },
    GroupSpec {
        name: "async_uncontended",
        issue: 3,
        bench: ASYNC,
        about: "One task on a current-thread runtime: `allocate_async().await` (or the sync `allocate()`), \
                write 256 B, freeze, drop; the baseline is a `Semaphore` + `Mutex<Vec<BytesMut>>` pool round trip.",
        metric: Metric::Time,
        pairs: &[
            ("arenabuf_async", "arenabuf_sync"),
            ("arenabuf_async", "semaphore_pool"),
        ],
    },
    GroupSpec {
        name: "async_contended",
        issue: 3,
        bench: ASYNC,
        about: "`tT_wW_sS`: T tasks on W worker threads share S slots; each round allocates, writes 256 B, yields \
                while holding the buffer, freezes and drops. Throughput is rounds per second.",
        metric: Metric::Throughput,
        pairs: &[("arenabuf_async", "semaphore_pool")],
    },
    GroupSpec {
        name: "wait_storm",
        issue: 10,
        bench: ASYNC,
        about: "`wN`: N waiters queued on an arena whose N slots (or 64 B blocks) are held; one burst of N frees \
                hands each to a waiter, then every waiter is polled once to pick it up. Throughput is waiters \
                per second: equal at w10000 and w80000 means linear. Baseline: N `Semaphore::acquire_owned` futures, \
                `add_permits(N)`, each polled once.",
        metric: Metric::Throughput,
        pairs: &[
            ("arenabuf_fixed", "semaphore"),
            ("arenabuf_buddy", "semaphore"),
        ],
    },
    // Issue 4: `benches/io.rs`. Its heap allocation counts come from
    // `io_allocs.json` (see `results`).
    GroupSpec {
        name: "io_frames",
        issue: 4,
        bench: IO,
        about: "A 64 MiB in-memory stream of length-delimited frames of 64 B to 16 KiB, read in 64 KiB reads: \
                `Frames` in its default compact mode over a `FixedArena` of 64 KiB slots (`arenabuf_reader_frames`: \
                small frames copied to the heap under the copy budget) and over a `BuddyArena` \
                (`arenabuf_reader_frames_buddy`: copies in right-sized blocks), its zero-copy opt-out \
                (`arenabuf_reader_frames_zero_copy`), the drop-in codec in `FramedRead` \
                (`arenabuf_codec_framed_read`) and tokio_util's `FramedRead<_, LengthDelimitedCodec>` \
                (`tokio_util_framed_read`); `drop`: each frame dropped at once, `hold1024`: the last 1024 frames \
                held, `keep1in50`: every 50th frame kept to the end. Heap allocations are per pass over the stream, \
                counted in an untimed pass.",
        metric: Metric::Throughput,
        pairs: &[
            ("arenabuf_reader_frames", "tokio_util_framed_read"),
            ("arenabuf_reader_frames_buddy", "tokio_util_framed_read"),
            ("arenabuf_reader_frames_zero_copy", "tokio_util_framed_read"),
            ("arenabuf_codec_framed_read", "tokio_util_framed_read"),
        ],
    },
    GroupSpec {
        name: "http_body",
        issue: 5,
        bench: HTTP,
        about: "Request bodies of 4 KiB, 64 KiB and 1 MiB in 16 KiB chunks, with and without `Content-Length`: \
                `ArenaBodyLayer` (`arena_layer`) vs `collect().await?.to_bytes()` behind tower-http's \
                `RequestBodyLimitLayer` (`collect_limit`).",
        metric: Metric::Throughput,
        pairs: &[("arena_layer", "collect_limit")],
    },
];

/// The spec of `group`, if it is one of the project's known groups.
pub fn group_spec(group: &str) -> Option<&'static GroupSpec> {
    GROUPS.iter().find(|g| g.name == group)
}

/// Which parameters of a group a target applies to.
#[derive(Debug, Clone, Copy)]
pub enum Params {
    /// Exactly these parameters.
    Exact(&'static [&'static str]),
    /// Every parameter starting with one of these prefixes (`"t2_"`).
    Prefix(&'static [&'static str]),
    /// Every parameter measured for both implementations.
    All,
}

impl Params {
    /// Whether `param` is covered.
    pub fn matches(&self, param: &str) -> bool {
        match self {
            Params::Exact(list) => list.contains(&param),
            Params::Prefix(list) => list.iter().any(|p| param.starts_with(p)),
            Params::All => true,
        }
    }
}

/// The condition a target sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// ours time / baseline time must be at most this.
    TimeRatioAtMost(f64),
    /// ours throughput / baseline throughput must be at least this.
    ThroughputRatioAtLeast(f64),
    /// ours heap allocations / baseline heap allocations (per iteration,
    /// same work) must be at most this.
    AllocRatioAtMost(f64),
    /// ours heap allocations per iteration must be at most this (the
    /// baseline's are shown beside it).
    AllocsAtMost(f64),
    /// (ours time - floor time) / (baseline time - floor time) must be at
    /// most `max`: the ratio of net costs, where `floor` is an
    /// implementation of the same group that runs the same loop without
    /// the work being compared (the channel alone in `cross_thread`).
    NetTimeRatioAtMost {
        /// The bound on the net ratio.
        max: f64,
        /// The implementation whose time is subtracted from both.
        floor: &'static str,
    },
}

/// A performance target from an issue.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The issue that sets it.
    pub issue: u32,
    /// The group that measures it.
    pub group: &'static str,
    /// Our implementation.
    pub ours: &'static str,
    /// The baseline.
    pub baseline: &'static str,
    /// The parameters it applies to; each one is checked on its own.
    pub params: Params,
    /// The condition.
    pub bound: Bound,
}

/// The issues' targets. They are targets: a miss is reported with its size,
/// never hidden by loosening the bound here.
pub const TARGETS: &[Target] = &[
    // Issue 2: the allocator core.
    Target {
        issue: 2,
        group: "fixed_roundtrip",
        ours: "arenabuf",
        baseline: "bytesmut",
        params: Params::Exact(&["256", "1024"]),
        bound: Bound::TimeRatioAtMost(0.7),
    },
    Target {
        issue: 2,
        group: "fixed_roundtrip",
        ours: "arenabuf",
        baseline: "bytesmut",
        params: Params::Exact(&["4096"]),
        bound: Bound::TimeRatioAtMost(0.9),
    },
    Target {
        issue: 2,
        group: "fixed_roundtrip",
        ours: "arenabuf",
        baseline: "arena_alligator",
        params: Params::Exact(&["256", "1024", "4096"]),
        bound: Bound::TimeRatioAtMost(0.5),
    },
    Target {
        issue: 2,
        group: "buddy_roundtrip",
        ours: "arenabuf",
        baseline: "arenabuf_fixed",
        params: Params::Exact(&["256", "1024", "4096", "16384"]),
        bound: Bound::TimeRatioAtMost(1.5),
    },
    Target {
        issue: 2,
        group: "buddy_roundtrip",
        ours: "arenabuf",
        baseline: "arena_alligator",
        params: Params::Exact(&["256"]),
        bound: Bound::TimeRatioAtMost(0.1),
    },
    Target {
        issue: 2,
        group: "fixed_contention",
        ours: "arenabuf",
        baseline: "arena_alligator",
        params: Params::Prefix(&["t2_", "t8_"]),
        bound: Bound::ThroughputRatioAtLeast(2.0),
    },
    Target {
        issue: 2,
        group: "buddy_contention",
        ours: "arenabuf",
        baseline: "arena_alligator",
        params: Params::Prefix(&["t2_", "t8_"]),
        bound: Bound::ThroughputRatioAtLeast(2.0),
    },
    // Issue 14: allocation where servers live. Its same-thread targets on
    // the system allocator are issue 2's `fixed_roundtrip` and
    // `buddy_roundtrip` lines above (same bounds); these add the
    // cross-thread pattern and mimalloc.
    Target {
        issue: 14,
        group: "cross_thread",
        ours: "arenabuf_fixed",
        baseline: "bytesmut",
        params: Params::All,
        bound: Bound::NetTimeRatioAtMost {
            max: 0.5,
            floor: "channel_floor",
        },
    },
    Target {
        issue: 14,
        group: "cross_thread",
        ours: "arenabuf_buddy",
        baseline: "bytesmut",
        params: Params::All,
        bound: Bound::NetTimeRatioAtMost {
            max: 0.5,
            floor: "channel_floor",
        },
    },
    Target {
        issue: 14,
        group: "cross_thread_mimalloc",
        ours: "arenabuf_fixed",
        baseline: "bytesmut",
        params: Params::All,
        bound: Bound::NetTimeRatioAtMost {
            max: 1.0,
            floor: "channel_floor",
        },
    },
    Target {
        issue: 14,
        group: "cross_thread_mimalloc",
        ours: "arenabuf_buddy",
        baseline: "bytesmut",
        params: Params::All,
        bound: Bound::NetTimeRatioAtMost {
            max: 1.0,
            floor: "channel_floor",
        },
    },
    Target {
        issue: 14,
        group: "fixed_roundtrip_mimalloc",
        ours: "arenabuf",
        baseline: "bytesmut",
        params: Params::Exact(&["256", "1024", "4096"]),
        bound: Bound::TimeRatioAtMost(1.0),
    },
    Target {
        issue: 14,
        group: "buddy_roundtrip_mimalloc",
        ours: "arenabuf",
        baseline: "arenabuf_fixed",
        params: Params::Exact(&["256", "1024", "4096", "16384"]),
        bound: Bound::TimeRatioAtMost(1.5),
    },
    // Issue 3: async allocation.
    Target {
        issue: 3,
        group: "async_uncontended",
        ours: "arenabuf_async",
        baseline: "arenabuf_sync",
        params: Params::All,
        bound: Bound::TimeRatioAtMost(1.2),
    },
    Target {
        issue: 3,
        group: "async_contended",
        ours: "arenabuf_async",
        baseline: "semaphore_pool",
        params: Params::Exact(&["t64_w2_s8"]),
        bound: Bound::ThroughputRatioAtLeast(1.5),
    },
    // Issue 4: tokio I/O.
    Target {
        issue: 4,
        group: "io_frames",
        ours: "arenabuf_reader_frames",
        baseline: "tokio_util_framed_read",
        params: Params::Exact(&["drop"]),
        bound: Bound::ThroughputRatioAtLeast(1.0),
    },
    Target {
        issue: 4,
        group: "io_frames",
        ours: "arenabuf_reader_frames",
        baseline: "tokio_util_framed_read",
        params: Params::Exact(&["hold1024"]),
        bound: Bound::ThroughputRatioAtLeast(1.5),
    },
    Target {
        issue: 4,
        group: "io_frames",
        ours: "arenabuf_reader_frames",
        baseline: "tokio_util_framed_read",
        params: Params::Exact(&["drop", "hold1024"]),
        bound: Bound::AllocRatioAtMost(0.1),
    },
    Target {
        issue: 4,
        group: "io_frames",
        ours: "arenabuf_codec_framed_read",
        baseline: "tokio_util_framed_read",
        params: Params::Exact(&["drop", "hold1024"]),
        bound: Bound::ThroughputRatioAtLeast(0.7),
    },
    // Issue 11: the reader stays live when frames are held.
    Target {
        issue: 11,
        group: "io_frames",
        ours: "arenabuf_reader_frames_zero_copy",
        baseline: "tokio_util_framed_read",
        params: Params::Exact(&["drop"]),
        bound: Bound::ThroughputRatioAtLeast(1.0),
    },
    Target {
        issue: 11,
        group: "io_frames",
        ours: "arenabuf_reader_frames",
        baseline: "tokio_util_framed_read",
        params: Params::Exact(&["hold1024"]),
        bound: Bound::ThroughputRatioAtLeast(1.5),
    },
    // Issue 5: the tower layer.
    Target {
        issue: 5,
        group: "http_body",
        ours: "arena_layer",
        baseline: "collect_limit",
        params: Params::All,
        bound: Bound::ThroughputRatioAtLeast(1.0),
    },
    Target {
        issue: 5,
        group: "http_body",
        ours: "arena_layer",
        baseline: "collect_limit",
        params: Params::All,
        bound: Bound::AllocsAtMost(1.0),
    },
    // Issue 12: the layer allocates lazily and never re-copies on every
    // doubling; 4 KiB pays one copy the baseline does not.
    Target {
        issue: 12,
        group: "http_body",
        ours: "arena_layer",
        baseline: "collect_limit",
        params: Params::Prefix(&["64KiB/", "1MiB/"]),
        bound: Bound::ThroughputRatioAtLeast(1.0),
    },
    Target {
        issue: 12,
        group: "http_body",
        ours: "arena_layer",
        baseline: "collect_limit",
        params: Params::Prefix(&["4KiB/"]),
        bound: Bound::ThroughputRatioAtLeast(0.8),
    },
    Target {
        issue: 12,
        group: "http_body",
        ours: "arena_layer",
        baseline: "collect_limit",
        params: Params::All,
        bound: Bound::AllocsAtMost(1.0),
    },
];

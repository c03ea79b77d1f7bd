//! Tokio I/O benchmarks (feature `io`), with the baseline in the same run.
//!
//! One in-memory stream of 64 MiB of length-delimited frames (tokio_util's
//! default wire format: a 4-byte big-endian length, then the payload), frame
//! sizes 64 B to 16 KiB from a fixed-seed generator, read through an
//! `AsyncRead` that returns at most 64 KiB per read (as a socket would) on a
//! current-thread runtime.
//!
//! Group `io_frames`, IDs `io_frames/<implementation>/<consumer>` (estimates
//! under `target/criterion/io_frames/<implementation>/<consumer>/new/estimates.json`):
//!
//! * implementations:
//!   - `tokio_util_framed_read`: the baseline, `FramedRead<_, LengthDelimitedCodec>`;
//!   - `arenabuf_reader_frames`: `Frames` in its default (compact) mode over
//!     a `FixedArena` of 64 KiB slots: frames smaller than half a chunk are
//!     copied as they are cut (to the heap, under the reader's copy budget,
//!     since a slot would be far larger than they are);
//!   - `arenabuf_reader_frames_buddy`: the same over a `BuddyArena` (copies
//!     go to right-sized arena blocks);
//!   - `arenabuf_reader_frames_zero_copy`: the opt-out, every frame a slice
//!     of its 64 KiB chunk (`FixedArena`);
//!   - `arenabuf_codec_framed_read`: the drop-in `ArenaLengthDelimitedCodec`
//!     in `FramedRead`, over a `BuddyArena` (each frame its own block);
//! * consumers: `drop` drops each frame at once; `hold1024` keeps the last
//!   1024 frames alive (a ring), as a pipeline with frames in flight would;
//!   `keep1in50` keeps every 50th frame to the end of the stream.
//!
//! Throughput is the stream's bytes (`Throughput::Bytes`), so Criterion
//! prints MiB/s. Nothing instruments the timed loops: heap allocations are
//! counted by a gated global allocator (`support::GatedCounting`) over one
//! extra, untimed pass per case, printed as allocations per MiB; the same
//! pass measures, for `keep1in50`, the arena (and copy-budget) bytes in use
//! per held payload byte at the end of the stream. Both go to
//! `target/criterion/io_allocs.json`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

mod support;

use arenabuf::codec::ArenaLengthDelimitedCodec;
use arenabuf::io::Frames;
use arenabuf::{BuddyArena, FixedArena};
use bytes::{BufMut, Bytes, BytesMut};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::{Builder, Runtime};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

// ---------------------------------------------------------------------------
// Allocation counting, off in the timed loops
// ---------------------------------------------------------------------------

#[global_allocator]
static GLOBAL: support::GatedCounting = support::GatedCounting;

// ---------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------

const STREAM_BYTES: usize = 64 << 20;
const MIN_FRAME: usize = 64;
const MAX_FRAME: usize = 16 << 10;
const READ_SIZE: usize = 64 << 10;
const HOLD: usize = 1024;
const KEEP_EVERY: u64 = 50;

/// The arena for the reader: 64 KiB chunks, room for the 1024 held frames'
/// chunks (about 8 MiB of frames) several times over.
const READER_SLOTS: usize = 512;
const READER_SLOT: usize = 64 << 10;
/// The arena for the drop-in codec: one block per frame.
const CODEC_ARENA: usize = 64 << 20;
const CODEC_MIN_BLOCK: usize = 64;

/// The wire bytes: frames of deterministic pseudo-random sizes (splitmix64)
/// until the next one would pass 64 MiB.
fn stream() -> (Bytes, u64) {
    let mut state = 0x5EED_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut wire = BytesMut::with_capacity(STREAM_BYTES);
    let mut frames = 0;
    loop {
        let len = MIN_FRAME + (next() as usize) % (MAX_FRAME - MIN_FRAME + 1);
        if wire.len() + 4 + len > STREAM_BYTES {
            break;
        }
        wire.put_u32(len as u32);
        let fill = frames as u8;
        wire.put_bytes(fill, len);
        frames += 1;
    }
    (wire.freeze(), frames)
}

/// An in-memory `AsyncRead` that returns at most 64 KiB per read.
struct MemReader(Bytes);

impl AsyncRead for MemReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.0.len().min(buf.remaining()).min(READ_SIZE);
        buf.put_slice(&self.0[..n]);
        bytes::Buf::advance(&mut self.0, n);
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Imp {
    TokioUtil,
    ArenaReader,
    ArenaReaderBuddy,
    ArenaReaderZeroCopy,
    ArenaCodec,
}

impl Imp {
    fn id(self) -> &'static str {
        match self {
            Imp::TokioUtil => "tokio_util_framed_read",
            Imp::ArenaReader => "arenabuf_reader_frames",
            Imp::ArenaReaderBuddy => "arenabuf_reader_frames_buddy",
            Imp::ArenaReaderZeroCopy => "arenabuf_reader_frames_zero_copy",
            Imp::ArenaCodec => "arenabuf_codec_framed_read",
        }
    }
}

struct Arenas {
    fixed: FixedArena,
    buddy: BuddyArena,
}

/// What a consumer does with the frames it gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Consumer {
    Drop,
    Hold1024,
    KeepOneIn50,
}

impl Consumer {
    fn id(self) -> &'static str {
        match self {
            Consumer::Drop => "drop",
            Consumer::Hold1024 => "hold1024",
            Consumer::KeepOneIn50 => "keep1in50",
        }
    }
}

/// What one pass saw: frames, payload bytes, and for `keep1in50` the bytes
/// held and the memory in use for them at the end of the stream.
#[derive(Default)]
struct Pass {
    frames: u64,
    held_bytes: u64,
    in_use_at_end: u64,
}

/// Reads every frame and does with it what `consumer` says; `in_use`
/// reports the implementation's memory for the frames (untimed passes
/// only).
async fn consume<S, T, E>(mut frames: S, consumer: Consumer, in_use: &dyn Fn(&S) -> u64) -> Pass
where
    S: Stream<Item = Result<T, E>> + Unpin,
    T: AsRef<[u8]>,
    E: std::fmt::Debug,
{
    let mut ring = VecDeque::with_capacity(match consumer {
        Consumer::Drop => 0,
        _ => HOLD + 1,
    });
    let mut pass = Pass::default();
    while let Some(f) = frames.next().await {
        let f = f.expect("the stream is well formed");
        black_box(f.as_ref());
        match consumer {
            Consumer::Drop => drop(f),
            Consumer::Hold1024 => {
                ring.push_back(f);
                if ring.len() > HOLD {
                    ring.pop_front();
                }
            }
            Consumer::KeepOneIn50 => {
                if pass.frames % KEEP_EVERY == 0 {
                    pass.held_bytes += f.as_ref().len() as u64;
                    ring.push_back(f);
                }
            }
        }
        pass.frames += 1;
    }
    pass.in_use_at_end = in_use(&frames);
    drop(ring);
    pass
}

fn run(rt: &Runtime, imp: Imp, consumer: Consumer, wire: &Bytes, arenas: &Arenas) -> Pass {
    let reader = MemReader(wire.clone());
    let fixed_in_use = |budget: u64| arenas.fixed.metrics().live_bytes as u64 + budget;
    rt.block_on(async {
        match imp {
            Imp::TokioUtil => {
                let frames = FramedRead::new(reader, LengthDelimitedCodec::new());
                consume(frames, consumer, &|_| 0).await
            }
            Imp::ArenaReader => {
                let frames = Frames::length_delimited(reader, arenas.fixed.clone()).unwrap();
                consume(frames, consumer, &|f| {
                    fixed_in_use(f.copy_budget().in_use() as u64)
                })
                .await
            }
            Imp::ArenaReaderZeroCopy => {
                let frames = Frames::builder(arenas.fixed.clone())
                    .zero_copy()
                    .length_delimited(reader)
                    .unwrap();
                consume(frames, consumer, &|f| {
                    fixed_in_use(f.copy_budget().in_use() as u64)
                })
                .await
            }
            Imp::ArenaReaderBuddy => {
                let frames = Frames::length_delimited(reader, arenas.buddy.clone()).unwrap();
                consume(frames, consumer, &|f| {
                    (arenas.buddy.metrics().live_bytes + f.copy_budget().in_use()) as u64
                })
                .await
            }
            Imp::ArenaCodec => {
                let codec = ArenaLengthDelimitedCodec::new(arenas.buddy.clone());
                consume(FramedRead::new(reader, codec), consumer, &|_| {
                    arenas.buddy.metrics().live_bytes as u64
                })
                .await
            }
        }
    })
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("benchmark geometry must be non-zero")
}

fn io_frames(c: &mut Criterion) {
    let (wire, frame_count) = stream();
    let rt = Builder::new_current_thread().build().expect("runtime");
    let arenas = Arenas {
        fixed: FixedArena::builder(nz(READER_SLOTS), nz(READER_SLOT))
            .build()
            .expect("reader arena"),
        buddy: BuddyArena::builder(nz(CODEC_ARENA), nz(CODEC_MIN_BLOCK))
            .build()
            .expect("codec arena"),
    };
    let imps = [
        Imp::TokioUtil,
        Imp::ArenaReader,
        Imp::ArenaReaderBuddy,
        Imp::ArenaReaderZeroCopy,
        Imp::ArenaCodec,
    ];
    let consumers = [Consumer::Drop, Consumer::Hold1024, Consumer::KeepOneIn50];
    let mib = wire.len() as f64 / (1 << 20) as f64;

    // Heap allocations and memory per held byte: one untimed pass per case
    // (after a warm-up pass, so one-time setup is not counted); every pass
    // also checks the frames.
    let mut allocs = Vec::new();
    for consumer in consumers {
        for imp in imps {
            let warm = run(&rt, imp, consumer, &wire, &arenas);
            let (pass, count) =
                support::count_allocations(|| run(&rt, imp, consumer, &wire, &arenas));
            assert_eq!(pass.frames, frame_count, "{} lost frames", imp.id());
            assert_eq!(warm.frames, frame_count);
            assert_eq!(arenas.fixed.metrics().live_slots, 0, "reader arena leaked");
            assert_eq!(arenas.buddy.metrics().live_bytes, 0, "buddy arena leaked");
            let per_mib = count as f64 / mib;
            let per_held = (consumer == Consumer::KeepOneIn50 && imp != Imp::TokioUtil)
                .then(|| pass.in_use_at_end as f64 / pass.held_bytes as f64);
            println!(
                "io_frames/{}/{}: {count} heap allocations per pass, {per_mib:.2} per MiB{}",
                imp.id(),
                consumer.id(),
                per_held.map_or(String::new(), |r| format!(
                    "; {r:.2} memory bytes per held byte ({} held)",
                    pass.held_bytes
                ))
            );
            allocs.push((imp.id(), consumer.id(), count, per_mib, per_held));
        }
    }
    write_allocs(&allocs, wire.len(), frame_count);

    // Counted above, untimed; the timed loops below pay no counter.
    support::stop_counting();
    let mut group = c.benchmark_group("io_frames");
    group
        .throughput(Throughput::Bytes(wire.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    for consumer in consumers {
        for imp in imps {
            group.bench_function(BenchmarkId::new(imp.id(), consumer.id()), |b| {
                b.iter(|| run(&rt, imp, consumer, &wire, &arenas).frames)
            });
        }
    }
    group.finish();
}

/// Writes the allocation counts next to Criterion's estimates, for reports.
type AllocRow<'a> = (&'a str, &'a str, u64, f64, Option<f64>);

fn write_allocs(allocs: &[AllocRow<'_>], stream_bytes: usize, frames: u64) {
    let cases: Vec<String> = allocs
        .iter()
        .map(|(imp, consumer, count, per_mib, per_held)| {
            let held = per_held.map_or(String::new(), |r| {
                format!(", \"memory_per_held_byte\": {r:.3}")
            });
            format!(
                "    {{\"id\": \"io_frames/{imp}/{consumer}\", \"allocations\": {count}, \"per_mib\": {per_mib:.3}{held}}}"
            )
        })
        .collect();
    let json = format!(
        "{{\n  \"stream_bytes\": {stream_bytes},\n  \"frames\": {frames},\n  \"cases\": [\n{}\n  ]\n}}\n",
        cases.join(",\n")
    );
    support::write_criterion_file("io_allocs.json", &json);
}

criterion_group!(benches, io_frames);
criterion_main!(benches);

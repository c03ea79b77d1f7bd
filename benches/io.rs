//! Tokio I/O benchmarks (feature `io`), with the baseline in the same run.
//!
//! One in-memory stream of 256 MiB of length-delimited frames (tokio_util's
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
//!   - `arenabuf_reader_frames`: `ArenaReader::frames` over a `FixedArena`
//!     of 64 KiB slots (frames are slices of 64 KiB arena chunks);
//!   - `arenabuf_codec_framed_read`: the drop-in `ArenaLengthDelimitedCodec`
//!     in `FramedRead`, over a `BuddyArena` (each frame its own block);
//! * consumers: `drop` drops each frame at once; `hold1024` keeps the last
//!   1024 frames alive (a ring), as a pipeline with frames in flight would.
//!
//! Throughput is the stream's bytes (`Throughput::Bytes`), so Criterion
//! prints MiB/s. Heap allocations are counted by a counting global
//! allocator over one extra, untimed pass per case, printed as allocations
//! per MiB and written to `target/criterion/io_allocs.json`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

mod support;

use arenabuf::codec::{ArenaLengthDelimitedCodec, LengthDelimited};
use arenabuf::io::{ArenaReader, Framing};
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
// Counting allocator
// ---------------------------------------------------------------------------

#[global_allocator]
static GLOBAL: support::Counting = support::Counting;

// ---------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------

const STREAM_BYTES: usize = 256 << 20;
const MIN_FRAME: usize = 64;
const MAX_FRAME: usize = 16 << 10;
const READ_SIZE: usize = 64 << 10;
const HOLD: usize = 1024;

/// The arena for `ArenaReader`: 64 KiB chunks, room for the 1024 held
/// frames' chunks (about 8 MiB of frames) several times over.
const READER_SLOTS: usize = 512;
const READER_SLOT: usize = 64 << 10;
/// The arena for the drop-in codec: one block per frame.
const CODEC_ARENA: usize = 64 << 20;
const CODEC_MIN_BLOCK: usize = 64;

/// The wire bytes: frames of deterministic pseudo-random sizes (splitmix64)
/// until the next one would pass 256 MiB.
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

#[derive(Clone, Copy)]
enum Imp {
    TokioUtil,
    ArenaReader,
    ArenaCodec,
}

impl Imp {
    fn id(self) -> &'static str {
        match self {
            Imp::TokioUtil => "tokio_util_framed_read",
            Imp::ArenaReader => "arenabuf_reader_frames",
            Imp::ArenaCodec => "arenabuf_codec_framed_read",
        }
    }
}

struct Arenas {
    fixed: FixedArena,
    buddy: BuddyArena,
}

/// Reads every frame, dropping each at once or holding the last 1024;
/// returns (frames, payload bytes).
async fn consume<S, T>(mut frames: S, hold: bool) -> (u64, u64)
where
    S: Stream<Item = io::Result<T>> + Unpin,
    T: AsRef<[u8]>,
{
    let mut ring = VecDeque::with_capacity(if hold { HOLD + 1 } else { 0 });
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(f) = frames.next().await {
        let f = f.expect("the stream is well formed");
        n += 1;
        bytes += black_box(f.as_ref()).len() as u64;
        if hold {
            ring.push_back(f);
            if ring.len() > HOLD {
                ring.pop_front();
            }
        } else {
            drop(f);
        }
    }
    drop(ring);
    (n, bytes)
}

fn run(rt: &Runtime, imp: Imp, hold: bool, wire: &Bytes, arenas: &Arenas) -> (u64, u64) {
    let reader = MemReader(wire.clone());
    rt.block_on(async {
        match imp {
            Imp::TokioUtil => {
                consume(FramedRead::new(reader, LengthDelimitedCodec::new()), hold).await
            }
            Imp::ArenaReader => {
                let frames = Frames::length_delimited(reader, arenas.fixed.clone()).unwrap();
                consume(frames, hold).await
            }
            Imp::ArenaCodec => {
                let codec = ArenaLengthDelimitedCodec::new(arenas.buddy.clone());
                consume(FramedRead::new(reader, codec), hold).await
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
    let imps = [Imp::TokioUtil, Imp::ArenaReader, Imp::ArenaCodec];
    let consumers = [("drop", false), ("hold1024", true)];
    let mib = wire.len() as f64 / (1 << 20) as f64;

    // Heap allocations: one untimed pass per case (after a warm-up pass, so
    // one-time setup is not counted); every pass also checks the frames.
    let mut allocs = Vec::new();
    for (consumer, hold) in consumers {
        for imp in imps {
            let warm = run(&rt, imp, hold, &wire, &arenas);
            let before = support::allocations();
            let (n, _) = run(&rt, imp, hold, &wire, &arenas);
            let count = support::allocations() - before;
            assert_eq!(n, frame_count, "{} lost frames", imp.id());
            assert_eq!(warm.0, frame_count);
            assert_eq!(arenas.fixed.metrics().live_slots, 0, "reader arena leaked");
            assert_eq!(arenas.buddy.metrics().live_bytes, 0, "codec arena leaked");
            let per_mib = count as f64 / mib;
            println!(
                "io_frames/{}/{consumer}: {count} heap allocations per pass, {per_mib:.2} per MiB",
                imp.id()
            );
            allocs.push((imp.id(), consumer, count, per_mib));
        }
    }
    write_allocs(&allocs, wire.len(), frame_count);

    let mut group = c.benchmark_group("io_frames");
    group
        .throughput(Throughput::Bytes(wire.len() as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    for (consumer, hold) in consumers {
        for imp in imps {
            group.bench_function(BenchmarkId::new(imp.id(), consumer), |b| {
                b.iter(|| run(&rt, imp, hold, &wire, &arenas))
            });
        }
    }
    group.finish();
}

/// Writes the allocation counts next to Criterion's estimates, for reports.
fn write_allocs(allocs: &[(&str, &str, u64, f64)], stream_bytes: usize, frames: u64) {
    let cases: Vec<String> = allocs
        .iter()
        .map(|(imp, consumer, count, per_mib)| {
            format!(
                "    {{\"id\": \"io_frames/{imp}/{consumer}\", \"allocations\": {count}, \"per_mib\": {per_mib:.3}}}"
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

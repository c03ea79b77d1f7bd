//! The main demonstration: a loopback TCP server ingesting length-delimited
//! frames from many connections through `ArenaReader` into a small arena,
//! with a deliberately slow consumer, so that backpressure happens and shows.
//!
//! ```sh
//! cargo run --release --example ingest
//! cargo run --release --example ingest -- --help
//! ```
//!
//! Each client sends frames whose bytes are derived from (connection, frame
//! number); the server checks every byte. Frames wait in a bounded queue for
//! a consumer that takes `--consumer-delay` per frame; the frames in that
//! queue pin arena memory, the arena fills, the readers stop reading their
//! sockets, the kernel buffers fill and the clients' writes block. The arena
//! cap holds throughout, and the heap stays small.

use std::alloc::{GlobalAlloc, Layout, System};
use std::error::Error;
use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arenabuf::codec::LengthDelimited;
use arenabuf::io::Frames;
use arenabuf::{BuddyArena, BufferSource, FixedArena};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

/// Counts heap bytes in use, and the peak, for the summary.
struct CountingAlloc;

static HEAP_NOW: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = HEAP_NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArenaKind {
    /// Uniform slots of `--max-frame` bytes (rounded up to the chunk size).
    Fixed,
    /// Power-of-two blocks from one region.
    Buddy,
}

/// Ingest length-delimited frames over loopback TCP into a capped arena.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Client connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Smallest frame payload, in bytes.
    #[arg(long, default_value_t = 64)]
    min_frame: usize,
    /// Largest frame payload, in bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    max_frame: usize,
    /// Which arena the server reads into.
    #[arg(long, value_enum, default_value_t = ArenaKind::Fixed)]
    arena: ArenaKind,
    /// The arena's size (its hard cap), in MiB.
    #[arg(long, default_value_t = 8)]
    arena_mib: usize,
    /// Time the consumer spends on each frame, in microseconds.
    #[arg(long, default_value_t = 20)]
    consumer_delay_us: u64,
    /// How long the clients send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
}

/// Frame header: connection (4 bytes) and frame number (8 bytes); the rest is
/// a pattern both sides derive from them.
const HEADER: usize = 12;

fn fill(conn: u32, seq: u64, len: usize, out: &mut BytesMut) {
    out.put_u32(conn);
    out.put_u64(seq);
    let mut x = (u64::from(conn) << 40) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in HEADER..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.put_u8(x as u8);
    }
}

fn check(frame: &Bytes, scratch: &mut BytesMut) -> bool {
    if frame.len() < HEADER {
        return false;
    }
    let conn = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
    let seq = u64::from_be_bytes(frame[4..12].try_into().expect("8 bytes"));
    scratch.clear();
    fill(conn, seq, frame.len(), scratch);
    scratch[..] == frame[..]
}

#[derive(Default)]
struct Totals {
    sent_frames: AtomicU64,
    sent_bytes: AtomicU64,
    recv_frames: AtomicU64,
    recv_bytes: AtomicU64,
    checked: AtomicU64,
    corrupt: AtomicU64,
}

impl Args {
    fn validate(&self) -> Result<(), String> {
        if self.min_frame < HEADER {
            return Err(format!(
                "--min-frame must be at least {HEADER} bytes (the frame header)"
            ));
        }
        if self.max_frame < self.min_frame {
            return Err("--max-frame must be at least --min-frame".into());
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err("--duration must be more than 0 and at most 3600 seconds".into());
        }
        if self.arena_mib == 0 || self.arena_mib > 64 * 1024 {
            return Err("--arena-mib must be between 1 and 65536".into());
        }
        // A frame (with its 4-byte length) must fit one slot or block of
        // the arena, and a slot must not exceed the arena's cap.
        let cap = self.arena_mib * 1024 * 1024;
        let chunk = self
            .max_frame
            .checked_add(4)
            .and_then(usize::checked_next_power_of_two)
            .map(|c| c.max(16 * 1024));
        if chunk.is_none_or(|c| c > cap) {
            return Err(format!(
                "--max-frame {} does not fit a {} MiB arena: frames up to {} bytes fit; \
                 lower --max-frame or raise --arena-mib",
                self.max_frame,
                self.arena_mib,
                cap - 4
            ));
        }
        Ok(())
    }
}

/// Reads one connection's frames into the arena and queues them for the
/// consumer.
async fn serve<S: BufferSource>(
    stream: TcpStream,
    source: S,
    chunk: NonZeroUsize,
    max_frame: usize,
    queue: tokio::sync::mpsc::Sender<Bytes>,
    totals: Arc<Totals>,
) -> std::io::Result<()> {
    let mut frames = Frames::builder(source)
        .chunk_size(chunk)
        .length_delimited_with(
            stream,
            LengthDelimited::builder().max_frame_length(max_frame),
        )
        .map_err(std::io::Error::other)?;
    while let Some(frame) = frames.next().await {
        let frame = frame?;
        totals.recv_frames.fetch_add(1, Ordering::Relaxed);
        totals
            .recv_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        if queue.send(frame).await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn client(
    addr: std::net::SocketAddr,
    conn: u32,
    args: Arc<Args>,
    stop: Arc<AtomicBool>,
    totals: Arc<Totals>,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(args.max_frame)
        .new_codec();
    let mut sink = FramedWrite::new(stream, codec);
    let mut seq = 0u64;
    let mut rng = u64::from(conn).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let span = (args.max_frame - args.min_frame + 1) as u64;
    let mut frame = BytesMut::new();
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let len = args.min_frame + (rng % span) as usize;
        frame.clear();
        fill(conn, seq, len, &mut frame);
        sink.send(frame.split().freeze()).await?;
        totals.sent_frames.fetch_add(1, Ordering::Relaxed);
        totals.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
        seq += 1;
    }
    SinkExt::<Bytes>::close(&mut sink).await
}

struct Gauge {
    live: Box<dyn Fn() -> (usize, usize, usize, u64) + Send + Sync>,
}

fn gauge<S: BufferSource>(
    f: impl Fn(&S) -> (usize, usize, usize, u64) + Send + Sync + 'static,
    s: S,
) -> Gauge {
    Gauge {
        live: Box::new(move || f(&s)),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(msg) = args.validate() {
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let args = Arc::new(args);
    let cap = args.arena_mib * 1024 * 1024;
    let max_frame = args.max_frame;
    let chunk = (max_frame + 4).next_power_of_two().max(16 * 1024);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let totals = Arc::new(Totals::default());
    let (queue_tx, mut queue_rx) = tokio::sync::mpsc::channel::<Bytes>(4096);

    // The arena, its gauge, and the accept loop, per kind.
    let nz = |n: usize| NonZeroUsize::new(n).ok_or("size must be non-zero");
    let (gauge, arena_desc) = match args.arena {
        ArenaKind::Fixed => {
            let slots = (cap / chunk).max(1);
            let arena = FixedArena::builder(nz(slots)?, nz(chunk)?).build()?;
            let desc = format!("fixed: {slots} slots of {} KiB", chunk / 1024);
            spawn_accept(
                listener,
                arena.clone(),
                nz(chunk)?,
                max_frame,
                queue_tx,
                totals.clone(),
                args.connections,
            );
            (
                gauge(
                    |a: &FixedArena| {
                        let m = a.metrics();
                        (
                            m.live_bytes,
                            m.reserved_bytes,
                            m.waiting_tasks,
                            m.wait_count,
                        )
                    },
                    arena,
                ),
                desc,
            )
        }
        ArenaKind::Buddy => {
            let total = cap.next_power_of_two();
            let arena = BuddyArena::builder(nz(total)?, nz(256)?).build()?;
            let desc = format!("buddy: {} MiB, 256 B minimum block", total >> 20);
            spawn_accept(
                listener,
                arena.clone(),
                nz(chunk)?,
                max_frame,
                queue_tx,
                totals.clone(),
                args.connections,
            );
            (
                gauge(
                    |a: &BuddyArena| {
                        let m = a.metrics();
                        (
                            m.live_bytes,
                            m.reserved_bytes,
                            m.waiting_tasks,
                            m.wait_count,
                        )
                    },
                    arena,
                ),
                desc,
            )
        }
    };

    // The slow consumer: checks every frame, then holds it a while.
    let consumer = {
        let totals = totals.clone();
        let delay = Duration::from_micros(args.consumer_delay_us);
        tokio::spawn(async move {
            let mut scratch = BytesMut::new();
            let mut due = Instant::now();
            while let Some(frame) = queue_rx.recv().await {
                let ok = check(&frame, &mut scratch);
                totals.checked.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    totals.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                // Sleep in batches: timers are coarser than the per-frame delay.
                due += delay;
                if due > Instant::now() + Duration::from_millis(1) {
                    tokio::time::sleep_until(due.into()).await;
                } else if due < Instant::now() {
                    due = Instant::now();
                }
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..args.connections)
        .map(|conn| {
            tokio::spawn(client(
                addr,
                conn,
                args.clone(),
                stop.clone(),
                totals.clone(),
            ))
        })
        .collect();

    println!(
        "ingest: {} connections, frames {}..{} B, arena {arena_desc} (cap {} MiB), consumer {} us/frame, {} s",
        args.connections,
        args.min_frame,
        args.max_frame,
        args.arena_mib,
        args.consumer_delay_us,
        args.duration
    );
    let started = Instant::now();
    let run_for = Duration::from_secs_f64(args.duration);
    let tick = Duration::from_millis(100);
    let tty = std::io::stdout().is_terminal();
    let bar = tty.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
        );
        bar
    });
    let (mut peak_live, mut waiting_time) = (0usize, Duration::ZERO);
    let mut last_line = Instant::now();
    let status = |elapsed: Duration, live: usize, reserved: usize, waiting: usize| {
        let received = totals.recv_bytes.load(Ordering::Relaxed);
        format!(
            "{:5.1} s  {:>9} frames  {:7.1} MiB/s  arena {:6.2}/{:.0} MiB  {:3} waiting",
            elapsed.as_secs_f64(),
            totals.recv_frames.load(Ordering::Relaxed),
            mib(received) / elapsed.as_secs_f64().max(1e-9),
            mib(live as u64),
            mib(reserved as u64),
            waiting
        )
    };
    loop {
        tokio::time::sleep(tick).await;
        let elapsed = started.elapsed();
        let (live, reserved, waiting, _) = (gauge.live)();
        peak_live = peak_live.max(live);
        if waiting > 0 {
            waiting_time += tick;
        }
        if elapsed >= run_for {
            stop.store(true, Ordering::Relaxed);
        }
        let line = status(elapsed, live, reserved, waiting);
        match &bar {
            Some(bar) => bar.set_message(line),
            None if last_line.elapsed() >= Duration::from_secs(1) => {
                println!("{line}");
                last_line = Instant::now();
            }
            None => {}
        }
        if stop.load(Ordering::Relaxed) && clients.iter().all(|c| c.is_finished()) {
            break;
        }
    }
    for c in clients {
        c.await??;
    }
    // The readers end at EOF; the consumer drains the queue and ends.
    consumer.await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let elapsed = started.elapsed();
    let (live, reserved, _, wait_count) = (gauge.live)();
    let t = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (sf, sb, rf, rb) = (
        t(&totals.sent_frames),
        t(&totals.sent_bytes),
        t(&totals.recv_frames),
        t(&totals.recv_bytes),
    );
    println!("\nsummary after {:.1} s", elapsed.as_secs_f64());
    println!("  sent      {sf:>10} frames  {:>10.1} MiB", mib(sb));
    println!(
        "  received  {rf:>10} frames  {:>10.1} MiB  ({:.1} MiB/s)",
        mib(rb),
        mib(rb) / elapsed.as_secs_f64()
    );
    println!(
        "  checked   {:>10} frames, {} corrupt",
        t(&totals.checked),
        t(&totals.corrupt)
    );
    println!(
        "  arena     peak {:.2} MiB of {:.0} MiB cap, {:.2} MiB in use at the end",
        mib(peak_live as u64),
        mib(reserved as u64),
        mib(live as u64)
    );
    println!(
        "  waiting   readers waited for buffers {wait_count} times; {:.1} s with at least one waiting",
        waiting_time.as_secs_f64()
    );
    println!(
        "  heap      peak {:.2} MiB for the whole process",
        mib(HEAP_PEAK.load(Ordering::Relaxed) as u64)
    );
    let ok = sf == rf && sb == rb && t(&totals.corrupt) == 0 && t(&totals.checked) == rf;
    println!(
        "  {}",
        if ok {
            "OK: every frame sent arrived intact"
        } else {
            "MISMATCH: frames lost or corrupted"
        }
    );
    if ok {
        Ok(())
    } else {
        Err("sent and received do not match".into())
    }
}

fn spawn_accept<S: BufferSource>(
    listener: TcpListener,
    source: S,
    chunk: NonZeroUsize,
    max_frame: usize,
    queue: tokio::sync::mpsc::Sender<Bytes>,
    totals: Arc<Totals>,
    connections: u32,
) {
    tokio::spawn(async move {
        for _ in 0..connections {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (source, queue, totals) = (source.clone(), queue.clone(), totals.clone());
            tokio::spawn(async move {
                if let Err(e) = serve(stream, source, chunk, max_frame, queue, totals).await {
                    eprintln!("connection error: {e}");
                }
            });
        }
    });
}

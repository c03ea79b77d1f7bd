//! arenabuf's main demonstration: a loopback TCP server ingesting
//! length-delimited frames from many connections through `ArenaReader` into
//! a small arena, with a deliberately slow consumer, so that backpressure
//! happens and shows. With `--compare`, the same load then runs through
//! tokio_util's `FramedRead` + `LengthDelimitedCodec`, and the summary puts
//! the two side by side.
//!
//! ```sh
//! cargo run --release -p ingest-demo
//! cargo run --release -p ingest-demo -- --compare
//! cargo run --release -p ingest-demo -- --help
//! ```
//!
//! Each client sends frames whose bytes are derived from (connection, frame
//! number); the server checks every byte. Frames wait in a bounded queue for
//! a consumer that takes `--consumer-delay-us` per frame; the frames in that
//! queue pin arena memory, the arena fills, the readers stop reading their
//! sockets, the kernel buffers fill and the clients' writes block.
//!
//! The server and the clients run on two separate tokio runtimes, and a
//! counting global allocator attributes each allocation to the thread's
//! role, so the heap figures are the server's alone.

mod args;
mod heap;

use std::error::Error;
use std::future::poll_fn;
use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arenabuf::codec::LengthDelimited;
use arenabuf::io::{ArenaReader, Framing};
use arenabuf::{ArenaMetrics, BuddyArena, BufferSource, FixedArena};
use bytes::{BufMut, Bytes, BytesMut};
use futures_core::Stream;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use args::{ArenaKind, Args};
use heap::Role;

#[global_allocator]
static GLOBAL: heap::CountingAlloc = heap::CountingAlloc;

/// Frame header: connection (4 bytes) and frame number (8 bytes); the rest is
/// a pattern both sides derive from them.
const HEADER: usize = 12;

/// Frames the queue between the readers and the consumer holds.
const QUEUE: usize = 4096;

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
    errors: AtomicU64,
}

/// How the server reads its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    /// `ArenaReader` into the arena.
    Arena(ArenaKind),
    /// tokio_util's `FramedRead` + `LengthDelimitedCodec`: a `BytesMut` per
    /// frame, from the heap.
    Framed,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Arena(_) => "arenabuf ArenaReader",
            Server::Framed => "FramedRead + LengthDelimitedCodec",
        }
    }
}

/// What one phase measured.
struct Phase {
    server: Server,
    elapsed: Duration,
    sending: Duration,
    sent_frames: u64,
    sent_bytes: u64,
    recv_frames: u64,
    recv_bytes: u64,
    checked: u64,
    corrupt: u64,
    errors: u64,
    /// Peak and cap of the arena (arena phases only).
    arena: Option<(usize, usize)>,
    wait_count: u64,
    waiting_time: Duration,
    server_heap_peak: usize,
    peak_rate: f64,
}

impl Phase {
    fn ok(&self) -> bool {
        self.sent_frames == self.recv_frames
            && self.sent_bytes == self.recv_bytes
            && self.corrupt == 0
            && self.errors == 0
            && self.checked == self.recv_frames
    }

    fn average_rate(&self) -> f64 {
        mib(self.recv_bytes) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => return, // --help or --version
        Err(msg) => {
            eprintln!("error: {msg}\n\nRun with --help for the options.");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn Error>> {
    let mut phases = vec![Server::Arena(args.arena)];
    if args.compare {
        phases.push(Server::Framed);
    }
    let mut results = Vec::new();
    for server in phases {
        let phase = match server {
            Server::Arena(ArenaKind::Fixed) => {
                let slots = (args.cap() / args.chunk()).max(1);
                let arena = FixedArena::builder(nz(slots)?, nz(args.chunk())?).build()?;
                let desc = format!("fixed: {slots} slots of {} KiB", args.chunk() / 1024);
                run_phase(args, server, Some(arena), &desc)?
            }
            Server::Arena(ArenaKind::Buddy) => {
                let total = args.cap().next_power_of_two();
                let arena = BuddyArena::builder(nz(total)?, nz(256)?).build()?;
                let desc = format!("buddy: {} MiB, 256 B minimum block", total >> 20);
                run_phase(args, server, Some(arena), &desc)?
            }
            Server::Framed => run_phase::<FixedArena>(args, server, None, "")?,
        };
        print_summary(&phase);
        results.push(phase);
    }
    if let [arena, framed] = &results[..] {
        print_comparison(arena, framed);
    }
    if results.iter().all(Phase::ok) {
        Ok(())
    } else {
        Err("sent and received do not match".into())
    }
}

fn nz(n: usize) -> Result<NonZeroUsize, &'static str> {
    NonZeroUsize::new(n).ok_or("size must be non-zero")
}

/// One run of the load against `server`; `source` is the arena for the
/// arena phases, `None` for the `FramedRead` one.
fn run_phase<S: BufferSource>(
    args: &Args,
    server: Server,
    source: Option<S>,
    arena_desc: &str,
) -> Result<Phase, Box<dyn Error>> {
    // Two runtimes: the allocator counts the server's threads apart from
    // the clients' (and from this thread, which only prints).
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .on_thread_start(|| heap::set_role(Role::Server))
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("client")
        .on_thread_start(|| heap::set_role(Role::Client))
        .build()?;
    let listener = server_rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let totals = Arc::new(Totals::default());
    let (queue_tx, mut queue_rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);

    // The accept loop, then one reader task per connection.
    {
        let (totals, connections) = (totals.clone(), args.connections);
        let (source, chunk, max_frame) = (source.clone(), args.chunk(), args.max_frame);
        server_rt.spawn(async move {
            for _ in 0..connections {
                let Ok((stream, _)) = listener.accept().await else {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let (queue, totals) = (queue_tx.clone(), totals.clone());
                let source = source.clone();
                tokio::spawn(async move {
                    let served = match source {
                        Some(source) => {
                            serve_arena(stream, source, chunk, max_frame, queue, &totals).await
                        }
                        None => serve_framed(stream, max_frame, queue, &totals).await,
                    };
                    if let Err(e) = served {
                        eprintln!("connection error: {e}");
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
    }

    // The slow consumer: checks every frame, then holds it a while.
    let consumer = {
        let totals = totals.clone();
        let delay = Duration::from_micros(args.consumer_delay_us);
        server_rt.spawn(async move {
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

    heap::reset_peak(Role::Server);
    let stop = Arc::new(AtomicBool::new(false));
    let args_shared = Arc::new(args.clone());
    let clients: Vec<_> = (0..args.connections)
        .map(|conn| {
            client_rt.spawn(client(
                addr,
                conn,
                args_shared.clone(),
                stop.clone(),
                totals.clone(),
            ))
        })
        .collect();

    let memory = match server {
        Server::Arena(_) => format!("arena {arena_desc} (cap {} MiB)", args.arena_mib),
        Server::Framed => "a BytesMut per frame, no cap".into(),
    };
    println!(
        "\n{}: {} connections, frames {}..{} B, {memory}, consumer {} us/frame, {} s of sending",
        server.name(),
        args.connections,
        args.min_frame,
        args.max_frame,
        args.consumer_delay_us,
        args.duration
    );
    let started = Instant::now();
    let run_for = Duration::from_secs_f64(args.duration);
    let tick = Duration::from_millis(100);
    let tty = std::io::stdout().is_terminal();
    let mut last_line = Instant::now();
    let mut arena_peak = 0usize;
    let mut waiting_time = Duration::ZERO;
    let mut sending = None;
    // Received bytes a second ago, for the current rate.
    let mut window = std::collections::VecDeque::from([(started, 0u64, 0u64)]);
    let mut peak_rate = 0f64;
    loop {
        std::thread::sleep(tick);
        let now = Instant::now();
        let elapsed = now - started;
        if elapsed >= run_for && sending.is_none() {
            // The clients stop; the phase goes on until every frame sent
            // has been consumed.
            stop.store(true, Ordering::Relaxed);
            sending = Some(elapsed);
        }
        let clients_done = clients.iter().all(|c| c.is_finished());
        let metrics: Option<ArenaMetrics> = source.as_ref().map(BufferSource::arena_metrics);
        if let Some(m) = metrics {
            arena_peak = arena_peak.max(m.live_bytes);
            if m.waiting_tasks > 0 {
                waiting_time += tick;
            }
        }
        let received = totals.recv_bytes.load(Ordering::Relaxed);
        let frames = totals.recv_frames.load(Ordering::Relaxed);
        window.push_back((now, received, frames));
        while window.len() > 2 && now - window[1].0 >= Duration::from_secs(1) {
            window.pop_front();
        }
        let (then, bytes_then, frames_then) = window[0];
        let span = (now - then).as_secs_f64().max(1e-9);
        let rate = mib(received - bytes_then) / span;
        let frame_rate = (frames - frames_then) as f64 / span;
        peak_rate = peak_rate.max(rate);
        // After the stop, the clients' last writes may stay blocked until the
        // server has read what the kernel's socket buffers hold.
        let state = if !stop.load(Ordering::Relaxed) {
            "sending"
        } else {
            "draining"
        };
        let memory = match metrics {
            Some(m) => format!(
                "arena {:6.2}/{:.0} MiB  {:3} waiting",
                mib(m.live_bytes as u64),
                mib(m.reserved_bytes as u64),
                m.waiting_tasks
            ),
            None => String::new(),
        };
        let line = format!(
            "{:5.1} s {state:8} {frames:>9} frames {:>8.0}/s {:7.1} MiB/s now  {memory}  server heap {:6.1} MiB",
            elapsed.as_secs_f64(),
            frame_rate,
            rate,
            mib(heap::now(Role::Server) as u64),
        );
        if tty {
            print!("\r{line}\x1b[K");
            let _ = std::io::stdout().flush();
        } else if last_line.elapsed() >= Duration::from_secs(1) {
            println!("{line}");
            last_line = Instant::now();
        }
        if clients_done && consumer.is_finished() {
            break;
        }
    }
    if tty {
        println!();
    }
    for c in clients {
        client_rt.block_on(c)??;
    }
    // The readers ended at EOF; the consumer drained the queue and ended.
    server_rt.block_on(consumer)?;
    let elapsed = started.elapsed();
    let wait_count = source.as_ref().map_or(0, |s| s.arena_metrics().wait_count);
    let arena = source.as_ref().map(|s| {
        let m = s.arena_metrics();
        (arena_peak, m.reserved_bytes)
    });
    let t = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let phase = Phase {
        server,
        elapsed,
        sending: sending.unwrap_or(elapsed),
        sent_frames: t(&totals.sent_frames),
        sent_bytes: t(&totals.sent_bytes),
        recv_frames: t(&totals.recv_frames),
        recv_bytes: t(&totals.recv_bytes),
        checked: t(&totals.checked),
        corrupt: t(&totals.corrupt),
        errors: t(&totals.errors),
        arena,
        wait_count,
        waiting_time,
        server_heap_peak: heap::peak(Role::Server),
        peak_rate,
    };
    client_rt.shutdown_background();
    server_rt.shutdown_background();
    Ok(phase)
}

/// Reads one connection's frames into the arena and queues them for the
/// consumer.
async fn serve_arena<S: BufferSource>(
    stream: TcpStream,
    source: S,
    chunk: usize,
    max_frame: usize,
    queue: tokio::sync::mpsc::Sender<Bytes>,
    totals: &Totals,
) -> std::io::Result<()> {
    let layout = LengthDelimited::builder()
        .max_frame_length(max_frame)
        .layout()
        .map_err(std::io::Error::other)?;
    let chunk = NonZeroUsize::new(chunk).ok_or_else(|| std::io::Error::other("chunk of 0"))?;
    let mut frames = ArenaReader::new(stream, source)
        .with_chunk_size(chunk)
        .frames(Framing::length_delimited(layout))
        .map_err(std::io::Error::other)?;
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut frames).poll_next(cx)).await {
        if !deliver(frame?, &queue, totals).await {
            break;
        }
    }
    Ok(())
}

/// The usual tokio way: `FramedRead` + `LengthDelimitedCodec`, a `BytesMut`
/// per frame.
async fn serve_framed(
    stream: TcpStream,
    max_frame: usize,
    queue: tokio::sync::mpsc::Sender<Bytes>,
    totals: &Totals,
) -> std::io::Result<()> {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec();
    let mut frames = FramedRead::new(stream, codec);
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut frames).poll_next(cx)).await {
        if !deliver(frame?.freeze(), &queue, totals).await {
            break;
        }
    }
    Ok(())
}

/// Counts a frame and queues it; false once the consumer is gone.
async fn deliver(frame: Bytes, queue: &tokio::sync::mpsc::Sender<Bytes>, totals: &Totals) -> bool {
    totals.recv_frames.fetch_add(1, Ordering::Relaxed);
    totals
        .recv_bytes
        .fetch_add(frame.len() as u64, Ordering::Relaxed);
    queue.send(frame).await.is_ok()
}

/// Sends length-delimited frames (tokio_util's default wire format: a
/// 4-byte big-endian length, then the payload) until `stop`.
async fn client(
    addr: std::net::SocketAddr,
    conn: u32,
    args: Arc<Args>,
    stop: Arc<AtomicBool>,
    totals: Arc<Totals>,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    let mut sink = BufWriter::with_capacity(64 * 1024, stream);
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
        frame.put_u32(len as u32);
        fill(conn, seq, len, &mut frame);
        sink.write_all(&frame).await?;
        totals.sent_frames.fetch_add(1, Ordering::Relaxed);
        totals.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
        seq += 1;
    }
    sink.flush().await?;
    sink.shutdown().await
}

fn print_summary(p: &Phase) {
    println!(
        "\nsummary ({}) after {:.1} s: {:.1} s sending, then {:.1} s draining what was still on its way",
        p.server.name(),
        p.elapsed.as_secs_f64(),
        p.sending.as_secs_f64(),
        (p.elapsed - p.sending).as_secs_f64()
    );
    println!(
        "  sent      {:>10} frames  {:>10.1} MiB",
        p.sent_frames,
        mib(p.sent_bytes)
    );
    println!(
        "  received  {:>10} frames  {:>10.1} MiB  ({:.1} MiB/s average, {:.1} MiB/s at best)",
        p.recv_frames,
        mib(p.recv_bytes),
        p.average_rate(),
        p.peak_rate
    );
    println!(
        "  checked   {:>10} frames, {} corrupt, {} connection errors",
        p.checked, p.corrupt, p.errors
    );
    if let Some((peak, cap)) = p.arena {
        println!(
            "  arena     peak {:.2} MiB of {:.0} MiB cap",
            mib(peak as u64),
            mib(cap as u64)
        );
        println!(
            "  waiting   readers waited for buffers {} times; {:.1} s with at least one waiting",
            p.wait_count,
            p.waiting_time.as_secs_f64()
        );
    }
    println!(
        "  heap      peak {:.2} MiB on the server's threads (readers, queue, consumer; not the clients', not the arena's reserved memory)",
        mib(p.server_heap_peak as u64)
    );
    println!(
        "  {}",
        if p.ok() {
            "OK: every frame sent arrived intact"
        } else {
            "MISMATCH: frames lost or corrupted"
        }
    );
}

fn print_comparison(arena: &Phase, framed: &Phase) {
    let memory = |p: &Phase| p.server_heap_peak + p.arena.map_or(0, |(_, cap)| cap);
    println!("\nside by side (same load, same consumer, same machine):");
    println!(
        "  {:<34} {:>22} {:>34}",
        "",
        arena.server.name(),
        framed.server.name()
    );
    let row = |what: &str, a: String, f: String| println!("  {what:<34} {a:>22} {f:>34}");
    row(
        "server memory peak (heap + arena)",
        format!("{:.1} MiB", mib(memory(arena) as u64)),
        format!("{:.1} MiB", mib(memory(framed) as u64)),
    );
    row(
        "  of which the arena's cap",
        format!(
            "{:.1} MiB",
            mib(arena.arena.map_or(0, |(_, cap)| cap) as u64)
        ),
        "-".into(),
    );
    row(
        "throughput (average)",
        format!("{:.1} MiB/s", arena.average_rate()),
        format!("{:.1} MiB/s", framed.average_rate()),
    );
    row(
        "frames received",
        arena.recv_frames.to_string(),
        framed.recv_frames.to_string(),
    );
    row(
        "all intact",
        if arena.ok() { "yes" } else { "NO" }.into(),
        if framed.ok() { "yes" } else { "NO" }.into(),
    );
}

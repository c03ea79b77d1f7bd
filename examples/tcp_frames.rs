//! A length-delimited TCP server and client in one process, on 127.0.0.1.
//!
//! The client writes frames of 64 B to 16 KiB with tokio_util's stock
//! `LengthDelimitedCodec`; the server reads them with `ArenaReader::frames`
//! into a small `FixedArena` (frames are zero-copy slices of 64 KiB arena
//! chunks) and checks each one. Every half second it prints frames, MiB/s
//! and arena use; at the end, a summary.
//!
//! ```sh
//! cargo run --release --example tcp_frames
//! cargo run --release --example tcp_frames -- --seconds 10 --hold 512
//! ```

use std::error::Error;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use arenabuf::FixedArena;
use arenabuf::io::Frames;
use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

#[derive(Parser, Debug)]
#[command(about = "Length-delimited frames over loopback TCP into arena memory")]
struct Args {
    /// How long the client sends.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Arena slots (of 64 KiB each): the memory cap.
    #[arg(long, default_value_t = 64)]
    slots: usize,
    /// Frames the server keeps alive (the last N), pinning their chunks.
    #[arg(long, default_value_t = 64)]
    hold: usize,
}

const SLOT: usize = 64 * 1024;
const MIN_FRAME: usize = 64;
const MAX_FRAME: usize = 16 * 1024;

/// Frame `i`: a length from a simple generator, bytes derived from `i`.
fn frame(i: u64, pattern: &[u8]) -> Bytes {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    let len = MIN_FRAME + (x as usize) % (MAX_FRAME - MIN_FRAME + 1);
    let start = (i % 251) as usize;
    Bytes::copy_from_slice(&pattern[start..start + len])
}

fn check(i: u64, got: &[u8], pattern: &[u8]) -> bool {
    got == &frame(i, pattern)[..]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let slots = NonZeroUsize::new(args.slots).ok_or("--slots must be at least 1")?;
    let arena = FixedArena::builder(slots, NonZeroUsize::new(SLOT).expect("non-zero")).build()?;
    let cap = arena.metrics().reserved_bytes;
    let pattern: Vec<u8> = (0..MAX_FRAME + 256).map(|i| (i % 241) as u8).collect();

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!(
        "server on {addr}; arena: {} slots x {} KiB = {} MiB cap; the server holds the last {} frames",
        args.slots,
        SLOT / 1024,
        cap >> 20,
        args.hold
    );

    // The client: frames until the time is up, then close.
    let send_for = Duration::from_secs_f64(args.seconds);
    let client_pattern = pattern.clone();
    let client = tokio::spawn(async move {
        let socket = TcpStream::connect(addr).await?;
        let mut tx = FramedWrite::new(socket, LengthDelimitedCodec::new());
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < send_for {
            for _ in 0..64 {
                tx.feed(frame(i, &client_pattern)).await?;
                i += 1;
            }
        }
        SinkExt::<Bytes>::close(&mut tx).await?;
        Ok::<u64, std::io::Error>(i)
    });

    // The server.
    let (socket, _) = listener.accept().await?;
    let mut frames = Frames::length_delimited(socket, arena.clone()).unwrap();
    let mut held = std::collections::VecDeque::with_capacity(args.hold + 1);
    let (mut count, mut bytes, mut peak, mut bad) = (0u64, 0u64, 0usize, 0u64);
    let start = Instant::now();
    let mut last_print = start;
    let mut last_bytes = 0u64;
    while let Some(f) = frames.next().await {
        let f = f?;
        if !check(count, &f, &pattern) {
            bad += 1;
        }
        count += 1;
        bytes += f.len() as u64;
        held.push_back(f);
        if held.len() > args.hold {
            held.pop_front();
        }
        if count % 256 == 0 {
            peak = peak.max(arena.metrics().live_bytes);
            let now = Instant::now();
            if now - last_print >= Duration::from_millis(500) {
                let mib_s = (bytes - last_bytes) as f64
                    / (1 << 20) as f64
                    / (now - last_print).as_secs_f64();
                let live = arena.metrics().live_bytes;
                println!(
                    "{count:>9} frames  {:>8.1} MiB  {mib_s:>8.1} MiB/s  arena {:>5.2} / {} MiB",
                    bytes as f64 / (1 << 20) as f64,
                    live as f64 / (1 << 20) as f64,
                    cap >> 20
                );
                last_print = now;
                last_bytes = bytes;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent = client.await??;
    drop(held);
    let m = arena.metrics();
    println!(
        "done: {count} frames ({:.1} MiB) in {elapsed:.2} s = {:.1} MiB/s; {} arena chunks ({:.1} frames per chunk)",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / (1 << 20) as f64 / elapsed,
        m.alloc_count,
        count as f64 / m.alloc_count.max(1) as f64
    );
    println!(
        "arena: peak {:.2} MiB of {} MiB, waited for memory {} times, {} bytes live at the end",
        peak as f64 / (1 << 20) as f64,
        cap >> 20,
        m.wait_count,
        m.live_bytes
    );
    if count != sent || bad != 0 || m.live_bytes != 0 {
        return Err(format!("{sent} frames sent, {count} received, {bad} corrupted").into());
    }
    println!("all {count} frames checked byte for byte");
    Ok(())
}

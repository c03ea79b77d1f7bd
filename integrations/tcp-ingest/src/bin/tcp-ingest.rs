//! `tcp-ingest [ADDR] [reader|codec]`: accepts length-delimited frames
//! (default 127.0.0.1:4000, `reader` mode) into a 16 MiB arena, checks each
//! frame made by `tcp_ingest::make_frame`, and prints a line per 10 000.

use std::num::NonZeroUsize;

use tcp_ingest::{Mode, check_frame};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:4000".into());
    let mode = match args.next().as_deref() {
        None | Some("reader") => Mode::Reader {
            chunk_size: NonZeroUsize::new(64 * 1024).unwrap(),
        },
        Some("codec") => Mode::Codec,
        Some(other) => return Err(format!("unknown mode {other:?}: use reader or codec").into()),
    };
    let nz = |n| NonZeroUsize::new(n).unwrap();
    let arena = arenabuf::BuddyArena::builder(nz(16 << 20), nz(256)).build()?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {} ({mode:?})", listener.local_addr()?);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(tcp_ingest::serve(listener, arena.clone(), mode, tx));
    let (mut frames, mut bad) = (0u64, 0u64);
    while let Some(frame) = rx.recv().await {
        frames += 1;
        if let Err(e) = check_frame(&frame) {
            bad += 1;
            eprintln!("{e}");
        }
        if frames % 10_000 == 0 {
            let m = arena.metrics();
            println!(
                "{frames} frames ({bad} bad), arena {} of {} bytes live, {} readers waiting",
                m.live_bytes, m.reserved_bytes, m.waiting_tasks
            );
        }
    }
    Ok(())
}

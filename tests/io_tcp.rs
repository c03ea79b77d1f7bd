//! The codecs and `ArenaReader` over real loopback TCP sockets: frames
//! written by tokio_util's stock codecs, read in random read sizes (and one
//! byte at a time), checked byte for byte; 200 connections sharing one small
//! arena behind a slow consumer; and every bad input, each its own test.

use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arenabuf::codec::{
    ArenaAnyDelimiterCodec, ArenaLengthDelimitedCodec, ArenaLinesCodec, LengthDelimited,
};
use arenabuf::io::{ArenaReader, Decoded, FrameDecoder, Frames, Framing, ReaderError};
use arenabuf::{BuddyArena, BufferSource, FixedArena};
use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LinesCodec};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// A connected loopback pair: (client, server).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// Guards against hangs: a test that stops making progress fails instead
/// of blocking the suite. (Not a timing assertion: the limit is far above
/// what any of these needs.)
async fn no_hang<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the test stopped making progress")
}

/// An `AsyncRead` that passes on at most a random number of bytes (1 to
/// `max`) per read.
struct RandomReads<R> {
    inner: R,
    rng: StdRng,
    max: usize,
    scratch: Vec<u8>,
}

impl<R> RandomReads<R> {
    fn new(inner: R, seed: u64, max: usize) -> Self {
        Self {
            inner,
            rng: StdRng::seed_from_u64(seed),
            max,
            scratch: vec![0; max],
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for RandomReads<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = this.rng.random_range(1..=this.max).min(buf.remaining());
        let mut small = ReadBuf::new(&mut this.scratch[..n]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut small))?;
        buf.put_slice(small.filled());
        Poll::Ready(Ok(()))
    }
}

/// Frame `i` of connection `conn`: a length from the seed, bytes that
/// identify both.
fn frame(conn: u64, i: u64, rng: &mut StdRng, max: usize) -> Bytes {
    let len = if rng.random_bool(0.05) {
        0
    } else {
        rng.random_range(1..=max)
    };
    let tag = conn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (0..len)
        .map(|j| (tag.rotate_left((j % 64) as u32) as u8) ^ (j as u8))
        .collect::<Vec<u8>>()
        .into()
}

fn frames_for(conn: u64, count: u64, max: usize) -> Vec<Bytes> {
    let mut rng = StdRng::seed_from_u64(conn);
    (0..count).map(|i| frame(conn, i, &mut rng, max)).collect()
}

/// Writes `frames` with tokio_util's stock `LengthDelimitedCodec`, then
/// closes the write side.
async fn send_frames(socket: TcpStream, frames: Vec<Bytes>) {
    let mut tx = FramedWrite::new(
        socket,
        LengthDelimitedCodec::builder()
            .max_frame_length(1 << 24)
            .new_codec(),
    );
    for f in frames {
        tx.feed(f).await.unwrap();
    }
    SinkExt::<Bytes>::close(&mut tx).await.unwrap();
}

/// Collects a stream of frames, checking each against `expected` byte for
/// byte as it arrives.
async fn check_stream<S, E>(mut frames: S, expected: &[Bytes])
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(f) = frames.next().await {
        let f = f.unwrap();
        assert!(n < expected.len(), "more frames than were sent");
        assert!(
            f == expected[n],
            "frame {n} differs ({} bytes vs {})",
            f.len(),
            expected[n].len()
        );
        n += 1;
    }
    assert_eq!(n, expected.len(), "frames missing");
}

fn ld_layout() -> LengthDelimited {
    LengthDelimited::builder()
        .max_frame_length(4096)
        .layout()
        .unwrap()
}

/// tokio_util's default layout with frames up to the source's maximum.
fn fitting<S: BufferSource>(source: &S) -> LengthDelimited {
    LengthDelimited::builder()
        .max_frame_length(source.max_len())
        .layout()
        .unwrap()
}

/// A decoder that does not bound its frames (no build-time check).
struct Unbounded(LengthDelimited);

impl FrameDecoder for Unbounded {
    fn decode(&mut self, data: &[u8]) -> io::Result<Decoded> {
        self.0.decode(data)
    }
}

#[tokio::test]
async fn stock_writer_to_every_reader_random_read_sizes() {
    // Frames up to 40 KiB: many straddle 16 KiB chunks, some are larger
    // than a chunk and get buffers of their own; small frames read one byte
    // at a time straddle 1 KiB chunks.
    // One byte per read is slow in a debug build: fewer, smaller frames.
    for (seed, read_max, count, max_len) in [
        (1u64, 1usize, 40, 3000),
        (2, 7, 100, 6000),
        (3, 1000, 150, 40 << 10),
        (4, 70_000, 150, 40 << 10),
    ] {
        let expected = frames_for(seed, count, max_len);

        // ArenaReader::frames, from a buddy arena (frames of any size).
        let arena = BuddyArena::builder(nz(4 << 20), nz(256)).build().unwrap();
        let (client, server) = pair().await;
        let writer = tokio::spawn(send_frames(client, expected.clone()));
        let chunk = if max_len < 16 << 10 { 1024 } else { 16 << 10 };
        let frames = ArenaReader::new(RandomReads::new(server, seed, read_max), arena.clone())
            .with_chunk_size(nz(chunk))
            .frames(Framing::length_delimited(fitting(&arena)))
            .unwrap();
        no_hang(check_stream(frames, &expected)).await;
        writer.await.unwrap();
        assert_eq!(arena.metrics().live_bytes, 0, "all memory back");

        // The drop-in codec in FramedRead.
        let (client, server) = pair().await;
        let writer = tokio::spawn(send_frames(client, expected.clone()));
        let codec = ArenaLengthDelimitedCodec::builder()
            .max_frame_length(4 << 20)
            .new_codec(arena.clone())
            .unwrap();
        let framed = FramedRead::new(RandomReads::new(server, seed, read_max), codec);
        no_hang(check_stream(framed, &expected)).await;
        writer.await.unwrap();
        assert_eq!(arena.metrics().live_bytes, 0);
    }
}

#[tokio::test]
async fn fixed_arena_chunks_frames_straddle_and_share() {
    // Slot-sized chunks; frames up to the slot size minus the header.
    let arena = FixedArena::builder(nz(64), nz(4096)).build().unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let expected: Vec<Bytes> = (0..500)
        .map(|i| {
            let len = rng.random_range(0..=4092);
            (0..len)
                .map(|j| (i as u8) ^ (j as u8))
                .collect::<Vec<u8>>()
                .into()
        })
        .collect();
    let (client, server) = pair().await;
    let writer = tokio::spawn(send_frames(client, expected.clone()));
    let frames = ArenaReader::new(RandomReads::new(server, 9, 3000), arena.clone())
        .frames(Framing::length_delimited(ld_layout()))
        .unwrap();
    no_hang(check_stream(frames, &expected)).await;
    writer.await.unwrap();
    let m = arena.metrics();
    assert_eq!(m.live_slots, 0);
    assert!(
        m.alloc_count < 500,
        "frames share chunks ({} chunks)",
        m.alloc_count
    );
}

#[tokio::test]
async fn lines_and_delimiters_over_tcp() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut lines: Vec<String> = (0..400)
        .map(|_| {
            let len = rng.random_range(0..300);
            (0..len)
                .map(|_| rng.random_range(b'a'..=b'z') as char)
                .collect()
        })
        .collect();
    lines.push("no newline after this one".into());
    let expected: Vec<Bytes> = lines.iter().map(|l| Bytes::from(l.clone())).collect();
    let arena = BuddyArena::builder(nz(1 << 20), nz(64)).build().unwrap();

    for read_max in [1usize, 500] {
        // Stock LinesCodec writes "\n"-ended lines; the last one is written
        // without its newline, which both readers give as a last frame.
        let send = |socket: TcpStream| {
            let lines = lines.clone();
            async move {
                let mut tx = FramedWrite::new(socket, LinesCodec::new());
                let (last, rest) = lines.split_last().unwrap();
                for l in rest {
                    tx.feed(format!("{l}\r")).await.unwrap(); // "\r\n" endings
                }
                SinkExt::<String>::flush(&mut tx).await.unwrap();
                let mut socket = tx.into_inner();
                socket.write_all(last.as_bytes()).await.unwrap();
                socket.shutdown().await.unwrap();
            }
        };
        let (client, server) = pair().await;
        let writer = tokio::spawn(send(client));
        let framed = FramedRead::new(
            RandomReads::new(server, 5, read_max),
            ArenaLinesCodec::new_with_max_length(arena.clone(), 1000),
        );
        no_hang(check_stream(framed, &expected)).await;
        writer.await.unwrap();

        let (client, server) = pair().await;
        let writer = tokio::spawn(send(client));
        let frames = ArenaReader::new(RandomReads::new(server, 6, read_max), arena.clone())
            .with_chunk_size(nz(1024))
            .frames(Framing::lines(1000))
            .unwrap();
        no_hang(check_stream(frames, &expected)).await;
        writer.await.unwrap();
        assert_eq!(arena.metrics().live_bytes, 0);
    }

    // Any delimiter byte.
    let (mut client, server) = pair().await;
    let writer = tokio::spawn(async move {
        client.write_all(b"a;bb;;ccc").await.unwrap();
        client.shutdown().await.unwrap();
    });
    let got: Vec<Bytes> = FramedRead::new(
        server,
        ArenaAnyDelimiterCodec::new(arena.clone(), b";".to_vec(), b";".to_vec()),
    )
    .map(|f| f.unwrap())
    .collect()
    .await;
    assert_eq!(got, ["a", "bb", "", "ccc"]);
    writer.await.unwrap();
}

#[tokio::test]
async fn chunk_stream_is_the_bytes_in_order() {
    let arena = FixedArena::builder(nz(4), nz(1000)).build().unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let (mut client, server) = pair().await;
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&sent).await.unwrap();
    });
    let mut chunks = ArenaReader::new(server, arena.clone());
    assert_eq!(chunks.chunk_size(), 1000);
    let mut got = Vec::new();
    while let Some(c) = no_hang(chunks.next()).await {
        let c = c.unwrap();
        assert!(!c.is_empty() && c.len() <= 1000);
        got.extend_from_slice(&c); // each chunk dropped here: 4 slots suffice
    }
    assert!(got == data);
    writer.await.unwrap();
    assert_eq!(arena.metrics().live_slots, 0);
}

/// 200 connections, one arena of 24 slots of 4 KiB, one slow consumer that
/// keeps the last 4 frames: every frame arrives intact, the arena never
/// goes over its cap, readers had to wait (the backpressure was real), all
/// connections finish, and all memory is back at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_one_small_arena_slow_consumer() {
    const CONNS: u64 = 200;
    const FRAMES: u64 = 40;
    const SLOTS: usize = 24;
    const SLOT: usize = 4096;
    let arena = FixedArena::builder(nz(SLOTS), nz(SLOT)).build().unwrap();
    let cap = arena.metrics().reserved_bytes;
    assert_eq!(cap, SLOTS * SLOT);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let clients: Vec<_> = (0..CONNS)
        .map(|conn| {
            tokio::spawn(async move {
                let mut socket = TcpStream::connect(addr).await.unwrap();
                // The connection's id first, then its frames.
                socket.write_all(&conn.to_be_bytes()).await.unwrap();
                send_frames(socket, frames_for(conn, FRAMES, 3000)).await;
            })
        })
        .collect();

    // The readers: one task per connection, frames into one channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, u64, Bytes)>(8);
    let finished = Arc::new(AtomicUsize::new(0));
    let accept = {
        let arena = arena.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            let mut readers = Vec::new();
            for _ in 0..CONNS {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (arena, tx, finished) = (arena.clone(), tx.clone(), finished.clone());
                readers.push(tokio::spawn(async move {
                    let mut id = [0; 8];
                    tokio::io::AsyncReadExt::read_exact(&mut socket, &mut id)
                        .await
                        .unwrap();
                    let conn = u64::from_be_bytes(id);
                    let mut frames = Frames::length_delimited(socket, arena).unwrap();
                    let mut i = 0;
                    while let Some(f) = frames.next().await {
                        tx.send((conn, i, f.unwrap())).await.unwrap();
                        i += 1;
                    }
                    assert_eq!(i, FRAMES, "connection {conn} lost frames");
                    finished.fetch_add(1, Ordering::SeqCst);
                }));
            }
            for r in readers {
                r.await.unwrap();
            }
        })
    };

    // The slow consumer: checks each frame, keeps the last 4, and pauses
    // now and then; meanwhile watches the arena.
    let consumer = {
        let arena = arena.clone();
        async move {
            let mut held = std::collections::VecDeque::new();
            let mut peak = 0;
            let mut total = 0u64;
            let mut next = vec![0u64; CONNS as usize];
            let expected: Vec<Vec<Bytes>> =
                (0..CONNS).map(|c| frames_for(c, FRAMES, 3000)).collect();
            while let Some((conn, i, f)) = rx.recv().await {
                assert_eq!(i, next[conn as usize], "frames of {conn} out of order");
                next[conn as usize] += 1;
                assert!(
                    f == expected[conn as usize][i as usize],
                    "frame {i} of {conn} corrupted"
                );
                peak = peak.max(arena.metrics().live_bytes);
                held.push_back(f);
                if held.len() > 4 {
                    held.pop_front();
                }
                total += 1;
                if total % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            drop(held);
            (total, peak)
        }
    };
    let (total, peak) = no_hang(async {
        let (consumed, accepted) = tokio::join!(consumer, accept);
        accepted.unwrap();
        consumed
    })
    .await;
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(total, CONNS * FRAMES);
    assert_eq!(finished.load(Ordering::SeqCst), CONNS as usize);
    assert!(peak <= cap, "arena use {peak} went over its cap {cap}");
    let m = arena.metrics();
    assert!(
        m.wait_count > 0,
        "no reader ever waited: the arena was not small"
    );
    assert_eq!(m.live_bytes, 0, "arena fully free at the end");
    assert_eq!(m.waiting_tasks, 0);
}

/// A regression test for readers that pin a chunk while waiting for the
/// next: with one slot, a frame cut off at the end of the chunk must still
/// get through once the consumer drops what it holds.
#[tokio::test]
async fn one_slot_arena_straddling_frames_make_progress() {
    let arena = FixedArena::builder(nz(1), nz(256)).build().unwrap();
    let expected = frames_for(77, 200, 200);
    let (client, server) = pair().await;
    let writer = tokio::spawn(send_frames(client, expected.clone()));
    let frames =
        Frames::length_delimited(RandomReads::new(server, 77, 300), arena.clone()).unwrap();
    no_hang(check_stream(frames, &expected)).await;
    writer.await.unwrap();
    assert_eq!(arena.metrics().live_slots, 0);
}

// ---------------------------------------------------------------------------
// Bad input, through ArenaReader::frames over TCP (the codec's own tests are
// in codec_compat.rs)
// ---------------------------------------------------------------------------

/// Polls a stream once; true if it is pending.
async fn poll_once<S: Stream + Unpin>(s: &mut S) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(s.poll_next_unpin(cx).is_pending())).await
}

/// Sends `bytes` and then either closes or keeps the connection open;
/// returns the reader's first error and the arena's metrics at that point.
async fn frames_error<S: BufferSource, D: FrameDecoder>(
    source: S,
    layout: D,
    bytes: &'static [u8],
    close: bool,
) -> (Vec<Bytes>, io::Error) {
    let (mut client, server) = pair().await;
    client.write_all(bytes).await.unwrap();
    if close {
        client.shutdown().await.unwrap();
    }
    let mut frames = ArenaReader::new(server, source)
        .with_chunk_size(nz(64))
        .frames(layout)
        .unwrap();
    let mut got = Vec::new();
    let e = no_hang(async {
        loop {
            match frames.next().await {
                Some(Ok(f)) => got.push(f),
                Some(Err(e)) => break e,
                None => panic!("the stream ended without an error"),
            }
        }
    })
    .await;
    assert!(frames.next().await.is_none(), "an error ends the stream");
    drop(client);
    (got, e)
}

#[tokio::test]
async fn reader_length_over_max_is_invalid_data_before_allocating_the_frame() {
    let arena = BuddyArena::builder(nz(1 << 20), nz(64)).build().unwrap();
    let layout = LengthDelimited::builder()
        .max_frame_length(100)
        .layout()
        .unwrap();
    let (got, e) = frames_error(arena.clone(), layout, &[0, 0, 0, 101, 1, 2, 3], false).await;
    assert!(got.is_empty());
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("frame size too big"), "{e}");
    // Only the 64-byte chunk the header was read into; no frame buffer.
    assert_eq!(arena.metrics().alloc_count, 1);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn reader_length_that_never_fits_is_an_error_not_a_wait() {
    // Fixed: 256-byte slots, a 1000-byte frame. The connection stays open,
    // so only an error (not EOF) can end this.
    let arena = FixedArena::builder(nz(4), nz(256)).build().unwrap();
    // A framing that allows it is refused when the reader is built.
    let (_, server) = pair().await;
    let e = ArenaReader::new(server, arena.clone())
        .frames(Framing::length_delimited(LengthDelimited::default()))
        .unwrap_err();
    assert_eq!(
        e,
        ReaderError::FrameTooLarge {
            max_frame_length: 8 << 20,
            source_max: 256
        }
    );
    assert!(
        e.to_string()
            .contains("use slots (or an arena) of at least"),
        "{e}"
    );
    // A decoder that does not bound its frames finds out per frame.
    let (_, e) = frames_error(
        arena.clone(),
        Unbounded(LengthDelimited::default()),
        &[0, 0, 3, 232, 1],
        false,
    )
    .await;
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("can never fit"), "{e}");
    assert_eq!(arena.metrics().live_slots, 0);

    // Buddy: a frame larger than the whole arena.
    let arena = BuddyArena::builder(nz(1 << 16), nz(64)).build().unwrap();
    let (_, e) = frames_error(
        arena.clone(),
        Unbounded(LengthDelimited::default()),
        &[0, 1, 0, 1, 1],
        false,
    )
    .await;
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn reader_eof_mid_frame_is_bytes_remaining() {
    let arena = BuddyArena::builder(nz(1 << 16), nz(64)).build().unwrap();
    for bytes in [
        &[0u8, 0, 0][..],
        &[0, 0, 0, 9][..],
        &[0, 0, 0, 9, 1, 2][..],
        &[0, 0, 0, 1, 7, 0, 0, 0, 200, 1][..],
    ] {
        let (got, e) = frames_error(arena.clone(), fitting(&arena), bytes, true).await;
        assert!(got.len() <= 1);
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert_eq!(e.to_string(), "bytes remaining on stream");
        drop(got);
        assert_eq!(arena.metrics().live_bytes, 0);
    }
}

#[tokio::test]
async fn reader_adjustment_underflow_is_invalid_input() {
    let arena = BuddyArena::builder(nz(1 << 16), nz(64)).build().unwrap();
    let layout = LengthDelimited::builder()
        .length_adjustment(-8)
        .max_frame_length(1000)
        .layout()
        .unwrap();
    let (_, e) = frames_error(arena.clone(), layout, &[0, 0, 0, 2, 1, 2], false).await;
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn reader_over_long_line_is_invalid_data() {
    let arena = BuddyArena::builder(nz(1 << 16), nz(64)).build().unwrap();
    let (mut client, server) = pair().await;
    client
        .write_all(b"ok\nthis line is too long")
        .await
        .unwrap();
    let mut frames = ArenaReader::new(server, arena.clone())
        .with_chunk_size(nz(8))
        .frames(Framing::lines(10))
        .unwrap();
    assert_eq!(no_hang(frames.next()).await.unwrap().unwrap(), "ok");
    let e = no_hang(frames.next()).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    drop(frames);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn reader_stalled_peer_holds_at_most_that_frames_buffer() {
    // A header for a 64 KiB frame (the 4-byte header included), part of
    // the payload, then silence with the connection open.
    let arena = BuddyArena::builder(nz(1 << 20), nz(64)).build().unwrap();
    let (mut client, server) = pair().await;
    let mut head = vec![0, 0, 0xff, 0xfc];
    head.extend_from_slice(&[5; 40_000]);
    client.write_all(&head).await.unwrap();
    let mut frames = Frames::builder(arena.clone())
        .chunk_size(nz(1024))
        .length_delimited(server)
        .unwrap();
    // Until the frame's own buffer is taken: only the 1 KiB chunk before.
    no_hang(async {
        loop {
            assert!(poll_once(&mut frames).await, "the frame is not complete");
            let m = arena.metrics();
            if m.alloc_count >= 2 {
                break;
            }
            assert!(m.live_bytes <= 1024, "{m:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    // From then on, whatever the reader takes in: that buffer, no more.
    for _ in 0..20 {
        assert!(poll_once(&mut frames).await, "the frame is not complete");
        assert_eq!(arena.metrics().live_bytes, 64 << 10);
        assert_eq!(arena.metrics().alloc_count, 2);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(frames);
    assert_eq!(
        arena.metrics().live_bytes,
        0,
        "dropping the reader frees it"
    );
    drop(client);
}

#[tokio::test]
async fn reader_waits_for_memory_and_resumes() {
    // A full arena: the reader waits in the arena's queue (it has no buffer
    // to read the socket into); when the holder drops its buffer, the
    // frames come through.
    let arena = FixedArena::builder(nz(1), nz(1024)).build().unwrap();
    let held = arena.allocate().unwrap();
    let expected = frames_for(3, 50, 500);
    let (client, server) = pair().await;
    let writer = tokio::spawn(send_frames(client, expected.clone()));
    let mut frames = Frames::length_delimited(server, arena.clone()).unwrap();
    for _ in 0..3 {
        let poll = std::future::poll_fn(|cx| Poll::Ready(frames.poll_next_unpin(cx))).await;
        assert!(poll.is_pending());
        tokio::task::yield_now().await;
    }
    assert_eq!(arena.metrics().waiting_tasks, 1);
    drop(held);
    no_hang(check_stream(frames, &expected)).await;
    writer.await.unwrap();
    assert_eq!(arena.metrics().live_slots, 0);
}

#[tokio::test]
async fn idle_connections_hold_no_memory() {
    // Ten connected peers that send nothing, four slots: the idle readers
    // hold no buffer, so a busy connection gets all the memory it needs.
    let arena = FixedArena::builder(nz(4), nz(1024)).build().unwrap();
    let mut idle = Vec::new();
    for i in 0..10 {
        let (client, server) = pair().await;
        let arena = arena.clone();
        let reader = if i % 2 == 0 {
            tokio::spawn(async move {
                let mut frames = Frames::length_delimited(server, arena).unwrap();
                assert!(frames.next().await.is_none(), "the idle peer only closes");
            })
        } else {
            tokio::spawn(async move {
                let mut chunks = ArenaReader::new(server, arena);
                assert!(chunks.next().await.is_none(), "the idle peer only closes");
            })
        };
        idle.push((client, reader));
    }
    // Every idle reader has polled its socket (it waits on it, not on the
    // arena) and holds nothing. (One thread: when this task looks, every
    // reader is parked.)
    no_hang(async {
        while arena.metrics().alloc_count < 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(arena.metrics().live_slots, 0);
    assert_eq!(arena.metrics().waiting_tasks, 0);

    let expected = frames_for(11, 300, 1000);
    let (client, server) = pair().await;
    let writer = tokio::spawn(send_frames(client, expected.clone()));
    let frames = Frames::length_delimited(server, arena.clone()).unwrap();
    no_hang(check_stream(frames, &expected)).await;
    writer.await.unwrap();

    for (client, reader) in idle {
        drop(client);
        no_hang(reader).await.unwrap();
    }
    assert_eq!(arena.metrics().live_slots, 0);
}

#[tokio::test]
async fn dropping_a_waiting_reader_cancels_its_wait() {
    // Cancellation: a reader dropped while it waits for memory leaves the
    // queue, and the memory freed later is not lost to it.
    let arena = FixedArena::builder(nz(1), nz(1024)).build().unwrap();
    let held = arena.allocate().unwrap();
    let (mut client, server) = pair().await;
    client.write_all(&[0, 0, 0, 3, 1, 2, 3]).await.unwrap();
    let mut frames = Frames::length_delimited(server, arena.clone()).unwrap();
    assert!(poll_once(&mut frames).await);
    assert_eq!(arena.metrics().waiting_tasks, 1);
    drop(frames);
    assert_eq!(arena.metrics().waiting_tasks, 0);
    drop(held);
    let m = arena.metrics();
    assert_eq!(m.live_slots, 0, "no slot went to the dropped reader");
    assert!(arena.allocate().is_ok());
}

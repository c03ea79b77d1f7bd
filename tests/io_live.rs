//! `Frames` stays live whatever the application holds (issue 11), over real
//! loopback sockets: consumers that keep some frames run to the end with
//! arena use bounded by what they keep; pair-taking consumers on tiny
//! arenas finish; frames of exactly the source's maximum are accepted;
//! every whole frame read before an error comes out before it; a waiting
//! reader can be cancelled and can give up after `max_wait`; a protocol of
//! our own (RESP) frames through `FrameDecoder`.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use arenabuf::codec::LengthDelimited;
use arenabuf::io::{
    ArenaReader, CopyBudget, Decoded, FrameDecoder, Frames, Framing, ReaderError, WaitTimeout,
};
use arenabuf::{BuddyArena, BufferSource, FixedArena};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// Turns a hang into a failure (not a timing assertion: far above need).
async fn no_hang<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the test stopped making progress")
}

/// Frame `i`: `len` bytes, each `i as u8`.
fn payload(i: usize, len: usize) -> Bytes {
    Bytes::from(vec![i as u8; len])
}

/// Writes `count` length-delimited frames of `len` bytes with tokio_util's
/// stock encoder.
async fn send(socket: TcpStream, count: usize, len: usize) {
    let mut tx = FramedWrite::new(socket, LengthDelimitedCodec::new());
    for i in 0..count {
        tx.feed(payload(i, len)).await.unwrap();
    }
    SinkExt::<Bytes>::flush(&mut tx).await.unwrap();
}

/// Arena bytes in use now, for either arena.
trait InUse: BufferSource {
    fn in_use(&self) -> usize;
}
impl InUse for FixedArena {
    fn in_use(&self) -> usize {
        self.metrics().live_bytes
    }
}
impl InUse for BuddyArena {
    fn in_use(&self) -> usize {
        self.metrics().live_bytes
    }
}

/// Keeps every `keep_every`th of `count` 100-byte frames to the end of the
/// stream; checks arena use against the held bytes all along.
async fn hold_some<S: InUse>(arena: S, count: usize, keep_every: usize) {
    const LEN: usize = 100;
    const CHUNK: usize = 64 << 10;
    let (client, server) = pair().await;
    let writer = tokio::spawn(send(client, count, LEN));
    let mut frames = Frames::length_delimited(server, arena.clone()).unwrap();
    let mut held = Vec::new();
    let mut n = 0;
    let mut peak = 0;
    no_hang(async {
        while let Some(frame) = frames.next().await {
            let frame = frame.unwrap();
            assert_eq!(frame, payload(n, LEN), "frame {n}");
            if n % keep_every == 0 {
                held.push(frame);
            } else {
                drop(frame);
            }
            n += 1;
            let held_bytes = held.len() * LEN;
            let in_use = arena.in_use();
            peak = peak.max(in_use);
            assert!(
                in_use <= 2 * held_bytes + CHUNK,
                "frame {n}: {in_use} arena bytes in use for {held_bytes} held"
            );
        }
    })
    .await;
    writer.await.unwrap();
    assert_eq!(n, count, "every frame arrived");
    let held_bytes = held.len() * LEN;
    // Heap copies are exactly the held bytes, counted in the budget.
    let m = frames.metrics();
    assert_eq!(m.frames as usize, count);
    assert!(
        m.copy_budget_in_use <= held_bytes,
        "{} budget bytes for {held_bytes} held",
        m.copy_budget_in_use
    );
    assert!(
        arena.in_use() <= 2 * held_bytes,
        "the chunk went back at EOF"
    );
    assert!(
        held.iter()
            .enumerate()
            .all(|(k, f)| *f == payload(k * keep_every, LEN))
    );
    drop(held);
    assert_eq!(arena.in_use(), 0);
    assert_eq!(frames.copy_budget().in_use(), 0);
    let _ = peak;
}

#[tokio::test]
async fn hold_one_in_50_and_1_in_500_fixed_arena() {
    for keep in [50, 500] {
        let arena = FixedArena::builder(nz(64), nz(64 << 10)).build().unwrap();
        hold_some(arena, 200_000, keep).await;
    }
}

#[tokio::test]
async fn hold_one_in_50_and_1_in_500_buddy_arena() {
    for keep in [50, 500] {
        let arena = BuddyArena::builder(nz(4 << 20), nz(64)).build().unwrap();
        hold_some(arena, 200_000, keep).await;
    }
}

#[tokio::test]
async fn zero_copy_opt_out_shows_pinning_in_metrics() {
    // The opt-out keeps frames as slices: the metrics show what they pin.
    let arena = BuddyArena::builder(nz(4 << 20), nz(64)).build().unwrap();
    let (client, server) = pair().await;
    let writer = tokio::spawn(send(client, 2000, 100));
    let mut frames = Frames::builder(arena.clone())
        .zero_copy()
        .length_delimited(server)
        .unwrap();
    let mut held = Vec::new();
    let mut n = 0;
    while let Some(frame) = no_hang(frames.next()).await {
        let frame = frame.unwrap();
        if n % 500 == 0 {
            held.push(frame);
        }
        n += 1;
    }
    writer.await.unwrap();
    let m = frames.metrics();
    assert_eq!(m.sliced_frames, 2000);
    assert_eq!(m.copied_frames, 0);
    assert!(m.sliced_chunk_bytes >= m.sliced_bytes);
    // Four held frames (400 bytes) keep whole chunks alive.
    assert!(
        arena.metrics().live_bytes >= 4096,
        "held slices pin their chunks"
    );
    // detach() moves them into memory of their own size.
    let detached: Vec<Bytes> = held.drain(..).map(|f| frames.detach(f).unwrap()).collect();
    assert!(
        arena.metrics().live_bytes <= 4 * 128,
        "{:?}",
        arena.metrics()
    );
    assert_eq!(detached[1], payload(500, 100));
}

/// Reads `count` frames as `chunks(2)` pairs, holding the first of each
/// pair while waiting for the second.
async fn pairs<S: BufferSource>(frames: Frames<TcpStream, S, LengthDelimited>, count: usize) {
    let mut n = 0;
    let mut pairs = frames.chunks(2);
    while let Some(pair) = pairs.next().await {
        for frame in pair {
            assert_eq!(frame.unwrap(), payload(n, 100));
            n += 1;
        }
    }
    assert_eq!(n, count);
}

#[tokio::test]
async fn pairs_on_a_one_slot_arena_finish() {
    let arena = FixedArena::builder(nz(1), nz(4096)).build().unwrap();
    let (client, server) = pair().await;
    let writer = tokio::spawn(send(client, 100, 100));
    let frames = Frames::length_delimited(server, arena.clone()).unwrap();
    no_hang(pairs(frames, 100)).await;
    writer.await.unwrap();
    assert_eq!(arena.metrics().live_slots, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_on_eight_connections_three_slots_finish() {
    let arena = FixedArena::builder(nz(3), nz(4096)).build().unwrap();
    let budget = CopyBudget::new(64 << 10); // shared by all eight
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, server) = pair().await;
        tasks.push(tokio::spawn(send(client, 100, 100)));
        let frames = Frames::builder(arena.clone())
            .copy_budget(budget.clone())
            .length_delimited(server)
            .unwrap();
        tasks.push(tokio::spawn(pairs(frames, 100)));
    }
    no_hang(async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    assert_eq!(arena.metrics().live_slots, 0);
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test]
async fn frames_of_exactly_the_source_maximum() {
    // 64-byte slots: a 64-byte line and a 64-byte payload (header apart).
    // (Room for every frame: the test keeps them all.)
    let arena = FixedArena::builder(nz(32), nz(64)).build().unwrap();
    let (mut client, server) = pair().await;
    let line = [b'x'; 64];
    let mut wire = Vec::new();
    for _ in 0..3 {
        wire.extend_from_slice(&line);
        wire.push(b'\n');
    }
    wire.extend_from_slice(b"short\r\n");
    client.write_all(&wire).await.unwrap();
    drop(client);
    let got: Vec<_> = no_hang(Frames::lines(server, arena.clone()).unwrap().collect()).await;
    let got: Vec<Bytes> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got.len(), 4);
    assert!(got[..3].iter().all(|l| l[..] == line[..]));
    assert_eq!(got[3], "short");
    drop(got);

    let (client, server) = pair().await;
    let writer = tokio::spawn(send(client, 20, 64));
    let frames = Frames::length_delimited(server, arena.clone()).unwrap();
    let got: Vec<_> = no_hang(frames.collect()).await;
    writer.await.unwrap();
    assert_eq!(got.len(), 20);
    for (i, f) in got.into_iter().enumerate() {
        assert_eq!(f.unwrap(), payload(i, 64));
    }
    assert_eq!(arena.metrics().live_slots, 0);

    // 16 KiB slots and max_frame_length(16 KiB): full-size frames pass.
    let arena = FixedArena::builder(nz(64), nz(16 << 10)).build().unwrap();
    let (client, server) = pair().await;
    let writer = tokio::spawn(send(client, 50, 16 << 10));
    let frames = Frames::builder(arena.clone())
        .length_delimited_with(
            server,
            LengthDelimited::builder().max_frame_length(16 << 10),
        )
        .unwrap();
    let got: Vec<_> = no_hang(frames.collect()).await;
    writer.await.unwrap();
    assert_eq!(got.len(), 50);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, f)| *f.as_ref().unwrap() == payload(i, 16 << 10))
    );

    // One byte more can never fit: an error when the reader is built.
    let (_, server) = pair().await;
    let e = Frames::builder(arena)
        .length_delimited_with(
            server,
            LengthDelimited::builder().max_frame_length((16 << 10) + 1),
        )
        .unwrap_err();
    assert_eq!(
        e,
        ReaderError::FrameTooLarge {
            max_frame_length: (16 << 10) + 1,
            source_max: 16 << 10
        }
    );
}

/// Hands out `reads` one per `poll_read`, then the error.
struct ThenError {
    reads: Vec<Vec<u8>>,
    kind: io::ErrorKind,
}

impl AsyncRead for ThenError {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.reads.is_empty() {
            return Poll::Ready(Err(io::Error::from(self.kind)));
        }
        let read = self.reads.remove(0);
        buf.put_slice(&read);
        Poll::Ready(Ok(()))
    }
}

async fn until_error<S: futures::Stream<Item = io::Result<Bytes>> + Unpin>(
    mut s: S,
) -> (Vec<Bytes>, io::Error) {
    let mut got = Vec::new();
    loop {
        match s.next().await.expect("an error ends the stream") {
            Ok(f) => got.push(f),
            Err(e) => {
                assert!(s.next().await.is_none());
                return (got, e);
            }
        }
    }
}

#[tokio::test]
async fn whole_frames_before_an_error_come_out_first_in_memory() {
    let arena = BuddyArena::builder(nz(1 << 16), nz(64)).build().unwrap();
    // tokio_util's example: "hi", then ConnectionReset.
    for zero_copy in [false, true] {
        let reader = ThenError {
            reads: vec![vec![0, 0, 0, 2, b'h', b'i']],
            kind: io::ErrorKind::ConnectionReset,
        };
        let mut b = Frames::builder(arena.clone());
        if zero_copy {
            b = b.zero_copy();
        }
        let (got, e) = until_error(b.length_delimited(reader).unwrap()).await;
        assert_eq!(got, vec![Bytes::from_static(b"hi")]);
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }
    // Lines, with a cut-off line at the end (lost, as at EOF it would not be).
    let reader = ThenError {
        reads: vec![b"one\ntwo\nthr".to_vec()],
        kind: io::ErrorKind::UnexpectedEof,
    };
    let (got, e) = until_error(Frames::lines(reader, arena.clone()).unwrap()).await;
    assert_eq!(got, vec!["one", "two"]);
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    // The plain chunk stream: the chunk, then the error.
    let reader = ThenError {
        reads: vec![b"abc".to_vec()],
        kind: io::ErrorKind::BrokenPipe,
    };
    let chunks = ArenaReader::new(reader, arena.clone()).with_chunk_size(nz(1024));
    let (got, e) = until_error(chunks).await;
    assert_eq!(got, vec!["abc"]);
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    drop(got);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[tokio::test]
async fn whole_frames_before_a_tcp_reset_come_out_first() {
    let arena = FixedArena::builder(nz(16), nz(64 << 10)).build().unwrap();
    let (client, server) = pair().await;
    // The peer sends 113 frames and resets the connection (SO_LINGER 0).
    let mut wire = BytesMut::new();
    for i in 0..113 {
        wire.put_u32(100);
        wire.put_slice(&payload(i, 100));
    }
    wire.put_u32(100); // and the head of one more, cut off by the reset
    let mut client = client;
    client.write_all(&wire).await.unwrap();
    client.flush().await.unwrap();
    client.set_zero_linger().unwrap();
    drop(client);
    let frames = Frames::length_delimited(server, arena.clone()).unwrap();
    let (got, e) = no_hang(until_error(frames)).await;
    assert_eq!(got.len(), 113, "every whole frame before the reset");
    assert!(got.iter().enumerate().all(|(i, f)| *f == payload(i, 100)));
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(arena.metrics().live_slots, 0);
}

#[cfg(unix)]
#[tokio::test]
async fn whole_frames_before_a_unix_peer_exits_come_out_first() {
    use tokio::net::UnixStream;
    let arena = FixedArena::builder(nz(16), nz(64 << 10)).build().unwrap();
    let (mut peer, mut ours) = UnixStream::pair().unwrap();
    let mut wire = BytesMut::new();
    for i in 0..113 {
        wire.put_u32(100);
        wire.put_slice(&payload(i, 100));
    }
    peer.write_all(&wire).await.unwrap();
    // The peer leaves data of ours unread and exits: our reads end in
    // ECONNRESET once its data is read.
    ours.write_all(b"unread").await.unwrap();
    drop(peer);
    let frames = Frames::length_delimited(ours, arena.clone()).unwrap();
    let (got, e) = no_hang(until_error(frames)).await;
    assert_eq!(got.len(), 113);
    assert!(got.iter().enumerate().all(|(i, f)| *f == payload(i, 100)));
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
}

/// Polls a stream once; true if it is pending.
async fn poll_once<S: futures::Stream + Unpin>(s: &mut S) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(s.poll_next_unpin(cx).is_pending())).await
}

#[tokio::test]
async fn a_waiting_next_can_be_dropped_and_resumed() {
    let arena = FixedArena::builder(nz(1), nz(4096)).build().unwrap();
    let held = arena.allocate().unwrap(); // the arena is full
    let (client, server) = pair().await;
    let writer = tokio::spawn(send(client, 50, 100));
    let mut frames = Frames::length_delimited(server, arena.clone()).unwrap();
    // A next() that waits for memory, cancelled as a timeout would.
    assert!(poll_once(&mut frames).await);
    let r = tokio::time::timeout(Duration::from_millis(20), frames.next()).await;
    assert!(r.is_err(), "no memory, no frame");
    assert_eq!(
        arena.metrics().waiting_tasks,
        1,
        "the stream keeps its place"
    );
    drop(held);
    let got: Vec<_> = no_hang(frames.collect()).await;
    writer.await.unwrap();
    assert_eq!(got.len(), 50);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, f)| *f.as_ref().unwrap() == payload(i, 100))
    );
    assert_eq!(arena.metrics().live_slots, 0);
    assert_eq!(arena.metrics().waiting_tasks, 0);
}

#[tokio::test(start_paused = true)]
async fn max_wait_gives_up_with_a_clear_error() {
    let arena = FixedArena::builder(nz(1), nz(4096)).build().unwrap();
    let _held = arena.allocate().unwrap(); // full, and stays full
    let (client, server) = pair().await;
    let writer = tokio::spawn(send(client, 5, 100));
    let mut frames = Frames::builder(arena.clone())
        .max_wait(Duration::from_secs(2))
        .length_delimited(server)
        .unwrap();
    let e = frames.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    let timeout = e.get_ref().unwrap().downcast_ref::<WaitTimeout>().unwrap();
    assert_eq!(timeout.requested, 4096);
    assert!(e.to_string().contains("drop or detach held frames"), "{e}");
    assert!(frames.next().await.is_none());
    assert_eq!(arena.metrics().waiting_tasks, 0);
    writer.abort();
}

/// A RESP subset: simple strings `+OK\r\n` (the frame is `OK`) and bulk
/// strings `$5\r\nhello\r\n` (the frame is `hello`).
struct Resp {
    max: usize,
}

impl FrameDecoder for Resp {
    fn decode(&mut self, data: &[u8]) -> io::Result<Decoded> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            if data.len() > 32 {
                return Err(bad("header line too long"));
            }
            return Ok(Decoded::Incomplete {
                min_len: data.len() + 1,
            });
        };
        match data[0] {
            b'+' => Ok(Decoded::Frame {
                payload: 1..line_end,
                next: line_end + 2,
            }),
            b'$' => {
                let len: usize = std::str::from_utf8(&data[1..line_end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("bad bulk length"))?;
                if len > self.max {
                    return Err(bad("bulk string too long"));
                }
                let payload: Range<usize> = line_end + 2..line_end + 2 + len;
                let next = payload.end + 2;
                if data.len() >= next {
                    if &data[payload.end..next] != b"\r\n" {
                        return Err(bad("bulk string not ended by CRLF"));
                    }
                    Ok(Decoded::Frame { payload, next })
                } else {
                    Ok(Decoded::Header { payload, next })
                }
            }
            _ => Err(bad("unknown RESP type")),
        }
    }

    fn max_frame_length(&self) -> Option<usize> {
        Some(self.max)
    }
}

#[tokio::test]
async fn a_custom_decoder_frames_resp() {
    let arena = BuddyArena::builder(nz(16 << 20), nz(64)).build().unwrap();
    let mut expected = Vec::new();
    let mut wire = Vec::new();
    for i in 0..300usize {
        if i % 3 == 0 {
            wire.extend_from_slice(b"+OK\r\n");
            expected.push(Bytes::from_static(b"OK"));
        } else {
            // Sizes up to 40 KiB: some are read straight into their own
            // buffer (trailer skipped), most are copied out of chunks.
            let len = (i * 997) % (40 << 10);
            let p = payload(i, len);
            wire.extend_from_slice(format!("${len}\r\n").as_bytes());
            wire.extend_from_slice(&p);
            wire.extend_from_slice(b"\r\n");
            expected.push(p);
        }
    }
    let (mut client, server) = pair().await;
    let writer = tokio::spawn(async move {
        for piece in wire.chunks(7919) {
            client.write_all(piece).await.unwrap();
        }
    });
    let frames = Frames::builder(arena.clone())
        .new_read(server, Resp { max: 64 << 10 })
        .unwrap();
    let got: Vec<_> = no_hang(frames.collect()).await;
    writer.await.unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.into_iter().zip(&expected).enumerate() {
        assert_eq!(&g.unwrap(), e, "frame {i}");
    }
    assert_eq!(arena.metrics().live_bytes, 0);

    // A bound the source cannot meet is refused when the reader is built.
    let (_, server) = pair().await;
    let e = Frames::builder(arena)
        .new_read(server, Resp { max: 32 << 20 })
        .unwrap_err();
    assert!(matches!(e, ReaderError::FrameTooLarge { .. }));
    let _ = Framing::lines(1);
}

#[tokio::test]
async fn a_spent_copy_budget_waits_for_held_copies_then_resumes() {
    let arena = FixedArena::builder(nz(2), nz(4096)).build().unwrap();
    let budget = CopyBudget::new(300);
    let (client, server) = pair().await;
    let writer = tokio::spawn(send(client, 10, 100));
    let mut frames = Frames::builder(arena.clone())
        .copy_budget(budget.clone())
        .length_delimited(server)
        .unwrap();
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(no_hang(frames.next()).await.unwrap().unwrap());
        assert_eq!(held[i], payload(i, 100));
    }
    assert_eq!(budget.in_use(), 300);
    // The fourth copy has no room: the reader waits, pinning no slot.
    while !poll_once(&mut frames).await {}
    assert_eq!(
        arena.metrics().live_slots,
        0,
        "a waiting reader holds no chunk"
    );
    assert!(frames.metrics().waits >= 1);
    drop(held);
    let rest: Vec<_> = no_hang(async {
        let mut rest = Vec::new();
        while let Some(f) = frames.next().await {
            rest.push(f.unwrap()); // dropped below, two at a time at most
            if rest.len() == 2 {
                rest.clear();
            }
        }
        rest
    })
    .await;
    drop(rest);
    writer.await.unwrap();
    assert_eq!(frames.metrics().frames, 10);
    assert_eq!(budget.in_use(), 0);
}

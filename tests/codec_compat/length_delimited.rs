//! Length-delimited framing against tokio_util's `LengthDelimitedCodec`:
//! every builder option, valid and bad streams, the encoder, the read
//! buffer, and bad input one case at a time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use arenabuf::BufferSource;
use arenabuf::codec::{
    ArenaLengthDelimitedCodec, CodecError, ConfigError, LengthDelimited, OnFull,
};
use arenabuf::io::Framing;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Decoder, Encoder, FramedRead, LengthDelimitedCodec};

use crate::common::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// Valid streams, every builder option: tokio_util's codec, ours in the
    /// same decode loop, and `ArenaReader::frames` all give the frames that
    /// were written, whatever the read sizes and chunk size.
    #[test]
    fn length_delimited_matches_tokio(
        opts in opts_strategy(),
        lens in prop::collection::vec(prop_oneof![0usize..16, 0usize..700], 0..24),
        pieces in pieces_strategy(),
        chunk in 8usize..300,
        seed in any::<u8>(),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (i, len) in lens.iter().enumerate() {
            let frame: Vec<u8> = (0..*len).map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed ^ i as u8)).collect();
            let start = wire.len();
            if opts.write_frame(&frame, 0xA5 ^ i as u8, &mut wire) {
                expected.push(wire[start + opts.skip()..].to_vec());
            }
        }
        let (theirs, _) = run_decoder(opts.tokio(), &wire, &pieces);
        prop_assert_eq!(&theirs.frames, &expected);
        prop_assert!(theirs.end.is_ok());

        let arena = buddy(1 << 16);
        let codec = opts.ours(arena.max_len()).new_codec(arena.clone()).unwrap();
        let (ours, _) = run_decoder(codec, &wire, &pieces);
        prop_assert_eq!(&ours, &theirs);

        let framing = Framing::length_delimited(opts.ours_exact().layout().unwrap());
        let via_reader = run_frames(arena.clone(), chunk, framing, &wire, &pieces);
        prop_assert_eq!(&via_reader, &theirs);
        prop_assert_eq!(arena.metrics().live_bytes, 0);
    }

    /// Bad streams (cut short, bytes flipped anywhere, headers included):
    /// the same frames as tokio_util up to the same error. The one
    /// difference, on purpose: a stream that ends right after a header is
    /// "bytes remaining on stream" for us, where tokio_util ends quietly.
    /// (The arena fits any frame the maximum allows; frames that can never
    /// fit are tested on their own below.)
    #[test]
    fn length_delimited_bad_input_matches_tokio(
        opts in opts_with_max(prop_oneof![0usize..600, Just(8 << 20)]),
        lens in prop::collection::vec(0usize..300, 1..12),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        pieces in pieces_strategy(),
        chunk in 8usize..300,
    ) {
        let mut wire = Vec::new();
        for (i, len) in lens.iter().enumerate() {
            opts.write_frame(&vec![i as u8; *len], 0x5A, &mut wire);
        }
        if wire.is_empty() {
            return Ok(());
        }
        for (at, x) in &flips {
            let at = at.index(wire.len());
            wire[at] ^= *x;
        }
        let cut = cut.index(wire.len() + 1);
        wire.truncate(cut);

        let (theirs, _) = run_decoder(opts.tokio(), &wire, &pieces);
        let arena = buddy(16 << 20);
        let codec = opts.ours(arena.max_len()).new_codec(arena.clone()).unwrap();
        let (ours, _) = run_decoder(codec, &wire, &pieces);
        let framing = Framing::length_delimited(opts.ours_exact().layout().unwrap());
        let via_reader = run_frames(arena.clone(), chunk, framing, &wire, &pieces);

        for got in [&ours, &via_reader] {
            prop_assert_eq!(&got.frames, &theirs.frames);
            match (&theirs.end, &got.end) {
                (Ok(()), Ok(())) => {}
                (Ok(()), Err((io::ErrorKind::Other, msg))) if msg == "bytes remaining on stream" => {
                    // tokio_util's quiet end after a bare header.
                }
                (Err((k1, _)), Err((k2, _))) => prop_assert_eq!(k1, k2),
                (a, b) => prop_assert!(false, "tokio_util ended {:?}, ours {:?}", a, b),
            }
        }
        prop_assert_eq!(arena.metrics().live_bytes, 0);
    }

    /// Our encoder writes exactly tokio_util's bytes, and refuses exactly
    /// the frames it refuses.
    #[test]
    fn length_delimited_encoder_matches_tokio(
        opts in opts_strategy(),
        lens in prop::collection::vec(prop_oneof![0usize..16, 0usize..1000, Just(255), Just(256), Just(65_536)], 1..8),
    ) {
        let mut theirs = opts.tokio();
        let mut ours = opts.ours_exact().new_codec(Unbounded(buddy(1 << 12))).unwrap();
        prop_assert_eq!(ours.max_frame_length(), theirs.max_frame_length());
        for len in lens {
            let data = Bytes::from(vec![7u8; len]);
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            let ra = theirs.encode(data.clone(), &mut a);
            let rb = if len % 2 == 0 {
                ours.encode(data, &mut b)
            } else {
                ours.encode(&data[..], &mut b) // Encoder<&[u8]>
            };
            prop_assert_eq!(ra.is_ok(), rb.is_ok(), "len {}: {:?} vs {:?}", len, ra, rb);
            if let (Err(ea), Err(eb)) = (&ra, &rb) {
                prop_assert_eq!(ea.kind(), eb.kind());
            }
            prop_assert_eq!(a, b);
        }
    }
}

// ---------------------------------------------------------------------------
// The read buffer stays small
// ---------------------------------------------------------------------------

/// A reader over a large in-memory stream that returns `Pending` (and wakes
/// itself) after every read, so `FramedRead` hands control back often and
/// the test sees its read buffer between reads.
struct Yielding {
    data: Bytes,
    ready: bool,
}

impl AsyncRead for Yielding {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !std::mem::replace(&mut self.ready, false) {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.remaining().min(self.data.len()).min(64 * 1024);
        let chunk = self.data.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// Reads one frame through `FramedRead`, returning it and the largest read
/// buffer capacity seen between polls.
async fn read_one_watching<D>(framed: &mut FramedRead<Yielding, D>) -> (D::Item, usize)
where
    D: Decoder,
    D::Error: std::fmt::Debug,
{
    let mut peak = 0;
    let item = std::future::poll_fn(|cx| {
        let r = framed.poll_next_unpin(cx);
        peak = peak.max(framed.read_buffer().capacity());
        r
    })
    .await
    .unwrap()
    .unwrap();
    (item, peak)
}

#[tokio::test]
async fn sixteen_mib_frame_keeps_read_buffer_small() {
    const LEN: usize = 16 << 20;
    let payload: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
    let mut wire = BytesMut::new();
    LengthDelimitedCodec::builder()
        .max_frame_length(32 << 20)
        .new_codec()
        .encode(Bytes::from(payload.clone()), &mut wire)
        .unwrap();
    let wire = wire.freeze();

    let arena = buddy(32 << 20);
    let codec = ArenaLengthDelimitedCodec::builder()
        .max_frame_length(32 << 20)
        .new_codec(arena.clone())
        .unwrap();
    let mut ours = FramedRead::new(
        Yielding {
            data: wire.clone(),
            ready: false,
        },
        codec,
    );
    let (frame, peak) = read_one_watching(&mut ours).await;
    assert!(frame[..] == payload[..], "the 16 MiB frame arrives intact");
    assert!(peak <= 64 * 1024, "read buffer grew to {peak} bytes");
    assert!(ours.read_buffer().capacity() <= 64 * 1024);
    assert_eq!(
        arena.metrics().live_bytes,
        16 << 20,
        "the frame is in the arena"
    );
    drop(frame);
    assert_eq!(arena.metrics().live_bytes, 0);

    // The stock codec, for contrast, buffers the whole frame: the check
    // above is one that could fail.
    let mut theirs = FramedRead::new(
        Yielding {
            data: wire,
            ready: false,
        },
        LengthDelimitedCodec::builder()
            .max_frame_length(32 << 20)
            .new_codec(),
    );
    let (frame, peak) = read_one_watching(&mut theirs).await;
    assert_eq!(frame.len(), LEN);
    assert!(peak >= LEN, "tokio_util's read buffer holds the frame");
}

#[test]
fn length_over_max_is_invalid_data_before_any_allocation() {
    let arena = buddy(1 << 20);
    let mut codec = ArenaLengthDelimitedCodec::builder()
        .max_frame_length(1000)
        .new_codec(arena.clone())
        .unwrap();
    let (frames, end) = decode_all(&mut codec, &[0, 0, 3, 233, 1, 2, 3]); // 1001
    assert!(frames.is_empty());
    let e = end.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("frame size too big"), "{e}");
    assert_eq!(arena.metrics().alloc_count, 0, "nothing allocated");

    // A length field of u64::MAX is the same error, not an overflow.
    let mut codec = ArenaLengthDelimitedCodec::builder()
        .length_field_length(8)
        .max_frame_length(1000)
        .new_codec(arena.clone())
        .unwrap();
    let (_, end) = decode_all(&mut codec, &[0xff; 12]);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert_eq!(arena.metrics().alloc_count, 0);
}

#[test]
fn length_that_never_fits_the_source_is_an_error() {
    // 4 KiB slots, a frame of 8 KiB (under `new`'s 8 MiB maximum).
    let arena = fixed(4, 4096);
    let mut codec = ArenaLengthDelimitedCodec::new(arena.clone());
    let mut wire = vec![0, 0, 0x20, 0];
    wire.extend_from_slice(&[1; 100]);
    let (_, end) = decode_all(&mut codec, &wire);
    let e = end.unwrap_err();
    assert!(
        matches!(
            e,
            CodecError::Alloc(arenabuf::AllocError::RequestTooLarge { .. })
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("can never fit"), "{e}");
    assert_eq!(arena.metrics().live_slots, 0);

    // Spilling does not apply: it is not a full arena, it is a bad frame.
    let mut codec = ArenaLengthDelimitedCodec::new(arena.clone());
    codec.set_on_full(OnFull::Spill);
    let (_, end) = decode_all(&mut codec, &wire);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);

    // The builder refuses such a maximum at construction, naming the fix.
    let e = ArenaLengthDelimitedCodec::builder()
        .new_codec(arena.clone())
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::FrameLargerThanSource {
            max_frame: 8 << 20,
            source_max: 4096
        }
    );
    assert!(e.to_string().contains("lower max_frame_length"), "{e}");
    // A positive adjustment makes frames longer than the length field.
    let e = ArenaLengthDelimitedCodec::builder()
        .max_frame_length(4096)
        .length_adjustment(2)
        .new_codec(arena.clone())
        .unwrap_err();
    assert!(matches!(
        e,
        ConfigError::FrameLargerThanSource {
            max_frame: 4098,
            ..
        }
    ));
    ArenaLengthDelimitedCodec::builder()
        .max_frame_length(4094)
        .length_adjustment(2)
        .new_codec(arena)
        .unwrap();
}

#[test]
fn eof_mid_frame_is_bytes_remaining() {
    let arena = buddy(1 << 16);
    for wire in [
        &[0u8, 0][..],                 // inside the header
        &[0, 0, 0, 5][..],             // right after the header
        &[0, 0, 0, 5, 1, 2][..],       // inside the payload
        &[0, 0, 0, 1, 9, 0, 0, 0][..], // a frame, then part of a header
    ] {
        let mut codec = ArenaLengthDelimitedCodec::new(arena.clone());
        let (frames, end) = decode_all(&mut codec, wire);
        assert!(frames.len() <= 1);
        let e = end.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert_eq!(e.to_string(), "bytes remaining on stream");
        // The partial frame stays with the codec (a resumed stream completes
        // it) and goes back when the codec drops.
        drop((frames, codec));
        assert_eq!(arena.metrics().live_bytes, 0, "the partial frame went back");
    }
}

#[test]
fn adjustment_underflow_is_invalid_input() {
    let arena = buddy(1 << 16);
    let mut codec = ArenaLengthDelimitedCodec::builder()
        .max_frame_length(1000)
        .length_adjustment(-10)
        .new_codec(arena.clone())
        .unwrap();
    let (_, end) = decode_all(&mut codec, &[0, 0, 0, 3, 1, 2, 3]);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(arena.metrics().alloc_count, 0);
}

#[test]
fn huge_num_skip_waits_without_allocating() {
    // A header that needs more bytes than will ever come: each decode is
    // `None` without reserving the header's size, and EOF is an error.
    let arena = buddy(1 << 16);
    let mut codec = ArenaLengthDelimitedCodec::builder()
        .max_frame_length(1000)
        .num_skip(usize::MAX)
        .new_codec(arena.clone())
        .unwrap();
    let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 7][..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() < 1024);
    assert_eq!(
        codec.decode_eof(&mut buf).unwrap_err().to_string(),
        "bytes remaining on stream"
    );
}

#[test]
fn full_arena_errors_or_spills() {
    let arena = fixed(1, 64);
    let held = arena.allocate().unwrap();
    let wire = [0, 0, 0, 3, b'a', b'b', b'c'];

    let mut codec = ArenaLengthDelimitedCodec::builder()
        .max_frame_length(64)
        .on_full(OnFull::Error)
        .new_codec(arena.clone())
        .unwrap();
    let (_, end) = decode_all(&mut codec, &wire);
    let e = end.unwrap_err();
    assert!(
        matches!(e, CodecError::Alloc(arenabuf::AllocError::ArenaFull)),
        "{e:?}"
    );
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::OutOfMemory);

    // The default spills.
    let mut codec = ArenaLengthDelimitedCodec::new(arena.clone());
    assert_eq!(codec.on_full(), OnFull::Spill);
    let (frames, end) = decode_all(&mut codec, &wire);
    end.unwrap();
    assert_eq!(frames, [Bytes::from_static(b"abc")]);
    assert_eq!(arena.metrics().spill_count, 1);
    drop(held);
    assert_eq!(arena.metrics().live_slots, 0);
}

#[test]
fn bad_layouts_are_config_errors() {
    for len in [0, 9, usize::MAX] {
        let e = LengthDelimited::builder()
            .length_field_length(len)
            .layout()
            .unwrap_err();
        assert_eq!(e, ConfigError::LengthFieldLength { length: len });
        assert!(e.to_string().contains("1 to 8"), "{e}");
        // tokio_util's builder panics here; ours never does.
        assert!(
            ArenaLengthDelimitedCodec::builder()
                .length_field_length(len)
                .tokio_builder()
                .is_err()
        );
    }
    let e = LengthDelimited::builder()
        .length_field_offset(usize::MAX)
        .new_codec(buddy(1 << 12))
        .unwrap_err();
    assert_eq!(e, ConfigError::LengthFieldOffset { offset: usize::MAX });
}

#[tokio::test]
async fn stalled_peer_holds_only_that_frames_buffer() {
    // A header for a 256 KiB frame and a few of its bytes, then nothing:
    // the codec holds that frame's buffer and no more; dropping the reader
    // gives it back.
    let arena = buddy(4 << 20);
    let (mut client, server) = tokio::io::duplex(1024);
    let mut framed = FramedRead::new(server, ArenaLengthDelimitedCodec::new(arena.clone()));
    tokio::io::AsyncWriteExt::write_all(&mut client, &[0, 4, 0, 0, 1, 2, 3])
        .await
        .unwrap();
    let polled = std::future::poll_fn(|cx| Poll::Ready(framed.poll_next_unpin(cx))).await;
    assert!(polled.is_pending(), "the frame is not complete");
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 256 << 10);
    assert_eq!(m.alloc_count, 1);
    drop(framed);
    assert_eq!(arena.metrics().live_bytes, 0);
    drop(client);
}

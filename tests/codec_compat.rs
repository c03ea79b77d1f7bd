//! The drop-in codecs against tokio_util's own: the same bytes in, the same
//! frames (or the same error) out, under every builder option; the read
//! buffer stays small; every kind of bad input is an error, not a panic,
//! a hang or a leak.

use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};

use arenabuf::codec::{
    ArenaDelimiterCodec, ArenaLengthDelimitedCodec, LengthDelimited, LengthDelimitedBuilder, OnFull,
};
use arenabuf::io::{ArenaReader, Decoded, FrameDecoder, Framing};
use arenabuf::{BuddyArena, BuildError, FixedArena};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{
    AnyDelimiterCodec, Decoder, Encoder, FramedRead, LengthDelimitedCodec, LinesCodec,
};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

fn buddy(total: usize) -> BuddyArena {
    BuddyArena::builder(nz(total), nz((total >> 12).max(64)))
        .build()
        .unwrap()
}

fn fixed(slots: usize, cap: usize) -> FixedArena {
    FixedArena::builder(nz(slots), nz(cap)).build().unwrap()
}

/// Header options, applied to both builders alike.
#[derive(Debug, Clone, Copy)]
struct Opts {
    offset: usize,
    field_len: usize,
    adjustment: isize,
    num_skip: Option<usize>,
    big_endian: bool,
    max: usize,
}

impl Opts {
    fn tokio(&self) -> LengthDelimitedCodec {
        let mut b = LengthDelimitedCodec::builder();
        b.length_field_offset(self.offset)
            .length_field_length(self.field_len)
            .length_adjustment(self.adjustment)
            .max_frame_length(self.max);
        if let Some(s) = self.num_skip {
            b.num_skip(s);
        }
        if self.big_endian {
            b.big_endian();
        } else {
            b.little_endian();
        }
        b.new_codec()
    }

    fn ours(&self) -> LengthDelimitedBuilder {
        let mut b = ArenaLengthDelimitedCodec::<BuddyArena>::builder()
            .length_field_offset(self.offset)
            .length_field_length(self.field_len)
            .length_adjustment(self.adjustment)
            .max_frame_length(self.max);
        if let Some(s) = self.num_skip {
            b = b.num_skip(s);
        }
        if self.big_endian {
            b.big_endian()
        } else {
            b.little_endian()
        }
    }

    fn skip(&self) -> usize {
        self.num_skip.unwrap_or(self.offset + self.field_len)
    }

    /// The largest value the length field can hold.
    fn field_max(&self) -> u64 {
        if self.field_len == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.field_len)) - 1
        }
    }

    /// Appends one frame's wire bytes: `skip` header bytes (filler, with the
    /// length field in place), then the frame. Returns false when this frame
    /// length cannot be expressed with these options.
    fn write_frame(&self, frame: &[u8], filler: u8, wire: &mut Vec<u8>) -> bool {
        // tokio_util caps the maximum at what the field can express plus
        // the adjustment, and compares the raw field with it.
        let field = frame.len() as i128 - self.adjustment as i128;
        let capped_max = (self.max as i128)
            .min(self.field_max() as i128 + self.adjustment as i128)
            .min(usize::MAX as i128);
        if field < 0 || field > self.field_max() as i128 || field > capped_max {
            return false;
        }
        // The header is read from the frame's first bytes; they must belong
        // to this frame's segment.
        if self.skip() + frame.len() < self.offset + self.field_len {
            return false;
        }
        let head_len = self.skip().max(self.offset + self.field_len);
        let mut seg = vec![filler; self.skip() + frame.len()];
        seg[self.skip()..].copy_from_slice(frame);
        let mut field_bytes = Vec::new();
        if self.big_endian {
            field_bytes.put_uint(field as u64, self.field_len);
        } else {
            field_bytes.put_uint_le(field as u64, self.field_len);
        }
        debug_assert!(head_len <= seg.len());
        seg[self.offset..self.offset + self.field_len].copy_from_slice(&field_bytes);
        wire.extend_from_slice(&seg);
        true
    }
}

/// What a decoder made of a stream: its frames, and how it ended.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    end: Result<(), (io::ErrorKind, String)>,
}

/// Runs a decoder the way `FramedRead` does, the input arriving in the
/// given piece sizes: decode after each piece until it yields nothing, then
/// `decode_eof` at the end; stops at the first error. Also returns the
/// largest read-buffer length seen.
fn run_decoder<D, T>(mut dec: D, wire: &[u8], pieces: &[usize]) -> (Outcome, usize)
where
    D: Decoder<Item = T, Error = io::Error>,
    T: AsRef<[u8]>,
{
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut peak = 0;
    let mut at = 0;
    let mut piece = pieces.iter().cycle();
    let fail = |frames, e: io::Error| Outcome {
        frames,
        end: Err((e.kind(), e.to_string())),
    };
    while at < wire.len() {
        let n = (*piece.next().unwrap()).max(1).min(wire.len() - at);
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        peak = peak.max(buf.len());
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f.as_ref().to_vec()),
                Ok(None) => break,
                Err(e) => return (fail(frames, e), peak),
            }
        }
    }
    loop {
        match dec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f.as_ref().to_vec()),
            Ok(None) => break,
            Err(e) => return (fail(frames, e), peak),
        }
    }
    (
        Outcome {
            frames,
            end: Ok(()),
        },
        peak,
    )
}

/// An in-memory reader that hands out at most the next piece size per read.
struct Pieces {
    data: Bytes,
    pieces: Vec<usize>,
    i: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let piece = self.pieces[self.i % self.pieces.len()].max(1);
        self.i += 1;
        let n = piece.min(buf.remaining()).min(self.data.len());
        let chunk = self.data.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// A framing without its build-time size check, so that the reader meets
/// every header tokio_util's decoder does (the check has tests of its own).
struct Unchecked(Framing);

impl FrameDecoder for Unchecked {
    fn decode(&mut self, data: &[u8]) -> std::io::Result<Decoded> {
        self.0.decode(data)
    }

    fn decode_eof(&mut self, rest: &[u8]) -> std::io::Result<Option<std::ops::Range<usize>>> {
        self.0.decode_eof(rest)
    }
}

/// Runs `ArenaReader::frames` over the wire bytes, read in the given pieces.
fn run_frames(
    source: BuddyArena,
    chunk: usize,
    framing: Framing,
    wire: &[u8],
    pieces: &[usize],
) -> Outcome {
    let reader = Pieces {
        data: Bytes::copy_from_slice(wire),
        pieces: pieces.to_vec(),
        i: 0,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut frames = ArenaReader::new(reader, source)
            .with_chunk_size(nz(chunk))
            .frames(Unchecked(framing))
            .unwrap();
        let mut out = Vec::new();
        while let Some(f) = frames.next().await {
            match f {
                Ok(f) => out.push(f.to_vec()),
                Err(e) => {
                    return Outcome {
                        frames: out,
                        end: Err((e.kind(), e.to_string())),
                    };
                }
            }
        }
        Outcome {
            frames: out,
            end: Ok(()),
        }
    })
}

fn opts_strategy() -> impl Strategy<Value = Opts> {
    opts_with_max(prop_oneof![Just(usize::MAX), 0usize..600, Just(8 << 20)])
}

fn opts_with_max(max: impl Strategy<Value = usize>) -> impl Strategy<Value = Opts> {
    (
        0usize..4,
        1usize..=8,
        -6isize..=6,
        prop::option::of(0usize..14),
        any::<bool>(),
        max,
    )
        .prop_map(
            |(offset, field_len, adjustment, num_skip, big_endian, max)| Opts {
                offset,
                field_len,
                adjustment,
                num_skip,
                big_endian,
                max,
            },
        )
}

fn pieces_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..4, 1usize..64, 1usize..2000], 1..8)
}

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
        let codec = opts.ours().new_codec(arena.clone()).unwrap();
        let (ours, _) = run_decoder(codec, &wire, &pieces);
        prop_assert_eq!(&ours, &theirs);

        let framing = Framing::length_delimited(opts.ours().layout().unwrap());
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
        let codec = opts.ours().new_codec(arena.clone()).unwrap();
        let (ours, _) = run_decoder(codec, &wire, &pieces);
        let framing = Framing::length_delimited(opts.ours().layout().unwrap());
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
        let mut ours = opts.ours().new_codec(buddy(1 << 12)).unwrap();
        prop_assert_eq!(ours.max_frame_length(), theirs.max_frame_length());
        for len in lens {
            let data = Bytes::from(vec![7u8; len]);
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            let ra = theirs.encode(data.clone(), &mut a);
            let rb = ours.encode(data, &mut b);
            prop_assert_eq!(ra.is_ok(), rb.is_ok(), "len {}: {:?} vs {:?}", len, ra, rb);
            if let (Err(ea), Err(eb)) = (&ra, &rb) {
                prop_assert_eq!(ea.kind(), eb.kind());
            }
            prop_assert_eq!(a, b);
        }
    }

    /// Lines and any-delimiter framing against `LinesCodec` and
    /// `AnyDelimiterCodec`: the same frames, the same over-long errors, and
    /// (for the codec, which goes on after an error as they do) the same
    /// recovery; the same last frame at EOF.
    #[test]
    fn delimiters_match_tokio(
        text in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b';'), b'a'..=b'z'], 0..400),
        max in prop_oneof![0usize..4, 0usize..40, Just(usize::MAX)],
        pieces in pieces_strategy(),
        chunk in 8usize..100,
    ) {
        let arena = buddy(1 << 14);
        // Lines.
        let theirs = run_all(LinesCodec::new_with_max_length(max), &text, &pieces);
        let ours = run_all(ArenaDelimiterCodec::lines(arena.clone()).max_length(max), &text, &pieces);
        prop_assert_eq!(&ours, &theirs);
        // Any delimiter (one byte).
        let theirs = run_all(AnyDelimiterCodec::new_with_max_length(b";".to_vec(), b";".to_vec(), max), &text, &pieces);
        let ours = run_all(ArenaDelimiterCodec::new(arena.clone(), b';').max_length(max), &text, &pieces);
        prop_assert_eq!(&ours, &theirs);

        // The reader path stops at the first error; up to it, the same.
        let max = max.min(1 << 13);
        for (framing, theirs) in [
            (Framing::lines(max), run_decoder(Lines(LinesCodec::new_with_max_length(max)), &text, &pieces).0),
            (Framing::delimiter(b';', max), run_decoder(Any(AnyDelimiterCodec::new_with_max_length(b";".to_vec(), b";".to_vec(), max)), &text, &pieces).0),
        ] {
            let got = run_frames(arena.clone(), chunk, framing, &text, &pieces);
            prop_assert_eq!(&got.frames, &theirs.frames);
            prop_assert_eq!(got.end.map_err(|e| e.0), theirs.end.map_err(|e| e.0));
        }
        prop_assert_eq!(arena.metrics().live_bytes, 0);
    }
}

/// tokio_util's delimiter codecs with their errors mapped to `io::Error`
/// (over-long input is `InvalidData`, as ours).
struct Lines(LinesCodec);
struct Any(AnyDelimiterCodec);

fn max_len_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "max length exceeded")
}

impl Decoder for Lines {
    type Item = String;
    type Error = io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<String>> {
        self.0.decode(src).map_err(|_| max_len_error())
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<String>> {
        self.0.decode_eof(src).map_err(|_| max_len_error())
    }
}

impl Decoder for Any {
    type Item = Bytes;
    type Error = io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        self.0.decode(src).map_err(|_| max_len_error())
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        self.0.decode_eof(src).map_err(|_| max_len_error())
    }
}

/// Every item a decoder gives, errors included (`None` for an error), going
/// on after errors as a caller of `decode` may; then `decode_eof`.
fn run_all<D>(mut dec: D, wire: &[u8], pieces: &[usize]) -> Vec<Option<Vec<u8>>>
where
    D: Decoder,
    D::Item: AsRef<[u8]>,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut piece = pieces.iter().cycle();
    while at < wire.len() {
        let n = (*piece.next().unwrap()).max(1).min(wire.len() - at);
        buf.extend_from_slice(&wire[at..at + n]);
        at += n;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => out.push(Some(f.as_ref().to_vec())),
                Ok(None) => break,
                Err(_) => out.push(None),
            }
        }
    }
    loop {
        match dec.decode_eof(&mut buf) {
            Ok(Some(f)) => out.push(Some(f.as_ref().to_vec())),
            Ok(None) => break,
            Err(_) => out.push(None),
        }
        if out.len() > wire.len() + 2 {
            panic!("decode_eof does not end");
        }
    }
    out
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
    D: Decoder<Error = io::Error>,
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
    let codec = ArenaLengthDelimitedCodec::<BuddyArena>::builder()
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

// ---------------------------------------------------------------------------
// Bad input, one test each
// ---------------------------------------------------------------------------

fn decode_all<D: Decoder<Error = io::Error>>(
    dec: &mut D,
    wire: &[u8],
) -> (Vec<D::Item>, io::Result<()>) {
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => break,
            Err(e) => return (out, Err(e)),
        }
    }
    loop {
        match dec.decode_eof(&mut buf) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

#[test]
fn length_over_max_is_invalid_data_before_any_allocation() {
    let arena = buddy(1 << 20);
    let mut codec = ArenaLengthDelimitedCodec::<BuddyArena>::builder()
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
    let mut codec = ArenaLengthDelimitedCodec::<BuddyArena>::builder()
        .length_field_length(8)
        .new_codec(arena.clone())
        .unwrap();
    let (_, end) = decode_all(&mut codec, &[0xff; 12]);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert_eq!(arena.metrics().alloc_count, 0);
}

#[test]
fn length_that_never_fits_the_source_is_an_error() {
    // 4 KiB slots, a frame of 8 KiB (under the 8 MiB maximum).
    let arena = fixed(4, 4096);
    let mut codec = ArenaLengthDelimitedCodec::new(arena.clone());
    let mut wire = vec![0, 0, 0x20, 0];
    wire.extend_from_slice(&[1; 100]);
    let (_, end) = decode_all(&mut codec, &wire);
    let e = end.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("can never fit"), "{e}");
    assert_eq!(arena.metrics().live_slots, 0);

    // Spilling does not apply: it is not a full arena, it is a bad frame.
    let mut codec = ArenaLengthDelimitedCodec::<FixedArena>::builder()
        .on_full(OnFull::Spill)
        .new_codec(arena.clone())
        .unwrap();
    let (_, end) = decode_all(&mut codec, &wire);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::InvalidData);
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
        drop(frames);
        assert_eq!(arena.metrics().live_bytes, 0, "the partial frame went back");
    }
}

#[test]
fn adjustment_underflow_is_invalid_input() {
    let arena = buddy(1 << 16);
    let mut codec = ArenaLengthDelimitedCodec::<BuddyArena>::builder()
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
    let mut codec = ArenaLengthDelimitedCodec::<BuddyArena>::builder()
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

    let mut codec = ArenaLengthDelimitedCodec::new(arena.clone());
    let (_, end) = decode_all(&mut codec, &wire);
    assert_eq!(end.unwrap_err().kind(), io::ErrorKind::OutOfMemory);

    let mut codec = ArenaLengthDelimitedCodec::<FixedArena>::builder()
        .on_full(OnFull::Spill)
        .new_codec(arena.clone())
        .unwrap();
    let (frames, end) = decode_all(&mut codec, &wire);
    end.unwrap();
    assert_eq!(frames, [Bytes::from_static(b"abc")]);
    assert_eq!(arena.metrics().spill_count, 1);

    let mut lines = ArenaDelimiterCodec::lines(arena.clone()).on_full(OnFull::Spill);
    let (frames, end) = decode_all(&mut lines, b"x\ny");
    end.unwrap();
    assert_eq!(frames, [Bytes::from_static(b"x"), Bytes::from_static(b"y")]);
    assert_eq!(arena.metrics().spill_count, 3);
    drop(held);
    assert_eq!(arena.metrics().live_slots, 0);
}

#[test]
fn over_long_line_is_invalid_data_then_skipped() {
    let arena = buddy(1 << 12);
    let mut codec = ArenaDelimiterCodec::lines(arena.clone()).max_length(4);
    let mut buf = BytesMut::from(&b"toolong\nok\r\n"[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "ok");
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[test]
fn bad_layouts_are_build_errors() {
    for len in [0, 9, usize::MAX] {
        let e = LengthDelimited::builder()
            .length_field_length(len)
            .layout()
            .unwrap_err();
        assert!(matches!(e, BuildError::InvalidFraming { .. }), "{e:?}");
        assert!(e.to_string().contains("1 to 8"), "{e}");
    }
    let e = LengthDelimited::builder()
        .length_field_offset(usize::MAX)
        .new_codec(buddy(1 << 12))
        .unwrap_err();
    assert!(matches!(e, BuildError::InvalidFraming { .. }));
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

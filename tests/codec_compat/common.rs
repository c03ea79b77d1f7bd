//! Helpers shared by the codec tests: header options applied to both
//! builders, decode loops that run like `FramedRead`, scripted readers with
//! EOFs between reads, and buffer sources that fail on demand.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arenabuf::codec::{ArenaLengthDelimitedCodec, LengthDelimitedBuilder};
use arenabuf::io::{ArenaReader, Decoded, FrameDecoder, Framing};
use arenabuf::{AllocError, BuddyArena, Buffer, BufferSource, FixedArena};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{AnyDelimiterCodec, Decoder, FramedRead, LengthDelimitedCodec, LinesCodec};

pub fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

pub fn buddy(total: usize) -> BuddyArena {
    BuddyArena::builder(nz(total), nz((total >> 12).max(64)))
        .build()
        .unwrap()
}

pub fn fixed(slots: usize, cap: usize) -> FixedArena {
    FixedArena::builder(nz(slots), nz(cap)).build().unwrap()
}

/// Header options, applied to both builders alike.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub offset: usize,
    pub field_len: usize,
    pub adjustment: isize,
    pub num_skip: Option<usize>,
    pub big_endian: bool,
    pub max: usize,
}

impl Opts {
    pub fn tokio(&self) -> LengthDelimitedCodec {
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

    /// Our builder with the same options. `new_codec` refuses a maximum
    /// the source can never hold, so the maximum is clamped below
    /// `source_max` (the streams tested never come near it).
    pub fn ours(&self, source_max: usize) -> LengthDelimitedBuilder {
        let mut b = ArenaLengthDelimitedCodec::builder();
        b.length_field_offset(self.offset)
            .length_field_length(self.field_len)
            .length_adjustment(self.adjustment)
            .max_frame_length(self.max.min(source_max - 8));
        if let Some(s) = self.num_skip {
            b.num_skip(s);
        }
        if self.big_endian {
            b.big_endian();
        } else {
            b.little_endian();
        }
        b
    }

    /// Our builder with exactly these options (for layouts, which know no
    /// source).
    pub fn ours_exact(&self) -> LengthDelimitedBuilder {
        let mut b = self.ours(usize::MAX);
        b.max_frame_length(self.max);
        b
    }

    pub fn skip(&self) -> usize {
        self.num_skip.unwrap_or(self.offset + self.field_len)
    }

    /// The largest value the length field can hold.
    pub fn field_max(&self) -> u64 {
        if self.field_len == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.field_len)) - 1
        }
    }

    /// Appends one frame's wire bytes: `skip` header bytes (filler, with the
    /// length field in place), then the frame. Returns false when this frame
    /// length cannot be expressed with these options.
    pub fn write_frame(&self, frame: &[u8], filler: u8, wire: &mut Vec<u8>) -> bool {
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
pub struct Outcome {
    pub frames: Vec<Vec<u8>>,
    pub end: Result<(), (io::ErrorKind, String)>,
}

/// Runs a decoder the way `FramedRead` does, the input arriving in the
/// given piece sizes: decode after each piece until it yields nothing, then
/// `decode_eof` at the end; stops at the first error. Also returns the
/// largest read-buffer length seen.
pub fn run_decoder<D, T>(mut dec: D, wire: &[u8], pieces: &[usize]) -> (Outcome, usize)
where
    D: Decoder<Item = T>,
    D::Error: Into<io::Error>,
    T: AsRef<[u8]>,
{
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut peak = 0;
    let mut at = 0;
    let mut piece = pieces.iter().cycle();
    let fail = |frames, e: D::Error| {
        let e: io::Error = e.into();
        Outcome {
            frames,
            end: Err((e.kind(), e.to_string())),
        }
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
pub struct Pieces {
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

/// Runs `ArenaReader::frames` over the wire bytes, read in the given pieces.
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

pub fn run_frames(
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

pub fn opts_strategy() -> impl Strategy<Value = Opts> {
    opts_with_max(prop_oneof![Just(usize::MAX), 0usize..600, Just(8 << 20)])
}

pub fn opts_with_max(max: impl Strategy<Value = usize>) -> impl Strategy<Value = Opts> {
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

pub fn pieces_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..4, 1usize..64, 1usize..2000], 1..8)
}

/// tokio_util's delimiter codecs with their errors mapped to `io::Error`
/// (over-long input is `InvalidData`, as ours).
pub struct Lines(pub LinesCodec);
pub struct Any(pub AnyDelimiterCodec);

pub fn max_len_error() -> io::Error {
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
pub fn run_all<D>(mut dec: D, wire: &[u8], pieces: &[usize]) -> Vec<Option<Vec<u8>>>
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

pub fn decode_all<D: Decoder>(dec: &mut D, wire: &[u8]) -> (Vec<D::Item>, Result<(), D::Error>) {
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

// ---------------------------------------------------------------------------
// FramedRead over a scripted reader: reads, and EOFs between them
// ---------------------------------------------------------------------------

/// One step of a scripted reader.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    Data(Vec<u8>),
    /// A 0-byte read.
    Eof,
}

/// An `AsyncRead` that plays a script, then reads 0 bytes for ever.
pub struct Script {
    steps: std::collections::VecDeque<Read>,
}

impl Script {
    pub fn new(steps: impl IntoIterator<Item = Read>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
        }
    }

    pub fn done(&self) -> bool {
        self.steps.is_empty()
    }
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.steps.pop_front() {
            Some(Read::Data(mut d)) => {
                let n = d.len().min(buf.remaining());
                buf.put_slice(&d[..n]);
                if n < d.len() {
                    self.steps.push_front(Read::Data(d.split_off(n)));
                }
            }
            Some(Read::Eof) | None => {}
        }
        Poll::Ready(Ok(()))
    }
}

/// What a `FramedRead` poll gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Frame(Vec<u8>),
    Error(io::ErrorKind, String),
    /// `None`: the end of the stream for now.
    End,
}

/// Polls a `FramedRead` over the script until the script is played and the
/// stream says `None`, as a caller that goes on after errors and EOFs
/// does. `between` runs after every event (to free memory, say).
pub fn run_framed<D>(
    codec: D,
    steps: &[Read],
    mut between: impl FnMut(&Event, &mut D),
) -> Vec<Event>
where
    D: Decoder,
    D::Item: AsRef<[u8]>,
    D::Error: Into<io::Error>,
{
    let mut framed = FramedRead::new(Script::new(steps.to_vec()), codec);
    let mut events = Vec::new();
    let limit = steps.len() * 4
        + steps
            .iter()
            .map(|s| match s {
                Read::Data(d) => d.len(),
                Read::Eof => 0,
            })
            .sum::<usize>()
        + 16;
    loop {
        assert!(events.len() < limit, "the stream does not end: {events:?}");
        let polled = framed
            .next()
            .now_or_never()
            .expect("the script never blocks");
        let event = match polled {
            Some(Ok(f)) => Event::Frame(f.as_ref().to_vec()),
            Some(Err(e)) => {
                let e: io::Error = e.into();
                Event::Error(e.kind(), e.to_string())
            }
            None => Event::End,
        };
        between(&event, framed.decoder_mut());
        let end = event == Event::End && framed.get_ref().done();
        events.push(event);
        if end {
            return events;
        }
    }
}

/// Cuts `wire` into reads at the given sizes, with an EOF after the reads
/// whose index is in `eofs`, and one at the end.
pub fn script(wire: &[u8], pieces: &[usize], eofs: &BTreeSet<usize>) -> Vec<Read> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut piece = pieces.iter().cycle();
    let mut i = 0;
    while at < wire.len() {
        let n = (*piece.next().unwrap()).max(1).min(wire.len() - at);
        out.push(Read::Data(wire[at..at + n].to_vec()));
        at += n;
        if eofs.contains(&i) {
            out.push(Read::Eof);
        }
        i += 1;
    }
    out.push(Read::Eof);
    out
}

// ---------------------------------------------------------------------------
// Buffer sources for the tests
// ---------------------------------------------------------------------------

/// A source that answers `ArenaFull` to the allocations whose (0-based)
/// index is in its set, and otherwise allocates from a buddy arena.
#[derive(Clone)]
pub struct FailingSource {
    pub arena: BuddyArena,
    calls: Arc<AtomicUsize>,
    fail: Arc<Mutex<BTreeSet<usize>>>,
}

impl FailingSource {
    pub fn new(arena: BuddyArena, fail: impl IntoIterator<Item = usize>) -> Self {
        Self {
            arena,
            calls: Arc::default(),
            fail: Arc::new(Mutex::new(fail.into_iter().collect())),
        }
    }

    /// Allocations tried so far (failed ones included).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl BufferSource for FailingSource {
    type Wait = <BuddyArena as BufferSource>::Wait;
    type Metrics = <BuddyArena as BufferSource>::Metrics;

    fn metrics(&self) -> Self::Metrics {
        self.arena.metrics()
    }

    fn max_len(&self) -> usize {
        self.arena.max_len()
    }

    fn try_allocate(&self, len: NonZeroUsize) -> Result<Buffer, AllocError> {
        let i = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.fail.lock().unwrap().contains(&i) {
            return Err(AllocError::ArenaFull);
        }
        self.arena.try_allocate(len)
    }

    fn allocate_wait(&self, len: NonZeroUsize) -> Self::Wait {
        self.arena.allocate_wait(len)
    }

    fn note_spill(&self) {
        self.arena.note_spill();
    }
}

/// A source that claims it could hold anything (for encoder tests, whose
/// codecs must be built with maximums no arena here can hold); allocations
/// come from a small buddy arena.
#[derive(Clone)]
pub struct Unbounded(pub BuddyArena);

impl BufferSource for Unbounded {
    type Wait = <BuddyArena as BufferSource>::Wait;
    type Metrics = <BuddyArena as BufferSource>::Metrics;

    fn metrics(&self) -> Self::Metrics {
        self.0.metrics()
    }

    fn max_len(&self) -> usize {
        usize::MAX
    }

    fn try_allocate(&self, len: NonZeroUsize) -> Result<Buffer, AllocError> {
        self.0.try_allocate(len)
    }

    fn allocate_wait(&self, len: NonZeroUsize) -> Self::Wait {
        self.0.allocate_wait(len)
    }
}

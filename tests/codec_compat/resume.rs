//! Going on after an error, with tokio_util's codecs as the oracle: a
//! stream resumed after EOF completes the frame EOF interrupted, and a
//! decoder whose allocation failed yields the same frame when asked again.

use std::collections::BTreeSet;
use std::io;

use arenabuf::codec::{
    ArenaAnyDelimiterCodec, ArenaBytesCodec, ArenaLengthDelimitedCodec, ArenaLinesCodec,
    CodecError, OnFull,
};
use arenabuf::{AllocError, BufferSource};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{AnyDelimiterCodec, BytesCodec, Decoder, LengthDelimitedCodec, LinesCodec};

use crate::common::*;

fn remaining() -> Event {
    Event::Error(io::ErrorKind::Other, "bytes remaining on stream".into())
}

/// Asserts that our events are tokio_util's, but for the documented
/// difference: where tokio_util ends quietly at an EOF right after a length
/// header, ours says "bytes remaining on stream" first.
fn assert_same_but_documented(ours: &[Event], theirs: &[Event]) {
    let (mut i, mut j) = (0, 0);
    while i < ours.len() || j < theirs.len() {
        if ours.get(i).is_some() && ours.get(i) == theirs.get(j) {
            i += 1;
            j += 1;
        } else if ours.get(i) == Some(&remaining())
            && ours.get(i + 1) == Some(&Event::End)
            && theirs.get(j) == Some(&Event::End)
        {
            i += 1;
        } else {
            panic!("event {i} differs:\n ours {ours:?}\n tokio_util {theirs:?}");
        }
    }
}

fn data(b: &[u8]) -> Read {
    Read::Data(b.to_vec())
}

fn frame(b: &[u8]) -> Event {
    Event::Frame(b.to_vec())
}

// ---------------------------------------------------------------------------
// Resume after EOF (issue 13, case 1)
// ---------------------------------------------------------------------------

#[test]
fn stream_resumed_after_eof_completes_the_interrupted_frame() {
    let arena = buddy(1 << 16);
    let ours = || ArenaLengthDelimitedCodec::new(arena.clone());

    // Header and part of the payload | EOF | the rest | EOF.
    let steps = [
        data(&[0, 0, 0, 3, b'a', b'b']),
        Read::Eof,
        data(b"c"),
        Read::Eof,
    ];
    let theirs = run_framed(LengthDelimitedCodec::new(), &steps, |_, _| {});
    assert_eq!(theirs, [remaining(), Event::End, frame(b"abc"), Event::End]);
    assert_eq!(run_framed(ours(), &steps, |_, _| {}), theirs);

    // A 9-byte frame interrupted after 4 bytes: the next bytes are the rest
    // of it, never a new header (which would make a frame "Q" nobody sent).
    let steps = [
        data(&[0, 0, 0, 9, 1, 2, 3, 4]),
        Read::Eof,
        data(&[0, 0, 0, 1, b'Q']),
        Read::Eof,
    ];
    let theirs = run_framed(LengthDelimitedCodec::new(), &steps, |_, _| {});
    assert_eq!(
        theirs,
        [
            remaining(),
            Event::End,
            frame(&[1, 2, 3, 4, 0, 0, 0, 1, b'Q']),
            Event::End
        ]
    );
    assert_eq!(run_framed(ours(), &steps, |_, _| {}), theirs);

    // EOF right after the header: the documented difference (an error
    // here, a quiet end there), and then the same frame.
    let steps = [data(&[0, 0, 0, 3]), Read::Eof, data(b"abc"), Read::Eof];
    let theirs = run_framed(LengthDelimitedCodec::new(), &steps, |_, _| {});
    assert_eq!(theirs, [Event::End, frame(b"abc"), Event::End]);
    let got = run_framed(ours(), &steps, |_, _| {});
    assert_eq!(got, [remaining(), Event::End, frame(b"abc"), Event::End]);
    assert_same_but_documented(&got, &theirs);
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[test]
fn partial_frame_memory_is_kept_until_the_frame_completes_or_the_codec_drops() {
    let arena = buddy(1 << 16);
    let mut codec = ArenaLengthDelimitedCodec::new(arena.clone());
    let mut buf = BytesMut::from(&[0u8, 0, 1, 0, 7][..]); // 256-byte frame, 1 byte of it
    assert!(codec.decode(&mut buf).unwrap().is_none());
    let e = codec.decode_eof(&mut buf).unwrap_err();
    assert!(matches!(e, CodecError::BytesRemaining), "{e:?}");
    assert_eq!(arena.metrics().live_bytes, 256, "kept for a resumed stream");
    drop(codec);
    assert_eq!(arena.metrics().live_bytes, 0);
}

// ---------------------------------------------------------------------------
// Retry after a failed allocation (issue 13, case 2)
// ---------------------------------------------------------------------------

#[test]
fn length_delimited_retry_after_failed_allocation_sees_the_same_frame() {
    let mut wire = vec![0, 0, 0, 9];
    wire.extend_from_slice(b"abcdefghz");
    wire.extend_from_slice(&[0, 0, 0, 2, b'o', b'k']);
    let mut theirs = LengthDelimitedCodec::new();
    let (want, end) = decode_all(&mut theirs, &wire);
    end.unwrap();

    // Driving the decoder: the failure consumes nothing; the retry works.
    let source = FailingSource::new(buddy(1 << 16), [0]);
    let mut codec = ArenaLengthDelimitedCodec::new(source.clone());
    codec.set_on_full(OnFull::Error);
    let mut buf = BytesMut::from(&wire[..]);
    let e = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(e, CodecError::Alloc(AllocError::ArenaFull)),
        "{e:?}"
    );
    assert_eq!(buf, wire, "the header is still there");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), want[0]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), want[1]);

    // Through `FramedRead`: the error, `None`, and on the next read the
    // same frame (never the payload read as a header).
    let source = FailingSource::new(buddy(1 << 16), [0]);
    let mut codec = ArenaLengthDelimitedCodec::new(source);
    codec.set_on_full(OnFull::Error);
    let steps = [data(&wire[..6]), data(&wire[6..]), Read::Eof];
    let got = run_framed(codec, &steps, |_, _| {});
    let theirs = run_framed(LengthDelimitedCodec::new(), &steps, |_, _| {});
    assert_eq!(theirs, [frame(&want[0]), frame(&want[1]), Event::End]);
    assert!(matches!(
        &got[0],
        Event::Error(io::ErrorKind::OutOfMemory, _)
    ));
    assert_eq!(
        got[1..],
        [Event::End, frame(&want[0]), frame(&want[1]), Event::End]
    );
}

#[test]
fn delimiter_retry_after_failed_allocation_keeps_the_line() {
    let wire = b"first\r\nsecond\nlast";
    let mut theirs = LinesCodec::new();
    let (want, end) = decode_all(&mut theirs, wire);
    end.unwrap();
    assert_eq!(want, ["first", "second", "last"]);

    // Every allocation fails once: each line comes on the retry.
    let source = FailingSource::new(buddy(1 << 12), [0, 2, 4]);
    let mut codec = ArenaLinesCodec::new(source.clone());
    codec.set_on_full(OnFull::Error);
    let mut buf = BytesMut::from(&wire[..]);
    let mut got = Vec::new();
    for eof in [false, false, true] {
        let call = |c: &mut ArenaLinesCodec<_>, b: &mut BytesMut| {
            if eof { c.decode_eof(b) } else { c.decode(b) }
        };
        let e = call(&mut codec, &mut buf).unwrap_err();
        assert!(
            matches!(e, CodecError::Alloc(AllocError::ArenaFull)),
            "{e:?}"
        );
        got.push(call(&mut codec, &mut buf).unwrap().unwrap());
    }
    assert_eq!(got, ["first", "second", "last"]);
    assert_eq!(source.calls(), 6);

    // The same for any delimiter.
    let source = FailingSource::new(buddy(1 << 12), [1]);
    let mut codec = ArenaAnyDelimiterCodec::new(source, b",;".to_vec(), b",".to_vec());
    codec.set_on_full(OnFull::Error);
    let mut theirs = AnyDelimiterCodec::new(b",;".to_vec(), b",".to_vec());
    let wire = b"a,bb;c";
    let (want, end) = decode_all(&mut theirs, wire);
    end.unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), want[0]);
    assert!(codec.decode(&mut buf).is_err());
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), want[1]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap().unwrap(), want[2]);
}

// ---------------------------------------------------------------------------
// Random streams, random reads, EOFs between them, failed allocations
// ---------------------------------------------------------------------------

/// Drives a decoder as `FramedRead` does (after an error: `None`, then the
/// next read; a second EOF in a row ends without `decode_eof`), except that
/// a decode whose allocation failed is retried at once, as a caller that
/// frees memory and asks again does.
fn drive_retrying<D>(mut dec: D, steps: &[Read]) -> (Vec<Event>, usize)
where
    D: Decoder<Error = CodecError>,
    D::Item: AsRef<[u8]>,
{
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut retries = 0;
    let mut eof = false;
    let mut call = |dec: &mut D, buf: &mut BytesMut, at_eof: bool| loop {
        let r = if at_eof {
            dec.decode_eof(buf)
        } else {
            dec.decode(buf)
        };
        match r {
            Err(CodecError::Alloc(AllocError::ArenaFull)) => retries += 1,
            r => return r,
        }
    };
    for step in steps {
        match step {
            Read::Data(d) => {
                eof = false;
                buf.extend_from_slice(d);
                loop {
                    match call(&mut dec, &mut buf, false) {
                        Ok(Some(f)) => events.push(Event::Frame(f.as_ref().to_vec())),
                        Ok(None) => break,
                        Err(e) => {
                            let e = io::Error::from(e);
                            events.push(Event::Error(e.kind(), e.to_string()));
                            events.push(Event::End);
                            break;
                        }
                    }
                }
            }
            Read::Eof if eof => events.push(Event::End),
            Read::Eof => {
                eof = true;
                match call(&mut dec, &mut buf, true) {
                    Ok(Some(f)) => {
                        events.push(Event::Frame(f.as_ref().to_vec()));
                        // FramedRead calls decode_eof again on the next poll.
                        loop {
                            match call(&mut dec, &mut buf, true) {
                                Ok(Some(f)) => events.push(Event::Frame(f.as_ref().to_vec())),
                                Ok(None) => {
                                    events.push(Event::End);
                                    break;
                                }
                                Err(e) => {
                                    let e = io::Error::from(e);
                                    events.push(Event::Error(e.kind(), e.to_string()));
                                    events.push(Event::End);
                                    break;
                                }
                            }
                        }
                    }
                    Ok(None) => events.push(Event::End),
                    Err(e) => {
                        let e = io::Error::from(e);
                        events.push(Event::Error(e.kind(), e.to_string()));
                        events.push(Event::End);
                    }
                }
            }
        }
    }
    (events, retries)
}

/// tokio_util's codec with its error type made ours, for the driver.
struct Oracle<D>(D);

impl<D> Decoder for Oracle<D>
where
    D: Decoder,
    D::Error: Into<io::Error>,
{
    type Item = D::Item;
    type Error = CodecError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<D::Item>, CodecError> {
        self.0.decode(src).map_err(|e| CodecError::Io(e.into()))
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<D::Item>, CodecError> {
        self.0.decode_eof(src).map_err(|e| CodecError::Io(e.into()))
    }
}

/// Where the EOFs go, and which allocations fail.
fn eofs_strategy() -> impl Strategy<Value = BTreeSet<usize>> {
    prop::collection::btree_set(0usize..40, 0..6)
}

fn failures_strategy() -> impl Strategy<Value = BTreeSet<usize>> {
    prop::collection::btree_set(0usize..40, 0..8)
}

fn frames_wire(opts: &Opts, lens: &[usize], seed: u8) -> Vec<u8> {
    let mut wire = Vec::new();
    for (i, len) in lens.iter().enumerate() {
        let f: Vec<u8> = (0..*len)
            .map(|j| (j as u8).wrapping_mul(13) ^ seed ^ i as u8)
            .collect();
        opts.write_frame(&f, 0x3C, &mut wire);
    }
    wire
}

/// Lines as tokio_util's `LinesCodec` yields them, as bytes.
struct LinesBytes(LinesCodec);

impl Decoder for LinesBytes {
    type Item = Bytes;
    type Error = io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        self.0
            .decode(src)
            .map(|l| l.map(Bytes::from))
            .map_err(|_| max_len_error())
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        self.0
            .decode_eof(src)
            .map(|l| l.map(Bytes::from))
            .map_err(|_| max_len_error())
    }
}

/// Maps errors to their kind only (our messages say more than tokio_util's
/// where its error type has no message of ours to match).
fn kinds(events: Vec<Event>) -> Vec<Event> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Error(k, m) if m == "bytes remaining on stream" => Event::Error(k, m),
            Event::Error(k, _) => Event::Error(k, String::new()),
            e => e,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random frames under random options, random reads with EOFs between
    /// them, through `FramedRead` polled on after every error and EOF: the
    /// same events as tokio_util's, but for the documented difference.
    #[test]
    fn length_delimited_across_eofs_matches_tokio(
        opts in opts_with_max(prop_oneof![Just(usize::MAX), 0usize..600]),
        lens in prop::collection::vec(0usize..300, 0..12),
        pieces in pieces_strategy(),
        eofs in eofs_strategy(),
        cut in any::<prop::sample::Index>(),
        seed in any::<u8>(),
    ) {
        let mut wire = frames_wire(&opts, &lens, seed);
        // Sometimes a stream that never finishes its last frame.
        if seed % 4 == 0 && !wire.is_empty() {
            wire.truncate(cut.index(wire.len()));
        }
        let steps = script(&wire, &pieces, &eofs);
        let theirs = kinds(run_framed(opts.tokio(), &steps, |_, _| {}));
        let arena = buddy(1 << 16);
        let ours = opts.ours(arena.max_len()).new_codec(arena.clone()).unwrap();
        let got = kinds(run_framed(ours, &steps, |_, _| {}));
        assert_same_but_documented(&got, &theirs);
        prop_assert_eq!(arena.metrics().live_bytes, 0);
    }

    /// The same with allocations failing at random (`OnFull::Error`), each
    /// retried at once: the same events as tokio_util's.
    #[test]
    fn length_delimited_retry_after_failure_matches_tokio(
        opts in opts_with_max(prop_oneof![Just(usize::MAX), 0usize..600]),
        lens in prop::collection::vec(0usize..300, 0..12),
        pieces in pieces_strategy(),
        eofs in eofs_strategy(),
        failures in failures_strategy(),
        seed in any::<u8>(),
    ) {
        let wire = frames_wire(&opts, &lens, seed);
        let steps = script(&wire, &pieces, &eofs);
        let (theirs, _) = drive_retrying(Oracle(opts.tokio()), &steps);
        let source = FailingSource::new(buddy(1 << 16), failures.clone());
        let mut b = opts.ours(source.max_len());
        b.on_full(OnFull::Error);
        let (got, retries) = drive_retrying(b.new_codec(source.clone()).unwrap(), &steps);
        assert_same_but_documented(&kinds(got), &kinds(theirs));
        prop_assert!(retries <= failures.len());
        prop_assert_eq!(source.arena.metrics().live_bytes, 0);
    }

    /// Lines, any-delimiter and raw chunks across EOFs and failed
    /// allocations: the same events as tokio_util's codecs.
    #[test]
    fn delimiters_across_eofs_and_failures_match_tokio(
        text in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b';'), b'a'..=b'e'], 0..300),
        max in prop_oneof![0usize..8, Just(usize::MAX)],
        pieces in pieces_strategy(),
        eofs in eofs_strategy(),
        failures in failures_strategy(),
    ) {
        let max = max.min(1 << 12);
        let steps = script(&text, &pieces, &eofs);
        let new_source = || FailingSource::new(buddy(1 << 12), failures.clone());

        // Through FramedRead (no failures): EOFs between reads.
        let theirs = kinds(run_framed(LinesBytes(LinesCodec::new_with_max_length(max)), &steps, |_, _| {}));
        let ours = ArenaLinesCodec::new_with_max_length(buddy(1 << 12), max);
        prop_assert_eq!(kinds(run_framed(ours, &steps, |_, _| {})), theirs);
        let theirs = kinds(run_framed(Any(AnyDelimiterCodec::new_with_max_length(b";\r".to_vec(), b";".to_vec(), max)), &steps, |_, _| {}));
        let ours = ArenaAnyDelimiterCodec::new_with_max_length(buddy(1 << 12), b";\r".to_vec(), b";".to_vec(), max);
        prop_assert_eq!(kinds(run_framed(ours, &steps, |_, _| {})), theirs);

        // With failed allocations, retried.
        let (theirs, _) = drive_retrying(Oracle(LinesBytes(LinesCodec::new_with_max_length(max))), &steps);
        let mut ours = ArenaLinesCodec::new_with_max_length(new_source(), max);
        ours.set_on_full(OnFull::Error);
        prop_assert_eq!(kinds(drive_retrying(ours, &steps).0), kinds(theirs));

        let (theirs, _) = drive_retrying(Oracle(Any(AnyDelimiterCodec::new_with_max_length(b";\r".to_vec(), b";".to_vec(), max))), &steps);
        let mut ours = ArenaAnyDelimiterCodec::new_with_max_length(new_source(), b";\r".to_vec(), b";".to_vec(), max);
        ours.set_on_full(OnFull::Error);
        prop_assert_eq!(kinds(drive_retrying(ours, &steps).0), kinds(theirs));

        let (theirs, _) = drive_retrying(Oracle(BytesCodec::new()), &steps);
        let source = new_source();
        let mut ours = ArenaBytesCodec::new(source.clone());
        ours.set_on_full(OnFull::Error);
        prop_assert_eq!(kinds(drive_retrying(ours, &steps).0), kinds(theirs));
        prop_assert_eq!(source.arena.metrics().live_bytes, 0);
    }
}

//! `ArenaDelimiterCodec` against tokio_util: `lines()` against `LinesCodec`,
//! `new(delimiter)` against `AnyDelimiterCodec` with that one delimiter.
//! Random options, random bytes, random read splits; decoding goes on after
//! an over-long frame, as both codecs allow. Both must yield the same frames
//! and errors, except that a frame the arena had no room for may be an
//! error (with `OnFull::Error`). Never a panic, a hang or a leak.
#![no_main]

#[path = "common.rs"]
mod common;

use std::collections::VecDeque;

use arenabuf::BufferSource;
use arenabuf::codec::{ArenaDelimiterCodec, OnFull};
use bytes::{Bytes, BytesMut};
use common::{Arena, Input, is_alloc_error, splits};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{AnyDelimiterCodec, Decoder, LinesCodec};

#[derive(Debug, PartialEq)]
enum Event {
    Frame(Bytes),
    /// The frame was longer than the maximum.
    TooLong,
}

#[derive(Debug, Clone, Copy)]
struct Options {
    lines: bool,
    delimiter: u8,
    max_length: usize,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let b0 = input.u8();
    let lines = b0 & 0x80 != 0;
    let delimiter = match b0 & 3 {
        0 => b'\n',
        1 => b',',
        2 => 0,
        _ => input.u8(),
    };
    let max_length = input.pick(&[0, 1, 3, 16, 100, usize::MAX]);
    let arena_byte = input.u8();
    let on_full = common::on_full(arena_byte);
    let seed = input.u16();
    let max_read = input.pick(&[1, 2, 3, 7, 64, 4096]);
    let keep = usize::from(input.u8() % 8);
    let mut stream = input.rest().to_vec();
    if lines {
        // LinesCodec wants UTF-8; ASCII keeps every structure that matters.
        stream.iter_mut().for_each(|b| *b &= 0x7f);
    }
    let chunks = splits(&stream, seed, max_read);

    let arena = Arena::from_byte(arena_byte);
    let (o, source_max) = match &arena {
        Arena::Fixed(a) => (
            Options {
                lines,
                delimiter,
                max_length,
            },
            a.max_len(),
        ),
        Arena::Buddy(a) => (
            Options {
                lines,
                delimiter,
                max_length,
            },
            a.max_len(),
        ),
    };
    let expected = reference(o, source_max, &chunks);
    match &arena {
        Arena::Fixed(a) => run(a.clone(), o, on_full, &chunks, keep, &expected),
        Arena::Buddy(a) => run(a.clone(), o, on_full, &chunks, keep, &expected),
    }
    arena.assert_whole();
});

/// Feeds `chunks` to `decode` and then `decode_eof`, going on after errors,
/// and collects what comes out. Every frame and every error consumes
/// input, so this ends; `limit` guards against a decoder that does not.
fn drive<D, E>(decoder: &mut D, chunks: &[&[u8]], mut on_event: impl FnMut(Result<D::Item, E>))
where
    D: Decoder<Error = E>,
{
    let limit = chunks.iter().map(|c| c.len()).sum::<usize>() + 16;
    let mut events = 0;
    let mut buf = BytesMut::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            assert!(events <= limit, "the decoder yields without consuming");
            match decoder.decode(&mut buf) {
                Ok(None) => break,
                event => {
                    events += 1;
                    on_event(event.map(|f| f.expect("matched None above")));
                }
            }
        }
    }
    loop {
        assert!(
            events <= limit,
            "the decoder yields without consuming at EOF"
        );
        match decoder.decode_eof(&mut buf) {
            Ok(None) => return,
            event => {
                events += 1;
                on_event(event.map(|f| f.expect("matched None above")));
            }
        }
    }
}

fn reference(o: Options, source_max: usize, chunks: &[&[u8]]) -> Vec<Event> {
    let max = o.max_length.min(source_max);
    let mut events = Vec::new();
    if o.lines {
        let mut codec = LinesCodec::new_with_max_length(max);
        drive(&mut codec, chunks, |e| {
            events.push(match e {
                Ok(line) => Event::Frame(Bytes::from(line)),
                Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded) => Event::TooLong,
                Err(e) => panic!("ASCII input: {e}"),
            })
        });
    } else {
        let mut codec =
            AnyDelimiterCodec::new_with_max_length(vec![o.delimiter], vec![o.delimiter], max);
        drive(&mut codec, chunks, |e| {
            events.push(match e {
                Ok(chunk) => Event::Frame(chunk),
                Err(tokio_util::codec::AnyDelimiterCodecError::MaxChunkLengthExceeded) => {
                    Event::TooLong
                }
                Err(e) => panic!("no I/O here: {e}"),
            })
        });
    }
    events
}

fn run<S: BufferSource>(
    source: S,
    o: Options,
    on_full: OnFull,
    chunks: &[&[u8]],
    keep: usize,
    expected: &[Event],
) {
    let codec = if o.lines {
        ArenaDelimiterCodec::lines(source)
    } else {
        ArenaDelimiterCodec::new(source, o.delimiter)
    };
    let mut codec = codec.max_length(o.max_length).on_full(on_full);
    let mut held = VecDeque::new();
    let mut seen = 0;
    drive(&mut codec, chunks, |event| {
        let want = expected.get(seen);
        match event {
            Err(e) if is_alloc_error(&e) => {
                assert_eq!(on_full, OnFull::Error, "OnFull::Spill failed: {e}");
                assert!(
                    matches!(want, Some(Event::Frame(f)) if !f.is_empty()),
                    "event {seen}: arena error {e} where tokio_util gave {want:?}"
                );
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
                assert_eq!(want, Some(&Event::TooLong), "event {seen}: {e}");
            }
            Ok(frame) => {
                assert_eq!(want, Some(&Event::Frame(frame.clone())), "event {seen}");
                held.push_back(frame);
                if held.len() > keep {
                    held.pop_front();
                }
            }
        }
        seen += 1;
    });
    assert_eq!(
        seen,
        expected.len(),
        "tokio_util yielded more: {:?}",
        &expected[seen..]
    );
    drop(held);
}

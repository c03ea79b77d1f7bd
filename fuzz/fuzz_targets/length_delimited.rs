//! `ArenaLengthDelimitedCodec` against tokio_util's `LengthDelimitedCodec`:
//! random header options, random bytes, random read splits. Where the arena
//! has room, both must yield the same frames and fail at the same point
//! with the same error kind; an arena error (full, or a frame that can
//! never fit) may only cut the stream short. Never a panic, a hang or a
//! leak: at the end the arena is whole.
#![no_main]

#[path = "common.rs"]
mod common;

use std::collections::VecDeque;
use std::io;

use arenabuf::BufferSource;
use arenabuf::codec::{ArenaLengthDelimitedCodec, OnFull};
use bytes::{Bytes, BytesMut};
use common::{Arena, Input, is_alloc_error, splits};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

#[derive(Debug, Clone, Copy)]
struct Options {
    offset: usize,
    field_len: usize,
    adjustment: isize,
    num_skip: Option<usize>,
    little_endian: bool,
    max_frame: usize,
}

#[derive(Debug, PartialEq)]
enum Event {
    Frame(Bytes),
    Error(io::ErrorKind),
    /// tokio_util ended cleanly at EOF although a header announced a frame
    /// whose payload never came (it had consumed the header, so its buffer
    /// was empty). The arena codec reports "bytes remaining on stream"
    /// there instead: a known, deliberate difference.
    SilentTruncation,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let (b0, b1, b2, b3) = (input.u8(), input.u8(), input.u8(), input.u8());
    let options = Options {
        offset: usize::from(b0 & 3),
        field_len: 1 + usize::from((b0 >> 2) % 8),
        adjustment: isize::from((b1 as i8) >> 3),
        num_skip: (b2 & 0x80 == 0).then_some(usize::from(b2 & 0x0f)),
        little_endian: b3 & 1 != 0,
        max_frame: [0, 1, 5, 64, 300, 4096, 65536][usize::from(b3 >> 1) % 7],
    };
    let arena_byte = input.u8();
    let on_full = common::on_full(arena_byte);
    let seed = input.u16();
    let max_read = input.pick(&[1, 2, 3, 7, 64, 4096]);
    let keep = usize::from(input.u8() % 8);
    let chunks = splits(input.rest(), seed, max_read);

    let arena = Arena::from_byte(arena_byte);
    match &arena {
        Arena::Fixed(a) => run(a.clone(), options, on_full, &chunks, keep),
        Arena::Buddy(a) => run(a.clone(), options, on_full, &chunks, keep),
    }
    arena.assert_whole();
});

/// Most events looked at: a zero-length frame that consumes nothing would
/// otherwise repeat for ever (in both codecs alike).
fn cap(chunks: &[&[u8]]) -> usize {
    chunks.iter().map(|c| c.len()).sum::<usize>() + 16
}

/// Feeds `chunks` to `decode` and then `decode_eof`, as `FramedRead` does,
/// handing each event to `on_event`, which returns false to stop.
fn drive<D>(
    decoder: &mut D,
    chunks: &[&[u8]],
    limit: usize,
    mut on_event: impl FnMut(io::Result<D::Item>) -> bool,
) where
    D: Decoder<Error = io::Error>,
{
    let mut buf = BytesMut::new();
    let mut events = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            if events == limit {
                return;
            }
            match decoder.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    events += 1;
                    if !on_event(Ok(frame)) {
                        return;
                    }
                }
                Err(e) => {
                    on_event(Err(e));
                    return;
                }
            }
        }
    }
    while events < limit {
        match decoder.decode_eof(&mut buf) {
            Ok(None) => return,
            Ok(Some(frame)) => {
                events += 1;
                if !on_event(Ok(frame)) {
                    return;
                }
            }
            Err(e) => {
                on_event(Err(e));
                return;
            }
        }
    }
}

fn reference(o: Options, chunks: &[&[u8]]) -> Vec<Event> {
    let mut b = LengthDelimitedCodec::builder();
    b.length_field_offset(o.offset)
        .length_field_length(o.field_len)
        .length_adjustment(o.adjustment)
        .max_frame_length(o.max_frame);
    if let Some(n) = o.num_skip {
        b.num_skip(n);
    }
    if o.little_endian {
        b.little_endian();
    }
    let mut codec = b.new_codec();
    let mut events = Vec::new();
    drive(&mut codec, chunks, cap(chunks), |event| {
        events.push(match event {
            Ok(frame) => Event::Frame(frame.freeze()),
            Err(e) => Event::Error(e.kind()),
        });
        true
    });
    let ended_cleanly = !matches!(events.last(), Some(Event::Error(_)));
    if ended_cleanly && events.len() < cap(chunks) && format!("{codec:?}").contains("Data(") {
        events.push(Event::SilentTruncation);
    }
    events
}

fn run<S: BufferSource>(source: S, o: Options, on_full: OnFull, chunks: &[&[u8]], keep: usize) {
    let expected = reference(o, chunks);
    let mut b = ArenaLengthDelimitedCodec::<S>::builder()
        .length_field_offset(o.offset)
        .length_field_length(o.field_len)
        .length_adjustment(o.adjustment)
        .max_frame_length(o.max_frame)
        .on_full(on_full);
    if let Some(n) = o.num_skip {
        b = b.num_skip(n);
    }
    if o.little_endian {
        b = b.little_endian();
    }
    let mut codec = b.new_codec(source).expect("a valid layout");
    let mut held = VecDeque::new();
    let mut seen = 0;
    let mut cut_short = false;
    drive(&mut codec, chunks, cap(chunks), |event| {
        match event {
            Err(e) if is_alloc_error(&e) => {
                assert!(
                    on_full == OnFull::Error || e.kind() == io::ErrorKind::InvalidData,
                    "OnFull::Spill must not fail on a full arena: {e}"
                );
                cut_short = true;
                return false;
            }
            Err(e) if expected.get(seen) == Some(&Event::SilentTruncation) => {
                assert_eq!(
                    e.kind(),
                    io::ErrorKind::Other,
                    "truncated frame at EOF: {e}"
                );
            }
            Err(e) => {
                assert_eq!(
                    expected.get(seen),
                    Some(&Event::Error(e.kind())),
                    "event {seen}: arena codec failed with {e}, tokio_util did not"
                );
            }
            Ok(frame) => {
                assert_eq!(
                    expected.get(seen),
                    Some(&Event::Frame(frame.clone())),
                    "event {seen}: frames differ"
                );
                held.push_back(frame);
                if held.len() > keep {
                    held.pop_front();
                }
            }
        }
        seen += 1;
        true
    });
    if !cut_short {
        assert_eq!(
            seen,
            expected.len(),
            "tokio_util yielded more: {:?}",
            &expected[seen..]
        );
    }
    for frame in &held {
        assert!(expected.contains(&Event::Frame(frame.clone())));
    }
    drop(held);
    drop(codec);
}

//! `ArenaLengthDelimitedCodec` against tokio_util's `LengthDelimitedCodec`:
//! random header options, random bytes, random read splits with EOFs
//! between them (the stream goes on after each, as `FramedRead` polled
//! again does), and allocations that fail at random (with `OnFull::Error`
//! the decode is retried after memory is freed). Both codecs must give the
//! same events (frames, errors by kind, `None`s), but for the documented
//! difference (EOF right after a header is "bytes remaining" here, a quiet
//! end there) and for a frame the arena can never hold, which may only cut
//! the stream short. Never a panic, a hang or a leak: at the end the arena
//! is whole.
#![no_main]

#[path = "common.rs"]
mod common;

use std::io;

use arenabuf::codec::{ArenaLengthDelimitedCodec, CodecError, OnFull};
use arenabuf::{AllocError, BufferSource};
use common::{Arena, Event, FlakySource, Input, Step, framed_read, splits, steps};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::LengthDelimitedCodec;

#[derive(Debug, Clone, Copy)]
struct Options {
    offset: usize,
    field_len: usize,
    adjustment: isize,
    num_skip: Option<usize>,
    little_endian: bool,
    max_frame: usize,
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
    let eof_mask = u64::from(input.u16()) * u64::from(input.u8() & 1);
    let fail_mask = u64::from(input.u16()) << (input.u8() % 48);
    let chunks = splits(input.rest(), seed, max_read);
    let steps = steps(&chunks, eof_mask);

    let arena = Arena::from_byte(arena_byte);
    match &arena {
        Arena::Fixed(a) => run(a.clone(), options, on_full, fail_mask, &steps, keep),
        Arena::Buddy(a) => run(a.clone(), options, on_full, fail_mask, &steps, keep),
    }
    arena.assert_whole();
});

/// Most events looked at: a zero-length frame that consumes nothing would
/// otherwise repeat for ever (in both codecs alike).
fn limit(steps: &[Step<'_>]) -> usize {
    steps
        .iter()
        .map(|s| match s {
            Step::Data(d) => d.len() + 2,
            Step::Eof => 2,
        })
        .sum::<usize>()
        + 16
}

fn tokio_class(e: &io::Error) -> &'static str {
    if e.to_string() == "bytes remaining on stream" {
        return "bytes remaining";
    }
    match e.kind() {
        io::ErrorKind::InvalidData => "InvalidData",
        io::ErrorKind::InvalidInput => "InvalidInput",
        _ => "other",
    }
}

fn our_class(e: &CodecError) -> &'static str {
    match e {
        CodecError::BytesRemaining => "bytes remaining",
        CodecError::Alloc(AllocError::RequestTooLarge { .. }) => "never fits",
        CodecError::Alloc(_) => "full",
        e => match e.kind() {
            io::ErrorKind::InvalidData => "InvalidData",
            io::ErrorKind::InvalidInput => "InvalidInput",
            _ => "other",
        },
    }
}

fn run<S: BufferSource>(
    source: S,
    o: Options,
    on_full: OnFull,
    fail_mask: u64,
    steps: &[Step<'_>],
    keep: usize,
) {
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
    let mut reference = b.new_codec();
    let expected = framed_read(&mut reference, steps, 0, limit(steps), |_| false, tokio_class);

    let mut b = ArenaLengthDelimitedCodec::builder();
    b.length_field_offset(o.offset)
        .length_field_length(o.field_len)
        .length_adjustment(o.adjustment)
        .max_frame_length(o.max_frame)
        .on_full(on_full);
    if let Some(n) = o.num_skip {
        b.num_skip(n);
    }
    if o.little_endian {
        b.little_endian();
    }
    // The source claims it can hold any frame, so the codec takes tokio_util's
    // maximum; a frame the arena cannot hold fails with `RequestTooLarge`.
    let source = FlakySource::new(source, fail_mask, usize::MAX);
    let mut codec = b.new_codec(source).expect("a valid layout");
    let got = framed_read(
        &mut codec,
        steps,
        keep,
        limit(steps),
        |e| matches!(e, CodecError::Alloc(AllocError::ArenaFull)),
        our_class,
    );
    // `OnFull::Spill` never fails for memory.
    assert!(
        on_full == OnFull::Error || !got.contains(&Event::Error("full")),
        "{got:?}"
    );
    let (mut i, mut j) = (0, 0);
    while i < got.len() && j < expected.len() {
        if got[i] == expected[j] {
            (i, j) = (i + 1, j + 1);
        } else if got[i] == Event::Error("never fits") {
            return; // the arena's limit cut the stream short
        } else if got[i] == Event::Error("bytes remaining")
            && got.get(i + 1) == Some(&Event::End)
            && expected[j] == Event::End
        {
            i += 1; // the documented difference
        } else {
            panic!("event {i} differs:\n arena {got:?}\n tokio_util {expected:?}");
        }
    }
    let truncated = got.len() >= limit(steps) || expected.len() >= limit(steps);
    assert!(
        truncated || (i, j) == (got.len(), expected.len()),
        "one stream goes on:\n arena {got:?}\n tokio_util {expected:?}"
    );
    drop(codec);
}

//! `ArenaLinesCodec` against tokio_util's `LinesCodec`, and
//! `ArenaAnyDelimiterCodec` against `AnyDelimiterCodec` (one to three seek
//! delimiters). Random options, random bytes, random read splits with EOFs
//! between them (the stream goes on after each, as `FramedRead` polled again
//! does), and allocations that fail at random (with `OnFull::Error` the
//! decode is retried after memory is freed). Both must give the same events:
//! frames, over-long errors, `None`s. Never a panic, a hang or a leak.
#![no_main]

#[path = "common.rs"]
mod common;

use arenabuf::BufferSource;
use arenabuf::codec::{ArenaAnyDelimiterCodec, ArenaLinesCodec, CodecError, OnFull};
use common::{Arena, FlakySource, Input, Step, framed_read, splits, steps};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, LinesCodec, LinesCodecError};

#[derive(Debug, Clone)]
struct Options {
    lines: bool,
    seek: Vec<u8>,
    max_length: usize,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let b0 = input.u8();
    let lines = b0 & 0x80 != 0;
    let mut seek = vec![match b0 & 3 {
        0 => b'\n',
        1 => b',',
        2 => 0,
        _ => input.u8(),
    }];
    for _ in 0..(b0 >> 2) % 3 {
        seek.push(input.u8());
    }
    let max_length = input.pick(&[0, 1, 3, 16, 100, usize::MAX]);
    let arena_byte = input.u8();
    let on_full = common::on_full(arena_byte);
    let seed = input.u16();
    let max_read = input.pick(&[1, 2, 3, 7, 64, 4096]);
    let keep = usize::from(input.u8() % 8);
    let eof_mask = u64::from(input.u16()) * u64::from(input.u8() & 1);
    let fail_mask = u64::from(input.u16()) << (input.u8() % 48);
    let mut stream = input.rest().to_vec();
    if lines {
        // LinesCodec wants UTF-8; ASCII keeps every structure that matters.
        stream.iter_mut().for_each(|b| *b &= 0x7f);
    }
    let chunks = splits(&stream, seed, max_read);
    let steps = steps(&chunks, eof_mask);
    let o = Options {
        lines,
        seek,
        max_length,
    };

    let arena = Arena::from_byte(arena_byte);
    match &arena {
        Arena::Fixed(a) => run(a.clone(), &o, on_full, fail_mask, &steps, keep),
        Arena::Buddy(a) => run(a.clone(), &o, on_full, fail_mask, &steps, keep),
    }
    arena.assert_whole();
});

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

/// `LinesCodec` with its lines as bytes.
struct Lines(LinesCodec);

impl tokio_util::codec::Decoder for Lines {
    type Item = bytes::Bytes;
    type Error = LinesCodecError;
    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<bytes::Bytes>, LinesCodecError> {
        Ok(self.0.decode(src)?.map(bytes::Bytes::from))
    }
    fn decode_eof(&mut self, src: &mut bytes::BytesMut) -> Result<Option<bytes::Bytes>, LinesCodecError> {
        Ok(self.0.decode_eof(src)?.map(bytes::Bytes::from))
    }
}

fn our_class(e: &CodecError) -> &'static str {
    match e {
        CodecError::MaxLengthExceeded { .. } => "too long",
        e => panic!("no other error here: {e}"),
    }
}

fn run<S: BufferSource>(
    source: S,
    o: &Options,
    on_full: OnFull,
    fail_mask: u64,
    steps: &[Step<'_>],
    keep: usize,
) {
    // Both cap the maximum at what the arena can hold, so no frame is ever
    // too large for it.
    let max = o.max_length.min(source.max_len());
    let lim = limit(steps);
    let expected = if o.lines {
        let mut codec = Lines(LinesCodec::new_with_max_length(max));
        framed_read(&mut codec, steps, 0, lim, |_| false, |e| match e {
            LinesCodecError::MaxLineLengthExceeded => "too long",
            e => panic!("ASCII input: {e}"),
        })
    } else {
        let mut codec =
            AnyDelimiterCodec::new_with_max_length(o.seek.clone(), o.seek[..1].to_vec(), max);
        framed_read(&mut codec, steps, 0, lim, |_| false, |e| match e {
            AnyDelimiterCodecError::MaxChunkLengthExceeded => "too long",
            e => panic!("no I/O here: {e}"),
        })
    };
    let max_len = source.max_len();
    let source = FlakySource::new(source, fail_mask, max_len);
    let is_full = |e: &CodecError| {
        let full = matches!(e, CodecError::Alloc(arenabuf::AllocError::ArenaFull));
        assert!(!full || on_full == OnFull::Error, "OnFull::Spill failed: {e}");
        full
    };
    let got = if o.lines {
        let mut codec = ArenaLinesCodec::new_with_max_length(source, o.max_length);
        codec.set_on_full(on_full);
        assert_eq!(codec.max_length(), max);
        framed_read(&mut codec, steps, keep, lim, is_full, our_class)
    } else {
        let mut codec = ArenaAnyDelimiterCodec::new_with_max_length(
            source,
            o.seek.clone(),
            o.seek[..1].to_vec(),
            o.max_length,
        );
        codec.set_on_full(on_full);
        framed_read(&mut codec, steps, keep, lim, is_full, our_class)
    };
    assert_eq!(got, expected);
}

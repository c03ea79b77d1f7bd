//! Lines and any-delimiter framing against tokio_util's `LinesCodec` and
//! `AnyDelimiterCodec`, and raw chunks against `BytesCodec`.

use std::io;

use arenabuf::codec::{
    ArenaAnyDelimiterCodec, ArenaBytesCodec, ArenaLinesCodec, CodecError, OnFull,
};
use arenabuf::io::Framing;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{AnyDelimiterCodec, BytesCodec, Decoder, LinesCodec};

use crate::common::*;

fn text_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'\n'),
            Just(b'\r'),
            Just(b';'),
            Just(b','),
            b'a'..=b'z'
        ],
        0..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// Lines and any-delimiter framing against `LinesCodec` and
    /// `AnyDelimiterCodec` (one seek delimiter, and several): the same
    /// frames, the same over-long errors, and (for the codec, which goes on
    /// after an error as they do) the same recovery; the same last frame at
    /// EOF.
    #[test]
    fn delimiters_match_tokio(
        text in text_strategy(),
        max in prop_oneof![0usize..4, 0usize..40, Just(usize::MAX)],
        pieces in pieces_strategy(),
        chunk in 8usize..100,
    ) {
        let arena = buddy(1 << 14);
        // `new` caps the maximum at what the source holds; tokio_util's has none.
        let capped = max.min(1 << 14);
        // Lines.
        let theirs = run_all(LinesCodec::new_with_max_length(capped), &text, &pieces);
        let ours = ArenaLinesCodec::new_with_max_length(arena.clone(), max);
        prop_assert_eq!(ours.max_length(), capped);
        prop_assert_eq!(&run_all(ours, &text, &pieces), &theirs);
        // Any delimiter: one byte, then several.
        for seek in [&b";"[..], &b";,\r"[..]] {
            let theirs = run_all(AnyDelimiterCodec::new_with_max_length(seek.to_vec(), b";".to_vec(), capped), &text, &pieces);
            let ours = ArenaAnyDelimiterCodec::new_with_max_length(arena.clone(), seek.to_vec(), b";".to_vec(), max);
            prop_assert_eq!(&run_all(ours, &text, &pieces), &theirs);
        }

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

    /// Raw chunks against `BytesCodec`: the same chunks for the same reads
    /// (a read larger than the source's `max_len` comes out in pieces).
    #[test]
    fn bytes_codec_matches_tokio(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        pieces in pieces_strategy(),
    ) {
        let arena = buddy(1 << 16);
        let theirs = run_all(BytesCodec::new(), &data, &pieces);
        let ours = run_all(ArenaBytesCodec::new(arena.clone()), &data, &pieces);
        prop_assert_eq!(&ours, &theirs);
        // A source of 1 KiB at most: the same bytes, in pieces of at most 1 KiB.
        let small = fixed(4, 1024);
        let ours = run_all(ArenaBytesCodec::new(small.clone()), &data, &pieces);
        prop_assert!(ours.iter().all(|c| c.as_ref().is_some_and(|c| c.len() <= 1024)));
        prop_assert_eq!(ours.iter().flatten().flatten().copied().collect::<Vec<u8>>(), data);
        prop_assert_eq!(small.metrics().live_slots, 0);
        prop_assert_eq!(arena.metrics().live_bytes, 0);
    }

    /// The encoders write what tokio_util's write, from every item type.
    #[test]
    fn delimiter_encoders_match_tokio(
        items in prop::collection::vec("[a-z;,\n]{0,12}", 0..8),
        writer in prop_oneof![Just(b";".to_vec()), Just(b"\r\n".to_vec()), Just(Vec::new())],
    ) {
        let arena = buddy(1 << 12);
        let mut lines = ArenaLinesCodec::new(arena.clone());
        let mut any = ArenaAnyDelimiterCodec::new(arena.clone(), b";".to_vec(), writer.clone());
        let mut bytes = ArenaBytesCodec::new(arena);
        let (mut t_lines, mut t_any, mut t_bytes) = (
            LinesCodec::new(),
            AnyDelimiterCodec::new(b";".to_vec(), writer.clone()),
            BytesCodec::new(),
        );
        let mut ours = [BytesMut::new(), BytesMut::new(), BytesMut::new()];
        let mut theirs = [BytesMut::new(), BytesMut::new(), BytesMut::new()];
        for (i, item) in items.iter().enumerate() {
            use tokio_util::codec::Encoder;
            match i % 4 {
                0 => {
                    lines.encode(item.as_str(), &mut ours[0]).unwrap();
                    any.encode(item.as_str(), &mut ours[1]).unwrap();
                }
                1 => {
                    lines.encode(item.clone(), &mut ours[0]).unwrap();
                    any.encode(item.clone(), &mut ours[1]).unwrap();
                }
                2 => {
                    lines.encode(item.as_bytes(), &mut ours[0]).unwrap();
                    any.encode(item.as_bytes(), &mut ours[1]).unwrap();
                }
                _ => {
                    lines.encode(Bytes::from(item.clone()), &mut ours[0]).unwrap();
                    any.encode(Bytes::from(item.clone()), &mut ours[1]).unwrap();
                }
            }
            bytes.encode(item.as_bytes(), &mut ours[2]).unwrap();
            t_lines.encode(item.as_str(), &mut theirs[0]).unwrap();
            t_any.encode(item.as_str(), &mut theirs[1]).unwrap();
            t_bytes.encode(Bytes::from(item.clone()), &mut theirs[2]).unwrap();
        }
        prop_assert_eq!(ours, theirs);
    }
}

#[test]
fn over_long_line_is_invalid_data_then_skipped() {
    let arena = buddy(1 << 12);
    let mut codec = ArenaLinesCodec::new_with_max_length(arena.clone(), 4);
    let mut theirs = LinesCodec::new_with_max_length(4);
    let mut buf = BytesMut::from(&b"toolong\nok\r\n"[..]);
    let mut tbuf = buf.clone();
    let e = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(e, CodecError::MaxLengthExceeded { max_length: 4 }),
        "{e:?}"
    );
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(theirs.decode(&mut tbuf).is_err());
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "ok");
    assert_eq!(theirs.decode(&mut tbuf).unwrap().unwrap(), "ok");
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[test]
fn full_arena_spills_by_default_or_errors() {
    let arena = fixed(1, 64);
    let held = arena.allocate().unwrap();

    let mut lines = ArenaLinesCodec::new(arena.clone());
    assert_eq!(lines.on_full(), OnFull::Spill);
    let (frames, end) = decode_all(&mut lines, b"x\ny");
    end.unwrap();
    assert_eq!(frames, [Bytes::from_static(b"x"), Bytes::from_static(b"y")]);
    assert_eq!(arena.metrics().spill_count, 2);

    let mut any = ArenaAnyDelimiterCodec::new(arena.clone(), b",".to_vec(), b",".to_vec());
    any.set_on_full(OnFull::Error);
    let (frames, end) = decode_all(&mut any, b"x,y");
    assert!(frames.is_empty());
    assert!(matches!(
        end,
        Err(CodecError::Alloc(arenabuf::AllocError::ArenaFull))
    ));

    let mut raw = ArenaBytesCodec::new(arena.clone());
    raw.set_on_full(OnFull::Error);
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(
        raw.decode(&mut buf).unwrap_err().kind(),
        io::ErrorKind::OutOfMemory
    );
    assert_eq!(buf, "abc", "nothing consumed");
    drop(held);
    assert_eq!(raw.decode(&mut buf).unwrap().unwrap(), "abc");
    assert_eq!(arena.metrics().live_slots, 0);
}

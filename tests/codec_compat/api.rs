//! The tokio_util API users reach for, each use checked against tokio_util
//! doing the same.

use std::io;
use std::num::NonZeroUsize;

use arenabuf::codec::{
    ArenaAnyDelimiterCodec, ArenaBytesCodec, ArenaLengthDelimitedCodec, ArenaLinesCodec,
    CodecError, LengthDelimitedBuilder, OnFull,
};
use arenabuf::{AllocError, BuddyArena, Buffer, BufferSource};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::{
    AnyDelimiterCodec, Decoder, Encoder, FramedRead, FramedWrite, LengthDelimitedCodec,
};

use crate::common::*;

#[test]
fn builder_in_separate_statements_copied_and_typed_length_field() {
    // tokio_util's builder and ours, configured statement by statement.
    let mut theirs = LengthDelimitedCodec::builder();
    theirs.length_field_type::<u16>();
    theirs.little_endian();
    theirs.length_adjustment(2);
    let mut ours: LengthDelimitedBuilder = ArenaLengthDelimitedCodec::builder();
    ours.length_field_type::<u16>();
    ours.little_endian();
    ours.length_adjustment(2);
    ours.max_frame_length(1000);
    theirs.max_frame_length(1000);

    let copy = ours; // Copy: `ours` stays usable
    ours.on_full(OnFull::Error);
    assert_ne!(copy, ours);

    let arena = buddy(1 << 16);
    let mut codec = ours.new_codec(arena.clone()).unwrap();
    assert_eq!(codec.on_full(), OnFull::Error);
    assert_eq!(
        copy.new_codec(arena.clone()).unwrap().on_full(),
        OnFull::Spill
    );
    let mut stock = theirs.new_codec();
    assert_eq!(codec.max_frame_length(), stock.max_frame_length());

    // Same bytes out, from a slice and from Bytes.
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    stock.encode(&b"slice"[..], &mut a).unwrap();
    stock.encode(Bytes::from_static(b"bytes"), &mut a).unwrap();
    codec.encode(&b"slice"[..], &mut b).unwrap();
    codec.encode(Bytes::from_static(b"bytes"), &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(&a[..2], &[3, 0], "a 2-byte little-endian field, adjusted");

    // Same frames back.
    let mut t = a.clone();
    assert_eq!(codec.decode(&mut b).unwrap().unwrap(), "slice");
    assert_eq!(stock.decode(&mut t).unwrap().unwrap(), "slice");
    assert_eq!(codec.decode(&mut b).unwrap().unwrap(), "bytes");
    assert_eq!(stock.decode(&mut t).unwrap().unwrap(), "bytes");

    // tokio_util's builder from ours writes the same.
    let mut from_ours = copy.tokio_builder().unwrap().new_codec();
    let mut c = BytesMut::new();
    from_ours
        .encode(Bytes::from_static(b"slice"), &mut c)
        .unwrap();
    assert_eq!(c, a[..7]);
}

#[tokio::test]
async fn new_read_new_write_new_framed_talk_to_the_stock_codec() {
    let arena = buddy(1 << 16);
    let mut builder = ArenaLengthDelimitedCodec::builder();
    builder.length_field_type::<u8>().max_frame_length(200);

    // Ours writes, tokio_util reads; tokio_util writes, ours reads.
    let (a, b) = tokio::io::duplex(64);
    let mut tx = builder.new_write(a).unwrap();
    let mut rx = LengthDelimitedCodec::builder()
        .length_field_type::<u8>()
        .new_read(b);
    tx.send(Bytes::from_static(b"to tokio_util")).await.unwrap();
    tx.send(&b"a slice"[..]).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "to tokio_util");
    assert_eq!(rx.next().await.unwrap().unwrap(), "a slice");

    let (a, b) = tokio::io::duplex(64);
    let mut tx = LengthDelimitedCodec::builder()
        .length_field_type::<u8>()
        .new_write(a);
    let mut rx = builder.new_read(b, arena.clone()).unwrap();
    tx.send(Bytes::from_static(b"from tokio_util"))
        .await
        .unwrap();
    let frame = rx.next().await.unwrap().unwrap();
    assert_eq!(frame, "from tokio_util");
    assert_eq!(
        arena.metrics().live_bytes,
        64,
        "the frame is arena memory (one 64-byte block)"
    );
    drop(frame);

    // Framed both ways.
    let (a, b) = tokio::io::duplex(64);
    let mut ours = builder.new_framed(a, arena.clone()).unwrap();
    let mut theirs = LengthDelimitedCodec::builder()
        .length_field_type::<u8>()
        .max_frame_length(200)
        .new_framed(b);
    ours.send(Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(theirs.next().await.unwrap().unwrap(), "ping");
    theirs.send(Bytes::from_static(b"pong")).await.unwrap();
    assert_eq!(ours.next().await.unwrap().unwrap(), "pong");

    // A frame over the maximum: both refuse to write it, with the same kind.
    let e = ours.send(Bytes::from(vec![0; 201])).await.unwrap_err();
    let te = theirs.send(Bytes::from(vec![0; 201])).await.unwrap_err();
    assert!(
        matches!(
            e,
            CodecError::EncodeFrameTooBig {
                length: 201,
                max: 200
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.kind(), te.kind());
    assert_eq!(arena.metrics().live_bytes, 0);
}

#[test]
fn clone_starts_a_codec_at_a_frame_boundary() {
    let arena = buddy(1 << 16);
    let mut codec = ArenaLengthDelimitedCodec::new(arena.clone());
    let mut buf = BytesMut::from(&[0u8, 0, 0, 4, b'a', b'b'][..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    let mut fresh = codec.clone();
    assert_eq!(
        arena.metrics().live_bytes,
        64,
        "only the original holds a frame (a 64-byte block)"
    );
    let mut other = BytesMut::from(&[0u8, 0, 0, 1, b'z'][..]);
    assert_eq!(fresh.decode(&mut other).unwrap().unwrap(), "z");
    buf.extend_from_slice(b"cd");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "abcd");

    // The delimiter codecs clone their search state, as tokio_util's.
    let mut lines = ArenaLinesCodec::new(arena.clone());
    let mut any = ArenaAnyDelimiterCodec::new(arena.clone(), b";".to_vec(), b";".to_vec());
    let mut theirs = AnyDelimiterCodec::new(b";".to_vec(), b";".to_vec());
    let mut buf = BytesMut::from("ab");
    assert!(lines.decode(&mut buf.clone()).unwrap().is_none());
    assert!(any.decode(&mut buf).unwrap().is_none());
    assert!(theirs.decode(&mut buf.clone()).unwrap().is_none());
    let mut any2 = any.clone();
    let mut theirs2 = theirs.clone();
    buf.extend_from_slice(b"c;");
    assert_eq!(any2.decode(&mut buf.clone()).unwrap().unwrap(), "abc");
    assert_eq!(theirs2.decode(&mut buf.clone()).unwrap().unwrap(), "abc");
    assert_eq!(lines.clone().max_length(), lines.max_length());
    let raw = ArenaBytesCodec::new(arena.clone());
    assert_eq!(raw.clone().on_full(), OnFull::Spill);
}

/// A source with a `Default`: a fresh 64 KiB arena.
#[derive(Clone)]
struct DefaultArena(BuddyArena);

impl Default for DefaultArena {
    fn default() -> Self {
        DefaultArena(buddy(1 << 16))
    }
}

impl BufferSource for DefaultArena {
    type Wait = <BuddyArena as BufferSource>::Wait;
    type Metrics = <BuddyArena as BufferSource>::Metrics;
    fn metrics(&self) -> Self::Metrics {
        self.0.metrics()
    }
    fn max_len(&self) -> usize {
        self.0.max_len()
    }
    fn try_allocate(&self, len: NonZeroUsize) -> Result<Buffer, AllocError> {
        self.0.try_allocate(len)
    }
    fn allocate_wait(&self, len: NonZeroUsize) -> Self::Wait {
        self.0.allocate_wait(len)
    }
}

#[test]
fn default_where_the_source_has_one() {
    let mut ours = ArenaAnyDelimiterCodec::<DefaultArena>::default();
    let mut theirs = AnyDelimiterCodec::default();
    assert_eq!(ours.seek_delimiters(), b",;\n\r");
    assert_eq!(ours.sequence_writer(), b",");
    let wire = b"a,b;c\nd\re";
    let (a, end_a) = decode_all(&mut ours, wire);
    let (b, end_b) = decode_all(&mut theirs, wire);
    end_a.unwrap();
    end_b.unwrap();
    assert_eq!(a, b);
    let (mut x, mut y) = (BytesMut::new(), BytesMut::new());
    ours.encode("q", &mut x).unwrap();
    theirs.encode("q", &mut y).unwrap();
    assert_eq!(x, y);

    let mut lines = ArenaLinesCodec::<DefaultArena>::default();
    assert_eq!(lines.max_length(), 1 << 16);
    assert_eq!(
        lines.decode(&mut BytesMut::from("x\n")).unwrap().unwrap(),
        "x"
    );
    let mut raw = ArenaBytesCodec::<DefaultArena>::default();
    assert_eq!(raw.decode(&mut BytesMut::from("x")).unwrap().unwrap(), "x");
}

#[tokio::test]
async fn codec_errors_are_io_errors_with_tokio_utils_kinds_and_messages() {
    // `?` in an io::Result function.
    async fn read_all(wire: &'static [u8], arena: BuddyArena) -> io::Result<Vec<Bytes>> {
        let mut rx = FramedRead::new(wire, ArenaLengthDelimitedCodec::new(arena));
        let mut out = Vec::new();
        while let Some(f) = rx.next().await {
            out.push(f?);
        }
        Ok(out)
    }
    async fn read_all_stock(wire: &'static [u8]) -> io::Result<Vec<Bytes>> {
        let mut rx = FramedRead::new(wire, LengthDelimitedCodec::new());
        let mut out = Vec::new();
        while let Some(f) = rx.next().await {
            out.push(f?.freeze());
        }
        Ok(out)
    }
    let arena = buddy(1 << 16);
    for wire in [
        &[0u8, 0, 0, 2, b'o', b'k'][..],
        &[0, 0, 0, 2, b'o'][..],      // EOF inside a frame
        &[0xff, 0, 0, 2, b'o', b'k'], // over the maximum
    ] {
        let ours = read_all(wire, arena.clone()).await;
        let theirs = read_all_stock(wire).await;
        match (ours, theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => {
                assert_eq!(a.kind(), b.kind());
                if b.to_string() == "bytes remaining on stream" {
                    assert_eq!(a.to_string(), b.to_string());
                } else {
                    assert!(a.to_string().starts_with(&b.to_string()), "{a} / {b}");
                }
            }
            (a, b) => panic!("{a:?} vs {b:?}"),
        }
    }
    // And the other way: an I/O error is `CodecError::Io`, unwrapped again.
    let e = CodecError::from(io::Error::new(io::ErrorKind::ConnectionReset, "gone"));
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(io::Error::from(e).to_string(), "gone");

    // A full arena: OutOfMemory, with the AllocError inside.
    let e = io::Error::from(CodecError::Alloc(AllocError::ArenaFull));
    assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
    assert!(e.get_ref().unwrap().is::<AllocError>());

    // A FramedWrite over the lines codec sends &str.
    let (a, b) = tokio::io::duplex(64);
    let mut tx = FramedWrite::new(a, ArenaLinesCodec::new(arena.clone()));
    tx.send("one").await.unwrap();
    tx.send(String::from("two")).await.unwrap();
    drop(tx);
    let got: Vec<String> = FramedRead::new(b, tokio_util::codec::LinesCodec::new())
        .map(|l| l.unwrap())
        .collect()
        .await;
    assert_eq!(got, ["one", "two"]);
}

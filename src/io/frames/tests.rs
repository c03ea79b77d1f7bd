//! In-memory tests of the frame cutter (miri-friendly: no sockets, no
//! timers): pieces of every size, the copy and slice paths, direct reads,
//! the peek past a full buffer, and frames before an error.

use std::collections::VecDeque;
use std::io;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};

use crate::codec::LengthDelimited;
use crate::io::{Frames, Framing};
use crate::{BuddyArena, FixedArena};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// Hands out `pieces` one per read, then `end` (EOF when `None`).
struct Pieces {
    pieces: VecDeque<Vec<u8>>,
    end: Option<io::ErrorKind>,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.pieces.front_mut() {
            Some(piece) => {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                piece.drain(..n);
                if piece.is_empty() {
                    self.pieces.pop_front();
                }
                Poll::Ready(Ok(()))
            }
            None => match self.end {
                Some(kind) => Poll::Ready(Err(kind.into())),
                None => Poll::Ready(Ok(())),
            },
        }
    }
}

fn wire(lens: &[usize]) -> Vec<u8> {
    let mut w = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        w.extend_from_slice(&(len as u32).to_be_bytes());
        w.extend(std::iter::repeat_n(i as u8, len));
    }
    w
}

fn split(w: &[u8], piece: usize) -> VecDeque<Vec<u8>> {
    w.chunks(piece).map(<[u8]>::to_vec).collect()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn every_path_over_pieces_of_every_size() {
    // 256-byte chunks: small frames are copied, 128+ are sliced, frames
    // longer than a chunk are read straight into their own block.
    let lens = [0, 1, 10, 100, 127, 128, 200, 300, 1000, 5, 252];
    let w = wire(&lens);
    for piece in [1, 3, 7, 64, 256, 5000] {
        for zero_copy in [false, true] {
            let arena = BuddyArena::builder(nz(1 << 16), nz(16)).build().unwrap();
            let reader = Pieces {
                pieces: split(&w, piece),
                end: None,
            };
            let mut b = Frames::builder(arena.clone()).chunk_size(nz(256));
            if zero_copy {
                b = b.zero_copy();
            }
            let frames = b.length_delimited(reader).unwrap();
            let got: Vec<io::Result<Bytes>> = block_on(frames.collect());
            assert_eq!(got.len(), lens.len(), "piece {piece}");
            for (i, (f, &len)) in got.into_iter().zip(&lens).enumerate() {
                let f = f.unwrap();
                assert_eq!(f.len(), len);
                assert!(f.iter().all(|&b| b == i as u8));
            }
            assert_eq!(arena.metrics().live_bytes, 0);
        }
    }
}

#[test]
fn whole_frames_come_out_before_an_error() {
    let arena = FixedArena::builder(nz(2), nz(64)).build().unwrap();
    let reader = Pieces {
        pieces: split(&wire(&[2, 3, 40]), 1000)
            .into_iter()
            .map(|mut p| {
                p.truncate(4 + 2 + 4 + 3 + 10);
                p
            })
            .collect(),
        end: Some(io::ErrorKind::ConnectionReset),
    };
    let layout = LengthDelimited::builder()
        .max_frame_length(64)
        .layout()
        .unwrap();
    let got: Vec<_> = block_on(
        Frames::builder(arena.clone())
            .new_read(reader, layout)
            .unwrap()
            .collect(),
    );
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].as_ref().unwrap(), &[0u8, 0][..]);
    assert_eq!(got[1].as_ref().unwrap(), &[1u8, 1, 1][..]);
    assert_eq!(
        got[2].as_ref().unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    drop(got);
    assert_eq!(arena.metrics().live_slots, 0);
}

#[test]
fn a_line_of_exactly_the_slot_size() {
    let arena = FixedArena::builder(nz(4), nz(16)).build().unwrap();
    let mut w = vec![b'a'; 16];
    w.extend_from_slice(b"\nbb\n");
    w.extend_from_slice(&[b'c'; 16]);
    let reader = Pieces {
        pieces: split(&w, 5),
        end: None,
    };
    let got: Vec<_> = block_on(Frames::lines(reader, arena.clone()).unwrap().collect());
    let got: Vec<Bytes> = got.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, vec![vec![b'a'; 16], b"bb".to_vec(), vec![b'c'; 16]]);
    drop(got);
    assert_eq!(arena.metrics().live_slots, 0);
    let _ = Framing::lines(16);
}

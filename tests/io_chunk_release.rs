//! A frames reader must not keep a chunk alive once every frame cut from it
//! is gone: with a one-slot arena, a reader waiting for its next buffer
//! while still holding the chunk it emptied waits forever (found with
//! `ingest-demo --connections 1 --arena-mib 1 --max-frame 1048572`).

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::{Context, Poll};

use arenabuf::FixedArena;
use arenabuf::io::Frames;
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};

/// Returns one piece per read, with a pause (`Pending`, woken at once)
/// before each, as a socket does when the peer writes frame by frame.
struct Paced {
    pieces: VecDeque<Vec<u8>>,
    paused: bool,
}

impl AsyncRead for Paced {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.paused {
            self.paused = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.paused = false;
        if let Some(piece) = self.pieces.pop_front() {
            assert!(piece.len() <= buf.remaining(), "test pieces fit one read");
            buf.put_slice(&piece);
        }
        Poll::Ready(Ok(()))
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "current_thread")]
async fn an_emptied_chunk_goes_back_while_the_reader_waits() {
    let nz = |n| NonZeroUsize::new(n).unwrap();
    let arena = FixedArena::builder(nz(1), nz(1024)).build().unwrap();
    let reader = Paced {
        pieces: VecDeque::from([frame(b"one"), frame(b"two"), frame(b"three")]),
        paused: false,
    };
    let mut frames = Frames::length_delimited(reader, arena.clone()).unwrap();
    for expected in ["one", "two", "three"] {
        let f = frames.next().await.expect("a frame").expect("no error");
        assert_eq!(f, expected);
        drop(f);
        // Every frame of the chunk is gone: the slot must be free, even
        // though the reader has not been polled again.
        assert_eq!(
            arena.metrics().live_slots,
            0,
            "the reader still holds the chunk it emptied"
        );
    }
    assert!(frames.next().await.is_none());
}

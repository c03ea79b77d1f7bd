//! A TCP ingest service whose frames live in a capped arena.
//!
//! Clients send length-delimited frames (tokio_util's default wire format: a
//! 4-byte big-endian length, then the payload). [`serve`] accepts
//! connections and reads each one's frames into arena memory in one of two
//! ways ([`Mode`]):
//!
//! - [`Mode::Reader`]: arenabuf's `ArenaReader` reads the socket straight
//!   into arena chunks and cuts frames as zero-copy slices. When the arena is
//!   full it stops reading the socket until memory comes back: the peer's
//!   TCP window closes and memory stays under the cap whatever the load.
//! - [`Mode::Codec`]: tokio_util's `FramedRead` with arenabuf's drop-in
//!   `ArenaLengthDelimitedCodec`, each frame copied once into an arena block
//!   of its size. A decoder cannot wait, so the arena is sized for every
//!   frame that can be in flight ([`codec_budget`], arenabuf's
//!   `FrameBudget`) and the codec fails the connection rather than spill
//!   (`OnFull::Error`), which the sizing rule makes never happen.
//!
//! Every frame goes to one bounded queue, drained by the consumer (the
//! caller; in the binary a deliberately slow one). A full queue stops the
//! readers, which is the other half of the backpressure.
//!
//! Frames made by [`make_frame`] carry their connection, sequence number
//! and a derived pattern, so [`check_frame`] detects any corruption.

#![warn(missing_docs)]

use std::io;
use std::num::NonZeroUsize;

use arenabuf::BufferSource;
use arenabuf::codec::{ArenaLengthDelimitedCodec, FrameBudget, LengthDelimited, OnFull};
use arenabuf::io::Frames;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

/// How connections are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ArenaReader`: zero-copy frames, waits for arena memory.
    Reader {
        /// Bytes read per chunk.
        chunk_size: NonZeroUsize,
    },
    /// `FramedRead` + `ArenaLengthDelimitedCodec`: one copy per frame; the
    /// arena must be sized by [`codec_budget`] (a full arena fails the
    /// connection).
    Codec,
}

/// The largest frame payload accepted.
pub const MAX_FRAME: usize = 64 * 1024;

/// The arena the codec mode needs so that it never finds the arena full:
/// one frame being decoded per connection, and the frames the application
/// holds (the queue's, one per connection waiting to queue its frame, and
/// the consumer's), at the largest size.
pub fn codec_budget(connections: usize, queue: usize, max_frame: usize) -> FrameBudget {
    FrameBudget::new(connections, queue + connections + 1, max_frame)
}

/// Accepts connections on `listener` and reads each one's frames into
/// memory from `source`, sending them to `queue`, until the task is dropped
/// or the queue is closed.
///
/// # Errors
///
/// The listener's accept errors.
pub async fn serve<S: BufferSource>(
    listener: TcpListener,
    source: S,
    mode: Mode,
    queue: mpsc::Sender<Bytes>,
) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let (source, queue) = (source.clone(), queue.clone());
        tokio::spawn(async move {
            // A broken connection ends that connection only; the consumer
            // sees its frames stop.
            let _ = read_connection(stream, source, mode, queue).await;
        });
    }
}

/// Reads one connection's frames into `source`'s memory and queues them;
/// returns the number of frames read.
///
/// # Errors
///
/// The socket's errors, and `InvalidData` for a frame over [`MAX_FRAME`]
/// (or, in codec mode, `OutOfMemory` when the arena is full). In reader
/// mode, frames are at most [`MAX_FRAME`] or the source's `max_len`,
/// whichever is smaller (a frame must fit one buffer of the source).
pub async fn read_connection<S: BufferSource>(
    stream: TcpStream,
    source: S,
    mode: Mode,
    queue: mpsc::Sender<Bytes>,
) -> io::Result<u64> {
    let mut count = 0;
    match mode {
        Mode::Reader { chunk_size } => {
            let max = MAX_FRAME.min(source.max_len());
            let mut frames = Frames::builder(source)
                .chunk_size(chunk_size)
                .length_delimited_with(stream, LengthDelimited::builder().max_frame_length(max))
                .map_err(io::Error::other)?;
            while let Some(frame) = frames.next().await {
                if queue.send(frame?).await.is_err() {
                    break;
                }
                count += 1;
            }
        }
        Mode::Codec => {
            let mut frames: FramedRead<_, ArenaLengthDelimitedCodec<S>> =
                LengthDelimited::builder()
                    .max_frame_length(MAX_FRAME)
                    .on_full(OnFull::Error)
                    .new_read(stream, source)
                    .map_err(io::Error::other)?;
            while let Some(frame) = frames.next().await {
                if queue.send(frame?).await.is_err() {
                    break;
                }
                count += 1;
            }
        }
    }
    Ok(count)
}

/// What is wrong with a received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its 12-byte header.
    Short(usize),
    /// A payload byte differs from the pattern.
    Corrupt {
        /// The connection the header names.
        conn: u32,
        /// The sequence number the header names.
        seq: u64,
        /// The offset of the first wrong byte.
        at: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short(len) => write!(f, "frame of {len} bytes is shorter than its header"),
            Self::Corrupt { conn, seq, at } => {
                write!(
                    f,
                    "frame {seq} of connection {conn} is corrupt at byte {at}"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

fn pattern(conn: u32, seq: u64, i: usize) -> u8 {
    (u64::from(conn) * 31 + seq * 7 + i as u64 * 13 % 251) as u8
}

/// A frame payload of `len` bytes (at least 12): `conn`, `seq`, then a
/// pattern derived from both.
pub fn make_frame(conn: u32, seq: u64, len: usize) -> Bytes {
    let len = len.max(12);
    let mut out = BytesMut::with_capacity(len);
    out.put_u32(conn);
    out.put_u64(seq);
    out.extend((12..len).map(|i| pattern(conn, seq, i)));
    out.freeze()
}

/// The length of frame `seq` of connection `conn`: 12 B .. 8 KiB, varied.
pub fn frame_len(conn: u32, seq: u64) -> usize {
    12 + ((seq * 977 + u64::from(conn) * 131) % 8180) as usize
}

/// Checks a frame made by [`make_frame`]; returns its connection and
/// sequence number.
///
/// # Errors
///
/// [`FrameError`] when it is short or any byte is wrong.
pub fn check_frame(frame: &[u8]) -> Result<(u32, u64), FrameError> {
    if frame.len() < 12 {
        return Err(FrameError::Short(frame.len()));
    }
    let mut head = &frame[..12];
    let (conn, seq) = (head.get_u32(), head.get_u64());
    match (12..frame.len()).find(|&i| frame[i] != pattern(conn, seq, i)) {
        Some(at) => Err(FrameError::Corrupt { conn, seq, at }),
        None => Ok((conn, seq)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_check_and_corruption_is_found() {
        for (conn, seq) in [(0, 0), (7, 3), (99, 59)] {
            let frame = make_frame(conn, seq, frame_len(conn, seq));
            assert_eq!(check_frame(&frame), Ok((conn, seq)));
            let mut bad = frame.to_vec();
            let at = bad.len() - 1;
            bad[at] ^= 1;
            if at >= 12 {
                assert_eq!(
                    check_frame(&bad),
                    Err(FrameError::Corrupt { conn, seq, at })
                );
            }
        }
        assert_eq!(check_frame(&[0; 5]), Err(FrameError::Short(5)));
        // A frame whose header names another connection fails too.
        let mut swapped = make_frame(1, 2, 100).to_vec();
        swapped[3] = 2;
        assert!(check_frame(&swapped).is_err());
    }
}

//! Helpers shared by the fuzz targets: reading options from the input,
//! cutting a stream into reads, and small arenas that are checked whole at
//! the end.
#![allow(dead_code)]

use std::num::NonZeroUsize;

use arenabuf::{BuddyArena, FixedArena};

pub fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

/// Reads options off the front of the fuzz input; missing bytes read as 0.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.u8() as usize % choices.len()]
    }

    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Cuts a stream into reads of pseudo-random sizes (up to `max`), the way a
/// socket might deliver it.
pub fn splits(stream: &[u8], seed: u16, max: usize) -> Vec<&[u8]> {
    let mut x = u32::from(seed) | 0x1_0000;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % max.max(1)) + 1;
        let (head, tail) = rest.split_at(n.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// A small arena of either kind, chosen by one input byte.
#[derive(Clone)]
pub enum Arena {
    Fixed(FixedArena),
    Buddy(BuddyArena),
}

impl Arena {
    pub fn from_byte(b: u8) -> Self {
        let zero = b & 0x10 != 0;
        match b % 4 {
            0 => Arena::fixed(1, 64, zero),
            1 => Arena::fixed(4, 256, zero),
            2 => Arena::buddy(256, 16, zero),
            _ => Arena::buddy(4096, 64, zero),
        }
    }

    pub fn fixed(slots: usize, cap: usize, zero: bool) -> Self {
        let b = FixedArena::builder(nz(slots), nz(cap));
        let b = if zero { b.zero_on_release() } else { b };
        Arena::Fixed(b.build().expect("valid geometry"))
    }

    pub fn buddy(total: usize, min: usize, zero: bool) -> Self {
        let b = BuddyArena::builder(nz(total), nz(min));
        let b = if zero { b.zero_on_release() } else { b };
        Arena::Buddy(b.build().expect("valid geometry"))
    }

    /// Asserts that nothing is allocated and (buddy) everything merged.
    pub fn assert_whole(&self) {
        match self {
            Arena::Fixed(a) => {
                let m = a.metrics();
                assert_eq!(
                    (m.live_slots, m.live_bytes, m.waiting_tasks),
                    (0, 0, 0),
                    "{m:?}"
                );
            }
            Arena::Buddy(a) => {
                let m = a.metrics();
                assert_eq!((m.live_bytes, m.waiting_tasks), (0, 0), "{m:?}");
                assert_eq!(m.largest_free_block, a.total_size(), "{m:?}");
            }
        }
    }
}

/// What a decoder does with a full arena, from the same input byte that
/// picks the arena (its bit 0x20).
pub fn on_full(arena_byte: u8) -> arenabuf::codec::OnFull {
    if arena_byte & 0x20 != 0 {
        arenabuf::codec::OnFull::Spill
    } else {
        arenabuf::codec::OnFull::Error
    }
}

/// A source in front of an arena that fails the allocations whose index
/// (0 to 63) has its bit set in `fail_mask` with `ArenaFull`, and reports
/// `max_len` as `report_max` (so that a codec can be built with any maximum;
/// the arena itself still refuses what it can never hold).
#[derive(Clone)]
pub struct FlakySource<S> {
    pub inner: S,
    fail_mask: u64,
    report_max: usize,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: arenabuf::BufferSource> FlakySource<S> {
    pub fn new(inner: S, fail_mask: u64, report_max: usize) -> Self {
        Self {
            inner,
            fail_mask,
            report_max,
            calls: Default::default(),
        }
    }
}

impl<S: arenabuf::BufferSource> arenabuf::BufferSource for FlakySource<S> {
    type Wait = S::Wait;
    type Metrics = S::Metrics;

    fn metrics(&self) -> S::Metrics {
        self.inner.metrics()
    }

    fn max_len(&self) -> usize {
        self.report_max
    }

    fn try_allocate(&self, len: NonZeroUsize) -> Result<arenabuf::Buffer, arenabuf::AllocError> {
        let i = self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i < 64 && self.fail_mask & (1 << i) != 0 {
            return Err(arenabuf::AllocError::ArenaFull);
        }
        self.inner.try_allocate(len)
    }

    fn allocate_wait(&self, len: NonZeroUsize) -> Self::Wait {
        self.inner.allocate_wait(len)
    }

    fn note_spill(&self) {
        self.inner.note_spill();
    }
}

/// One read of a stream: bytes, or a 0-byte read (EOF), after which the
/// stream may go on.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    Data(&'a [u8]),
    Eof,
}

/// The reads: the chunks, an EOF after chunk `i` where bit `i % 64` of
/// `eof_mask` is set, and one at the end.
pub fn steps<'a>(chunks: &[&'a [u8]], eof_mask: u64) -> Vec<Step<'a>> {
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        out.push(Step::Data(c));
        if eof_mask & (1 << (i % 64)) != 0 {
            out.push(Step::Eof);
        }
    }
    out.push(Step::Eof);
    out
}

/// What a decoder gave, as `FramedRead` would hand it out.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Frame(Vec<u8>),
    /// An error, by class (see the targets).
    Error(&'static str),
    /// `FramedRead`'s `None`.
    End,
}

/// Drives `decoder` over `steps` exactly as `FramedRead` does when polled
/// on after every error and `None`: decode after each read until it yields
/// nothing; after an error, `None` and the next read; at an EOF,
/// `decode_eof` until `None`, and a second EOF in a row ends at once.
/// A decode that fails with a full arena (`is_full`) is retried after the
/// frames held so far (the last `keep`) are dropped, as a caller that frees
/// memory and asks again. At most `limit` events.
pub fn framed_read<D>(
    decoder: &mut D,
    steps: &[Step<'_>],
    keep: usize,
    limit: usize,
    is_full: impl Fn(&D::Error) -> bool,
    class: impl Fn(&D::Error) -> &'static str,
) -> Vec<Event>
where
    D: tokio_util::codec::Decoder,
    D::Item: Into<bytes::Bytes>,
{
    let mut buf = bytes::BytesMut::new();
    let mut held = std::collections::VecDeque::new();
    let mut events = Vec::new();
    let mut eof = false;
    let mut retries = 0;
    let mut call = |d: &mut D, buf: &mut bytes::BytesMut, at_eof: bool, held: &mut std::collections::VecDeque<bytes::Bytes>| loop {
        let r = if at_eof { d.decode_eof(buf) } else { d.decode(buf) };
        match r {
            Err(e) if is_full(&e) => {
                held.clear();
                retries += 1;
                assert!(retries <= 64 + limit, "a retry with the arena empty fails again");
            }
            r => return r,
        }
    };
    for step in steps {
        let at_eof = match step {
            Step::Data(d) => {
                eof = false;
                buf.extend_from_slice(d);
                false
            }
            Step::Eof if eof => {
                events.push(Event::End);
                continue;
            }
            Step::Eof => {
                eof = true;
                true
            }
        };
        loop {
            if events.len() >= limit {
                return events;
            }
            match call(decoder, &mut buf, at_eof, &mut held) {
                Ok(Some(frame)) => {
                    let frame: bytes::Bytes = frame.into();
                    events.push(Event::Frame(frame.to_vec()));
                    held.push_back(frame);
                    if held.len() > keep {
                        held.pop_front();
                    }
                }
                Ok(None) => {
                    if at_eof {
                        events.push(Event::End);
                    }
                    break;
                }
                Err(e) => {
                    events.push(Event::Error(class(&e)));
                    events.push(Event::End);
                    break;
                }
            }
        }
    }
    events
}

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

/// Whether a decoder error came from the arena (full, or a frame that can
/// never fit) rather than from the input.
pub fn is_alloc_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<arenabuf::AllocError>())
}

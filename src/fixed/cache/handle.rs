//! A cache *handle*: one `AtomicU64` holding a run of slots (run number
//! and 31-bit mask, packed), nothing, or a marker.
//!
//! # Invariants
//!
//! - A handle holds [`EMPTY`], a packed run with a non-empty mask, or one of
//!   the markers [`WAIT_MARK`] and [`CLOSED_MARK`]; [`CLOSED_MARK`] is never
//!   replaced.
//! - Run and mask travel in one word, and every change is one
//!   compare-exchange (`SeqCst`): whoever takes a slot or empties the handle
//!   owns exactly what it took.

use crate::sync::{AtomicU64, Ordering};

use super::super::bitmap::{SLOTS_PER_WORD, Slot};

/// Slots per run (half a word).
pub(crate) const RUN_SLOTS: u32 = 31;
/// The slot bits of a run.
pub(super) const RUN_MASK: u64 = (1 << RUN_SLOTS) - 1;
/// A handle that holds nothing.
pub(super) const EMPTY: u64 = 0;
/// A handle of an arena with waiting tasks: nothing may be cached.
pub(super) const WAIT_MARK: u64 = u64::MAX - 1;
/// A handle of a closed arena: nothing may be cached ever again.
pub(super) const CLOSED_MARK: u64 = u64::MAX;
/// Set (next to a run or nothing) by a failing allocation's search in each
/// handle it has passed; whoever changes that handle next first counts an
/// event in its shard's `moves`, so that the search sees the change and
/// repeats (`CachedBitmap::allocate_slow`). Bit 31: above any mask, below
/// the run number; markers have it set but are told apart first.
pub(super) const SCANNED: u64 = 1 << RUN_SLOTS;
/// Most runs a bitmap may have (run numbers are stored plus one in 32 bits,
/// below the markers).
pub(crate) const MAX_RUNS: usize = (u32::MAX - 2) as usize;
/// Most slots a fixed arena may have.
pub(crate) const MAX_SLOTS: usize = MAX_RUNS / 2 * SLOTS_PER_WORD;

pub(super) fn pack(run: usize, mask: u64) -> u64 {
    debug_assert!(mask != 0 && mask & !RUN_MASK == 0 && run < MAX_RUNS);
    ((run as u64 + 1) << 32) | mask
}

/// The run and mask of a handle value, or `None` for [`EMPTY`] and markers
/// ([`SCANNED`] or not).
pub(super) fn unpack(h: u64) -> Option<(usize, u64)> {
    if h >= WAIT_MARK || h & !SCANNED == EMPTY {
        None
    } else {
        Some(((h >> 32) as usize - 1, h & RUN_MASK))
    }
}

/// The word of run `run`, and `mask` moved to that run's half of it.
pub(super) fn run_bits(run: usize, mask: u64) -> (usize, u64) {
    (run / 2, mask << ((run % 2) as u32 * RUN_SLOTS))
}

/// The run of `slot`, and its bit within the run.
pub(super) fn run_of(slot: Slot) -> (usize, u64) {
    (
        slot.word * 2 + (slot.bit / RUN_SLOTS) as usize,
        1 << (slot.bit % RUN_SLOTS),
    )
}

/// Slot `bit` of run `run`.
pub(super) fn slot_of(run: usize, bit: u32) -> Slot {
    Slot {
        word: run / 2,
        bit: (run % 2) as u32 * RUN_SLOTS + bit,
    }
}

/// What a take from a handle found.
pub(super) enum Take {
    Got(Slot),
    Empty,
    Marker,
}

/// Takes the lowest slot of a handle's run; `touch` counts the change
/// first if a search passed the handle ([`SCANNED`]).
#[inline]
pub(super) fn take(h: &AtomicU64, touch: impl Fn()) -> Take {
    let mut cur = h.load(Ordering::Relaxed);
    loop {
        let Some((run, mask)) = unpack(cur) else {
            return if cur >= WAIT_MARK {
                Take::Marker
            } else {
                Take::Empty
            };
        };
        if cur & SCANNED != 0 {
            touch();
        }
        let bit = mask.trailing_zeros();
        let rest = mask & !(1 << bit);
        let next = if rest == 0 { EMPTY } else { pack(run, rest) };
        match h.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Take::Got(slot_of(run, bit)),
            Err(now) => cur = now,
        }
    }
}

/// Empties a handle that holds a run (for a search: it is left
/// [`SCANNED`]), returning the run; `None` if it held nothing or a marker.
pub(super) fn empty_handle(h: &AtomicU64) -> Option<(usize, u64)> {
    let mut cur = h.load(Ordering::SeqCst);
    loop {
        let run = unpack(cur)?;
        match h.compare_exchange_weak(cur, SCANNED, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Some(run),
            Err(now) => cur = now,
        }
    }
}

/// Puts `marker` into a handle (a closed handle stays closed), returning
/// the run it held.
pub(super) fn mark(h: &AtomicU64, marker: u64) -> Option<(usize, u64)> {
    let mut cur = h.load(Ordering::SeqCst);
    loop {
        if cur == CLOSED_MARK {
            return None;
        }
        match h.compare_exchange_weak(cur, marker, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return unpack(cur),
            Err(now) => cur = now,
        }
    }
}

//! The bitmap of a [`FixedArena`](super::FixedArena): which slots are free,
//! and the two flags that change what a release does.
//!
//! The region is `slot_count` slots of `slot_capacity` bytes. Slot state
//! lives in a bitmap of `AtomicU64` words, one word per cache line; each word
//! covers [`SLOTS_PER_WORD`] = 62 slots, and its top two bits are flags: the
//! [`CLOSED`] flag used to tear the arena down (`teardown.rs`), and the
//! [`WAITERS`] flag that sends returned slots to the wait queue (feature
//! `async-alloc`). A set slot bit means "not free in the bitmap": leased,
//! held by a cache (`cache/`), granted to a waiter, or padding.
//!
//! The bitmap only knows words: the per-shard caches in front of it
//! (`cache/`) claim and return up to 31 slots (a *run*, half a word) with
//! one atomic operation, and single slots come and go here only past the
//! caches (a search before `ArenaFull`, a release while tasks wait or after
//! the arena closed).
//!
//! # Invariants
//!
//! - Bit `b` of word `w` (`b < 62`) is clear iff slot `w * 62 + b` is free
//!   in the bitmap; the last word's padding bits (slots that do not exist,
//!   `last_pad`) are set at build and never cleared.
//! - Bits are set by `fetch_or` (a claim owns the bits that were clear) and
//!   cleared by the one owner of those slots, all `SeqCst`: a holder's
//!   writes to a slot happen before the next holder's.
//! - While [`WAITERS`] is set, no slot bit is cleared except under the
//!   queue lock: [`Bitmap::give_back`] hands the slots to the caller
//!   instead ([`Batch`]), to grant to waiters in arrival order.
//! - After [`CLOSED`] is set, whoever empties a word owns its teardown
//!   count ([`Bitmap::give_back`] and [`Bitmap::clear`] report it).

use alloc::boxed::Box;

use crate::sync::{AtomicU64, Ordering};

/// Slots covered by one bitmap word.
pub(crate) const SLOTS_PER_WORD: usize = 62;
/// The bit of every word that marks the arena as closed (no handles left).
pub(crate) const CLOSED: u64 = 1 << 63;
/// The bit of every word that says tasks are waiting for a slot.
pub(crate) const WAITERS: u64 = 1 << 62;
/// The bits of a word that are not slots.
pub(crate) const FLAGS: u64 = CLOSED | WAITERS;

/// A slot: bit `bit` (< 62) of word `word`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Slot {
    pub(crate) word: usize,
    pub(crate) bit: u32,
}

impl Slot {
    /// The slot's number in the arena (its place in the region and in the
    /// per-slot tables).
    #[inline]
    pub(crate) fn index(self) -> usize {
        self.word * SLOTS_PER_WORD + self.bit as usize
    }
}

/// Slots of one word whose bits are still set and that must go to waiting
/// tasks: the caller grants them to head waiters under the queue lock and
/// clears the rest with [`Bitmap::clear`] (also under the lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) word: usize,
    pub(crate) mask: u64,
}

/// One bitmap word on its own cache line.
#[repr(align(64))]
pub(crate) struct Word(pub(crate) AtomicU64);

/// The words of a fixed arena's bitmap.
pub(crate) struct Bitmap {
    words: Box<[Word]>,
    last_pad: u64,
}

impl Bitmap {
    /// The words for `slots` slots (> 0), every slot free, from a table the
    /// caller allocated (fallibly) with [`Bitmap::word`] as its `f`.
    pub(crate) fn from_words(words: Box<[Word]>, slots: usize) -> Self {
        debug_assert_eq!(words.len(), slots.div_ceil(SLOTS_PER_WORD));
        Self {
            words,
            last_pad: Self::last_pad(slots),
        }
    }

    /// The padding bits of the last word of a bitmap of `slots` slots.
    fn last_pad(slots: usize) -> u64 {
        let n = slots.div_ceil(SLOTS_PER_WORD);
        let used_in_last = slots - (n - 1) * SLOTS_PER_WORD;
        !FLAGS & !((1u64 << used_in_last) - 1)
    }

    /// Word `w` of a bitmap of `slots` slots, as built: the last one with
    /// its padding set.
    pub(crate) fn word(slots: usize, w: usize) -> Word {
        let last = w + 1 == slots.div_ceil(SLOTS_PER_WORD);
        Word(AtomicU64::new(if last { Self::last_pad(slots) } else { 0 }))
    }

    /// The number of words.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }

    /// Word `w`.
    #[inline]
    pub(crate) fn at(&self, w: usize) -> &AtomicU64 {
        &self.words[w].0
    }

    /// The bits of word `w` that stand for slots that do not exist.
    #[inline]
    pub(crate) fn pad(&self, w: usize) -> u64 {
        if w + 1 == self.words.len() {
            self.last_pad
        } else {
            0
        }
    }

    /// Claims the lowest free slot of any word, searching every word once
    /// from `start`.
    pub(crate) fn claim_one(&self, start: usize) -> Option<Slot> {
        let n = self.words.len();
        let mut w = start % n;
        for _ in 0..n {
            let word = self.at(w);
            let mut cur = word.load(Ordering::SeqCst);
            loop {
                let free = !cur & !FLAGS;
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                let prev = word.fetch_or(1 << bit, Ordering::SeqCst);
                if prev & (1 << bit) == 0 {
                    return Some(Slot { word: w, bit });
                }
                cur = prev | (1 << bit);
            }
            w += 1;
            if w == n {
                w = 0;
            }
        }
        None
    }

    /// Clears `bits` of word `w` with one CAS, unless tasks wait: then they
    /// go to `hand`, still set. Returns whether this emptied a closed word
    /// (the caller then owns that word's teardown count).
    ///
    /// Only for callers that keep the arena alive past the call by other
    /// means (a handle, a move in flight): a release of its own last slot
    /// uses [`return_bits`] on the word, so that no reference to the arena
    /// is protected across the moment another thread may free it.
    pub(crate) fn give_back(&self, w: usize, bits: u64, hand: &mut impl FnMut(Batch)) -> bool {
        match return_bits(self.at(w), bits, self.pad(w)) {
            Returned::Cleared { emptied_closed } => emptied_closed,
            Returned::Waiting => {
                hand(Batch {
                    word: w,
                    mask: bits,
                });
                false
            }
        }
    }

    /// Clears the slots of `batch` unconditionally: under the queue lock,
    /// for the part of a batch no waiter took. Returns whether this emptied
    /// a closed word, as [`give_back`](Self::give_back).
    pub(crate) fn clear(&self, batch: Batch) -> bool {
        let prev = self.at(batch.word).fetch_and(!batch.mask, Ordering::SeqCst);
        emptied_closed(prev, batch.mask, self.pad(batch.word))
    }

    /// Whether tasks wait (then releases hand over, and a claim would only
    /// search a bitmap nothing is cleared in).
    #[cfg(feature = "async-alloc")]
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.at(0).load(Ordering::Relaxed) & WAITERS != 0
    }

    /// Sets or clears [`WAITERS`] in every word (under the queue lock).
    #[cfg(feature = "async-alloc")]
    pub(crate) fn flag_waiters(&self, on: bool) {
        for word in self.words.iter() {
            if on {
                word.0.fetch_or(WAITERS, Ordering::SeqCst);
            } else {
                word.0.fetch_and(!WAITERS, Ordering::SeqCst);
            }
        }
    }

    /// Set slot bits, padding excluded: leased, cached or granted slots.
    pub(crate) fn set_slots(&self) -> usize {
        (0..self.words.len())
            .map(|w| (self.at(w).load(Ordering::Relaxed) & !FLAGS & !self.pad(w)).count_ones())
            .map(|n| n as usize)
            .sum()
    }

    /// Sets [`CLOSED`] in every word (the last handle, once); returns how
    /// many words were empty then, whose teardown counts the caller owns.
    pub(crate) fn close(&self) -> usize {
        (0..self.words.len())
            .filter(|&w| {
                // SeqCst: a release that sees CLOSED also sees `pending`,
                // stored before; we see every release that emptied the
                // word before.
                let prev = self.at(w).fetch_or(CLOSED, Ordering::SeqCst);
                prev & !WAITERS == self.pad(w)
            })
            .count()
    }
}

/// What [`return_bits`] did.
pub(crate) enum Returned {
    /// The bits are clear; `emptied_closed`: that emptied a closed word.
    Cleared { emptied_closed: bool },
    /// Tasks wait: the bits are still set and must go to them.
    Waiting,
}

/// Clears `bits` of `word` (whose padding is `pad`) with one CAS, unless
/// tasks wait.
///
/// Takes the word alone: when the bits were a release's last hold on the
/// arena, another thread may free it as soon as the CAS is done, and no
/// reference to anything but this atomic may be live across that.
#[inline]
pub(crate) fn return_bits(word: &AtomicU64, bits: u64, pad: u64) -> Returned {
    let mut cur = word.load(Ordering::SeqCst);
    loop {
        if cur & WAITERS != 0 {
            return Returned::Waiting;
        }
        debug_assert_eq!(cur & bits, bits, "returning slots that are not set");
        match word.compare_exchange_weak(cur, cur & !bits, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(prev) => {
                return Returned::Cleared {
                    emptied_closed: emptied_closed(prev, bits, pad),
                };
            }
            Err(now) => cur = now,
        }
    }
}

/// Whether clearing `bits` from `prev` (a word whose padding is `pad`)
/// emptied a closed word.
fn emptied_closed(prev: u64, bits: u64, pad: u64) -> bool {
    prev & CLOSED != 0 && prev & !bits & !FLAGS == pad
}

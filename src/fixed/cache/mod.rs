//! The slot caches of a [`FixedArena`](crate::FixedArena), in front of its
//! bitmap (`../bitmap.rs`): what makes a buffer filled on one thread and
//! dropped on another cheap (`docs/thread-cache.md` has the measurements
//! and the design).
//!
//! # Layout
//!
//! A bitmap word is two *runs* of [`RUN_SLOTS`] = 31 slots; run `r` is half
//! `r % 2` of word `r / 2`. In front of the bitmap sit `E` *shards* (a power
//! of two, about four per CPU), each on its own cache line, chosen by
//! thread index. A shard has two *handles* (`handle.rs`), each one
//! `AtomicU64` holding a run number and a mask of slots of that run:
//!
//! - `freed`: slots released by threads of this shard, of one run, not yet
//!   returned. A release adds its bit with one CAS on the shard's own line;
//!   a release of another run swaps its run in and returns the old one to
//!   the bitmap whole, with **one CAS on the word for up to 31 slots**.
//!   Allocation takes from here first: the slot released last is the one
//!   most likely still in cache.
//! - `alloc`: slots claimed from the bitmap in bulk and not yet leased.
//!   When both handles are empty, a *refill* claims the free slots of a
//!   whole run with one `fetch_or`, keeps one and puts the rest here. It
//!   looks first at the word where a run most recently came back
//!   (`recent`), so memory freed on another thread is reused while warm.
//!
//! Markers in place of a run: `WAIT_MARK` while tasks wait (no slot may be
//! cached), `CLOSED_MARK` after the last handle dropped.
//!
//! # Invariants
//!
//! - A slot is in exactly one of: free in the bitmap (bit clear), one
//!   handle's mask (bit set), leased or granted (bit set), or the local
//!   variables of one operation in flight (bit set). Every transfer between
//!   them is one atomic read-modify-write.
//! - While `WAITERS` is set, handles hold `WAIT_MARK` or runs that the
//!   marker setter is about to collect; a run that meets `WAITERS` on its
//!   way back to the bitmap is handed to the caller as a [`Batch`] (bits
//!   still set) to grant to waiters under the queue lock, never cleared.
//! - Correctness never relies on one thread per shard: every handle update
//!   is a compare-exchange, so threads that share a shard only contend. No
//!   per-thread registration or thread-exit hook exists, and thread churn
//!   cannot grow the caches.
//! - At most `2 * E * 31` slots are cached at any time, whatever the number
//!   of threads; an idle thread's shard holds at most 62.
//! - A failing allocation has searched the bitmap and emptied every handle
//!   in one pass that no run *move* overlapped (each shard counts its moves
//!   in flight and ended), and in which no handle it had passed changed
//!   (it leaves them [`SCANNED`](handle::SCANNED), and whoever changes one
//!   counts that first): a cached slot is found before `ArenaFull`.
//! - A move that returned the releaser's own slot to a handle before
//!   returning another run is kept alive by nothing but its move count: the
//!   closer waits for every shard's moves in flight to end before it closes
//!   the words (`close`), and a mover touches nothing after ending its move.
//! - No user code runs inside a move: `hand` grants a run that met
//!   `WAITERS` under the queue lock (no lock holder waits for a move), and
//!   the caller wakes the tasks only after the cache returned. (A waker run
//!   inside a move that panicked left it in flight forever, and one that
//!   allocated on the full arena or dropped the last handle waited for its
//!   own move.)
//!
//! # Ordering
//!
//! Every update of a handle and of a bitmap word is `SeqCst` (on x86 an RMW
//! costs the same whatever its ordering), and so are the loads that decide
//! between the cache and the bitmap: `WAITERS` is set in every word before
//! the markers go in, so an operation that finds a marker then sees the
//! flag. A releaser's writes to its slot happen before the next holder's
//! through the release sequence of RMWs: its CAS into `freed`, the CAS that
//! takes it or empties `freed`, the CAS that clears the word, the claim
//! that sets it.

use alloc::boxed::Box;
use core::ptr::NonNull;

use crate::error::BuildError;
use crate::region::table::try_table;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};

use super::bitmap::{Batch, Bitmap, Returned, Slot, WAITERS, return_bits};

mod handle;

use handle::{
    CLOSED_MARK, EMPTY, RUN_MASK, SCANNED, Take, WAIT_MARK, empty_handle, mark, pack, run_bits,
    run_of, slot_of, take, unpack,
};
pub(crate) use handle::{MAX_SLOTS, RUN_SLOTS};

/// One shard's handles, on their own cache line.
#[repr(align(64))]
struct Shard {
    alloc: AtomicU64,
    freed: AtomicU64,
    /// Runs this shard's threads are moving between the bitmap and a
    /// handle: the count in flight (low 32 bits) and how many moves ended
    /// (high 32 bits, wrapping). A failing allocation trusts a search only
    /// if no move overlapped it (see [`CachedBitmap::allocate_slow`]).
    moves: AtomicU64,
}

/// `Shard::moves`: one more run in flight.
const MOVE_START: u64 = 1;
/// `Shard::moves`: one run fewer in flight, one more move ended.
const MOVE_END: u64 = (1 << 32) - 1;
/// `Shard::moves`: one more change (of a handle a search passed) ended.
const TOUCHED: u64 = 1 << 32;

impl Shard {
    /// Counts a change of a [`SCANNED`] handle, before making it.
    fn touch(&self) {
        self.moves.fetch_add(TOUCHED, Ordering::SeqCst);
    }

    fn start_move(&self) {
        self.moves.fetch_add(MOVE_START, Ordering::SeqCst);
    }

    fn end_move(&self) {
        self.moves.fetch_add(MOVE_END, Ordering::SeqCst);
    }
}

/// A slot bitmap with sharded caches in front (see the module docs).
pub(crate) struct CachedBitmap {
    pub(crate) bitmap: Bitmap,
    shards: Box<[Shard]>,
    /// The word a shard last returned a run to: where a refill looks first,
    /// so that memory freed on another thread is reused while it is warm.
    recent: AtomicUsize,
}

impl CachedBitmap {
    /// A bitmap of `slots` free slots (`0 < slots <= MAX_SLOTS`) with
    /// `shards` shards (a power of two); its tables are allocated fallibly.
    pub(crate) fn try_new(slots: usize, shards: usize) -> Result<Self, BuildError> {
        debug_assert!(slots > 0 && slots <= MAX_SLOTS && shards.is_power_of_two());
        let words = try_table(slots.div_ceil(super::bitmap::SLOTS_PER_WORD), |w| {
            Bitmap::word(slots, w)
        })?;
        let shards = try_table(shards, |_| Shard {
            alloc: AtomicU64::new(EMPTY),
            freed: AtomicU64::new(EMPTY),
            moves: AtomicU64::new(0),
        })?;
        Ok(Self {
            bitmap: Bitmap::from_words(words, slots),
            shards,
            recent: AtomicUsize::new(0),
        })
    }

    /// [`try_new`](Self::try_new) for tests.
    #[cfg(test)]
    pub(crate) fn new(slots: usize, shards: usize) -> Self {
        Self::try_new(slots, shards).unwrap()
    }

    /// The shard of the thread with index `thread` (see `sync::thread_index`).
    #[inline]
    pub(crate) fn shard_of(&self, thread: usize) -> usize {
        // High bits: `thread_index` is a Fibonacci hash.
        let bits = self.shards.len().trailing_zeros();
        if bits == 0 {
            0
        } else {
            thread >> (usize::BITS - bits)
        }
    }

    /// Leases a slot for a thread of shard `shard`. `hand` receives runs
    /// that met waiting tasks on the way back (see [`Batch`]).
    #[inline]
    pub(crate) fn allocate(&self, shard: usize, hand: &mut impl FnMut(Batch)) -> Option<Slot> {
        let s = &self.shards[shard];
        if let Take::Got(slot) = take(&s.freed, || s.touch()) {
            return Some(slot);
        }
        match take(&s.alloc, || s.touch()) {
            Take::Got(slot) => Some(slot),
            Take::Empty => self.refill(s, shard, hand),
            Take::Marker => self.allocate_slow(shard, hand),
        }
    }

    /// Past the caches: one slot from the bitmap, then from any shard's
    /// handles, until a search that no run move overlapped finds nothing.
    ///
    /// A run moving between the bitmap and a handle (a refill, a return, a
    /// steal) is in neither for a moment, and a search could miss it
    /// there. Each move is counted in its shard before it starts and after
    /// it ends; a search that began and ended with nothing in flight and no
    /// move ended in between saw every run where it was.
    ///
    /// Single slots come and go too: a release parks its slot in a handle,
    /// an allocation takes one. A release into a handle the search had
    /// passed, while another thread takes a slot from a handle it had not
    /// reached yet, would let it miss both free slots, though one was free
    /// at every moment. So the search leaves each handle it passed
    /// [`SCANNED`], and whoever changes a scanned handle first counts one
    /// more ended move in its shard: a search that ends with no move ended
    /// found every handle it had passed unchanged, so at its end every slot
    /// is leased (or in a single-slot release still in flight).
    /// Otherwise it searches again: each retry means another thread
    /// completed a move or a change.
    #[cold]
    #[inline(never)]
    fn allocate_slow(&self, shard: usize, hand: &mut impl FnMut(Batch)) -> Option<Slot> {
        let start = shard * self.bitmap.len() / self.shards.len();
        loop {
            let before = self.moves();
            if let Some(slot) = self.bitmap.claim_one(start) {
                return Some(slot);
            }
            for s in self.shards.iter() {
                for h in [&s.freed, &s.alloc] {
                    if let Some(slot) = self.steal(shard, h, hand) {
                        return Some(slot);
                    }
                }
            }
            let after = self.moves();
            if before.0 == 0 && after.0 == 0 && before.1 == after.1 {
                return None;
            }
            core::hint::spin_loop();
            crate::sync::yield_now();
        }
    }

    /// Runs in flight and moves ended, summed over the shards.
    fn moves(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(n, e), s| {
            let m = s.moves.load(Ordering::SeqCst);
            (n + (m & u64::from(u32::MAX)), e.wrapping_add(m >> 32))
        })
    }

    /// Empties handle `h` of any shard: one slot for the caller, the rest
    /// back to the bitmap (a move of shard `shard`).
    ///
    /// A handle that holds no run is left [`SCANNED`]: whoever changes it
    /// next counts that first, so the search sees it and repeats.
    fn steal(&self, shard: usize, h: &AtomicU64, hand: &mut impl FnMut(Batch)) -> Option<Slot> {
        let cur = h.load(Ordering::SeqCst);
        if cur >= WAIT_MARK {
            return None;
        }
        if unpack(cur).is_none()
            && (cur & SCANNED != 0
                || h.compare_exchange(cur, cur | SCANNED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok())
        {
            return None;
        }
        // A run (or a change we take as one: a repeat costs a search).
        let mover = &self.shards[shard];
        mover.start_move();
        let got = empty_handle(h).map(|(run, mask)| {
            let bit = mask.trailing_zeros();
            let rest = mask & !(1 << bit);
            if rest != 0 {
                let (w, bits) = run_bits(run, rest);
                // A handle is alive while we allocate: no word is closed.
                let closed = self.bitmap.give_back(w, bits, hand);
                debug_assert!(!closed);
            }
            slot_of(run, bit)
        });
        mover.end_move();
        got
    }

    /// Puts `rest` of `run` into the empty `alloc` handle, or back into the
    /// bitmap if that handle was filled or marked meanwhile.
    fn keep_rest(&self, s: &Shard, run: usize, rest: u64, hand: &mut impl FnMut(Batch)) {
        if rest == 0 {
            return;
        }
        // Empty, possibly passed by a search (this is a move: counted).
        let cur = s.alloc.load(Ordering::SeqCst);
        if cur & !SCANNED != EMPTY
            || s.alloc
                .compare_exchange(cur, pack(run, rest), Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            let (w, bits) = run_bits(run, rest);
            let closed = self.bitmap.give_back(w, bits, hand);
            debug_assert!(!closed);
        }
    }

    /// Claims the free slots of one run in bulk: the most recently returned
    /// word first, then from the shard's own place in the bitmap; past the
    /// caches if none has a free slot.
    #[cold]
    #[inline(never)]
    fn refill(&self, s: &Shard, shard: usize, hand: &mut impl FnMut(Batch)) -> Option<Slot> {
        // A run between the bitmap and `alloc` is a move (`allocate_slow`).
        let n = self.bitmap.len();
        let recent = self.recent.load(Ordering::Relaxed) % n;
        let start = shard * n / self.shards.len();
        let candidates = core::iter::once(recent).chain((0..n).map(|i| (start + i) % n));
        for w in candidates {
            let word = self.bitmap.at(w);
            let cur = word.load(Ordering::SeqCst);
            if cur & WAITERS != 0 {
                break;
            }
            let free = !cur & !super::bitmap::FLAGS & !self.bitmap.pad(w);
            if free == 0 {
                continue;
            }
            let half = u32::from(free & RUN_MASK == 0);
            let half_bits = RUN_MASK << (half * RUN_SLOTS);
            s.start_move();
            let prev = word.fetch_or(half_bits, Ordering::SeqCst);
            let got = (half_bits & !prev) >> (half * RUN_SLOTS);
            if got == 0 {
                s.end_move();
                continue;
            }
            let run = w * 2 + half as usize;
            let bit = got.trailing_zeros();
            let rest = got & !(1 << bit);
            if prev & WAITERS != 0 {
                // Tasks began to wait: nothing may be cached now.
                if rest != 0 {
                    let (w, bits) = run_bits(run, rest);
                    hand(Batch {
                        word: w,
                        mask: bits,
                    });
                }
            } else {
                self.keep_rest(s, run, rest, hand);
            }
            s.end_move();
            return Some(slot_of(run, bit));
        }
        self.allocate_slow(shard, hand)
    }

    /// Returns `slot` from a thread of shard `shard`. Returns whether this
    /// emptied a closed word: the caller then owns that word's teardown
    /// count and must not touch the arena but to return it.
    ///
    /// # Safety
    ///
    /// `this` is alive and `slot` is leased to the caller. The slot may be
    /// the caller's last hold on the arena: once it is back, another thread
    /// may free `this`. So this takes a pointer, not a reference (which
    /// would have to stay valid until the call returns), and after the
    /// slot is back it touches only atomics (module docs).
    #[inline]
    pub(crate) unsafe fn release(
        this: NonNull<Self>,
        shard: usize,
        slot: Slot,
        hand: &mut impl FnMut(Batch),
    ) -> bool {
        // SAFETY: our slot keeps `this` alive until it is back (the
        // caller's contract); this local reference is not used after that.
        let me = unsafe { this.as_ref() };
        let (run, bit) = run_of(slot);
        let s = &me.shards[shard];
        let h = &s.freed;
        let mut cur = h.load(Ordering::SeqCst);
        loop {
            if cur >= WAIT_MARK {
                let (word, pad) = (me.bitmap.at(slot.word), me.bitmap.pad(slot.word));
                return match return_bits(word, 1 << slot.bit, pad) {
                    Returned::Cleared { emptied_closed } => emptied_closed,
                    Returned::Waiting => {
                        hand(Batch {
                            word: slot.word,
                            mask: 1 << slot.bit,
                        });
                        false
                    }
                };
            }
            let (next, flush) = match unpack(cur) {
                None => (pack(run, bit), None),
                Some((r, m)) if r == run => (pack(run, m | bit), None),
                Some(old) => (pack(run, bit), Some(old)),
            };
            if cur & SCANNED != 0 {
                // A search passed this handle: it must see the change.
                s.touch();
            }
            if flush.is_some() {
                // The old run leaves the handle for the bitmap: a move.
                s.start_move();
            }
            match h.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    if let Some((r, m)) = flush {
                        // Our slot is in the handle now: the move in flight
                        // is what keeps the arena alive (the closer waits
                        // for it), until `end_move`, the last touch.
                        let (w, bits) = run_bits(r, m);
                        let closed = me.bitmap.give_back(w, bits, hand);
                        debug_assert!(!closed);
                        me.recent.store(w, Ordering::Relaxed);
                        s.end_move();
                    }
                    return false;
                }
                Err(now) => {
                    if flush.is_some() {
                        s.end_move();
                    }
                    cur = now;
                }
            }
        }
    }

    /// [`release`](Self::release) of a slot of a bitmap the caller keeps
    /// alive (tests).
    #[cfg(test)]
    pub(crate) fn release_slot(&self, shard: usize, slot: Slot, hand: &mut impl FnMut(Batch)) {
        // SAFETY: `self` outlives the call.
        unsafe { Self::release(NonNull::from(self), shard, slot, hand) };
    }

    /// Called under the queue lock when the first task starts waiting
    /// (`on`) or the last one stops: sets or clears `WAITERS` in every
    /// word, and puts markers in every handle (collecting what they held
    /// into `hand`) or takes them out.
    #[cfg(feature = "async-alloc")]
    pub(crate) fn set_waiting(&self, on: bool, hand: &mut impl FnMut(Batch)) {
        if on {
            self.bitmap.flag_waiters(true);
            for s in self.shards.iter() {
                for h in [&s.alloc, &s.freed] {
                    if let Some((run, mask)) = mark(h, WAIT_MARK) {
                        let (word, mask) = run_bits(run, mask);
                        hand(Batch { word, mask });
                    }
                }
            }
        } else {
            for s in self.shards.iter() {
                for h in [&s.alloc, &s.freed] {
                    let _ =
                        h.compare_exchange(WAIT_MARK, EMPTY, Ordering::SeqCst, Ordering::SeqCst);
                }
            }
            self.bitmap.flag_waiters(false);
        }
    }

    /// Called by the last handle before it closes the words: marks every
    /// handle closed, returns what they held (so that the teardown count
    /// sees only leased slots), and waits until no run is in flight.
    pub(crate) fn close(&self) {
        let mut no_waiters = |b: Batch| {
            // Waiting futures hold handles: none waits at the last drop.
            debug_assert!(false, "a waiter at close: {b:?}");
            self.bitmap.clear(b);
        };
        for s in self.shards.iter() {
            for h in [&s.alloc, &s.freed] {
                if let Some((run, mask)) = mark(h, CLOSED_MARK) {
                    let (w, bits) = run_bits(run, mask);
                    self.bitmap.give_back(w, bits, &mut no_waiters);
                }
            }
        }
        // A release that swapped its slot into a handle before the markers
        // went in may still be returning an older run: the arena must live
        // until it ends (module docs). Its section is short and never
        // blocks.
        while self.moves().0 != 0 {
            core::hint::spin_loop();
            crate::sync::yield_now();
        }
    }

    /// Slots leased now: set bits that are neither padding nor cached.
    pub(crate) fn live_slots(&self) -> usize {
        self.bitmap.set_slots().saturating_sub(self.cached_slots())
    }

    /// Slots held in the shards' handles now.
    pub(crate) fn cached_slots(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| [&s.alloc, &s.freed])
            .filter_map(|h| unpack(h.load(Ordering::Relaxed)))
            .map(|(_, mask)| mask.count_ones() as usize)
            .sum()
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests;

/// loom models of the cache protocol. Run with
/// `RUSTFLAGS="--cfg arenabuf_loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --features async-alloc --lib cache --target-dir target/loom`.
#[cfg(all(test, arenabuf_loom))]
mod loom_models;

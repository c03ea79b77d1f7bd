//! Prototype of the slot cache for [`FixedArena`](crate::FixedArena) in
//! front of its bitmap (issue 14). Not wired into the arena yet: it carries
//! its own bitmap in the same layout, so that the protocol can be tested and
//! model-checked on its own; `docs/thread-cache.md` is the design and says
//! how it goes into `fixed/`.
//!
//! # Layout
//!
//! The bitmap is the arena's: one `AtomicU64` per 62 slots, bits 62 and 63
//! the [`WAITERS`] and [`CLOSED`] flags, a set slot bit meaning "not free in
//! the bitmap". A word is two *runs* of [`RUN_SLOTS`] = 31 slots; run `r` is
//! half `r % 2` of word `r / 2`.
//!
//! In front of it sit `E` *shards* (a power of two, about four per CPU),
//! each on its own cache line, chosen by thread index like the buddy's
//! release caches. A shard has two *handles*, each one `AtomicU64` holding a
//! run number and a 31-bit mask of slots of that run:
//!
//! - `alloc`: slots claimed from the bitmap in bulk (one `fetch_or` per run)
//!   and not yet leased: allocation takes its lowest bit with one CAS on the
//!   shard's own line;
//! - `freed`: slots released by threads of this shard, of one run, not yet
//!   returned: a release adds its bit with one CAS on the shard's own line,
//!   and the whole run goes back to the bitmap with one CAS on the word when
//!   a release of another run comes, or when the shard's thread adopts it
//!   as its `alloc` run (warm memory is reused first).
//!
//! A handle holds the run and its mask in one word, so a swap takes both
//! consistently: whoever empties a handle owns exactly the slots it held.
//! Markers in place of a run: [`WAIT_MARK`] while tasks wait (no slot may be
//! cached), [`CLOSED_MARK`] after the last handle dropped.
//!
//! # Invariants
//!
//! - A slot is in exactly one of: free in the bitmap (bit clear), one
//!   handle's mask (bit set), leased (bit set), or the local variables of one
//!   operation in flight (bit set). Every transfer between them is one
//!   atomic read-modify-write.
//! - No handle holds a run with an empty mask (it holds [`EMPTY`] instead).
//! - While [`WAITERS`] is set, handles hold [`WAIT_MARK`] or runs that the
//!   marker setter is about to collect; a run that meets [`WAITERS`] on its
//!   way back to the bitmap is handed to the caller as a [`Batch`] (bits
//!   still set) to grant to waiters under the queue lock, never cleared.
//! - Correctness never relies on one thread per shard: every handle update
//!   is a compare-exchange, so threads that share a shard only contend.
//! - At most `2 * E * 31` slots are cached at any time, whatever the number
//!   of threads (bounded memory per idle thread and in total).
//! - A failing allocation has searched the bitmap and emptied every handle
//!   in one pass that no run move overlapped (each shard counts its moves in
//!   flight and ended): a cached slot is found before `ArenaFull`.
//!
//! # Ordering
//!
//! Every update of a handle and of a bitmap word is `SeqCst` (on x86 an RMW
//! costs the same whatever its ordering), and so are the loads that decide
//! between the cache and the bitmap: [`WAITERS`] is set in every word before
//! the markers go in, so an operation that finds a marker then sees the
//! flag. A releaser's writes to its slot happen before the next holder's
//! through the release sequence of RMWs: its CAS into `freed`, the CAS that
//! empties `freed`, the CAS that clears the word, the claim that sets it.

use alloc::boxed::Box;

use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// Bitmap flag: no handle left; the arena is being torn down.
pub(crate) const CLOSED: u64 = 1 << 63;
/// Bitmap flag: tasks wait; releases go to the queue.
pub(crate) const WAITERS: u64 = 1 << 62;
const FLAGS: u64 = CLOSED | WAITERS;
/// Slots per bitmap word.
pub(crate) const SLOTS_PER_WORD: usize = 62;
/// Slots per run (half a word).
pub(crate) const RUN_SLOTS: u32 = 31;
const RUN_MASK: u64 = (1 << RUN_SLOTS) - 1;

/// A handle that holds nothing.
const EMPTY: u64 = 0;
/// A handle of an arena with waiting tasks: nothing may be cached.
const WAIT_MARK: u64 = u64::MAX - 1;
/// A handle of a closed arena: nothing may be cached ever again.
const CLOSED_MARK: u64 = u64::MAX;
/// Most runs a bitmap may have (run numbers are stored plus one in 32 bits,
/// below the markers).
pub(crate) const MAX_RUNS: usize = (u32::MAX - 2) as usize;

/// A slot: bit `bit` (< 62) of word `word`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Slot {
    pub(crate) word: usize,
    pub(crate) bit: u32,
}

/// Slots of one word whose bits are still set and that must go to waiting
/// tasks: the caller grants them to head waiters under the queue lock and
/// clears the rest with [`CachedBitmap::clear`] (also under the lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) word: usize,
    pub(crate) mask: u64,
}

fn pack(run: usize, mask: u64) -> u64 {
    debug_assert!(mask != 0 && mask & !RUN_MASK == 0 && run < MAX_RUNS);
    ((run as u64 + 1) << 32) | mask
}

/// The run and mask of a handle value, or `None` for [`EMPTY`] and markers.
fn unpack(h: u64) -> Option<(usize, u64)> {
    if h == EMPTY || h >= WAIT_MARK {
        None
    } else {
        Some(((h >> 32) as usize - 1, h & RUN_MASK))
    }
}

/// The word of run `run`, and `mask` moved to that run's half of it.
fn run_bits(run: usize, mask: u64) -> (usize, u64) {
    (run / 2, mask << ((run % 2) as u32 * RUN_SLOTS))
}

fn run_of(slot: Slot) -> (usize, u64) {
    (
        slot.word * 2 + (slot.bit / RUN_SLOTS) as usize,
        1 << (slot.bit % RUN_SLOTS),
    )
}

fn slot_of(run: usize, bit: u32) -> Slot {
    Slot {
        word: run / 2,
        bit: (run % 2) as u32 * RUN_SLOTS + bit,
    }
}

/// One bitmap word on its own cache line.
#[repr(align(64))]
struct Word(AtomicU64);

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

impl Shard {
    fn start_move(&self) {
        self.moves.fetch_add(MOVE_START, Ordering::SeqCst);
    }

    fn end_move(&self) {
        self.moves.fetch_add(MOVE_END, Ordering::SeqCst);
    }
}

/// A slot bitmap with sharded caches in front (see the module docs).
pub(crate) struct CachedBitmap {
    words: Box<[Word]>,
    last_pad: u64,
    shards: Box<[Shard]>,
    /// The word a shard last returned a run to: where a refill looks first,
    /// so that memory freed on another thread is reused while it is warm.
    recent: AtomicUsize,
}

/// What a take from a handle found.
enum Take {
    Got(Slot),
    Empty,
    Marker,
}

impl CachedBitmap {
    /// A bitmap of `slots` free slots (> 0) with `shards` shards (a power of
    /// two, > 0).
    pub(crate) fn new(slots: usize, shards: usize) -> Self {
        assert!(slots > 0 && shards.is_power_of_two());
        let n = slots.div_ceil(SLOTS_PER_WORD);
        assert!(n * 2 <= MAX_RUNS, "too many slots for run numbers");
        let used_in_last = slots - (n - 1) * SLOTS_PER_WORD;
        let last_pad = !FLAGS & !((1u64 << used_in_last) - 1);
        let words = (0..n)
            .map(|w| Word(AtomicU64::new(if w + 1 == n { last_pad } else { 0 })))
            .collect();
        let shards = (0..shards)
            .map(|_| Shard {
                alloc: AtomicU64::new(EMPTY),
                freed: AtomicU64::new(EMPTY),
                moves: AtomicU64::new(0),
            })
            .collect();
        Self {
            words,
            last_pad,
            shards,
            recent: AtomicUsize::new(0),
        }
    }

    /// The shard of the thread with index `thread` (see `sync::thread_index`).
    pub(crate) fn shard_of(&self, thread: usize) -> usize {
        // High bits: `thread_index` is a Fibonacci hash.
        let bits = self.shards.len().trailing_zeros();
        if bits == 0 {
            0
        } else {
            thread >> (usize::BITS - bits)
        }
    }

    fn pad(&self, w: usize) -> u64 {
        if w + 1 == self.words.len() {
            self.last_pad
        } else {
            0
        }
    }

    /// Leases a slot for a thread of shard `shard`. `hand` receives runs
    /// that met waiting tasks on the way back (see [`Batch`]).
    pub(crate) fn allocate(&self, shard: usize, hand: &mut dyn FnMut(Batch)) -> Option<Slot> {
        let s = &self.shards[shard];
        match take(&s.alloc) {
            Take::Got(slot) => return Some(slot),
            Take::Empty => {
                if let Some(slot) = self.adopt(s, hand) {
                    return Some(slot);
                }
                if let Some(slot) = self.refill(s, shard, hand) {
                    return Some(slot);
                }
            }
            Take::Marker => {}
        }
        self.allocate_slow(shard, hand)
    }

    /// Past the caches: one slot from the bitmap, then from any shard's
    /// handles, until a search that no run move overlapped finds nothing.
    ///
    /// A run moving between the bitmap and a handle (a refill, a return, an
    /// adoption) is in neither for a moment, and a search could miss it
    /// there. Each move is counted in its shard before it starts and after
    /// it ends; a search that began and ended with nothing in flight and no
    /// move ended in between saw every run where it was, so its failure
    /// means every slot was seen leased (or in a single-slot release in
    /// flight, as without caches). Otherwise it searches again: each retry
    /// means another thread completed a move.
    #[cold]
    fn allocate_slow(&self, shard: usize, hand: &mut dyn FnMut(Batch)) -> Option<Slot> {
        let start = shard * self.words.len() / self.shards.len();
        loop {
            let before = self.moves();
            if let Some(slot) = self.claim_one(start) {
                return Some(slot);
            }
            // `freed` before `alloc`: an adoption moves a run that way.
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
    fn steal(&self, shard: usize, h: &AtomicU64, hand: &mut dyn FnMut(Batch)) -> Option<Slot> {
        unpack(h.load(Ordering::SeqCst))?;
        let mover = &self.shards[shard];
        mover.start_move();
        let got = empty_handle(h).map(|(run, mask)| {
            let bit = mask.trailing_zeros();
            let rest = mask & !(1 << bit);
            if rest != 0 {
                let (w, bits) = run_bits(run, rest);
                self.give_back(w, bits, hand);
            }
            slot_of(run, bit)
        });
        mover.end_move();
        got
    }

    /// The lowest free slot of any word, searching every word from `start`.
    fn claim_one(&self, start: usize) -> Option<Slot> {
        let n = self.words.len();
        let mut w = start % n;
        for _ in 0..n {
            let word = &self.words[w].0;
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
            w = (w + 1) % n;
        }
        None
    }

    /// Takes this shard's own `freed` run as its `alloc` run.
    fn adopt(&self, s: &Shard, hand: &mut dyn FnMut(Batch)) -> Option<Slot> {
        unpack(s.freed.load(Ordering::Relaxed))?;
        s.start_move();
        let got = empty_handle(&s.freed).map(|(run, mask)| {
            let bit = mask.trailing_zeros();
            self.keep_rest(s, run, mask & !(1 << bit), hand);
            slot_of(run, bit)
        });
        s.end_move();
        got
    }

    /// Puts `rest` of `run` into the empty `alloc` handle, or back into the
    /// bitmap if that handle was filled or marked meanwhile.
    fn keep_rest(&self, s: &Shard, run: usize, rest: u64, hand: &mut dyn FnMut(Batch)) {
        if rest == 0 {
            return;
        }
        if s.alloc
            .compare_exchange(EMPTY, pack(run, rest), Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            let (w, bits) = run_bits(run, rest);
            self.give_back(w, bits, hand);
        }
    }

    /// Claims the free slots of one run in bulk: the most recently returned
    /// word first, then from the shard's own place in the bitmap.
    fn refill(&self, s: &Shard, shard: usize, hand: &mut dyn FnMut(Batch)) -> Option<Slot> {
        // A run between the bitmap and `alloc` is a move (`allocate_slow`).
        let n = self.words.len();
        let recent = self.recent.load(Ordering::Relaxed) % n;
        let start = shard * n / self.shards.len();
        let candidates = core::iter::once(recent).chain((0..n).map(|i| (start + i) % n));
        for w in candidates {
            let word = &self.words[w].0;
            let cur = word.load(Ordering::SeqCst);
            if cur & WAITERS != 0 {
                return None;
            }
            let free = !cur & !FLAGS & !self.pad(w);
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
        None
    }

    /// Returns `slot` from a thread of shard `shard`.
    pub(crate) fn release(&self, shard: usize, slot: Slot, hand: &mut dyn FnMut(Batch)) {
        let (run, bit) = run_of(slot);
        let s = &self.shards[shard];
        let h = &s.freed;
        let mut cur = h.load(Ordering::SeqCst);
        loop {
            if cur >= WAIT_MARK {
                return self.give_back(slot.word, 1 << slot.bit, hand);
            }
            let (next, flush) = match unpack(cur) {
                None => (pack(run, bit), None),
                Some((r, _)) if r == run => (cur | bit, None),
                Some(old) => (pack(run, bit), Some(old)),
            };
            if flush.is_some() {
                // The old run leaves the handle for the bitmap: a move.
                s.start_move();
            }
            match h.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    if let Some((r, m)) = flush {
                        let (w, bits) = run_bits(r, m);
                        self.give_back(w, bits, hand);
                        s.end_move();
                        self.recent.store(w, Ordering::Relaxed);
                    }
                    return;
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

    /// Clears `bits` of word `w` with one CAS, unless tasks wait: then they
    /// go to `hand`, still set.
    fn give_back(&self, w: usize, bits: u64, hand: &mut dyn FnMut(Batch)) {
        let word = &self.words[w].0;
        let mut cur = word.load(Ordering::SeqCst);
        loop {
            if cur & WAITERS != 0 {
                return hand(Batch {
                    word: w,
                    mask: bits,
                });
            }
            debug_assert_eq!(cur & bits, bits, "returning slots that are not set");
            match word.compare_exchange_weak(cur, cur & !bits, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Clears the slots of `batch` unconditionally: under the queue lock,
    /// for the part of a batch no waiter took.
    pub(crate) fn clear(&self, batch: Batch) {
        self.words[batch.word]
            .0
            .fetch_and(!batch.mask, Ordering::SeqCst);
    }

    /// Called under the queue lock when the first task starts waiting
    /// (`on`) or the last one stops: sets or clears [`WAITERS`] in every
    /// word, and puts markers in every handle (collecting what they held
    /// into `hand`) or takes them out.
    pub(crate) fn set_waiting(&self, on: bool, hand: &mut dyn FnMut(Batch)) {
        if on {
            for word in self.words.iter() {
                word.0.fetch_or(WAITERS, Ordering::SeqCst);
            }
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
            for word in self.words.iter() {
                word.0.fetch_and(!WAITERS, Ordering::SeqCst);
            }
        }
    }

    /// Called by the last handle before it closes the words: marks every
    /// handle closed and returns what they held, so that the teardown count
    /// sees only leased slots.
    pub(crate) fn close(&self, hand: &mut dyn FnMut(Batch)) {
        for s in self.shards.iter() {
            for h in [&s.alloc, &s.freed] {
                if let Some((run, mask)) = mark(h, CLOSED_MARK) {
                    let (w, bits) = run_bits(run, mask);
                    self.give_back(w, bits, hand);
                }
            }
        }
    }

    /// Slots leased now: set bits that are neither padding nor cached.
    pub(crate) fn live_slots(&self) -> usize {
        let set: usize = self
            .words
            .iter()
            .enumerate()
            .map(|(w, word)| {
                (word.0.load(Ordering::Relaxed) & !FLAGS & !self.pad(w)).count_ones() as usize
            })
            .sum();
        set.saturating_sub(self.cached_slots())
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

/// Takes the lowest slot of a handle's run.
#[inline]
fn take(h: &AtomicU64) -> Take {
    let mut cur = h.load(Ordering::Relaxed);
    loop {
        let Some((run, mask)) = unpack(cur) else {
            return if cur == EMPTY {
                Take::Empty
            } else {
                Take::Marker
            };
        };
        let bit = mask.trailing_zeros();
        let rest = mask & !(1 << bit);
        let next = if rest == 0 { EMPTY } else { pack(run, rest) };
        match h.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Take::Got(slot_of(run, bit)),
            Err(now) => cur = now,
        }
    }
}

/// Empties a handle that holds a run, returning the run; `None` if it held
/// nothing or a marker.
fn empty_handle(h: &AtomicU64) -> Option<(usize, u64)> {
    let mut cur = h.load(Ordering::SeqCst);
    loop {
        let run = unpack(cur)?;
        match h.compare_exchange_weak(cur, EMPTY, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Some(run),
            Err(now) => cur = now,
        }
    }
}

/// Puts `marker` into a handle (a closed handle stays closed), returning
/// the run it held.
fn mark(h: &AtomicU64, marker: u64) -> Option<(usize, u64)> {
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

#[cfg(all(test, not(arenabuf_loom)))]
mod tests;

/// loom models of the cache protocol. Run with
/// `RUSTFLAGS="--cfg arenabuf_loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --features async-alloc --lib cache --target-dir target/loom`.
#[cfg(all(test, arenabuf_loom))]
mod loom_models;

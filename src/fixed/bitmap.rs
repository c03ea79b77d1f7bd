//! The bitmap of a [`FixedArena`](super::FixedArena): slot claim and
//! release, and the hand-over of a released slot to a waiting task.
//!
//! The region is `slot_count` slots of `slot_capacity` bytes. Slot state
//! lives in a bitmap of `AtomicU64` words, one word per cache line; each word
//! covers [`SLOTS_PER_WORD`] = 62 slots, and its top two bits are flags: the
//! [`CLOSED`] flag used to tear the arena down (below), and the [`WAITERS`]
//! flag that sends releases to the wait queue (feature `async-alloc`). A set
//! slot bit means "in use".
//!
//! - **Claim**: start at the word this thread last claimed from or released
//!   into (or a per-thread word), `fetch_or` the lowest clear bit; if another
//!   thread got there first, reload the word and try its next clear bit.
//!   When that word is full, a few pseudo-random words are probed first,
//!   which keeps threads from converging on the first word with room; then
//!   the search covers every word twice (full words are skipped) before it
//!   reports [`AllocError::ArenaFull`](crate::AllocError::ArenaFull), so a failure means every slot was
//!   seen in use.
//! - **Release**: one `fetch_and` clearing the bit. That is the only shared
//!   write; the per-slot release counter lives beside the slot and is written
//!   only by the slot's owner. With `async-alloc` the release is a load and a
//!   compare-exchange instead, which clears the bit only while [`WAITERS`] is
//!   clear; when it is set, the slot is handed to the head waiter without
//!   ever being cleared (see `crate::wait`). Registering the first waiter
//!   sets [`WAITERS`] in every word before it retries the claim, and the
//!   queue clears it again when it empties, both under the queue lock: a
//!   release either lands before the flag (and the retry sees the free slot)
//!   or sees the flag (and hands over). No wake-up is lost.
//!
//! # Invariants
//!
//! - Bit `b` of word `w` (`b < 62`) is set iff slot `w * 62 + b` is leased,
//!   granted to a waiter, or does not exist (the last word's padding, set at
//!   build and never cleared).
//! - A slot's bytes and its `releases` counter are touched only by the
//!   holder of its lease.
//! - A claim's `fetch_or` is `Acquire` and a release's clearing RMW is
//!   `Release` (or stronger), so a holder's writes happen before the next
//!   holder's; `WAITERS` is set and cleared only under the queue lock.
//! - After its clearing RMW a release touches the arena only if it emptied a
//!   closed word (`teardown.rs`).

use alloc::boxed::Box;
use core::ptr::NonNull;

use crate::buffer::{Home, Lease};
use crate::region::{Region, scrub};
use crate::sync::{self, AtomicU64, AtomicUsize, Ordering};

use super::teardown::finish;

/// Slots covered by one bitmap word.
pub(crate) const SLOTS_PER_WORD: usize = 62;
/// The bit of every word that marks the arena as closed (no handles left).
pub(crate) const CLOSED: u64 = 1 << 63;
/// The bit of every word that says tasks are waiting for a slot.
pub(crate) const WAITERS: u64 = 1 << 62;
/// The bits of a word that are not slots.
pub(super) const FLAGS: u64 = CLOSED | WAITERS;

/// One bitmap word on its own cache line.
#[repr(align(64))]
pub(super) struct Word(pub(super) AtomicU64);

/// The shared state of a fixed arena.
///
/// Invariants:
/// - bit `b` of `words[w]` (`b < 62`) is set iff slot `w * 62 + b` is leased
///   out, or the slot does not exist (bits of the last word past
///   `slot_count`, in `last_pad`, are set at build and never cleared);
/// - a slot's bytes (`region[slot * slot_capacity ..][..slot_capacity]`) are
///   accessed only by the holder of its lease;
/// - `releases[slot]` is written only by the holder of the slot's lease;
/// - the value is freed exactly once, by whoever brings `pending` to zero
///   after the last handle dropped (see the module docs).
pub(crate) struct FixedInner {
    pub(super) words: Box<[Word]>,
    pub(super) releases: Box<[AtomicU64]>,
    pub(super) region: Region,
    pub(super) slot_capacity: usize,
    pub(super) slot_count: usize,
    pub(super) last_pad: u64,
    pub(super) auto_spill: bool,
    pub(super) zero_on_release: bool,
    pub(super) handles: AtomicUsize,
    pub(super) pending: AtomicUsize,
    pub(super) failures: AtomicU64,
    pub(super) spills: AtomicU64,
    /// The `arena full` event's edge (feature `tracing`; zero-sized without).
    pub(super) full: crate::trace::FullEdge,
    #[cfg(feature = "async-alloc")]
    pub(super) waiters: crate::sync::Mutex<crate::wait::Waiters>,
    /// Under loom, reports the arena as leaked if teardown never runs.
    #[cfg(arenabuf_loom)]
    pub(super) _track: loom::alloc::Track<()>,
}

impl FixedInner {
    /// The bits of word `w` that stand for slots that do not exist.
    #[inline]
    pub(super) fn pad(&self, w: usize) -> u64 {
        if w + 1 == self.words.len() {
            self.last_pad
        } else {
            0
        }
    }

    /// Claims a free slot, returning its word and bit.
    ///
    /// The fast path (a free bit in the word this thread used last) is
    /// small enough to inline into the caller; the search is out of line.
    #[inline]
    pub(super) fn claim(&self, key: usize) -> Option<(usize, u32)> {
        if let Some(w) = sync::last_word(key, self.words.len()) {
            if let Some(bit) = claim_in_word(&self.words[w].0) {
                return Some((w, bit));
            }
        }
        self.claim_search(key)
    }

    /// Probes a few pseudo-random words, then searches every word, twice,
    /// starting at this thread's hint.
    ///
    /// The probes spread threads out when much of the arena is held: a
    /// linear search alone takes every thread whose hint is full to the
    /// same first word with room, where they then share a cache line.
    #[cold]
    #[inline(never)]
    pub(super) fn claim_search(&self, key: usize) -> Option<(usize, u32)> {
        /// Random words tried before the ordered search (a few extra loads
        /// when the arena is nearly full; most probes succeed while a
        /// quarter of it is free).
        const PROBES: usize = 4;
        let n = self.words.len();
        if n > 1 {
            for _ in 0..PROBES {
                let w = sync::random_word(n);
                if let Some(bit) = claim_in_word(&self.words[w].0) {
                    sync::set_word_hint(key, w);
                    return Some((w, bit));
                }
            }
        }
        let start = sync::word_hint(key, n);
        for _pass in 0..2 {
            let mut w = start;
            for _ in 0..n {
                if let Some(bit) = claim_in_word(&self.words[w].0) {
                    sync::set_word_hint(key, w);
                    return Some((w, bit));
                }
                w += 1;
                if w == n {
                    w = 0;
                }
            }
        }
        None
    }

    pub(super) fn live_slots(&self) -> usize {
        self.words
            .iter()
            .enumerate()
            .map(|(w, word)| {
                (word.0.load(Ordering::Relaxed) & !FLAGS & !self.pad(w)).count_ones() as usize
            })
            .sum()
    }

    /// The lease of slot `bit` of word `word`, which the caller claimed.
    #[inline]
    pub(super) fn lease(&self, this: NonNull<FixedInner>, word: usize, bit: u32) -> Lease {
        let slot = word * SLOTS_PER_WORD + bit as usize;
        // SAFETY: slot < slot_count (bits past it are padding, never clear),
        // so its offset is within the region.
        let ptr = unsafe { self.region.at(slot * self.slot_capacity) };
        Lease {
            ptr,
            cap: self.slot_capacity,
            home: Home::Fixed(FixedLease {
                inner: this,
                word,
                bit,
            }),
        }
    }

    /// Whether tasks wait (then no slot is free: every release hands over,
    /// and a claim would only search a full bitmap).
    #[cfg(feature = "async-alloc")]
    #[inline]
    pub(super) fn has_waiters(&self) -> bool {
        self.words[0].0.load(Ordering::Relaxed) & WAITERS != 0
    }

    /// Sets or clears [`WAITERS`] in every word; called under the queue
    /// lock when the queue goes from empty to not, or back.
    #[cfg(feature = "async-alloc")]
    pub(super) fn flag_waiters(&self, on: bool) {
        for word in self.words.iter() {
            if on {
                word.0.fetch_or(WAITERS, Ordering::SeqCst);
            } else {
                word.0.fetch_and(!WAITERS, Ordering::SeqCst);
            }
        }
    }

    /// Serves head waiters from free slots until one of them runs out;
    /// returns the wakers to call after unlocking.
    #[cfg(feature = "async-alloc")]
    pub(super) fn serve_waiters(
        &self,
        this: NonNull<FixedInner>,
        queue: &mut crate::wait::Waiters,
    ) -> Vec<crate::wait::Wake> {
        let mut wake = Vec::new();
        while let Some((class, _)) = queue.head() {
            let Some((word, bit)) = self.claim(this.as_ptr() as usize) else {
                break;
            };
            wake.push(queue.grant(class, self.lease(this, word, bit)));
        }
        if queue.is_empty() {
            self.flag_waiters(false);
        }
        wake
    }
}

/// Claims the lowest clear slot bit of `word`, if there is one.
#[inline]
pub(super) fn claim_in_word(word: &AtomicU64) -> Option<u32> {
    let mut current = word.load(Ordering::Relaxed);
    loop {
        let free = !current & !FLAGS;
        if free == 0 {
            return None;
        }
        let bit = free.trailing_zeros();
        let mask = 1u64 << bit;
        // Acquire: the previous holder's writes to the slot (and its release
        // counter) happen before ours. Only our bit of the old value is
        // used, so this compiles to one `lock bts` rather than a CAS loop.
        if word.fetch_or(mask, Ordering::Acquire) & mask == 0 {
            return Some(bit);
        }
        current = word.load(Ordering::Relaxed);
    }
}

/// A leased slot of a fixed arena.
pub(crate) struct FixedLease {
    inner: NonNull<FixedInner>,
    word: usize,
    bit: u32,
}

impl FixedLease {
    fn inner(&self) -> &FixedInner {
        // SAFETY: the arena is not freed while this lease's bit is set (the
        // teardown protocol waits for every word to empty).
        unsafe { self.inner.as_ref() }
    }

    pub(crate) fn count_spill(&self) {
        self.inner().spills.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives this slot to the head waiter, if there is one. Our bit stays
    /// set throughout, which keeps the arena alive.
    #[cfg(feature = "async-alloc")]
    #[cold]
    fn hand_over(&self) -> bool {
        let arena = self.inner();
        let mut queue = sync::lock(&arena.waiters);
        let Some((class, _)) = queue.head() else {
            // Nobody waits after all: the flag must go, or the release
            // would come back here forever.
            arena.flag_waiters(false);
            return false;
        };
        let wake = queue.grant(class, arena.lease(self.inner, self.word, self.bit));
        if queue.is_empty() {
            arena.flag_waiters(false);
        }
        drop(queue);
        crate::wait::wake_all(vec![wake]);
        true
    }

    /// Returns the slot (at `ptr`, `cap` bytes) to the arena.
    #[inline]
    pub(crate) fn release(&self, ptr: NonNull<u8>, cap: usize) {
        let (inner, w, mask) = (self.inner, self.word, 1u64 << self.bit);
        let pad = {
            let arena = self.inner();
            if arena.zero_on_release {
                // SAFETY: the slot is still ours; nobody else reads it.
                unsafe { scrub(ptr, cap) };
            }
            let releases = &arena.releases[w * SLOTS_PER_WORD + self.bit as usize];
            // Only this lease's holder writes this counter: load + store is
            // enough, and keeps a locked instruction off the hot path.
            releases.store(
                releases.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
            arena.pad(w)
        };
        // SAFETY: the bit is still set, so the arena is alive. Release: our
        // writes to the slot happen before the next claimer's Acquire.
        // Acquire: if we empty a closed word, the closer's writes (and every
        // earlier release of this word) happen before our teardown.
        let word = unsafe { &inner.as_ref().words[w].0 };
        #[cfg(not(feature = "async-alloc"))]
        let prev = word.fetch_and(!mask, Ordering::AcqRel);
        #[cfg(feature = "async-alloc")]
        let prev = {
            let mut current = word.load(Ordering::Relaxed);
            loop {
                if current & WAITERS != 0 {
                    if self.hand_over() {
                        return;
                    }
                    current = word.load(Ordering::Relaxed);
                    continue;
                }
                match word.compare_exchange_weak(
                    current,
                    current & !mask,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(prev) => break prev,
                    Err(now) => current = now,
                }
            }
        };
        // This thread's next claim starts in the word it just freed a slot
        // in: recently used memory is reused while it is still in cache,
        // rather than the claims sweeping the whole region. (Only numbers
        // are stored: the arena is not touched.)
        sync::set_word_hint(inner.as_ptr() as usize, w);
        // From here on the arena may already be freed by another thread,
        // unless we just emptied a closed word: then we own its count.
        if prev & CLOSED != 0 && prev & !mask & !FLAGS == pad {
            // SAFETY: this release emptied a closed word; that word's count
            // in `pending` is ours to return (module docs).
            unsafe { finish(inner, 1) }
        }
    }
}

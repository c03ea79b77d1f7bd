//! [`FixedArena`]: uniform slots claimed from a lock-free bitmap.
//!
//! # Design
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
//!   reports [`AllocError::ArenaFull`], so a failure means every slot was
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
//! # Teardown without a per-buffer reference count
//!
//! Buffers and frozen `Bytes` keep the arena's memory alive, but they do not
//! bump a shared reference count (that one cache line would bounce between
//! every core on every allocation). Instead:
//!
//! - handles ([`FixedArena`] clones) are counted in `handles`;
//! - when the last handle drops, it stores `pending = words + 1` and sets
//!   [`CLOSED`] in every word with `fetch_or`, counting the words that were
//!   already empty; it then subtracts that count plus its own 1;
//! - a release whose `fetch_and` returns a word with [`CLOSED`] set and
//!   leaves it empty subtracts 1.
//!
//! No slot can be claimed after the last handle is gone, so each word is
//! counted exactly once, by the closer or by the release that empties it.
//! Whoever brings `pending` to zero frees the arena. A release that does not
//! empty a closed word touches nothing after its `fetch_and`.

use std::fmt;
use std::num::NonZeroUsize;
use std::ptr::NonNull;

use crate::buffer::{Buffer, Home, Lease};
use crate::error::{AllocError, BuildError};
use crate::metrics::FixedMetrics;
use crate::region::table::{try_box, try_table};
use crate::region::{MemoryConfig, Region, scrub};
use crate::sync::{self, AtomicU64, AtomicUsize, Ordering};

/// Slots covered by one bitmap word.
pub(crate) const SLOTS_PER_WORD: usize = 62;
/// The bit of every word that marks the arena as closed (no handles left).
pub(crate) const CLOSED: u64 = 1 << 63;
/// The bit of every word that says tasks are waiting for a slot.
pub(crate) const WAITERS: u64 = 1 << 62;
/// The bits of a word that are not slots.
const FLAGS: u64 = CLOSED | WAITERS;

/// One bitmap word on its own cache line.
#[repr(align(64))]
struct Word(AtomicU64);

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
    words: Box<[Word]>,
    releases: Box<[AtomicU64]>,
    region: Region,
    slot_capacity: usize,
    slot_count: usize,
    last_pad: u64,
    auto_spill: bool,
    zero_on_release: bool,
    handles: AtomicUsize,
    pending: AtomicUsize,
    failures: AtomicU64,
    spills: AtomicU64,
    /// The `arena full` event's edge (feature `tracing`; zero-sized without).
    full: crate::trace::FullEdge,
    #[cfg(feature = "async-alloc")]
    waiters: crate::sync::Mutex<crate::wait::Waiters>,
    /// Under loom, reports the arena as leaked if teardown never runs.
    #[cfg(arenabuf_loom)]
    _track: loom::alloc::Track<()>,
}

impl FixedInner {
    /// The bits of word `w` that stand for slots that do not exist.
    #[inline]
    fn pad(&self, w: usize) -> u64 {
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
    fn claim(&self, key: usize) -> Option<(usize, u32)> {
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
    fn claim_search(&self, key: usize) -> Option<(usize, u32)> {
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

    fn live_slots(&self) -> usize {
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
    fn lease(&self, this: NonNull<FixedInner>, word: usize, bit: u32) -> Lease {
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

    /// Sets or clears [`WAITERS`] in every word; called under the queue
    /// lock when the queue goes from empty to not, or back.
    #[cfg(feature = "async-alloc")]
    fn flag_waiters(&self, on: bool) {
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
    fn serve_waiters(
        &self,
        this: NonNull<FixedInner>,
        queue: &mut crate::wait::Waiters,
    ) -> Vec<std::task::Waker> {
        let mut wake = Vec::new();
        while let Some((class, _)) = queue.head() {
            let Some((word, bit)) = self.claim(this.as_ptr() as usize) else {
                break;
            };
            wake.extend(queue.grant(class, self.lease(this, word, bit)));
        }
        if queue.is_empty() {
            self.flag_waiters(false);
        }
        wake
    }
}

/// Claims the lowest clear slot bit of `word`, if there is one.
#[inline]
fn claim_in_word(word: &AtomicU64) -> Option<u32> {
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

/// Frees the arena's state.
///
/// # Safety
///
/// `inner` came from `Box::into_raw`, and the caller brought `pending` to
/// zero: no handle, lease or other thread will touch it again.
unsafe fn teardown(inner: NonNull<FixedInner>) {
    // SAFETY: guaranteed by the caller.
    drop(unsafe { Box::from_raw(inner.as_ptr()) });
}

/// Subtracts `n` from `pending`, freeing the arena if that was the rest.
///
/// # Safety
///
/// `inner` is alive, and the caller holds `n` of the `pending` counts (see
/// the module docs); it must not touch `inner` afterwards.
unsafe fn finish(inner: NonNull<FixedInner>, n: usize) {
    // SAFETY: the caller's unreturned counts keep `pending > 0`, so the
    // arena has not been freed yet.
    let pending = unsafe { &inner.as_ref().pending };
    if pending.fetch_sub(n, Ordering::AcqRel) == n {
        // SAFETY: we took `pending` to zero: every word is empty and closed
        // and no handle is left, so nobody else can reach `inner`.
        unsafe { teardown(inner) }
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
            return false;
        };
        let waker = queue.grant(class, arena.lease(self.inner, self.word, self.bit));
        if queue.is_empty() {
            arena.flag_waiters(false);
        }
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
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

/// A pool of uniform slots with a lock-free claim.
///
/// Every buffer from a `FixedArena` has the same capacity,
/// [`slot_capacity`](FixedArena::slot_capacity). Allocation is one atomic
/// `fetch_or` on a bitmap word (usually the word this thread used last), and
/// release is one `fetch_and`: no lock, no heap allocation, no shared counter.
///
/// `FixedArena` is a cheap [`Clone`] handle (`Send + Sync`). Buffers and
/// frozen `Bytes` do not borrow it: when every handle is dropped, the memory
/// stays valid until the last buffer and `Bytes` drop, and is freed then.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::{AllocError, FixedArena};
/// use bytes::BufMut;
///
/// let arena = FixedArena::builder(NonZeroUsize::new(2).unwrap(), NonZeroUsize::new(1024).unwrap())
///     .build()?;
/// let mut a = arena.allocate()?;
/// a.put_slice(b"frame");
/// let frame = a.freeze();
/// let _b = arena.allocate()?;
/// assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
/// drop(frame); // the last reference: the slot goes back
/// assert!(arena.allocate().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FixedArena {
    inner: NonNull<FixedInner>,
}

// SAFETY: all shared state in `FixedInner` is atomics or immutable after
// build; slot memory is only touched through leases, one owner each.
unsafe impl Send for FixedArena {}
// SAFETY: as for `Send`; `&FixedArena` only allocates, which is thread-safe.
unsafe impl Sync for FixedArena {}

impl FixedArena {
    /// Starts building an arena of `slot_count` slots of `slot_capacity`
    /// bytes each.
    pub fn builder(slot_count: NonZeroUsize, slot_capacity: NonZeroUsize) -> FixedArenaBuilder {
        FixedArenaBuilder {
            slot_count,
            slot_capacity,
            auto_spill: false,
            zero_on_release: false,
            memory: MemoryConfig::new(),
        }
    }

    /// The arena's memory (for the getters in `crate::region`).
    pub(crate) fn memory(&self) -> &Region {
        &self.inner().region
    }

    #[inline]
    fn inner(&self) -> &FixedInner {
        // SAFETY: a handle holds one of `handles`, so the arena is alive.
        unsafe { self.inner.as_ref() }
    }

    /// Leases a free slot as an empty [`Buffer`] of
    /// [`slot_capacity`](Self::slot_capacity) bytes.
    ///
    /// # Errors
    ///
    /// [`AllocError::ArenaFull`] when every slot is in use.
    #[inline]
    pub fn allocate(&self) -> Result<Buffer, AllocError> {
        let arena = self.inner();
        let Some((word, bit)) = arena.claim(self.inner.as_ptr() as usize) else {
            let failures = arena.failures.fetch_add(1, Ordering::Relaxed) + 1;
            let reserved = arena.slot_count * arena.slot_capacity;
            arena.full.failed("fixed", reserved, failures);
            return Err(AllocError::ArenaFull);
        };
        arena.full.succeeded();
        Ok(Buffer::from_lease(
            arena.lease(self.inner, word, bit),
            arena.auto_spill,
        ))
    }

    /// Waits for a free slot (feature `async-alloc`).
    ///
    /// Resolves at once when a slot is free. Otherwise the task queues, and
    /// slots released while tasks wait are handed to them in arrival order
    /// (a new caller does not get a freed slot before an earlier waiter).
    /// Cancellation-safe: dropping the future gives up its place, and a slot
    /// that was already handed to it goes to the next waiter or back to the
    /// arena.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::num::NonZeroUsize;
    /// use arenabuf::FixedArena;
    ///
    /// let arena = FixedArena::builder(NonZeroUsize::MIN, NonZeroUsize::new(64).unwrap()).build()?;
    /// let held = arena.allocate()?.freeze();
    /// let waiter = tokio::spawn({
    ///     let arena = arena.clone();
    ///     async move { arena.allocate_async().await.capacity() }
    /// });
    /// tokio::task::yield_now().await; // let the waiter queue
    /// drop(held); // hands the slot to the waiter
    /// assert_eq!(waiter.await?, 64);
    /// assert_eq!(arena.metrics().wait_count, 1);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "async-alloc")]
    pub fn allocate_async(&self) -> FixedAllocate<'_> {
        FixedAllocate {
            arena: crate::wait::ArenaRef::Borrowed(self),
            state: crate::wait::WaitState::Start,
        }
    }

    /// Fails with `RequestTooLarge` if `len` bytes can never fit a slot.
    #[cfg(feature = "async-alloc")]
    pub(crate) fn check_len(&self, len: usize) -> Result<(), AllocError> {
        let max = self.inner().slot_capacity;
        if len > max {
            return Err(AllocError::RequestTooLarge {
                requested: len,
                max,
            });
        }
        Ok(())
    }

    /// Counts a fall-back to heap memory in `spill_count`.
    #[cfg(feature = "async-alloc")]
    pub(crate) fn count_spill(&self) {
        self.inner().spills.fetch_add(1, Ordering::Relaxed);
    }

    /// The wait queue's lock, held (tests check what works without it).
    #[cfg(all(test, feature = "async-alloc"))]
    pub(crate) fn lock_queue(&self) -> impl Sized + '_ {
        sync::lock(&self.inner().waiters)
    }

    /// Entries the wait queue's buffers have room for now.
    #[cfg(all(test, feature = "async-alloc"))]
    pub(crate) fn queue_capacity(&self) -> usize {
        sync::lock(&self.inner().waiters).heap_entries()
    }

    /// The number of slots.
    pub fn slot_count(&self) -> usize {
        self.inner().slot_count
    }

    /// The capacity of every slot, in bytes.
    pub fn slot_capacity(&self) -> usize {
        self.inner().slot_capacity
    }

    /// A snapshot of the arena's counters.
    ///
    /// Costs a pass over the bitmap and the per-slot counters; meant for
    /// monitoring, not for every allocation.
    pub fn metrics(&self) -> FixedMetrics {
        let arena = self.inner();
        let live_slots = arena.live_slots();
        let releases = arena
            .releases
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add);
        #[cfg(feature = "async-alloc")]
        let (waiting_tasks, wait_count) = {
            let queue = sync::lock(&arena.waiters);
            (queue.len(), queue.wait_count())
        };
        #[cfg(not(feature = "async-alloc"))]
        let (waiting_tasks, wait_count) = (0, 0);
        FixedMetrics {
            waiting_tasks,
            wait_count,
            alloc_count: releases.wrapping_add(live_slots as u64),
            alloc_failure_count: arena.failures.load(Ordering::Relaxed),
            spill_count: arena.spills.load(Ordering::Relaxed),
            live_slots,
            live_bytes: live_slots * arena.slot_capacity,
            reserved_bytes: arena.slot_count * arena.slot_capacity,
        }
    }
}

impl Clone for FixedArena {
    fn clone(&self) -> Self {
        let old = self.inner().handles.fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            // As `Arc` does: a count this high means handles are leaked in a
            // loop; wrapping around would free the arena while in use.
            std::process::abort();
        }
        Self { inner: self.inner }
    }
}

impl Drop for FixedArena {
    fn drop(&mut self) {
        if self.inner().handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last handle: close every word, count the empty ones, and
        // return those counts plus our own (module docs).
        let arena = self.inner();
        let n = arena.words.len();
        arena.pending.store(n + 1, Ordering::Relaxed);
        let mut returned = 1;
        for (w, word) in arena.words.iter().enumerate() {
            // AcqRel: a release that sees CLOSED also sees `pending` above;
            // we see every release that emptied the word before.
            let prev = word.0.fetch_or(CLOSED, Ordering::AcqRel);
            if prev & !WAITERS == arena.pad(w) {
                returned += 1;
            }
        }
        // SAFETY: we hold `returned` counts: our own and the empty words'.
        unsafe { finish(self.inner, returned) }
    }
}

impl fmt::Debug for FixedArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedArena")
            .field("slot_count", &self.slot_count())
            .field("slot_capacity", &self.slot_capacity())
            .field("auto_spill", &self.inner().auto_spill)
            .field("zero_on_release", &self.inner().zero_on_release)
            .finish()
    }
}

/// Configures and builds a [`FixedArena`]; from [`FixedArena::builder`] or
/// [`FixedArena::builder_in`] (on memory the caller provides).
///
/// The memory options (`prefault`, `buffer_alignment`, `pages`) are in
/// `crate::region`.
#[derive(Debug)]
#[must_use = "call .build() to create the arena"]
pub struct FixedArenaBuilder {
    slot_count: NonZeroUsize,
    slot_capacity: NonZeroUsize,
    auto_spill: bool,
    zero_on_release: bool,
    pub(crate) memory: MemoryConfig,
}

impl FixedArenaBuilder {
    /// Lets buffers that outgrow their slot move to the heap instead of
    /// panicking: the written bytes are copied once, the slot goes back to
    /// the arena at once, and the spill is counted in
    /// [`FixedMetrics::spill_count`].
    pub fn auto_spill(mut self) -> Self {
        self.auto_spill = true;
        self
    }

    /// Zeroes every slot when it returns to the arena (and hands out
    /// zeroed memory the first time), so one request's bytes can never show
    /// up in another's memory, not even through `unsafe` reads of spare
    /// capacity. Costs a `memset` of the whole slot on every release.
    ///
    /// Without it (the default) memory is not cleared, but the safe API
    /// still never shows a byte that was not written through the same
    /// `Buffer`. Bytes that spilled to the heap are the global allocator's
    /// and are not covered.
    pub fn zero_on_release(mut self) -> Self {
        self.zero_on_release = true;
        self
    }

    /// Reserves the arena's memory (or takes the caller's region) and builds
    /// it.
    ///
    /// Besides the region itself, the arena keeps about 9 bytes of
    /// bookkeeping per slot on the heap: an 8-byte release counter per slot
    /// and a 64-byte bitmap word per 62 slots. Every allocation `build()`
    /// makes is fallible.
    ///
    /// # Errors
    ///
    /// [`BuildError::FixedSizeOverflow`] if `slot_count * slot_capacity` does
    /// not fit in `isize`; [`BuildError::OutOfMemory`] if the system cannot
    /// provide the region or the bookkeeping; for the memory options,
    /// [`BuildError::RegionTooSmall`], [`BuildError::RegionMisaligned`],
    /// [`BuildError::AlignmentNotPowerOfTwo`], [`BuildError::SizeNotAligned`],
    /// [`BuildError::HugePagesUnavailable`], [`BuildError::MapFailed`] or
    /// [`BuildError::InvalidRegion`]. A caller-provided region is dropped
    /// when `build()` fails (its deallocation callback runs).
    pub fn build(self) -> Result<FixedArena, BuildError> {
        let (slot_count, slot_capacity) = (self.slot_count.get(), self.slot_capacity.get());
        let overflow = BuildError::FixedSizeOverflow {
            slot_count,
            slot_capacity,
        };
        let total = slot_count
            .checked_mul(slot_capacity)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(overflow)?;
        let n_words = slot_count.div_ceil(SLOTS_PER_WORD);
        let used_in_last = slot_count - (n_words - 1) * SLOTS_PER_WORD;
        let last_pad = !FLAGS & !((1u64 << used_in_last) - 1);
        let region = self
            .memory
            .reserve(total, slot_capacity, self.zero_on_release)?;
        let words = try_table(n_words, |w| {
            Word(AtomicU64::new(if w + 1 == n_words { last_pad } else { 0 }))
        })?;
        let releases = try_table(slot_count, |_| AtomicU64::new(0))?;
        let inner = try_box(FixedInner {
            words,
            releases,
            region,
            slot_capacity,
            slot_count,
            last_pad,
            auto_spill: self.auto_spill,
            zero_on_release: self.zero_on_release,
            handles: AtomicUsize::new(1),
            pending: AtomicUsize::new(0),
            failures: AtomicU64::new(0),
            spills: AtomicU64::new(0),
            full: crate::trace::FullEdge::default(),
            #[cfg(feature = "async-alloc")]
            waiters: crate::sync::Mutex::new(crate::wait::Waiters::new()),
            #[cfg(arenabuf_loom)]
            _track: loom::alloc::Track::new(()),
        })?;
        Ok(FixedArena {
            inner: NonNull::from(Box::leak(inner)),
        })
    }
}

/// The future of [`FixedArena::allocate_async`].
///
/// `FixedAllocate<'static>` (from the [`BufferSource`](crate::BufferSource)
/// impl) owns a handle instead of borrowing one.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics (one future, one
/// buffer); call `allocate_async()` again for another.
#[cfg(feature = "async-alloc")]
#[must_use = "futures do nothing unless polled"]
pub struct FixedAllocate<'a> {
    arena: crate::wait::ArenaRef<'a, FixedArena>,
    state: crate::wait::WaitState,
}

#[cfg(feature = "async-alloc")]
impl FixedAllocate<'static> {
    /// A waiting future that owns a handle, for `'static` contexts.
    pub(crate) fn owned(arena: FixedArena) -> Self {
        Self {
            arena: crate::wait::ArenaRef::Owned(arena),
            state: crate::wait::WaitState::Start,
        }
    }
}

#[cfg(feature = "async-alloc")]
impl std::future::Future for FixedAllocate<'_> {
    type Output = Buffer;

    /// A free slot is claimed here, inlined into the caller like
    /// `allocate()`; queueing and picking up a grant are out of line.
    #[inline]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Buffer> {
        let this = &mut *self;
        if let crate::wait::WaitState::Start = this.state {
            let handle: &FixedArena = &this.arena;
            let arena = handle.inner();
            if let Some((word, bit)) = arena.claim(handle.inner.as_ptr() as usize) {
                this.state = crate::wait::WaitState::Done;
                return std::task::Poll::Ready(Buffer::from_lease(
                    arena.lease(handle.inner, word, bit),
                    arena.auto_spill,
                ));
            }
        }
        this.poll_wait(cx)
    }
}

#[cfg(feature = "async-alloc")]
impl FixedAllocate<'_> {
    /// Picks up a grant (once queued), or queues (after a failed claim).
    #[cold]
    #[inline(never)]
    fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Buffer> {
        use crate::wait::WaitState;
        use std::task::Poll;

        let this = self;
        this.state.check_not_done();
        let handle: &FixedArena = &this.arena;
        let arena = handle.inner();
        if let WaitState::Queued(node) = &this.state {
            // The grant is written into our node: no arena lock needed.
            return match node.poll(cx.waker()) {
                Some(lease) => {
                    this.state = WaitState::Done;
                    Poll::Ready(Buffer::from_lease(lease, arena.auto_spill))
                }
                None => Poll::Pending,
            };
        }
        let mut queue = sync::lock(&arena.waiters);
        if queue.is_empty() {
            arena.flag_waiters(true);
        }
        // Queue first, then serve the queue from whatever is free now: a
        // slot released before WAITERS was set is found here, and earlier
        // waiters get it before we do.
        let node = queue.register(0, cx.waker());
        let wake = arena.serve_waiters(handle.inner, &mut queue);
        drop(queue);
        let poll = match node.poll(cx.waker()) {
            Some(lease) => {
                this.state = WaitState::Done;
                Poll::Ready(Buffer::from_lease(lease, arena.auto_spill))
            }
            None => {
                this.state = WaitState::Queued(node);
                Poll::Pending
            }
        };
        crate::wait::wake_all(wake);
        poll
    }
}

#[cfg(feature = "async-alloc")]
impl Drop for FixedAllocate<'_> {
    fn drop(&mut self) {
        let crate::wait::WaitState::Queued(node) = &self.state else {
            return;
        };
        let arena = self.arena.inner();
        let mut queue = sync::lock(&arena.waiters);
        let cancelled = queue.cancel(node);
        if queue.is_empty() {
            arena.flag_waiters(false);
        }
        drop(queue);
        // A grant we never picked up: releasing it hands it to the next
        // waiter, or back to the arena (outside the lock).
        drop(cancelled);
    }
}

#[cfg(feature = "async-alloc")]
impl fmt::Debug for FixedAllocate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedAllocate")
            .field(
                "waiting",
                &matches!(self.state, crate::wait::WaitState::Queued(_)),
            )
            .finish()
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn arena(slots: usize, cap: usize) -> FixedArena {
        let nz = |n| NonZeroUsize::new(n).unwrap();
        FixedArena::builder(nz(slots), nz(cap)).build().unwrap()
    }

    #[test]
    fn every_slot_once_across_word_boundaries() {
        for slots in [1, 62, 63, 64, 126, 127, 130] {
            let arena = arena(slots, 3);
            let mut held: Vec<_> = (0..slots).map(|_| arena.allocate().unwrap()).collect();
            assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
            let mut starts: Vec<_> = held
                .iter_mut()
                .map(|b| b.chunk_mut().as_mut_ptr())
                .collect();
            starts.sort();
            starts.dedup();
            assert_eq!(starts.len(), slots, "distinct slots for {slots}");
            let m = arena.metrics();
            assert_eq!(
                (m.live_slots, m.live_bytes, m.alloc_failure_count),
                (slots, slots * 3, 1)
            );
            held.truncate(slots / 2);
            assert_eq!(arena.metrics().live_slots, slots / 2);
            drop(held);
            let m = arena.metrics();
            assert_eq!((m.live_slots, m.alloc_count), (0, slots as u64));
        }
    }

    #[test]
    fn teardown_waits_for_every_word() {
        // Live slots in the first and last words, none in between; closing
        // counts the empty words and the two releases return the rest.
        let arena = arena(200, 1);
        let mut all: Vec<_> = (0..200).map(|_| arena.allocate().unwrap()).collect();
        let last = all.pop().unwrap();
        let first = all.remove(0);
        drop(all);
        drop(arena);
        drop(last);
        drop(first); // frees the arena (miri checks for the leak or double free)
    }

    #[test]
    fn clones_share_one_arena() {
        let a = arena(1, 8);
        let b = a.clone();
        let buf = a.allocate().unwrap();
        drop(a);
        assert_eq!(b.allocate().unwrap_err(), AllocError::ArenaFull);
        drop(buf);
        assert!(b.allocate().is_ok());
    }

    /// Threads claim, write, freeze, send and release slots of one word
    /// while the last handle drops: under miri, the data-race detector
    /// checks the claim/release orderings against the slot bytes themselves
    /// and the leak checker checks the teardown.
    #[test]
    fn threads_share_slots_and_drop_the_arena_midway() {
        let rounds: u8 = if cfg!(miri) { 12 } else { 200 };
        let arena = arena(3, 8);
        let (tx, rx) = std::sync::mpsc::channel::<(u8, bytes::Bytes)>();
        let checker = std::thread::spawn(move || {
            for (tag, bytes) in rx {
                assert_eq!(&bytes[..], &[tag; 8]);
            }
        });
        let workers: Vec<_> = (0..2u8)
            .map(|id| {
                let (arena, tx) = (arena.clone(), tx.clone());
                std::thread::spawn(move || {
                    for r in 0..rounds {
                        let tag = id.wrapping_mul(100).wrapping_add(r);
                        match arena.allocate() {
                            Ok(mut buf) => {
                                buf.put_bytes(tag, 8);
                                let bytes = buf.freeze();
                                assert_eq!(&bytes[..], &[tag; 8]);
                                tx.send((tag, bytes)).unwrap();
                            }
                            Err(AllocError::ArenaFull) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        drop((arena, tx));
        for w in workers {
            w.join().unwrap();
        }
        checker.join().unwrap();
    }

    #[cfg(feature = "async-alloc")]
    #[test]
    fn slot_handed_to_a_waiter_and_cancelled_grant() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        let arena = arena(1, 4);
        let mut cx = Context::from_waker(Waker::noop());
        let mut held = arena.allocate().unwrap();
        held.put_slice(b"held");
        let mut first = Box::pin(arena.allocate_async());
        let mut second = Box::pin(arena.allocate_async());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(held.freeze()); // handed to `first`, never back in the bitmap
        assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
        drop(first); // granted but not picked up: handed on to `second`
        let Poll::Ready(mut buf) = second.as_mut().poll(&mut cx) else {
            panic!("the cancelled grant goes to the next waiter");
        };
        assert!(buf.is_empty());
        buf.put_slice(b"next");
        assert_eq!(&buf[..], b"next");
        drop(second);
        drop(arena); // the buffer keeps the memory alive
        assert_eq!(buf.freeze(), "next");
    }

    #[test]
    fn sizes_that_overflow_are_build_errors() {
        let nz = |n| NonZeroUsize::new(n).unwrap();
        let err = FixedArena::builder(nz(usize::MAX / 2), nz(4))
            .build()
            .unwrap_err();
        assert!(matches!(err, BuildError::FixedSizeOverflow { .. }), "{err}");
        assert!(err.to_string().contains("overflow"));
    }
}

//! [`Buffer`]: a writable arena allocation, and its zero-copy `freeze()` into
//! [`bytes::Bytes`].
//!
//! A buffer's life: an arena hands out a [`Lease`] (a pointer to a slot or
//! block it will not hand out again until the lease is dropped); [`Buffer`]
//! writes into it through [`BufMut`]; [`Buffer::freeze`] moves the lease into
//! the owner of a [`Bytes`] (`Bytes::from_owner`), so clones and slices share
//! it; when the last of them drops, the lease drops and the arena takes the
//! memory back. With auto-spill, a write that does not fit moves the written
//! bytes to a heap [`BytesMut`] and drops the lease at once.

use core::fmt;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};

use crate::buddy::BuddyLease;
use crate::fixed::FixedLease;

/// Exclusive use of `cap` bytes of arena memory at `ptr`, returned to the
/// arena when dropped.
///
/// Invariants (upheld by the arena that creates it):
/// - `ptr..ptr + cap` lies inside the arena's region and no other live
///   `Lease` overlaps it, so this lease may write to it freely;
/// - the arena's memory stays allocated at least until this lease drops (the
///   arenas free their region only once every lease has been returned);
/// - only bytes that were written through this lease are ever read (the
///   region starts uninitialised and is not zeroed by default).
pub(crate) struct Lease {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) cap: usize,
    pub(crate) home: Home,
}

/// Which arena a lease came from, and how to give it back.
pub(crate) enum Home {
    Fixed(FixedLease),
    Buddy(BuddyLease),
}

// SAFETY: a `Lease` is exclusive ownership of its bytes (like `Box<[u8]>`);
// the arena bookkeeping it touches on drop is thread-safe (atomics, or a
// mutex), so it may move to and be dropped on any thread.
unsafe impl Send for Lease {}
// SAFETY: `&Lease` gives only read access to bytes that were initialised
// before they became shared; no interior mutability is exposed.
unsafe impl Sync for Lease {}

impl Lease {
    /// Counts a spill of this lease in its arena's metrics.
    fn count_spill(&self) {
        match &self.home {
            Home::Fixed(l) => l.count_spill(),
            Home::Buddy(l) => l.count_spill(),
        }
    }
}

impl Drop for Lease {
    #[inline]
    fn drop(&mut self) {
        match &self.home {
            Home::Fixed(l) => l.release(self.ptr, self.cap),
            Home::Buddy(l) => l.release(self.ptr, self.cap),
        }
    }
}

/// The owner behind a frozen [`Bytes`]: the lease and how many bytes of it
/// were written.
struct Frozen {
    lease: Lease,
    len: usize,
}

impl AsRef<[u8]> for Frozen {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the lease were written through the
        // `Buffer` before it was frozen (`len <= cap`), and a frozen lease is
        // never written again.
        unsafe { core::slice::from_raw_parts(self.lease.ptr.as_ptr(), self.len) }
    }
}

enum Repr {
    /// Writing into arena memory; `len <= lease.cap` bytes are initialised.
    Arena { lease: Lease, len: usize },
    /// Spilled: the arena memory went back, the bytes live on the heap.
    Heap(BytesMut),
}

/// A writable buffer handed out by an arena.
///
/// Write with [`BufMut`] (or through [`chunk_mut`](BufMut::chunk_mut) and
/// [`advance_mut`](BufMut::advance_mut) to read from a socket without a
/// copy), read what was written through `Deref<Target = [u8]>`, and call
/// [`freeze`](Buffer::freeze) to turn it into a [`Bytes`] without copying.
///
/// Dropping a `Buffer` returns its memory to the arena at once; after
/// `freeze`, the memory returns when the last clone or slice of the `Bytes`
/// drops.
///
/// # Capacity
///
/// A buffer holds at most [`capacity`](Buffer::capacity) bytes. Writing past
/// that panics, as `BufMut` requires of a buffer that cannot grow, unless the
/// arena was built with `auto_spill()`: then the buffer copies its bytes to
/// the heap, returns its arena memory at once, and keeps growing on the heap
/// ([`is_spilled`](Buffer::is_spilled) turns true and the arena's
/// `spill_count` goes up by one).
///
/// `BufMut::remaining_mut` follows from that: without auto-spill it is the
/// room left in the arena memory (`capacity() - len()`); with it, the buffer
/// can grow like a `BytesMut`, so it is `isize::MAX - len()`, and a loop such
/// as `while buf.has_remaining_mut() { reader.read_buf(&mut buf) }` keeps
/// spilling to the heap. To stay in arena memory, read while
/// `buf.len() < buf.capacity()`.
///
/// ```
/// use std::num::NonZeroUsize;
/// use arenabuf::FixedArena;
/// use bytes::BufMut;
///
/// let arena = FixedArena::builder(NonZeroUsize::new(4).unwrap(), NonZeroUsize::new(64).unwrap())
///     .build()?;
/// let mut buf = arena.allocate()?;
/// buf.put_slice(b"hello ");
/// buf.put_u32(0x776f_726c); // "worl"
/// buf.put_u8(b'd');
/// assert_eq!(&buf[..], b"hello world");
/// let bytes = buf.freeze();
/// assert_eq!(bytes, "hello world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Buffer {
    repr: Repr,
    auto_spill: bool,
}

impl Buffer {
    #[inline]
    pub(crate) fn from_lease(lease: Lease, auto_spill: bool) -> Self {
        Self {
            repr: Repr::Arena { lease, len: 0 },
            auto_spill,
        }
    }

    /// A heap buffer of `capacity` bytes, for when an arena has no room and
    /// the caller chose to spill rather than fail. Starts out spilled.
    #[cfg(feature = "codec")]
    pub(crate) fn heap(capacity: usize) -> Self {
        Self {
            repr: Repr::Heap(BytesMut::with_capacity(capacity)),
            auto_spill: true,
        }
    }

    /// The number of bytes written.
    #[inline]
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Arena { len, .. } => *len,
            Repr::Heap(b) => b.len(),
        }
    }

    /// Whether nothing has been written yet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many bytes the buffer can hold without spilling (or, once
    /// spilled, without growing its heap storage).
    #[inline]
    pub fn capacity(&self) -> usize {
        match &self.repr {
            Repr::Arena { lease, .. } => lease.cap,
            Repr::Heap(b) => b.capacity(),
        }
    }

    /// Whether the buffer moved to the heap because a write did not fit
    /// (only with `auto_spill()`).
    #[inline]
    pub fn is_spilled(&self) -> bool {
        matches!(self.repr, Repr::Heap(_))
    }

    /// Turns the written bytes into [`Bytes`] without copying.
    ///
    /// The arena memory stays in use until the last clone or slice of the
    /// returned `Bytes` drops. A spilled buffer freezes its heap storage
    /// (also without a copy).
    #[inline]
    pub fn freeze(self) -> Bytes {
        match self.repr {
            Repr::Arena { lease, len } => Bytes::from_owner(Frozen { lease, len }),
            Repr::Heap(b) => b.freeze(),
        }
    }

    /// Moves the written bytes to the heap, with room for `additional` more,
    /// and returns the arena memory.
    #[cold]
    fn spill(&mut self, additional: usize) -> &mut BytesMut {
        if let Repr::Arena { lease, len } = &self.repr {
            let len = *len;
            let want = len
                .checked_add(additional)
                .expect("buffer length overflows usize");
            let mut heap = BytesMut::with_capacity(want.max(lease.cap.saturating_mul(2)));
            heap.extend_from_slice(&self[..]);
            lease.count_spill();
            // Dropping the old representation drops the lease: the arena
            // memory goes back now, not when the heap copy is frozen.
            self.repr = Repr::Heap(heap);
        }
        match &mut self.repr {
            Repr::Heap(heap) => heap,
            Repr::Arena { .. } => unreachable!("spill() just moved the buffer to the heap"),
        }
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn overflow(len: usize, wanted: usize, cap: usize) -> ! {
    panic!(
        "arenabuf::Buffer overflow: {len} bytes written, {wanted} more do not fit its capacity of {cap}; \
         build the arena with auto_spill() to move such buffers to the heap, or allocate a larger buffer"
    )
}

impl Deref for Buffer {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.repr {
            // SAFETY: the first `len` bytes of the lease have been written
            // (`advance_mut` and `put_slice` only count written bytes).
            Repr::Arena { lease, len } => unsafe {
                core::slice::from_raw_parts(lease.ptr.as_ptr(), *len)
            },
            Repr::Heap(b) => b,
        }
    }
}

impl DerefMut for Buffer {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.repr {
            // SAFETY: as in `deref`; `&mut self` makes the access exclusive
            // and the lease's bytes belong to this buffer alone.
            Repr::Arena { lease, len } => unsafe {
                core::slice::from_raw_parts_mut(lease.ptr.as_ptr(), *len)
            },
            Repr::Heap(b) => b,
        }
    }
}

impl AsRef<[u8]> for Buffer {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self
    }
}

// SAFETY: the trait's contract: `chunk_mut` returns writable memory after the
// written bytes, and `advance_mut(cnt)` only marks as initialised bytes the
// caller wrote into that memory (`cnt <= remaining_mut()`, checked below).
unsafe impl BufMut for Buffer {
    #[inline]
    fn remaining_mut(&self) -> usize {
        match &self.repr {
            Repr::Arena { .. } if self.auto_spill => isize::MAX as usize - self.len(),
            Repr::Arena { lease, len } => lease.cap - len,
            Repr::Heap(b) => b.remaining_mut(),
        }
    }

    #[inline]
    unsafe fn advance_mut(&mut self, cnt: usize) {
        match &mut self.repr {
            Repr::Arena { lease, len } => {
                if cnt > lease.cap - *len {
                    overflow(*len, cnt, lease.cap);
                }
                *len += cnt;
            }
            // SAFETY: forwarded with the caller's guarantee that `cnt` bytes
            // of the heap buffer's spare capacity were initialised.
            Repr::Heap(b) => unsafe { b.advance_mut(cnt) },
        }
    }

    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if let Repr::Arena { lease, len } = &self.repr {
            if *len < lease.cap || !self.auto_spill {
                let (ptr, spare) = (lease.ptr, lease.cap - *len);
                // SAFETY: `ptr + len .. ptr + cap` is inside this lease, which
                // this buffer owns exclusively (`&mut self`); it may be
                // uninitialised, which `UninitSlice` allows.
                return unsafe { UninitSlice::from_raw_parts_mut(ptr.as_ptr().add(*len), spare) };
            }
            self.spill(64);
        }
        match &mut self.repr {
            Repr::Heap(b) => b.chunk_mut(),
            Repr::Arena { .. } => unreachable!("the arena case returned or spilled above"),
        }
    }

    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        if let Repr::Arena { lease, len } = &mut self.repr {
            if src.len() <= lease.cap - *len {
                // SAFETY: `src.len()` bytes fit after the `len` written ones
                // inside the lease, which this buffer owns exclusively; `src`
                // is a shared borrow so it cannot overlap the lease's spare
                // (never shared) memory.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        lease.ptr.as_ptr().add(*len),
                        src.len(),
                    );
                }
                *len += src.len();
                return;
            }
            if !self.auto_spill {
                overflow(*len, src.len(), lease.cap);
            }
            self.spill(src.len());
        }
        match &mut self.repr {
            Repr::Heap(b) => b.put_slice(src),
            Repr::Arena { .. } => unreachable!("the arena case returned or spilled above"),
        }
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("spilled", &self.is_spilled())
            .finish()
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests {
    //! The unsafe paths of `Buffer`: writes, reads, freeze, owner drop,
    //! spill. Small enough to run under miri.
    use std::num::NonZeroUsize;

    use bytes::BufMut;

    use crate::{BuddyArena, FixedArena};

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn writes_read_back_through_deref_and_freeze() {
        let arena = FixedArena::builder(nz(2), nz(16)).build().unwrap();
        let mut buf = arena.allocate().unwrap();
        assert!(buf.is_empty());
        buf.put_slice(b"abc");
        buf.put_u16(0x6465);
        buf[0] = b'A';
        assert_eq!(&buf[..], b"Abcde");
        assert_eq!(
            (buf.len(), buf.capacity(), buf.remaining_mut()),
            (5, 16, 11)
        );
        let bytes = buf.freeze();
        assert_eq!(bytes, "Abcde");
        let tail = bytes.slice(3..);
        drop(bytes);
        assert_eq!(tail, "de");
        assert_eq!(arena.metrics().live_slots, 1);
        drop(tail);
        assert_eq!(arena.metrics().live_slots, 0);
    }

    #[test]
    fn chunk_mut_and_advance_mut_write_without_copy() {
        let arena = FixedArena::builder(nz(1), nz(8)).build().unwrap();
        let mut buf = arena.allocate().unwrap();
        let chunk = buf.chunk_mut();
        assert_eq!(chunk.len(), 8);
        chunk[..4].copy_from_slice(b"wxyz");
        // SAFETY: the first 4 bytes of the chunk were just written.
        unsafe { buf.advance_mut(4) };
        assert_eq!(&buf[..], b"wxyz");
        assert_eq!(buf.chunk_mut().len(), 4);
    }

    #[test]
    #[should_panic(expected = "auto_spill")]
    fn overflow_without_spill_panics() {
        let arena = FixedArena::builder(nz(1), nz(4)).build().unwrap();
        let mut buf = arena.allocate().unwrap();
        buf.put_slice(b"12345");
    }

    #[test]
    #[should_panic(expected = "auto_spill")]
    fn advance_past_capacity_panics() {
        let arena = BuddyArena::builder(nz(64), nz(16)).build().unwrap();
        let mut buf = arena.allocate(nz(16)).unwrap();
        // SAFETY: never reached: advancing past the capacity panics first.
        unsafe { buf.advance_mut(17) };
    }

    #[test]
    fn spill_moves_bytes_to_heap_and_returns_the_slot_at_once() {
        let arena = FixedArena::builder(nz(1), nz(4))
            .auto_spill()
            .build()
            .unwrap();
        let mut buf = arena.allocate().unwrap();
        buf.put_slice(b"abc");
        buf.put_slice(b"defgh");
        assert!(buf.is_spilled());
        let m = arena.metrics();
        assert_eq!((m.spill_count, m.live_slots), (1, 0));
        let other = arena.allocate().unwrap();
        buf.put_u8(b'i');
        assert_eq!(buf.freeze(), "abcdefghi");
        drop(other);
        assert_eq!(arena.metrics().alloc_count, 2);
    }

    #[test]
    fn spill_through_chunk_mut_when_full() {
        let arena = BuddyArena::builder(nz(64), nz(16))
            .auto_spill()
            .build()
            .unwrap();
        let mut buf = arena.allocate(nz(16)).unwrap();
        buf.put_bytes(b'x', 16);
        assert!(!buf.is_spilled());
        buf.put_bytes(b'y', 3); // goes through chunk_mut on a full buffer
        assert!(buf.is_spilled());
        assert_eq!(&buf[14..], b"xxyyy");
        assert_eq!(arena.metrics().live_bytes, 0);
        assert_eq!(arena.metrics().spill_count, 1);
    }

    #[test]
    fn arena_dropped_before_its_bytes() {
        let fixed = FixedArena::builder(nz(3), nz(8)).build().unwrap();
        let buddy = BuddyArena::builder(nz(128), nz(16)).build().unwrap();
        let mut a = fixed.allocate().unwrap();
        a.put_slice(b"fixed");
        let mut b = buddy.allocate(nz(20)).unwrap();
        b.put_slice(b"buddy");
        let unfrozen = fixed.allocate().unwrap();
        let (a, b) = (a.freeze(), b.freeze());
        drop((fixed, buddy));
        assert_eq!((&a[..], &b[..]), (&b"fixed"[..], &b"buddy"[..]));
        let a2 = a.clone();
        drop(a);
        drop(unfrozen);
        assert_eq!(a2, "fixed");
        drop((a2, b)); // the last references free both arenas (miri checks)
    }

    #[test]
    fn bytes_dropped_on_another_thread() {
        let arena = FixedArena::builder(nz(1), nz(8)).build().unwrap();
        let mut buf = arena.allocate().unwrap();
        buf.put_slice(b"sent");
        let bytes = buf.freeze();
        std::thread::spawn(move || assert_eq!(bytes, "sent"))
            .join()
            .unwrap();
        assert!(arena.allocate().is_ok());
    }

    /// What `chunk_mut` offers, read as bytes. Only sound when the memory
    /// is known to be initialised (zero-on-release arenas).
    fn spare_bytes(buf: &mut crate::Buffer) -> Vec<u8> {
        let chunk = buf.chunk_mut();
        // SAFETY: the callers only use this on zero-on-release arenas, whose
        // memory is zeroed at build and on every release, so it is
        // initialised.
        unsafe { core::slice::from_raw_parts(chunk.as_mut_ptr(), chunk.len()) }.to_vec()
    }

    #[test]
    fn safe_api_never_shows_a_previous_holders_bytes() {
        let fixed = FixedArena::builder(nz(1), nz(32))
            .auto_spill()
            .build()
            .unwrap();
        let buddy = BuddyArena::builder(nz(64), nz(32))
            .auto_spill()
            .build()
            .unwrap();
        let mut a = fixed.allocate().unwrap();
        a.put_slice(b"secret-secret-secret");
        drop(a);
        let mut b = buddy.allocate(nz(32)).unwrap();
        b.put_slice(b"secret-secret-secret");
        drop(b);
        for mut buf in [fixed.allocate().unwrap(), buddy.allocate(nz(32)).unwrap()] {
            assert!(buf.is_empty() && buf[..].is_empty());
            buf.put_slice(b"hi");
            assert_eq!(&buf[..], b"hi");
            buf.put_slice(&[b'x'; 40]); // spills: only written bytes move
            assert_eq!(buf.len(), 42);
            assert!(!buf.windows(6).any(|w| w == b"secret"));
            assert!(!buf.freeze().windows(6).any(|w| w == b"secret"));
        }
    }

    /// Hand-over to an async waiter never goes through the free pool: the
    /// waiter's buffer must still show only what it wrote itself, and with
    /// `zero_on_release` its spare capacity must be zero.
    #[cfg(feature = "async-alloc")]
    #[test]
    fn hand_over_to_a_waiter_shows_no_previous_bytes() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        let mut cx = Context::from_waker(Waker::noop());
        for zero in [false, true] {
            let mut fixed = FixedArena::builder(nz(1), nz(32)).auto_spill();
            let mut buddy = BuddyArena::builder(nz(32), nz(16)).auto_spill();
            if zero {
                (fixed, buddy) = (fixed.zero_on_release(), buddy.zero_on_release());
            }
            let (fixed, buddy) = (fixed.build().unwrap(), buddy.build().unwrap());

            let mut held = fixed.allocate().unwrap();
            held.put_slice(b"secret-secret-secret-secret-1234");
            let mut waiter = Box::pin(fixed.allocate_async());
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
            drop(held.freeze().slice(3..9)); // the last reference hands over
            let Poll::Ready(got) = waiter.as_mut().poll(&mut cx) else {
                panic!("the slot is handed to the waiter");
            };

            let mut held = buddy.allocate(nz(32)).unwrap();
            held.put_slice(b"secret-secret-secret-secret-1234");
            let mut waiter = Box::pin(buddy.allocate_async(nz(16)));
            assert!(waiter.as_mut().poll(&mut cx).is_pending());
            drop(held);
            let Poll::Ready(Ok(got_buddy)) = waiter.as_mut().poll(&mut cx) else {
                panic!("half the block is handed to the waiter");
            };

            for mut buf in [got, got_buddy] {
                assert!(buf.is_empty() && buf[..].is_empty());
                if zero {
                    assert!(spare_bytes(&mut buf).iter().all(|&b| b == 0));
                }
                buf.put_slice(b"hi");
                assert_eq!(&buf[..], b"hi");
                buf.put_slice(&[b'x'; 40]); // spills: only written bytes move
                assert_eq!(buf.len(), 42);
                assert!(!buf.windows(6).any(|w| w == b"secret"));
                assert!(!buf.freeze().windows(6).any(|w| w == b"secret"));
            }
        }
    }

    #[test]
    fn zero_on_release_clears_memory_for_the_next_holder() {
        let fixed = FixedArena::builder(nz(1), nz(16))
            .zero_on_release()
            .build()
            .unwrap();
        let buddy = BuddyArena::builder(nz(32), nz(16))
            .zero_on_release()
            .build()
            .unwrap();
        // First use: zeroed.
        let mut first = fixed.allocate().unwrap();
        assert_eq!(spare_bytes(&mut first), [0; 16]);
        first.put_slice(b"0123456789abcdef");
        drop(first.freeze());
        let mut again = fixed.allocate().unwrap();
        assert_eq!(spare_bytes(&mut again), [0; 16]);

        // Buddy: the whole arena written and released, then split in two.
        let mut big = buddy.allocate(nz(32)).unwrap();
        big.put_slice(&[0xAB; 32]);
        drop(big);
        let mut lo = buddy.allocate(nz(16)).unwrap();
        let mut hi = buddy.allocate(nz(16)).unwrap();
        assert_eq!(spare_bytes(&mut lo), [0; 16]);
        assert_eq!(spare_bytes(&mut hi), [0; 16]);
    }
}

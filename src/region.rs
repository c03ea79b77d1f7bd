//! The contiguous block of memory an arena carves buffers from.

use std::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use std::ptr::NonNull;

use crate::error::BuildError;

/// Alignment of every region: a page. Slots of a size that is a multiple of
/// 64 never share a cache line with their neighbours, and slots of a
/// multiple of 4096 start on a page, rather than wherever the allocator's
/// header put the base (64 bytes into a page, as seen here). That matters to
/// copies into a slot: when the destination sits a few bytes past the source
/// modulo 4096, the copy's loads falsely alias its earlier stores (4 KiB
/// aliasing), and a 4 KiB `put_slice` from a heap buffer 48 bytes into its
/// page ran about three times slower into a base-plus-64 slot.
const REGION_ALIGN: usize = 4096;

/// One heap allocation of `len` bytes, left uninitialised.
///
/// Invariants:
/// - `ptr` points to `len` bytes allocated with `Layout { len, REGION_ALIGN }`,
///   owned by this value and freed exactly once, in `Drop`.
/// - The bytes are never read by this type; they are handed out in disjoint
///   pieces by the arenas, which write before they let anyone read.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: `Region` is a uniquely owned heap allocation (like `Box<[u8]>`); it
// has no thread affinity. Access to the bytes is coordinated by the arenas.
unsafe impl Send for Region {}
// SAFETY: `&Region` only exposes the base pointer; the arenas guarantee that
// the pieces they hand out to different threads are disjoint.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `len` bytes (`len > 0`) from the global allocator, zeroed if
    /// `zeroed`. Zeroing is paid at build: the system allocator only takes
    /// `calloc`'s lazily zeroed pages for alignments up to 16, and regions
    /// are page aligned, so `alloc_zeroed` writes every byte (and so
    /// faults every page in, on the building thread).
    pub(crate) fn new(len: usize, zeroed: bool) -> Result<Self, BuildError> {
        debug_assert!(len > 0);
        let layout = Layout::from_size_align(len, REGION_ALIGN)
            .map_err(|_| BuildError::OutOfMemory { bytes: len })?;
        // SAFETY: `layout` has a non-zero size (`len > 0`, checked by every
        // caller through `NonZeroUsize` geometry).
        let ptr = unsafe {
            if zeroed {
                alloc_zeroed(layout)
            } else {
                alloc(layout)
            }
        };
        let ptr = NonNull::new(ptr).ok_or(BuildError::OutOfMemory { bytes: len })?;
        Ok(Self { ptr, layout })
    }

    /// Pointer to byte `offset` of the region.
    ///
    /// # Safety
    ///
    /// `offset <= len`.
    #[inline]
    pub(crate) unsafe fn at(&self, offset: usize) -> NonNull<u8> {
        debug_assert!(offset <= self.layout.size());
        // SAFETY: the caller keeps `offset` within the allocation (or one past
        // its end), so the result stays in bounds and cannot be null.
        unsafe { self.ptr.add(offset) }
    }
}

/// Zeroes `len` bytes at `ptr` before they go back to an arena.
///
/// A plain `memset` whose result nobody reads could be removed as a dead
/// store; this one cannot: the bytes are published to the next holder
/// through the release's atomic store, and `black_box` makes the pointer
/// opaque to the optimiser besides.
///
/// # Safety
///
/// `ptr..ptr + len` is writable memory owned by the caller.
#[inline]
pub(crate) unsafe fn scrub(ptr: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr.as_ptr().write_bytes(0, len) };
    std::hint::black_box(ptr);
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc(self.layout)` and is freed only
        // here, once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

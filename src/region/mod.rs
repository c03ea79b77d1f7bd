//! Where an arena's memory comes from, and the contiguous block of it that
//! the arena carves buffers from.
//!
//! - [`Region`]: the memory itself. The builders reserve one from the global
//!   allocator (the default) or, with feature `mmap`, map one with a
//!   [`PagePolicy`](crate::PagePolicy); a caller provides one with
//!   [`Region::from_static`] or [`Region::from_raw_parts`].
//! - `provided`: the caller's regions and their [`Dealloc`] strategy;
//! - `mapped` (feature `mmap`): anonymous `mmap`, huge pages, prefault;
//! - `config`: what the builders hold until `build()`, and the builder
//!   methods that choose the memory;
//! - `info`: [`RegionInfo`], what the region got, for monitoring and for
//!   registering it with the kernel (`io_uring` fixed buffers, DMA);
//! - `table`: fallible allocation of the arenas' side tables, so that
//!   `build()` reports `OutOfMemory` instead of aborting;
//! - `geometry`: the nearest valid buddy geometry.

use alloc::alloc::{Layout, alloc, alloc_zeroed, dealloc};
use core::fmt;
use core::ptr::NonNull;

use crate::error::BuildError;

mod config;
mod geometry;
mod info;
#[cfg(feature = "mmap")]
mod mapped;
mod provided;
pub(crate) mod table;

pub(crate) use config::MemoryConfig;
pub use info::{HugePages, RegionInfo, RegionSource};
#[cfg(feature = "mmap")]
pub use mapped::PagePolicy;
pub use provided::Dealloc;

/// Alignment of every region the arena reserves itself: a page. Slots of a
/// size that is a multiple of 64 never share a cache line with their
/// neighbours, and slots of a multiple of 4096 start on a page, rather than
/// wherever the allocator's header put the base (64 bytes into a page, as
/// seen here). That matters to copies into a slot: when the destination
/// sits a few bytes past the source modulo 4096, the copy's loads falsely
/// alias its earlier stores (4 KiB aliasing), and a 4 KiB `put_slice` from a
/// heap buffer 48 bytes into its page ran about three times slower into a
/// base-plus-64 slot.
const REGION_ALIGN: usize = 4096;

/// The memory an arena carves its buffers from: one contiguous range of
/// bytes, owned by the arena from `build()` until the last buffer and
/// `Bytes` of it drop, then given back the way it came (freed, unmapped,
/// handed to the caller's [`Dealloc`] callback, or left alone).
///
/// The builders make their own (`FixedArena::builder`,
/// `BuddyArena::builder`); build an arena on memory you own with
/// [`Region::from_static`] or [`Region::from_raw_parts`] and
/// `FixedArena::builder_in` / `BuddyArena::builder_in`, which derive the
/// geometry from the region's length.
///
/// Invariants:
/// - `ptr..ptr + len` is memory the region owns exclusively, valid for
///   reads and writes until `Drop`, and given back exactly once, in `Drop`;
/// - the bytes are never read by this type (only written at build, to zero
///   or prefault them); they are handed out in disjoint pieces by the
///   arenas, which write before they let anyone read.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
    pub(crate) page_size: Option<usize>,
    pub(crate) huge: HugePages,
    pub(crate) prefaulted: bool,
    pub(crate) zeroed: bool,
}

/// How a region's memory goes back.
enum Backing {
    /// From the global allocator with this layout (at `ptr`).
    Heap(Layout),
    /// A `&'static mut [u8]`: nothing to give back.
    Static,
    /// The caller's memory: `base..base + len` as it was provided (the arena
    /// may use a prefix), and what to do with it at the end.
    Caller {
        base: NonNull<u8>,
        len: usize,
        dealloc: Dealloc,
    },
    /// An anonymous mapping (`munmap(base, len)` at the end).
    #[cfg(all(feature = "mmap", unix))]
    Mapped { base: NonNull<u8>, len: usize },
}

// SAFETY: a `Region` exclusively owns its memory (like `Box<[u8]>`) and has
// no thread affinity; the deallocation callback is `Send`, and is only
// reached through `&mut self` in `Drop`.
unsafe impl Send for Region {}
// SAFETY: `&Region` only exposes the base pointer and plain numbers (the
// callback is never reached through `&Region`); the arenas guarantee that
// the pieces they hand out to different threads are disjoint.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves `len` bytes (`len > 0`) from the global allocator, aligned
    /// to `align` (a power of two) or a page, zeroed if `zeroed`. Zeroing is
    /// paid at build: the system allocator only takes `calloc`'s lazily
    /// zeroed pages for alignments up to 16, and regions are page aligned,
    /// so `alloc_zeroed` writes every byte (and so faults every page in, on
    /// the building thread).
    pub(crate) fn heap(
        len: usize,
        align: usize,
        zeroed: bool,
        prefault: bool,
    ) -> Result<Self, BuildError> {
        debug_assert!(len > 0);
        let layout = Layout::from_size_align(len, align.max(REGION_ALIGN))
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
        let mut region = Self {
            ptr,
            len,
            backing: Backing::Heap(layout),
            page_size: base_page_size(),
            huge: HugePages::None,
            prefaulted: false,
            zeroed,
        };
        if prefault {
            region.prefault(region.page_size.unwrap_or(REGION_ALIGN));
        }
        Ok(region)
    }

    /// Keeps the first `len` bytes for the arena (`len <= self.len`), and
    /// zeroes or prefaults them as asked. Used on regions the caller
    /// provided, whose length may exceed what the geometry can use.
    pub(crate) fn fit(
        mut self,
        len: usize,
        align: usize,
        zeroed: bool,
        prefault: bool,
    ) -> Result<Self, BuildError> {
        if self.len < len {
            return Err(BuildError::RegionTooSmall {
                region_len: self.len,
                needed: len,
            });
        }
        let base = self.ptr.as_ptr() as usize;
        if base % align != 0 {
            return Err(BuildError::RegionMisaligned {
                base,
                alignment: align,
            });
        }
        self.len = len;
        if zeroed {
            // SAFETY: the region owns `ptr..ptr + len` exclusively (the
            // constructors' contracts) and nobody has a buffer of it yet.
            unsafe { self.ptr.as_ptr().write_bytes(0, len) };
            self.zeroed = true;
        }
        if prefault {
            self.prefault(self.page_size.unwrap_or(REGION_ALIGN));
        }
        Ok(self)
    }

    /// Writes a zero into every page of the region, so that the page
    /// faults are paid now, on the building thread, rather than on the
    /// first request that touches each page. The arena owns the bytes and
    /// has handed none out yet; nothing reads them before a buffer writes
    /// them (and zero-at-build regions are zero already).
    pub(crate) fn prefault(&mut self, page: usize) {
        let mut offset = 0;
        while offset < self.len {
            // SAFETY: `offset < len`, inside the memory the region owns
            // exclusively; no buffer of it exists yet.
            unsafe { self.ptr.as_ptr().add(offset).write_volatile(0) };
            offset += page;
        }
        self.prefaulted = true;
    }

    /// The bytes the arena uses.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes (an arena cannot be built on it).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region's first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// What this region is, for the arenas' `region()` getters.
    pub(crate) fn info(&self) -> RegionInfo {
        let source = match self.backing {
            Backing::Heap(_) => RegionSource::Heap,
            Backing::Static => RegionSource::Static,
            Backing::Caller { .. } => RegionSource::Caller,
            #[cfg(all(feature = "mmap", unix))]
            Backing::Mapped { .. } => RegionSource::Mapped,
        };
        RegionInfo {
            base: self.ptr,
            len: self.len,
            source,
            page_size: self.page_size,
            huge: self.huge,
            prefaulted: self.prefaulted,
            zeroed: self.zeroed,
        }
    }

    /// Pointer to byte `offset` of the region.
    ///
    /// # Safety
    ///
    /// `offset <= len`.
    #[inline]
    pub(crate) unsafe fn at(&self, offset: usize) -> NonNull<u8> {
        debug_assert!(offset <= self.len);
        // SAFETY: the caller keeps `offset` within the region (or one past
        // its end), so the result stays in bounds and cannot be null.
        unsafe { self.ptr.add(offset) }
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("base", &self.ptr)
            .field("len", &self.len)
            .field("source", &self.info().source())
            .finish_non_exhaustive()
    }
}

/// The system's base page size, where it can be asked (feature `mmap` on
/// Unix); `None` elsewhere.
fn base_page_size() -> Option<usize> {
    #[cfg(all(feature = "mmap", unix))]
    {
        Some(mapped::system_page_size())
    }
    #[cfg(not(all(feature = "mmap", unix)))]
    {
        None
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
    core::hint::black_box(ptr);
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

impl Drop for Region {
    fn drop(&mut self) {
        match &mut self.backing {
            // SAFETY: `ptr` was returned by `alloc(layout)` and is freed only
            // here, once.
            Backing::Heap(layout) => unsafe { dealloc(self.ptr.as_ptr(), *layout) },
            Backing::Static => {}
            Backing::Caller { base, len, dealloc } => {
                if let Dealloc::Callback(callback) = core::mem::replace(dealloc, Dealloc::None) {
                    callback(*base, *len);
                }
            }
            #[cfg(all(feature = "mmap", unix))]
            // SAFETY: `base..base + len` is the mapping this region made and
            // owns; it is unmapped only here, once.
            Backing::Mapped { base, len } => unsafe { mapped::unmap(*base, *len) },
        }
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests;

//! Regions on memory the caller provides: a `&'static mut [u8]`, or any
//! pointer and length with a [`Dealloc`] strategy.

use alloc::boxed::Box;
use core::fmt;
use core::ptr::NonNull;

use super::{Backing, HugePages, Region};

/// What happens to a caller-provided region once the arena is done with it:
/// after the last handle, buffer and `Bytes` of the arena have dropped.
#[non_exhaustive]
pub enum Dealloc {
    /// Nothing: the memory stays the caller's, who may reuse or free it
    /// once the arena is done with it (a static pool, a mapping the caller
    /// unmaps itself, memory registered elsewhere for the process's life).
    None,
    /// Called exactly once, with the pointer and length the region was made
    /// from, on whichever thread drops the arena's last handle, buffer or
    /// `Bytes` (or by `build()`, when it fails after taking the region).
    Callback(Box<dyn FnOnce(NonNull<u8>, usize) + Send + 'static>),
}

impl Dealloc {
    /// A [`Dealloc::Callback`] from a closure.
    pub fn callback(f: impl FnOnce(NonNull<u8>, usize) + Send + 'static) -> Self {
        Self::Callback(Box::new(f))
    }
}

impl fmt::Debug for Dealloc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "Dealloc::None",
            Self::Callback(_) => "Dealloc::Callback(..)",
        })
    }
}

impl Region {
    /// A region on a static buffer: an embedded or static pool that lives
    /// for the whole program.
    ///
    /// The arena owns the bytes from `build()` on (`zero_on_release` and
    /// `prefault` write to them at build); when the arena is done with them
    /// nothing happens to them.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use arenabuf::{FixedArena, Region};
    ///
    /// // A one-time pool, e.g. from a `static` on an embedded target.
    /// let pool: &'static mut [u8] = Box::leak(vec![0u8; 64 * 1024].into_boxed_slice());
    /// let arena = FixedArena::builder_in(Region::from_static(pool), NonZeroUsize::new(4096).unwrap())
    ///     .build()?;
    /// assert_eq!(arena.slot_count(), 16); // derived from the region
    /// # Ok::<(), arenabuf::BuildError>(())
    /// ```
    ///
    /// A `static` pool, as on a `no_std` target. A `[u8; N]` is only
    /// 1-aligned: to ask for aligned buffers (`buffer_alignment`), put the
    /// array in a `#[repr(align(..))]` type, or the build answers
    /// [`BuildError::RegionMisaligned`](crate::BuildError::RegionMisaligned).
    ///
    /// ```
    /// use core::num::NonZeroUsize;
    /// use arenabuf::{FixedArena, Region};
    ///
    /// #[repr(align(64))]
    /// struct Pool([u8; 16 * 1024]);
    /// static mut POOL: Pool = Pool([0; 16 * 1024]);
    ///
    /// // SAFETY: taken once, at start-up, before anything else can reach
    /// // `POOL`; nothing else ever names it.
    /// let pool: &'static mut [u8] = unsafe { &mut (*&raw mut POOL).0 };
    /// let arena = FixedArena::builder_in(Region::from_static(pool), NonZeroUsize::new(1024).unwrap())
    ///     .buffer_alignment(NonZeroUsize::new(64).unwrap())
    ///     .build()?;
    /// assert_eq!(arena.slot_count(), 16);
    /// # Ok::<(), arenabuf::BuildError>(())
    /// ```
    pub fn from_static(memory: &'static mut [u8]) -> Self {
        let len = memory.len();
        Self {
            // A `&mut [u8]`'s pointer is never null (dangling but aligned
            // for an empty slice, which `build()` rejects as too small).
            ptr: NonNull::from(memory).cast(),
            len,
            backing: Backing::Static,
            page_size: super::base_page_size(),
            huge: HugePages::None,
            prefaulted: false,
            zeroed: false,
        }
    }

    /// A region on memory the caller owns: shared memory, an `mmap`ed
    /// file, memory registered with a device or the kernel elsewhere.
    ///
    /// The arena uses the first bytes that its geometry can use (every
    /// byte it can, see `FixedArena::builder_in` and
    /// `BuddyArena::builder_in`); `dealloc` says what happens to the memory
    /// when the arena is done with it: [`Dealloc::None`], or a callback
    /// that runs exactly once, after the arena's last handle, buffer and
    /// `Bytes` have dropped, with `ptr` and `len` as given here. When
    /// `build()` fails, it drops the region at once, and the callback runs
    /// then.
    ///
    /// # Safety
    ///
    /// Until the callback runs (with [`Dealloc::Callback`]) or for the rest
    /// of the program (with [`Dealloc::None`]):
    ///
    /// - `ptr..ptr + len` is valid for reads and writes, and `len <=
    ///   isize::MAX`;
    /// - nothing else reads or writes that memory, or hands out references
    ///   to it: the arena writes to it and hands its pieces to any thread
    ///   (the memory must not be tied to one thread);
    /// - the memory stays mapped, and is not freed or reused, even if every
    ///   handle of the arena has dropped: buffers and `Bytes` outlive them.
    ///
    /// The bytes need not be initialised: the arena never reads a byte that
    /// was not written through a buffer first.
    ///
    /// ```
    /// use std::alloc::{Layout, alloc, dealloc};
    /// use std::num::NonZeroUsize;
    /// use std::ptr::NonNull;
    /// use arenabuf::{BuddyArena, Dealloc, Region};
    ///
    /// let layout = Layout::from_size_align(1 << 20, 4096).unwrap();
    /// // SAFETY: a non-zero size.
    /// let ptr = NonNull::new(unsafe { alloc(layout) }).expect("out of memory");
    /// // SAFETY: the allocation is ours alone until the callback frees it.
    /// let region = unsafe {
    ///     Region::from_raw_parts(ptr, layout.size(), Dealloc::callback(move |ptr, _len| {
    ///         // SAFETY: `ptr` came from `alloc(layout)`, and the arena is done with it.
    ///         unsafe { dealloc(ptr.as_ptr(), layout) }
    ///     }))
    /// };
    /// let arena = BuddyArena::builder_in(region, NonZeroUsize::new(256).unwrap()).build()?;
    /// assert_eq!(arena.total_size(), 1 << 20);
    /// # Ok::<(), arenabuf::BuildError>(())
    /// ```
    pub unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize, dealloc: Dealloc) -> Self {
        Self {
            ptr,
            len,
            backing: Backing::Caller {
                base: ptr,
                len,
                dealloc,
            },
            page_size: super::base_page_size(),
            huge: HugePages::None,
            prefaulted: false,
            zeroed: false,
        }
    }
}

//! [`RegionInfo`]: what an arena's region is and what it got.

/// Where a region's memory came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionSource {
    /// The global allocator (the builders' default).
    Heap,
    /// An anonymous `mmap` made by the arena (feature `mmap`, Unix).
    Mapped,
    /// A `&'static mut [u8]` ([`Region::from_static`](crate::Region::from_static)).
    Static,
    /// Memory the caller provided
    /// ([`Region::from_raw_parts`](crate::Region::from_raw_parts)).
    Caller,
}

/// The huge pages a region asked for, and got as far as the arena knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HugePages {
    /// None asked for (the memory may still be backed by transparent huge
    /// pages if the system's policy is `always`).
    None,
    /// Transparent huge pages: the mapping is aligned to the huge page size
    /// and advised with `madvise(MADV_HUGEPAGE)`, which the kernel accepted.
    /// The kernel backs it with huge pages where it can;
    /// `transparent_huge_bytes()` on [`RegionInfo`] (Linux) says how much
    /// it did.
    Transparent,
    /// Explicit huge pages from the reserved pool (`MAP_HUGETLB`): every
    /// page is a [`RegionInfo::page_size`] huge page.
    Explicit,
}

/// A description of an arena's region, from `FixedArena::region()` or
/// `BuddyArena::region()`.
///
/// Use it to register the region with the kernel or a device once
/// (`io_uring` fixed buffers, RDMA memory regions, DMA mappings) and then
/// address every buffer by its offset inside it
/// ([`offset_of`](Self::offset_of), `FixedArena::slot_index`), and to check
/// what the memory got (page size, huge pages, prefault).
///
/// The base and length are fixed for the arena's life: the region is never
/// moved or resized, and stays valid until the arena's last handle, buffer
/// and `Bytes` drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    pub(super) base: core::ptr::NonNull<u8>,
    pub(super) len: usize,
    pub(super) source: RegionSource,
    pub(super) page_size: Option<usize>,
    pub(super) huge: HugePages,
    pub(super) prefaulted: bool,
    pub(super) zeroed: bool,
}

// SAFETY: the info only describes the region; nothing dereferences `base`
// through it (`as_ptr` hands the pointer out, and using it is the caller's
// `unsafe`, as for any raw pointer).
unsafe impl Send for RegionInfo {}
// SAFETY: as for `Send`: immutable plain data.
unsafe impl Sync for RegionInfo {}

impl RegionInfo {
    /// The region's first byte (the first slot or block starts here).
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The region's length in bytes: `slot_count * slot_capacity` or
    /// `total_size` (a caller's region may be longer; the rest is unused).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: an arena's region holds at least one buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the memory came from.
    pub fn source(&self) -> RegionSource {
        self.source
    }

    /// The size of the pages the memory is mapped with, in bytes: the huge
    /// page size for [`HugePages::Explicit`], otherwise the system's base
    /// page size. `None` where the arena cannot ask the system (without
    /// feature `mmap`, or off Unix).
    pub fn page_size(&self) -> Option<usize> {
        self.page_size
    }

    /// The huge pages the region asked for and got.
    pub fn huge_pages(&self) -> HugePages {
        self.huge
    }

    /// Whether every page was touched at build (`prefault()` on the
    /// builder), so that no request pays a first-touch page fault. Pages of
    /// a region zeroed at build (`zero_on_release()` on heap memory) are
    /// touched too, but only `prefault()` sets this.
    pub fn prefaulted(&self) -> bool {
        self.prefaulted
    }

    /// Whether the memory was zero when the arena was built (zeroed by the
    /// arena, or fresh anonymous pages).
    pub fn zeroed(&self) -> bool {
        self.zeroed
    }

    /// The offset of `ptr` inside the region, if it points into it: for a
    /// buffer or `Bytes` of this arena, where its memory starts inside the
    /// registered region (`Buffer::chunk_mut().as_mut_ptr()` before
    /// writing, `Bytes::as_ptr()` after freezing). `None` for a pointer
    /// outside, such as a buffer that spilled to the heap.
    pub fn offset_of(&self, ptr: *const u8) -> Option<usize> {
        let offset = (ptr as usize).checked_sub(self.base.as_ptr() as usize)?;
        (offset < self.len).then_some(offset)
    }

    /// How many bytes of the region the kernel backs with transparent huge
    /// pages now, from `/proc/self/smaps` (`AnonHugePages`; Linux only).
    /// Pages are backed on first touch: ask after `prefault()`, or after
    /// the buffers were used.
    ///
    /// # Errors
    ///
    /// Reading `/proc/self/smaps` failed (no procfs), or it has no mapping
    /// for the region.
    ///
    /// Needs the `std` feature (on by default).
    #[cfg(all(feature = "std", target_os = "linux"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "std", target_os = "linux"))))]
    pub fn transparent_huge_bytes(&self) -> std::io::Result<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps")?;
        let start = self.base.as_ptr() as usize;
        let end = start + self.len;
        let mut total = 0;
        let mut found = false;
        let mut current: Option<(usize, usize)> = None;
        for line in smaps.lines() {
            let Some((head, rest)) = line.split_once(' ') else {
                continue;
            };
            if let Some((lo, hi)) = head.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    current = (lo < end && hi > start).then_some((lo, hi));
                    found |= current.is_some();
                    continue;
                }
            }
            if head == "AnonHugePages:" && current.is_some() {
                let kb: usize = rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                total += kb * 1024;
            }
        }
        if !found {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no mapping for the region in /proc/self/smaps",
            ));
        }
        Ok(total.min(self.len))
    }
}

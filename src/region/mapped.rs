//! Regions the arena maps itself (feature `mmap`): anonymous `mmap` with a
//! page policy, on Unix; the global allocator elsewhere.

#[cfg(unix)]
use std::ptr::NonNull;

#[cfg(unix)]
use super::Backing;
use super::{HugePages, Region};
use crate::error::BuildError;

/// How an arena maps the memory it reserves (feature `mmap`); chosen with
/// `pages()` on either builder.
///
/// Anonymous mappings come from the kernel zeroed, so with them
/// `zero_on_release()` costs nothing at build. Combine with `prefault()` to
/// pay every page fault at build instead of on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PagePolicy {
    /// The global allocator, page aligned (the default; what arenas did
    /// before this option existed).
    #[default]
    Heap,
    /// An anonymous private mapping of base pages (Unix; the global
    /// allocator elsewhere). The memory goes back to the system with
    /// `munmap` when the arena is done, whatever the allocator does.
    Mapped,
    /// An anonymous mapping aligned to 2 MiB and advised with
    /// `madvise(MADV_HUGEPAGE)` (Linux): the kernel backs it with
    /// transparent huge pages where it can (fewer TLB misses, one fault per
    /// 2 MiB), even when the system's policy is `madvise` rather than
    /// `always`. Falls back to [`Mapped`](Self::Mapped) where the kernel
    /// refuses the advice or off Linux;
    /// [`RegionInfo::huge_pages`](crate::RegionInfo::huge_pages) says which
    /// happened, and
    /// [`RegionInfo::transparent_huge_bytes`](crate::RegionInfo::transparent_huge_bytes)
    /// how much the kernel backed.
    TransparentHuge,
    /// Explicit huge pages of the system's default huge page size from the
    /// reserved pool (`MAP_HUGETLB`, Linux). The region's length is rounded
    /// up to whole huge pages. `build()` fails with
    /// [`BuildError::HugePagesUnavailable`] when not enough are reserved
    /// (`/proc/sys/vm/nr_hugepages`) or off Linux; it never falls back
    /// silently.
    Huge,
}

/// The system's base page size.
#[cfg(unix)]
pub(crate) fn system_page_size() -> usize {
    // SAFETY: `sysconf` only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page)
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(4096)
}

/// Maps `len` bytes (`len > 0`) with `policy`, every byte zero, aligned to
/// `align` (a power of two) or better; prefaulted if asked.
pub(super) fn map(
    len: usize,
    policy: PagePolicy,
    align: usize,
    zeroed: bool,
    prefault: bool,
) -> Result<Region, BuildError> {
    #[cfg(unix)]
    {
        let _ = zeroed; // anonymous pages are zero
        map_unix(len, policy, align, prefault)
    }
    #[cfg(not(unix))]
    {
        if policy == PagePolicy::Huge {
            return Err(BuildError::HugePagesUnavailable {
                bytes: len,
                page_size: 2 << 20,
                reason: "explicit huge pages (MAP_HUGETLB) are supported on Linux only".into(),
            });
        }
        Region::heap(len, align, zeroed, prefault)
    }
}

/// The default huge page size (`Hugepagesize` in `/proc/meminfo`), and the
/// free pages of that size, if the system says.
#[cfg(target_os = "linux")]
fn huge_page_info() -> (usize, Option<usize>) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
    };
    let size = field("Hugepagesize:").map_or(2 << 20, |kb| kb * 1024);
    (size, field("HugePages_Free:"))
}

#[cfg(unix)]
fn map_unix(
    len: usize,
    policy: PagePolicy,
    align: usize,
    prefault: bool,
) -> Result<Region, BuildError> {
    let page = system_page_size();
    let mut region = match policy {
        PagePolicy::Huge => map_huge(len, align)?,
        _ => {
            let transparent = policy == PagePolicy::TransparentHuge && cfg!(target_os = "linux");
            // Huge pages only back 2 MiB-aligned, whole 2 MiB ranges.
            let grain = if transparent { 2 << 20 } else { page };
            let body = round_up(len, grain).ok_or(BuildError::OutOfMemory { bytes: len })?;
            let (base, map_len) = map_aligned(body, align.max(grain), page)?;
            let mut huge = HugePages::None;
            #[cfg(target_os = "linux")]
            if transparent {
                // SAFETY: `base..base + map_len` is our own fresh mapping;
                // the advice changes how it is backed, not its contents.
                let advised =
                    unsafe { libc::madvise(base.as_ptr().cast(), map_len, libc::MADV_HUGEPAGE) };
                if advised == 0 {
                    huge = HugePages::Transparent;
                }
            }
            Region {
                ptr: base,
                len,
                backing: Backing::Mapped { base, len: map_len },
                page_size: Some(page),
                huge,
                prefaulted: false,
                zeroed: true,
            }
        }
    };
    if prefault {
        // For transparent huge pages the first write into each 2 MiB range
        // faults in a whole huge page; the rest are cheap.
        region.prefault(region.page_size.unwrap_or(page));
    }
    Ok(region)
}

/// Maps `len` bytes of explicit huge pages.
#[cfg(unix)]
fn map_huge(len: usize, align: usize) -> Result<Region, BuildError> {
    #[cfg(target_os = "linux")]
    {
        let (huge, free) = huge_page_info();
        if align > huge {
            return Err(BuildError::InvalidRegion {
                reason: format!(
                    "buffer_alignment {align} is larger than the huge page size {huge}, \
                     which is all a huge-page mapping is aligned to; lower buffer_alignment"
                ),
            });
        }
        let map_len = round_up(len, huge).ok_or(BuildError::OutOfMemory { bytes: len })?;
        // SAFETY: an anonymous private mapping at an address the kernel
        // picks; it touches no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let err = std::io::Error::last_os_error();
            let pool = match free {
                Some(free) => format!("{free} free in the pool"),
                None => "the pool size is unknown".into(),
            };
            return Err(BuildError::HugePagesUnavailable {
                bytes: map_len,
                page_size: huge,
                reason: format!(
                    "mmap(MAP_HUGETLB) of {} huge pages failed ({err}; {pool})",
                    map_len / huge
                ),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(BuildError::OutOfMemory { bytes: len })?;
        Ok(Region {
            ptr: base,
            len,
            backing: Backing::Mapped { base, len: map_len },
            page_size: Some(huge),
            huge: HugePages::Explicit,
            prefaulted: false,
            zeroed: true,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = align;
        Err(BuildError::HugePagesUnavailable {
            bytes: len,
            page_size: 2 << 20,
            reason: "explicit huge pages (MAP_HUGETLB) are supported on Linux only".into(),
        })
    }
}

/// Maps `len` bytes (a multiple of `page`) at an address aligned to
/// `align`: over-maps by `align` and unmaps the unaligned head and tail.
/// Returns the aligned base and `len`.
#[cfg(unix)]
fn map_aligned(len: usize, align: usize, page: usize) -> Result<(NonNull<u8>, usize), BuildError> {
    let extra = if align > page { align } else { 0 };
    let total = len
        .checked_add(extra)
        .filter(|&t| t <= isize::MAX as usize)
        .ok_or(BuildError::OutOfMemory { bytes: len })?;
    // SAFETY: an anonymous private mapping at an address the kernel picks;
    // it touches no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        let err = std::io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::ENOMEM) {
            BuildError::OutOfMemory { bytes: total }
        } else {
            BuildError::MapFailed {
                bytes: total,
                reason: err.to_string(),
            }
        });
    }
    let start = ptr as usize;
    let head = start.next_multiple_of(align.max(page)) - start;
    let tail = extra - head;
    // SAFETY: the head and tail are whole pages of the mapping we just made
    // (`align` and `start` are page multiples), outside `start + head ..
    // start + head + len`, which we keep. Failing to unmap them only wastes
    // address space, so the result is not checked.
    unsafe {
        if head > 0 {
            libc::munmap(ptr, head);
        }
        if tail > 0 {
            libc::munmap(ptr.cast::<u8>().add(head + len).cast(), tail);
        }
    }
    // SAFETY: inside the mapping, which is not at address zero.
    let base = unsafe { NonNull::new_unchecked(ptr.cast::<u8>().add(head)) };
    Ok((base, len))
}

#[cfg(unix)]
fn round_up(len: usize, grain: usize) -> Option<usize> {
    len.checked_next_multiple_of(grain)
        .filter(|&l| l <= isize::MAX as usize)
}

/// Unmaps a region's mapping.
///
/// # Safety
///
/// `base..base + len` is a mapping made by this module, not yet unmapped,
/// whose memory nobody uses any more.
#[cfg(unix)]
pub(super) unsafe fn unmap(base: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller. A failure cannot be acted on in
    // `Drop`; it would only leave the mapping in place.
    unsafe { libc::munmap(base.as_ptr().cast(), len) };
}

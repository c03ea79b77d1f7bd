//! Regions the arena maps itself (feature `mmap`): anonymous mappings with
//! and without prefault (residency checked with `mincore`), transparent
//! huge pages, explicit huge pages (the documented error where none are
//! reserved), and the options that contradict each other.
#![cfg(all(unix, feature = "mmap"))]

use std::num::NonZeroUsize;

use arenabuf::{
    BuddyArena, BuildError, Dealloc, FixedArena, HugePages, PagePolicy, Region, RegionInfo,
    RegionSource,
};
use bytes::BufMut;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

/// How many of the region's base pages are resident now (`mincore`).
fn resident_pages(info: &RegionInfo) -> usize {
    let page = info
        .page_size()
        .expect("mapped regions know their page size");
    let pages = info.len().div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: the region is a live mapping of `len` bytes starting at a page
    // boundary; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(info.as_ptr().cast(), info.len(), vec.as_mut_ptr().cast()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

#[test]
fn mapped_region_faults_pages_on_first_use_without_prefault() {
    let arena = FixedArena::builder(nz(64), nz(4096))
        .pages(PagePolicy::Mapped)
        .build()
        .unwrap();
    let info = arena.region();
    assert_eq!(info.source(), RegionSource::Mapped);
    assert_eq!(info.huge_pages(), HugePages::None);
    assert!(info.zeroed() && !info.prefaulted());
    assert_eq!(info.len(), 64 * 4096);
    assert_eq!(info.as_ptr() as usize % info.page_size().unwrap(), 0);
    assert_eq!(resident_pages(&info), 0, "nothing touched yet");
    let mut buf = arena.allocate().unwrap();
    buf.put_bytes(7, 4096);
    // One page, or one small folio where the kernel uses multi-size THP.
    let resident = resident_pages(&info);
    assert!(
        (1..64).contains(&resident),
        "the first buffer faulted its page in, not the region: {resident}"
    );
    let bytes = buf.freeze();
    assert!(bytes.iter().all(|&b| b == 7));
}

#[test]
fn mapped_region_with_prefault_is_resident_at_build() {
    let arena = BuddyArena::builder(nz(1 << 20), nz(4096))
        .pages(PagePolicy::Mapped)
        .prefault()
        .zero_on_release()
        .build()
        .unwrap();
    let info = arena.region();
    assert!(info.prefaulted() && info.zeroed());
    let pages = info.len() / info.page_size().unwrap();
    assert_eq!(resident_pages(&info), pages);
    // Fresh anonymous memory is zero: zero_on_release needs no memset.
    let mut buf = arena.allocate(nz(1 << 20)).unwrap();
    // SAFETY: reading the spare capacity as bytes: the arena promises
    // zeroed memory with zero_on_release.
    let spare = unsafe { std::slice::from_raw_parts(buf.chunk_mut().as_mut_ptr(), 1 << 20) };
    assert!(spare.iter().all(|&b| b == 0));
    buf.put_slice(b"mapped");
    assert_eq!(arena.offset_of(buf.as_ptr()), Some(0));
}

#[test]
fn transparent_huge_pages_are_aligned_and_reported() {
    let arena = FixedArena::builder(nz(4), nz(1 << 20))
        .pages(PagePolicy::TransparentHuge)
        .prefault()
        .build()
        .unwrap();
    let info = arena.region();
    assert_eq!(info.source(), RegionSource::Mapped);
    assert!(info.prefaulted());
    if cfg!(target_os = "linux") {
        assert_eq!(info.as_ptr() as usize % (2 << 20), 0, "2 MiB aligned");
    }
    #[cfg(target_os = "linux")]
    {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        let backed = info
            .transparent_huge_bytes()
            .expect("the region is in smaps");
        eprintln!(
            "THP policy `{}`: advice {:?}, {backed} of {} bytes on huge pages",
            thp.trim(),
            info.huge_pages(),
            info.len()
        );
        assert!(backed <= info.len());
        if thp.contains("[never]") {
            assert_eq!(backed, 0);
        }
    }
    let mut held: Vec<_> = (0..4).map(|_| arena.allocate().unwrap()).collect();
    for b in &mut held {
        b.put_bytes(3, 1 << 20);
    }
}

#[test]
fn explicit_huge_pages_map_or_say_none_are_reserved() {
    let free = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("HugePages_Free:")?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    let result = BuddyArena::builder(nz(2 << 20), nz(4096))
        .pages(PagePolicy::Huge)
        .build();
    if free == 0 || !cfg!(target_os = "linux") {
        let err = result.unwrap_err();
        match &err {
            BuildError::HugePagesUnavailable {
                bytes, page_size, ..
            } => {
                assert!(*page_size >= 2 << 20, "{err}");
                assert_eq!(bytes % page_size, 0, "{err}");
            }
            other => panic!("expected HugePagesUnavailable, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("nr_hugepages") && msg.contains("TransparentHuge"),
            "{msg}"
        );
        eprintln!("no huge pages reserved here: {msg}");
    } else {
        let arena = result.expect("huge pages are reserved");
        let info = arena.region();
        assert_eq!(info.huge_pages(), HugePages::Explicit);
        assert_eq!(info.as_ptr() as usize % info.page_size().unwrap(), 0);
        let mut buf = arena.allocate(nz(4096)).unwrap();
        buf.put_slice(b"huge");
        assert_eq!(&buf[..], b"huge");
    }
}

#[test]
fn pages_on_a_provided_region_is_an_error() {
    let pool: &'static mut [u8] = Box::leak(vec![0u8; 8192].into_boxed_slice());
    let err = FixedArena::builder_in(Region::from_static(pool), nz(4096))
        .pages(PagePolicy::TransparentHuge)
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidRegion { .. }), "{err}");
    assert!(err.to_string().contains("drop pages()"), "{err}");
}

#[test]
fn a_caller_mapping_is_unmapped_by_its_callback_once() {
    use std::ptr::NonNull;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let len = 1 << 16;
    // SAFETY: a fresh anonymous mapping.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let free = Dealloc::callback(move |p: NonNull<u8>, l| {
        counted.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the mapping made above; the arena is done with it.
        assert_eq!(unsafe { libc::munmap(p.as_ptr().cast(), l) }, 0);
    });
    // SAFETY: the mapping is ours alone until the callback unmaps it.
    let region = unsafe { Region::from_raw_parts(NonNull::new(ptr.cast()).unwrap(), len, free) };
    let arena = FixedArena::builder_in(region, nz(4096))
        .prefault()
        .build()
        .unwrap();
    assert_eq!(arena.slot_count(), 16);
    let frozen = {
        let mut b = arena.allocate().unwrap();
        b.put_slice(b"from a caller's mapping");
        b.freeze()
    };
    drop(arena);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    drop(frozen);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

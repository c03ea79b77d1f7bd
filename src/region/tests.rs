//! Regions the caller provides, under miri too: the raw constructor's
//! deallocation callback runs exactly once, after the last `Bytes`, on
//! whichever thread drops it; static regions; geometry and alignment.

use std::alloc::{Layout, alloc, dealloc};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BufMut;

use super::*;
use crate::{BuddyArena, FixedArena};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// A heap allocation handed over as a raw region whose callback frees it
/// and counts its calls (checking it gets back what it gave).
fn raw_region(len: usize, align: usize, calls: &Arc<AtomicUsize>) -> Region {
    let layout = Layout::from_size_align(len, align).unwrap();
    // SAFETY: non-zero size.
    let ptr = NonNull::new(unsafe { alloc(layout) }).unwrap();
    let calls = Arc::clone(calls);
    let expected = ptr.as_ptr() as usize;
    let free = Dealloc::callback(move |p, l| {
        assert_eq!((p.as_ptr() as usize, l), (expected, len));
        calls.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `p` came from `alloc(layout)` and the arena is done.
        unsafe { dealloc(p.as_ptr(), layout) }
    });
    // SAFETY: the allocation is ours alone until the callback frees it.
    unsafe { Region::from_raw_parts(ptr, len, free) }
}

#[test]
fn raw_fixed_region_is_freed_once_after_the_last_bytes() {
    let calls = Arc::new(AtomicUsize::new(0));
    // 1000 bytes of 96-byte slots: 10 slots, 40 bytes unused.
    let arena = FixedArena::builder_in(raw_region(1000, 64, &calls), nz(96))
        .build()
        .unwrap();
    assert_eq!((arena.slot_count(), arena.slot_capacity()), (10, 96));
    let info = arena.region();
    assert_eq!((info.len(), info.source()), (960, RegionSource::Caller));
    let mut buf = arena.allocate().unwrap();
    let slot = arena.slot_index(buf.chunk_mut().as_mut_ptr()).unwrap();
    assert!(slot < 10);
    buf.put_slice(b"kept past the arena");
    let bytes = buf.freeze();
    assert_eq!(info.offset_of(bytes.as_ptr()), Some(slot * 96));
    let tail = bytes.slice(5..);
    drop(arena);
    drop(bytes);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a slice still holds a slot"
    );
    // The last reference goes on another thread: the callback runs there.
    std::thread::spawn(move || assert_eq!(&tail[..], &b"kept past the arena"[5..]))
        .join()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn raw_buddy_region_is_freed_once_after_the_last_bytes() {
    let calls = Arc::new(AtomicUsize::new(0));
    // 3000 bytes with 64-byte blocks: the largest valid total is 2048.
    let arena = BuddyArena::builder_in(raw_region(3000, 8, &calls), nz(64))
        .zero_on_release()
        .build()
        .unwrap();
    assert_eq!(arena.total_size(), 2048);
    assert!(arena.region().zeroed());
    let mut a = arena.allocate(nz(100)).unwrap();
    let b = arena.allocate(nz(1000)).unwrap();
    a.put_slice(&[1; 100]);
    let frozen = a.freeze();
    drop((b, arena));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    drop(frozen);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_build_that_fails_gives_the_region_back_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let err = FixedArena::builder_in(raw_region(100, 8, &calls), nz(128))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::RegionTooSmall {
            region_len: 100,
            needed: 128
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let err = BuddyArena::builder_in(raw_region(100, 8, &calls), nz(48))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::MinBlockNotPowerOfTwo { .. }),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn static_region_serves_both_arenas_in_turn() {
    static mut POOL: [u8; 4096] = [0; 4096];
    // SAFETY: this test is the only user of `POOL`, and takes it once.
    let pool: &'static mut [u8] = unsafe { &mut *std::ptr::addr_of_mut!(POOL) };
    let arena = FixedArena::builder_in(Region::from_static(pool), nz(1024))
        .build()
        .unwrap();
    assert_eq!(arena.slot_count(), 4);
    assert_eq!(arena.region().source(), RegionSource::Static);
    let held: Vec<_> = (0..4).map(|_| arena.allocate().unwrap()).collect();
    assert!(arena.allocate().is_err());
    let mut slots: Vec<_> = held
        .iter()
        .map(|b| arena.slot_index(b.as_ptr()).unwrap())
        .collect();
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3]);
    drop(held);
    drop(arena);
}

#[test]
fn alignment_is_checked_and_says_what_to_change() {
    let calls = Arc::new(AtomicUsize::new(0));
    // A region at an odd address cannot give 64-byte aligned buffers.
    let layout = Layout::from_size_align(4096 + 1, 64).unwrap();
    // SAFETY: non-zero size.
    let ptr = NonNull::new(unsafe { alloc(layout) }).unwrap();
    // SAFETY: in bounds of the allocation.
    let odd = unsafe { ptr.add(1) };
    let counted = Arc::clone(&calls);
    let free = Dealloc::callback(move |p, _| {
        counted.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `p` is one byte into the block from `alloc(layout)`.
        unsafe { dealloc(p.as_ptr().sub(1), layout) }
    });
    // SAFETY: ours alone until the callback frees it.
    let region = unsafe { Region::from_raw_parts(odd, 4096, free) };
    let err = FixedArena::builder_in(region, nz(512))
        .buffer_alignment(nz(64))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::RegionMisaligned { alignment: 64, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("aligned to 64"), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let err = FixedArena::builder(nz(4), nz(100))
        .buffer_alignment(nz(64))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::SizeNotAligned {
            size: 100,
            alignment: 64,
            suggested: 128
        }
    );
    let err = BuddyArena::builder(nz(1024), nz(64))
        .buffer_alignment(nz(48))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::AlignmentNotPowerOfTwo {
            alignment: 48,
            suggested: 64
        }
    );
}

#[test]
fn large_alignment_on_the_heap_aligns_every_buffer() {
    let align = 8192;
    let arena = FixedArena::builder(nz(3), nz(align))
        .buffer_alignment(nz(align))
        .build()
        .unwrap();
    let held: Vec<_> = (0..3).map(|_| arena.allocate().unwrap()).collect();
    for b in &held {
        assert_eq!(b.as_ptr() as usize % align, 0);
    }
}

#[test]
fn prefault_touches_every_page_of_a_provided_region() {
    let calls = Arc::new(AtomicUsize::new(0));
    let arena = BuddyArena::builder_in(raw_region(1 << 14, 4096, &calls), nz(1024))
        .prefault()
        .build()
        .unwrap();
    assert!(arena.region().prefaulted());
    let mut buf = arena.allocate(nz(1 << 14)).unwrap();
    buf.put_bytes(9, 1 << 14);
    assert!(buf.iter().all(|&b| b == 9));
}

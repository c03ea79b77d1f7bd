use core::num::NonZeroUsize;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::vec::Vec;
use std::{format, thread};

use arenabuf::{
    AllocError, BuddyArena, BuildError, Dealloc, FixedArena, Region, RegionSource, write_prometheus,
};
use bytes::{BufMut, Bytes};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

#[test]
fn fixed_allocates_freezes_and_takes_slots_back() {
    let arena = FixedArena::builder(nz(4), nz(256)).build().unwrap();
    let mut held = Vec::new();
    for i in 0..4u8 {
        let mut buf = arena.allocate().unwrap();
        buf.put_bytes(i, 100);
        held.push(buf.freeze());
    }
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
    // A slice keeps its slot; the others go back.
    let kept: Bytes = held[2].slice(10..20);
    held.clear();
    assert_eq!(arena.metrics().live_slots, 1);
    assert_eq!(&kept[..], &[2u8; 10]);
    let again: Vec<_> = (0..3).map(|_| arena.allocate().unwrap()).collect();
    assert_eq!(arena.allocate().unwrap_err(), AllocError::ArenaFull);
    drop((again, kept));
    let m = arena.metrics();
    assert_eq!((m.live_slots, m.live_bytes), (0, 0));
    assert_eq!(m.alloc_count, 7);
    assert_eq!(m.alloc_failure_count, 2);
}

#[test]
fn buddy_splits_and_merges_back_to_one_block() {
    let arena = BuddyArena::builder(nz(4096), nz(64)).build().unwrap();
    let mut small = arena.allocate(nz(100)).unwrap();
    assert_eq!(small.capacity(), 128);
    small.put_slice(b"no_std");
    let small = small.freeze();
    let big = arena.allocate(nz(2048)).unwrap().freeze();
    // 128 + 2048 of 4096 are out: no block of 2048 is left.
    assert_eq!(arena.allocate(nz(2048)).unwrap_err(), AllocError::ArenaFull);
    assert_eq!(&small[..], b"no_std");
    drop((small, big));
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0);
    assert_eq!(m.largest_free_block, 4096);
    assert!(m.split_count > 0 && m.coalesce_count > 0, "{m:?}");
    // Merged again: the whole arena is one block.
    assert_eq!(arena.allocate(nz(4096)).unwrap().capacity(), 4096);
    let err = arena.allocate(nz(4097)).unwrap_err();
    assert_eq!(
        err,
        AllocError::RequestTooLarge {
            requested: 4097,
            max: 4096
        }
    );
}

#[test]
fn static_regions_serve_both_arenas() {
    static mut FIXED_POOL: [u8; 2048] = [0; 2048];
    static mut BUDDY_POOL: [u8; 2048] = [0; 2048];
    // SAFETY: this test is the only user of the pools, and takes each once.
    let (fixed_pool, buddy_pool): (&'static mut [u8], &'static mut [u8]) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(FIXED_POOL),
            &mut *core::ptr::addr_of_mut!(BUDDY_POOL),
        )
    };
    let fixed_base = fixed_pool.as_ptr() as usize;
    let fixed = FixedArena::builder_in(Region::from_static(fixed_pool), nz(512))
        .build()
        .unwrap();
    assert_eq!(fixed.slot_count(), 4);
    assert_eq!(fixed.region().source(), RegionSource::Static);
    let mut buf = fixed.allocate().unwrap();
    buf.put_slice(b"static");
    let frozen = buf.freeze();
    let at = frozen.as_ptr() as usize;
    assert!((fixed_base..fixed_base + 2048).contains(&at));
    assert!(fixed.slot_index(frozen.as_ptr()).is_some());

    let buddy = BuddyArena::builder_in(Region::from_static(buddy_pool), nz(256))
        .build()
        .unwrap();
    assert_eq!(buddy.total_size(), 2048);
    let block = buddy.allocate(nz(1024)).unwrap().freeze();
    assert_eq!(buddy.offset_of(block.as_ptr()).map(|o| o % 1024), Some(0));
    drop((frozen, block));
    assert_eq!(fixed.metrics().live_slots, 0);
    assert_eq!(buddy.metrics().live_bytes, 0);
}

#[test]
fn raw_region_is_freed_once_after_the_last_bytes() {
    let layout = core::alloc::Layout::from_size_align(4096, 64).unwrap();
    // SAFETY: non-zero size.
    let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) }).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let free = Dealloc::callback(move |p, len| {
        assert_eq!(len, 4096);
        counted.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `p` is the block `alloc(layout)` returned, freed only here.
        unsafe { std::alloc::dealloc(p.as_ptr(), layout) }
    });
    // SAFETY: the block is ours alone until the callback frees it.
    let region = unsafe { Region::from_raw_parts(ptr, 4096, free) };
    let arena = BuddyArena::builder_in(region, nz(512)).build().unwrap();
    let mut buf = arena.allocate(nz(600)).unwrap();
    buf.put_slice(b"outlives the arena");
    let bytes = buf.freeze();
    drop(arena);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "freed while Bytes live");
    let tail = bytes.slice(9..);
    drop(bytes);
    assert_eq!(&tail[..], b"the arena");
    drop(tail);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn errors_are_core_errors_that_say_what_to_change() {
    let err = BuddyArena::builder(nz(1000), nz(64)).build().unwrap_err();
    assert!(
        matches!(err, BuildError::TotalNotPowerOfTwoMultiple { .. }),
        "{err}"
    );
    let err: &dyn core::error::Error = &err;
    assert!(format!("{err}").contains("use e.g."), "{err}");
}

#[test]
fn metrics_render_without_std() {
    let arena = FixedArena::builder(nz(2), nz(64)).build().unwrap();
    let _held = arena.allocate().unwrap();
    let mut text = std::string::String::new();
    write_prometheus(&mut text, &[("nostd", arena.metrics().into())]).unwrap();
    assert!(
        text.contains("arenabuf_live_bytes{arena=\"nostd\"} 64\n"),
        "{text}"
    );
}

/// Threads share one cache shard and one starting word here (no
/// thread-locals without `std`), and the buddy lists a spin lock: what they
/// write stays theirs, and every slot and block comes back.
#[test]
fn threads_share_the_no_std_arenas_without_overlap() {
    const THREADS: usize = 4;
    const ROUNDS: usize = if cfg!(miri) { 50 } else { 5_000 };
    let fixed = FixedArena::builder(nz(6), nz(64)).build().unwrap();
    let buddy = BuddyArena::builder(nz(1024), nz(32)).build().unwrap();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (fixed, buddy) = (fixed.clone(), buddy.clone());
            thread::spawn(move || {
                let mark = t as u8 + 1;
                for round in 0..ROUNDS {
                    let mut buf = loop {
                        let got = if round % 2 == 0 {
                            fixed.allocate()
                        } else {
                            buddy.allocate(nz(32 << (round % 3)))
                        };
                        match got {
                            Ok(buf) => break buf,
                            Err(AllocError::ArenaFull) => thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    };
                    let len = buf.capacity();
                    buf.put_bytes(mark, len);
                    let bytes = buf.freeze();
                    thread::yield_now();
                    assert!(
                        bytes.iter().all(|&b| b == mark),
                        "thread {t} lost its bytes"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(fixed.metrics().live_slots, 0);
    let m = buddy.metrics();
    assert_eq!((m.live_bytes, m.largest_free_block), (0, 1024));
    let all: Vec<_> = (0..6).map(|_| fixed.allocate().unwrap()).collect();
    assert_eq!(all.len(), 6);
}

#[test]
fn auto_spill_moves_to_the_heap_and_frees_the_slot() {
    let arena = FixedArena::builder(nz(1), nz(16))
        .auto_spill()
        .build()
        .unwrap();
    let mut buf = arena.allocate().unwrap();
    buf.put_slice(b"0123456789");
    buf.put_slice(b"abcdefghij"); // 20 bytes: more than the slot holds
    assert!(buf.is_spilled());
    assert_eq!(arena.metrics().live_slots, 0);
    assert_eq!(arena.metrics().spill_count, 1);
    // The slot is free again while the spilled buffer lives on.
    let other = arena.allocate().unwrap();
    assert_eq!(&buf.freeze()[..], b"0123456789abcdefghij");
    drop(other);
}

//! Bad configurations give a `BuildError`, never a panic.

use std::num::NonZeroUsize;

use arenabuf::{BuddyArena, FixedArena};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn fixed_err(slots: usize, cap: usize, spill: bool) {
    let mut builder = FixedArena::builder(nz(slots), nz(cap));
    if spill {
        builder = builder.auto_spill();
    }
    match builder.build() {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let _boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
        }
        Ok(_) => panic!("fixed {slots} x {cap} (spill: {spill}) should be rejected"),
    }
}

fn buddy_err(total: usize, min: usize) {
    match BuddyArena::builder(nz(total), nz(min)).build() {
        Err(e) => {
            assert!(!e.to_string().is_empty());
            let _boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
        }
        Ok(_) => panic!("buddy total {total} / min {min} should be rejected"),
    }
}

#[test]
fn fixed_size_overflowing_usize() {
    for spill in [false, true] {
        fixed_err(usize::MAX, 2, spill);
        fixed_err(2, usize::MAX, spill);
        fixed_err(usize::MAX / 2 + 1, 2, spill);
        fixed_err(usize::MAX, usize::MAX, spill);
        fixed_err(1 << (usize::BITS / 2), 1 << (usize::BITS / 2), spill);
    }
}

#[test]
fn fixed_size_beyond_isize_max() {
    // Fits in usize but no allocation may exceed isize::MAX bytes.
    fixed_err(1, isize::MAX as usize + 1, false);
    fixed_err(2, isize::MAX as usize / 2 + 1, false);
    fixed_err(usize::MAX / 2, 2, false);
}

#[test]
fn buddy_min_not_power_of_two() {
    buddy_err(3000 * 4, 3000);
    buddy_err(12, 3);
    buddy_err(3, 3);
    buddy_err(96, 24);
}

#[test]
fn buddy_total_not_power_of_two_multiple_of_min() {
    buddy_err(3 * 4096, 4096);
    buddy_err(5 * 4096, 4096);
    buddy_err(10_000, 4096);
    buddy_err(4096 + 1, 4096);
    buddy_err(6, 2);
}

#[test]
fn buddy_total_smaller_than_min() {
    buddy_err(2048, 4096);
    buddy_err(1, 2);
}

#[test]
fn buddy_total_beyond_isize_max() {
    let top = 1usize << (usize::BITS - 1); // a power of two > isize::MAX
    buddy_err(top, 4096);
    buddy_err(top, 1);
    buddy_err(top, top);
    buddy_err(usize::MAX, 1);
}

#[test]
fn valid_configurations_build() {
    assert!(FixedArena::builder(nz(1), nz(1)).build().is_ok());
    assert!(
        FixedArena::builder(nz(4), nz(1000))
            .auto_spill()
            .build()
            .is_ok()
    );
    assert!(FixedArena::builder(nz(1024), nz(4096)).build().is_ok());
    assert!(BuddyArena::builder(nz(1), nz(1)).build().is_ok());
    assert!(BuddyArena::builder(nz(4096), nz(4096)).build().is_ok());
    assert!(BuddyArena::builder(nz(1 << 20), nz(64)).build().is_ok());
    assert!(BuddyArena::builder(nz(1 << 16), nz(1)).build().is_ok());
}

#[test]
#[cfg(target_pointer_width = "64")]
fn buddy_too_many_blocks() {
    // 2^32 minimum blocks of one byte: more than the arena can index.
    buddy_err(1 << 32, 1);
}

#[test]
#[cfg(target_pointer_width = "64")]
fn memory_the_system_cannot_provide_is_an_error() {
    // 4 EiB fits in isize but no 64-bit address space can hold it: the
    // system allocator fails, and that must surface as a BuildError.
    fixed_err(1, 1 << 62, false);
    fixed_err(1 << 20, 1 << 42, true);
    buddy_err(1 << 62, 1 << 40);
}

#[test]
fn caller_regions_too_small_or_misused_say_what_to_change() {
    use arenabuf::{BuildError, Region};

    let tiny: &'static mut [u8] = Box::leak(vec![0u8; 100].into_boxed_slice());
    let err = BuddyArena::builder_in(Region::from_static(tiny), nz(128))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::RegionTooSmall {
            region_len: 100,
            needed: 128
        }
    );
    assert!(
        err.to_string().contains("provide at least 128 bytes"),
        "{err}"
    );

    let empty: &'static mut [u8] = Box::leak(Vec::new().into_boxed_slice());
    let err = FixedArena::builder_in(Region::from_static(empty), nz(1))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::RegionTooSmall { .. }), "{err}");

    // The largest valid buddy total inside 5000 bytes of 256 B blocks.
    let pool: &'static mut [u8] = Box::leak(vec![0u8; 5000].into_boxed_slice());
    let arena = BuddyArena::builder_in(Region::from_static(pool), nz(256))
        .build()
        .unwrap();
    assert_eq!((arena.total_size(), arena.region().len()), (4096, 4096));
}

#[test]
fn nearest_geometry_instead_of_an_error() {
    // The geometry error names the size that builder_nearest picks.
    let err = BuddyArena::builder(nz(1000), nz(16)).build().unwrap_err();
    assert!(err.to_string().contains("use e.g. 512"), "{err}");
    let arena = BuddyArena::builder_nearest(nz(1000), nz(16))
        .build()
        .unwrap();
    assert_eq!((arena.total_size(), arena.min_block_size()), (512, 16));
    let arena = BuddyArena::builder_nearest(nz(3 << 20), nz(3000))
        .build()
        .unwrap();
    assert_eq!(
        (arena.total_size(), arena.min_block_size()),
        (2 << 20, 4096)
    );
}

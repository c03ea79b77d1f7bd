//! Writing past a buffer's capacity: a panic without auto-spill, a move to
//! the heap (releasing the arena slot at once) with it.

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};

use arenabuf::{Buffer, FixedArena};
use bytes::BufMut;

const CAP: usize = 16;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn strict(slots: usize) -> FixedArena {
    FixedArena::builder(nz(slots), nz(CAP))
        .build()
        .expect("valid configuration")
}

fn spilling(slots: usize) -> FixedArena {
    FixedArena::builder(nz(slots), nz(CAP))
        .auto_spill()
        .build()
        .expect("valid configuration")
}

fn seq(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(|i| i as u8).collect()
}

#[test]
#[should_panic]
fn put_slice_past_capacity_panics_without_auto_spill() {
    let arena = strict(1);
    let mut buf = arena.allocate().expect("slot");
    buf.put_slice(&seq(0, CAP + 1));
}

#[test]
#[should_panic]
fn put_u8_on_full_buffer_panics_without_auto_spill() {
    let arena = strict(1);
    let mut buf = arena.allocate().expect("slot");
    buf.put_slice(&seq(0, CAP));
    buf.put_u8(0);
}

#[test]
fn overflow_panic_leaves_arena_usable() {
    let arena = strict(1);
    let mut buf = arena.allocate().expect("slot");
    buf.put_slice(&seq(0, 10));
    assert_eq!(buf.remaining_mut(), CAP - 10);
    let result = catch_unwind(AssertUnwindSafe(move || {
        buf.put_slice(&seq(10, CAP)); // 10 + 16 > 16
    }));
    assert!(result.is_err(), "writing past capacity must panic");
    // The buffer was dropped during unwinding: its slot is back.
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0);
    assert_eq!(m.spill_count, 0);
    let mut again = arena.allocate().expect("slot released by unwinding");
    again.put_slice(&seq(0, CAP));
    assert_eq!(&again[..], &seq(0, CAP)[..]);
}

#[test]
fn strict_buffer_never_spills_at_exact_capacity() {
    let arena = strict(1);
    let mut buf = arena.allocate().expect("slot");
    buf.put_slice(&seq(0, CAP));
    assert_eq!(buf.remaining_mut(), 0);
    assert!(!buf.is_spilled());
    let bytes = buf.freeze();
    assert_eq!(&bytes[..], &seq(0, CAP)[..]);
}

#[test]
fn auto_spill_moves_to_heap_and_releases_slot_at_once() {
    let arena = spilling(1);
    let mut buf: Buffer = arena.allocate().expect("slot");
    buf.put_slice(&seq(0, 10));
    assert!(!buf.is_spilled());
    assert_eq!(arena.metrics().live_bytes, CAP);
    assert!(arena.allocate().is_err(), "the only slot is in use");

    // 10 + 20 > 16: the buffer spills.
    buf.put_slice(&seq(10, 20));
    assert!(buf.is_spilled());
    assert_eq!(buf.len(), 30);
    assert!(buf.capacity() >= 30);
    assert_eq!(&buf[..], &seq(0, 30)[..]);

    let m = arena.metrics();
    assert_eq!(m.spill_count, 1);
    assert_eq!(
        m.live_bytes, 0,
        "slot must be released right after the spill"
    );

    // The single slot is available again while the spilled buffer lives.
    let mut other = arena.allocate().expect("slot released by the spill");
    other.put_slice(b"other");

    // The spilled buffer keeps growing, and freezes fine.
    for i in 0..1000usize {
        buf.put_u8((30 + i) as u8);
    }
    buf.put_slice(&seq(1030, 4000));
    assert_eq!(buf.len(), 5030);
    let bytes = buf.freeze();
    assert_eq!(&bytes[..], &seq(0, 5030)[..]);
    assert_eq!(&other[..], b"other");

    let m = arena.metrics();
    assert_eq!(m.spill_count, 1);
    assert_eq!(m.live_bytes, CAP); // only `other`
    drop(other);
    assert_eq!(arena.metrics().live_bytes, 0);
    // The spilled bytes outlive the arena too.
    drop(arena);
    assert_eq!(bytes.len(), 5030);
}

#[test]
fn auto_spill_exact_fill_then_one_more_byte() {
    let arena = spilling(2);
    let mut buf = arena.allocate().expect("slot");
    buf.put_slice(&seq(0, CAP));
    assert!(
        !buf.is_spilled(),
        "filling exactly to capacity must not spill"
    );
    assert_eq!(arena.metrics().spill_count, 0);

    buf.put_u8(CAP as u8);
    assert!(buf.is_spilled());
    assert_eq!(&buf[..], &seq(0, CAP + 1)[..]);
    let m = arena.metrics();
    assert_eq!(m.spill_count, 1);
    assert_eq!(m.live_bytes, 0);

    // A spilled buffer dropped without freezing: nothing more to release.
    drop(buf);
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0);
    assert_eq!(m.spill_count, 1);
    let a = arena.allocate().expect("slot");
    let b = arena.allocate().expect("slot");
    assert!(arena.allocate().is_err());
    drop((a, b));
}

#[test]
fn auto_spill_buffers_that_fit_behave_like_strict_ones() {
    let arena = spilling(1);
    for round in 0..50usize {
        let mut buf = arena.allocate().expect("slot");
        buf.put_slice(&seq(round, CAP));
        assert!(!buf.is_spilled());
        let ptr = buf.as_ptr();
        let bytes = buf.freeze();
        assert_eq!(bytes.as_ptr(), ptr, "in-arena freeze must not copy");
        assert_eq!(&bytes[..], &seq(round, CAP)[..]);
        assert!(arena.allocate().is_err());
    }
    let m = arena.metrics();
    assert_eq!(m.spill_count, 0);
    assert_eq!(m.alloc_count, 50);
    assert_eq!(m.live_bytes, 0);
}

#[test]
fn many_spills_are_counted() {
    let arena = spilling(2);
    let mut spilled = Vec::new();
    for round in 0..10usize {
        let mut buf = arena.allocate().expect("slot");
        buf.put_slice(&seq(round, CAP * 3));
        assert!(buf.is_spilled());
        // The slot is back at once, so a 2-slot arena never runs out here.
        spilled.push(buf.freeze());
        assert_eq!(arena.metrics().live_bytes, 0);
    }
    let m = arena.metrics();
    assert_eq!(m.spill_count, 10);
    assert_eq!(m.alloc_count, 10);
    assert_eq!(m.alloc_failure_count, 0);
    for (round, b) in spilled.iter().enumerate() {
        assert_eq!(&b[..], &seq(round, CAP * 3)[..]);
    }
}

mod buddy {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use arenabuf::BuddyArena;
    use bytes::BufMut;

    use super::{nz, seq};

    #[test]
    fn buddy_overflow_panics_without_auto_spill() {
        let arena = BuddyArena::builder(nz(1024), nz(64))
            .build()
            .expect("valid configuration");
        let mut buf = arena.allocate(nz(100)).expect("block");
        assert_eq!(buf.capacity(), 128);
        buf.put_slice(&seq(0, 128));
        let result = catch_unwind(AssertUnwindSafe(move || buf.put_u8(0)));
        assert!(result.is_err(), "writing past capacity must panic");
        let m = arena.metrics();
        assert_eq!(m.live_bytes, 0);
        assert_eq!(m.spill_count, 0);
        assert_eq!(m.largest_free_block, 1024);
    }

    #[test]
    fn buddy_auto_spill_releases_block_at_once() {
        let arena = BuddyArena::builder(nz(1024), nz(64))
            .auto_spill()
            .build()
            .expect("valid configuration");
        let mut buf = arena.allocate(nz(1024)).expect("the whole arena");
        buf.put_slice(&seq(0, 1000));
        assert!(!buf.is_spilled());
        assert!(arena.allocate(nz(1)).is_err(), "arena is full");

        buf.put_slice(&seq(1000, 100));
        assert!(buf.is_spilled());
        let m = arena.metrics();
        assert_eq!(m.spill_count, 1);
        assert_eq!(
            m.live_bytes, 0,
            "block must be released right after the spill"
        );
        assert_eq!(m.largest_free_block, 1024);

        let whole = arena
            .allocate(nz(1024))
            .expect("block released by the spill");
        assert_eq!(whole.capacity(), 1024);
        let bytes = buf.freeze();
        assert_eq!(&bytes[..], &seq(0, 1100)[..]);
        drop(whole);
        assert_eq!(arena.metrics().live_bytes, 0);
    }
}

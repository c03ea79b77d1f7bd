//! `FixedArena` behaviour: slot reclaim after the last `Bytes` handle drops,
//! exhaustion and recovery, cross-thread drops and handle lifetimes.

use std::num::NonZeroUsize;
use std::sync::mpsc;
use std::thread;

use arenabuf::{AllocError, BuddyArena, Buffer, FixedArena};
use bytes::{BufMut, Bytes};

const SLOT: usize = 256;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn arena(slots: usize) -> FixedArena {
    FixedArena::builder(nz(slots), nz(SLOT))
        .build()
        .expect("valid configuration")
}

fn pattern(tag: u8, i: usize) -> u8 {
    tag.wrapping_mul(31).wrapping_add(i as u8)
}

fn filled(arena: &FixedArena, tag: u8, len: usize) -> Buffer {
    let mut buf = arena.allocate().expect("a free slot");
    let data: Vec<u8> = (0..len).map(|i| pattern(tag, i)).collect();
    buf.put_slice(&data);
    buf
}

fn assert_pattern(data: &[u8], tag: u8, offset: usize) {
    for (i, b) in data.iter().enumerate() {
        assert_eq!(
            *b,
            pattern(tag, offset + i),
            "byte {} of tag {tag}",
            offset + i
        );
    }
}

/// Number of slots the metrics say are in use (cross-checked with `live_bytes`).
fn live_slots(arena: &FixedArena) -> usize {
    let m = arena.metrics();
    assert_eq!(m.live_bytes, m.live_slots * arena.slot_capacity(), "{m:?}");
    assert_eq!(m.reserved_bytes, arena.slot_count() * arena.slot_capacity());
    m.live_slots
}

fn assert_full(arena: &FixedArena) {
    match arena.allocate() {
        Err(AllocError::ArenaFull) => {}
        Err(other) => panic!("expected ArenaFull, got {other:?}"),
        Ok(_) => panic!("expected ArenaFull, but allocation succeeded"),
    }
}

/// Allocates every slot at once (proving all are free), then releases them.
fn assert_all_slots_free(arena: &FixedArena) {
    assert_eq!(live_slots(arena), 0);
    let all: Vec<Buffer> = (0..arena.slot_count())
        .map(|i| {
            arena
                .allocate()
                .unwrap_or_else(|e| panic!("slot {i} of {} not free: {e:?}", arena.slot_count()))
        })
        .collect();
    assert_eq!(live_slots(arena), arena.slot_count());
    assert_full(arena);
    drop(all);
    assert_eq!(live_slots(arena), 0);
}

#[test]
fn handles_are_clone_send_sync() {
    fn handle<T: Clone + Send + Sync + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    handle::<FixedArena>();
    handle::<BuddyArena>();
    sendable::<Buffer>();
    sendable::<AllocError>();
}

#[test]
fn accessors_and_fresh_buffer() {
    let arena = arena(3);
    assert_eq!(arena.slot_count(), 3);
    assert_eq!(arena.slot_capacity(), SLOT);

    let mut buf = arena.allocate().expect("free slot");
    assert!(buf.is_empty());
    assert_eq!(buf.len(), 0);
    assert_eq!(buf.capacity(), SLOT);
    assert_eq!(buf.remaining_mut(), SLOT);
    assert!(!buf.is_spilled());

    buf.put_slice(b"hello");
    buf.put_u8(b' ');
    buf.put_slice(b"world");
    assert_eq!(&buf[..], b"hello world");
    assert_eq!(buf.len(), 11);
    assert!(!buf.is_empty());
    assert_eq!(buf.remaining_mut(), SLOT - 11);
    assert_eq!(live_slots(&arena), 1);

    let m = arena.metrics();
    assert_eq!(m.alloc_count, 1);
    assert_eq!(m.alloc_failure_count, 0);
    assert_eq!(m.spill_count, 0);
}

#[test]
fn freeze_is_zero_copy() {
    let arena = arena(2);
    let buf = filled(&arena, 7, SLOT);
    let ptr = buf.as_ptr();
    let bytes = buf.freeze();
    assert_eq!(bytes.as_ptr(), ptr, "freeze must not copy");
    assert_eq!(bytes.len(), SLOT);
    assert_pattern(&bytes, 7, 0);
    assert_eq!(live_slots(&arena), 1);
    drop(bytes);
    assert_all_slots_free(&arena);
}

#[test]
fn full_capacity_write_and_empty_freeze() {
    let arena = arena(1);
    let empty = arena.allocate().expect("free slot").freeze();
    assert!(empty.is_empty());
    drop(empty);
    assert_eq!(live_slots(&arena), 0);

    let full = filled(&arena, 3, SLOT);
    assert_eq!(full.remaining_mut(), 0);
    let bytes = full.freeze();
    assert_pattern(&bytes, 3, 0);
    drop(bytes);
    assert_all_slots_free(&arena);
}

#[test]
fn dropping_unfrozen_buffer_releases_slot() {
    let arena = arena(1);
    for round in 0..10u8 {
        let buf = filled(&arena, round, 100);
        assert_full(&arena);
        drop(buf);
        assert_eq!(live_slots(&arena), 0);
    }
    let m = arena.metrics();
    assert_eq!(m.alloc_count, 10);
    assert_eq!(m.alloc_failure_count, 10);
    assert_all_slots_free(&arena);
}

/// Every drop order of four handles sharing one slot: the slot stays in use
/// until the very last handle is gone, then comes back.
#[test]
fn slot_reclaimed_after_last_clone_or_slice_drops() {
    let arena = arena(1);
    let orders = permutations(4);
    assert_eq!(orders.len(), 24);
    for (round, order) in orders.iter().enumerate() {
        let tag = round as u8;
        let mut whole = filled(&arena, tag, 64).freeze();
        let head = whole.split_to(8); // [0, 8)
        let clone = whole.clone(); // [8, 64)
        let slice = clone.slice(10..20); // [18, 28)
        assert_pattern(&head, tag, 0);
        assert_pattern(&whole, tag, 8);
        assert_pattern(&clone, tag, 8);
        assert_pattern(&slice, tag, 18);

        // (handle, offset of its first byte in the original buffer)
        let mut handles: Vec<Option<(Bytes, usize)>> = vec![
            Some((whole, 8)),
            Some((head, 0)),
            Some((clone, 8)),
            Some((slice, 18)),
        ];
        for (step, &idx) in order.iter().enumerate() {
            assert_eq!(live_slots(&arena), 1, "order {order:?}, step {step}");
            assert_full(&arena);
            // Surviving handles still read correctly.
            for (h, offset) in handles.iter().flatten() {
                assert_pattern(h, tag, *offset);
            }
            handles[idx] = None;
        }
        assert_eq!(live_slots(&arena), 0, "order {order:?}: slot not reclaimed");
        assert_all_slots_free(&arena);
    }
}

#[test]
fn reclaim_tracks_live_bytes_across_many_slots() {
    let arena = arena(8);
    for round in 0..20u8 {
        let buffers: Vec<Buffer> = (0..8)
            .map(|i| filled(&arena, round ^ i, 32 + i as usize))
            .collect();
        let mut ptrs: Vec<usize> = buffers.iter().map(|b| b.as_ptr() as usize).collect();
        ptrs.sort_unstable();
        ptrs.dedup();
        assert_eq!(ptrs.len(), 8, "two live buffers share a slot");
        for w in ptrs.windows(2) {
            assert!(
                w[1] - w[0] >= SLOT,
                "slots overlap: {:#x} and {:#x}",
                w[0],
                w[1]
            );
        }
        assert_eq!(live_slots(&arena), 8);
        assert_full(&arena);

        // Freeze half, keep clones of some, drop in a round-dependent order.
        let mut frozen: Vec<Bytes> = Vec::new();
        let mut unfrozen: Vec<Buffer> = Vec::new();
        for (i, b) in buffers.into_iter().enumerate() {
            if i % 2 == 0 {
                let bytes = b.freeze();
                if i % 4 == 0 {
                    frozen.push(bytes.slice(1..));
                }
                frozen.push(bytes);
            } else {
                unfrozen.push(b);
            }
        }
        if round % 2 == 0 {
            frozen.reverse();
        }
        let mut expected_live = 8;
        for b in unfrozen {
            drop(b);
            expected_live -= 1;
            assert_eq!(live_slots(&arena), expected_live);
        }
        drop(frozen);
        assert_eq!(live_slots(&arena), 0);
    }
    assert_all_slots_free(&arena);
}

#[test]
fn vec_conversion_releases_slot() {
    let arena = arena(1);
    let bytes = filled(&arena, 9, 50).freeze();
    let v: Vec<u8> = Vec::from(bytes);
    assert_eq!(v.len(), 50);
    assert_pattern(&v, 9, 0);
    assert_all_slots_free(&arena);
}

#[test]
fn arena_full_and_recovery() {
    let arena = arena(4);
    let mut bufs: Vec<Buffer> = (0..4).map(|i| filled(&arena, i, 10)).collect();
    assert_full(&arena);
    assert_full(&arena);
    let m = arena.metrics();
    assert_eq!(m.alloc_count, 4);
    assert_eq!(m.alloc_failure_count, 2);

    // Release one unfrozen buffer: exactly one allocation succeeds again.
    drop(bufs.pop());
    let again = filled(&arena, 42, 10);
    assert_full(&arena);

    // Release via frozen bytes.
    let frozen = bufs.pop().expect("buffer").freeze();
    assert_full(&arena);
    drop(frozen);
    let again2 = filled(&arena, 43, 10);
    assert_full(&arena);

    let m = arena.metrics();
    assert_eq!(m.alloc_count, 6);
    assert_eq!(m.alloc_failure_count, 5);

    drop((bufs, again, again2));
    assert_all_slots_free(&arena);
}

#[test]
fn cloned_arena_handles_share_slots() {
    let a = arena(2);
    let b = a.clone();
    let x = a.allocate().expect("slot");
    let y = b.allocate().expect("slot");
    assert_full(&a);
    assert_full(&b);
    assert_eq!(live_slots(&a), 2);
    assert_eq!(a.metrics().alloc_failure_count, 2);
    drop(x);
    drop(y);
    assert_all_slots_free(&b);
}

#[test]
fn bytes_dropped_on_another_thread() {
    let arena = arena(2);
    let bytes = filled(&arena, 5, 200).freeze();
    let keep = bytes.slice(100..);
    thread::spawn(move || {
        assert_pattern(&bytes, 5, 0);
        drop(bytes);
    })
    .join()
    .expect("thread");
    // A slice is still alive here.
    assert_eq!(live_slots(&arena), 1);
    assert_pattern(&keep, 5, 100);

    // Hand the last handle over through a channel and drop it there.
    let (tx, rx) = mpsc::channel::<Bytes>();
    let worker = thread::spawn(move || {
        for b in rx {
            assert_eq!(b.len(), 100);
            drop(b);
        }
    });
    tx.send(keep).expect("send");
    drop(tx);
    worker.join().expect("worker");
    assert_all_slots_free(&arena);
}

#[test]
fn buffer_moved_to_another_thread_and_frozen_there() {
    let arena = arena(1);
    let mut buf = arena.allocate().expect("slot");
    buf.put_slice(b"from main ");
    let bytes = thread::spawn(move || {
        buf.put_slice(b"and worker");
        buf.freeze()
    })
    .join()
    .expect("thread");
    assert_eq!(&bytes[..], b"from main and worker");
    assert_full(&arena);
    drop(bytes);
    assert_all_slots_free(&arena);
}

#[test]
fn arena_handles_dropped_before_bytes() {
    let arena = arena(2);
    let other_handle = arena.clone();
    let bytes = filled(&arena, 11, SLOT).freeze();
    let unfrozen = filled(&arena, 12, 20);
    drop(arena);
    drop(other_handle);

    // Data is still readable after every arena handle is gone.
    assert_pattern(&bytes, 11, 0);
    let slice = bytes.slice(SLOT - 10..);

    // An unfrozen buffer also keeps working and can still be frozen.
    let mut unfrozen = unfrozen;
    unfrozen.put_slice(&[pattern(12, 20), pattern(12, 21)]);
    let late = unfrozen.freeze();
    assert_pattern(&late, 12, 0);
    assert_eq!(late.len(), 22);

    let joined = thread::spawn(move || {
        assert_pattern(&bytes, 11, 0);
        drop(bytes);
        late
    })
    .join()
    .expect("thread");
    assert_pattern(&slice, 11, SLOT - 10);
    drop(slice);
    drop(joined);
}

#[test]
fn alloc_error_is_a_std_error() {
    let arena = arena(1);
    let _held = arena.allocate().expect("slot");
    let err = arena.allocate().expect_err("arena is full");
    assert!(matches!(err, AllocError::ArenaFull), "{err:?}");
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
    assert!(!boxed.to_string().is_empty());
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn go(prefix: &mut Vec<usize>, n: usize, out: &mut Vec<Vec<usize>>) {
        if prefix.len() == n {
            out.push(prefix.clone());
            return;
        }
        for i in 0..n {
            if !prefix.contains(&i) {
                prefix.push(i);
                go(prefix, n, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    go(&mut Vec::new(), n, &mut out);
    out
}

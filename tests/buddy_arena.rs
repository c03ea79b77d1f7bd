//! `BuddyArena` behaviour: size rounding, splitting, coalescing,
//! `largest_free_block` accuracy, exhaustion and handle lifetimes.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::thread;

use arenabuf::{AllocError, BuddyArena, Buffer};
use bytes::{BufMut, Bytes};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn buddy(total: usize, min: usize) -> BuddyArena {
    BuddyArena::builder(nz(total), nz(min))
        .build()
        .expect("valid configuration")
}

fn alloc(arena: &BuddyArena, size: usize) -> Result<Buffer, AllocError> {
    arena.allocate(nz(size))
}

fn expected_capacity(request: usize, min: usize) -> usize {
    request.next_power_of_two().max(min)
}

fn assert_full(arena: &BuddyArena, size: usize) {
    match alloc(arena, size) {
        Err(AllocError::ArenaFull) => {}
        Err(other) => panic!("request {size}: expected ArenaFull, got {other:?}"),
        Ok(b) => panic!(
            "request {size}: expected ArenaFull, got a {}-byte block",
            b.capacity()
        ),
    }
}

/// The whole arena is one free block again and can be handed out in one piece.
fn assert_fully_coalesced(arena: &BuddyArena) {
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0, "live bytes left: {m:?}");
    assert_eq!(
        m.largest_free_block,
        arena.total_size(),
        "not coalesced: {m:?}"
    );
    let all = alloc(arena, arena.total_size()).expect("whole arena allocatable");
    assert_eq!(all.capacity(), arena.total_size());
    assert_eq!(arena.metrics().largest_free_block, 0);
    assert_full(arena, 1);
    drop(all);
    assert_eq!(arena.metrics().largest_free_block, arena.total_size());
}

#[test]
fn accessors() {
    let arena = buddy(1 << 16, 256);
    assert_eq!(arena.total_size(), 1 << 16);
    assert_eq!(arena.min_block_size(), 256);
    let m = arena.metrics();
    assert_eq!(m.live_bytes, 0);
    assert_eq!(m.largest_free_block, 1 << 16);
    assert_eq!(m.alloc_count, 0);
}

#[test]
fn capacity_rounds_up_to_power_of_two() {
    let total = 1 << 16;
    let min = 256;
    let arena = buddy(total, min);
    let cases = [
        (1, 256),
        (2, 256),
        (255, 256),
        (256, 256),
        (257, 512),
        (300, 512),
        (512, 512),
        (1000, 1024),
        (4097, 8192),
        (total / 2 + 1, total),
        (total, total),
    ];
    for (request, expected) in cases {
        let mut buf = alloc(&arena, request).unwrap_or_else(|e| panic!("request {request}: {e:?}"));
        assert_eq!(buf.capacity(), expected, "request {request}");
        assert_eq!(expected_capacity(request, min), expected);
        assert!(buf.is_empty());
        assert_eq!(buf.remaining_mut(), expected);
        assert_eq!(arena.metrics().live_bytes, expected, "request {request}");
        // The whole rounded capacity is writable.
        buf.put_bytes(0xAB, expected);
        assert!(buf.iter().all(|&b| b == 0xAB));
        assert!(!buf.is_spilled());
        drop(buf);
        assert_eq!(arena.metrics().live_bytes, 0);
    }
    assert_fully_coalesced(&arena);
}

#[test]
fn request_too_large() {
    let arena = buddy(4096, 64);
    for request in [4097, 8192, usize::MAX / 2, usize::MAX / 2 + 2, usize::MAX] {
        match alloc(&arena, request) {
            Err(AllocError::RequestTooLarge { .. }) => {}
            other => panic!("request {request}: expected RequestTooLarge, got {other:?}"),
        }
    }
    assert_eq!(arena.metrics().live_bytes, 0);
    // The arena is unaffected.
    assert_fully_coalesced(&arena);
}

#[test]
fn request_too_large_is_not_arena_full() {
    // Even when the arena is completely full, an oversized request reports
    // RequestTooLarge (it could never succeed), not ArenaFull.
    let arena = buddy(4096, 64);
    let _all = alloc(&arena, 4096).expect("whole arena");
    assert!(matches!(
        alloc(&arena, 4097),
        Err(AllocError::RequestTooLarge { .. })
    ));
    assert_full(&arena, 64);
}

#[test]
fn arena_full_and_recovery() {
    let arena = buddy(8192, 512);
    let a = alloc(&arena, 4096).expect("half");
    let mut b = alloc(&arena, 3000).expect("other half");
    assert_eq!(b.capacity(), 4096);
    b.put_bytes(9, 3000);
    assert_full(&arena, 1);
    assert_full(&arena, 4096);
    let m = arena.metrics();
    assert_eq!(m.alloc_count, 2);
    assert_eq!(m.alloc_failure_count, 2);
    assert_eq!(m.largest_free_block, 0);
    assert_eq!(m.live_bytes, 8192);

    drop(a);
    assert_eq!(arena.metrics().largest_free_block, 4096);
    assert_full(&arena, 4097);
    let c = alloc(&arena, 4096).expect("recovered half");
    assert_full(&arena, 1);

    let frozen = b.freeze();
    let tail = frozen.slice(10..20);
    drop(frozen);
    assert_full(&arena, 1); // the slice still pins the block
    drop(tail);
    let d = alloc(&arena, 512).expect("block back after last slice");
    let m = arena.metrics();
    assert_eq!(m.alloc_failure_count, 5);
    assert_eq!(m.alloc_count, 4);
    drop((c, d));
    assert_fully_coalesced(&arena);
}

#[test]
fn split_and_coalesce_counts() {
    let min = 64;
    let levels = 5;
    let total = min << levels;
    let arena = buddy(total, min);
    let before = arena.metrics();
    assert_eq!(before.split_count, 0);

    // The first minimum block of a fresh arena needs one split per level.
    let small = alloc(&arena, 1).expect("min block");
    assert_eq!(small.capacity(), min);
    let m = arena.metrics();
    assert_eq!(m.split_count, levels as u64, "{m:?}");
    assert_eq!(m.largest_free_block, total / 2);
    assert_eq!(m.live_bytes, min);

    // Its buddy is free: another min block needs no further split.
    let small2 = alloc(&arena, min).expect("buddy block");
    assert_eq!(arena.metrics().split_count, levels as u64);

    drop(small);
    drop(small2);
    let m = arena.metrics();
    assert!(m.coalesce_count > 0, "no coalescing recorded: {m:?}");
    assert_fully_coalesced(&arena);

    // Splits keep growing with later allocations.
    let split_before = arena.metrics().split_count;
    let x = alloc(&arena, min).expect("min block");
    assert!(arena.metrics().split_count > split_before);
    drop(x);
    assert!(arena.metrics().coalesce_count >= m.coalesce_count);
    assert_fully_coalesced(&arena);
}

#[test]
fn largest_free_block_under_fragmentation() {
    let min = 128;
    let count = 32;
    let total = min * count;
    let arena = buddy(total, min);

    let mut blocks: Vec<Buffer> = (0..count)
        .map(|i| alloc(&arena, min).unwrap_or_else(|e| panic!("block {i}: {e:?}")))
        .collect();
    let m = arena.metrics();
    assert_eq!(m.live_bytes, total);
    assert_eq!(m.largest_free_block, 0);
    assert_full(&arena, 1);

    // Free every other block by address, so no two free blocks are buddies.
    blocks.sort_by_key(|b| b.as_ptr() as usize);
    for w in blocks.windows(2) {
        assert_eq!(
            w[1].as_ptr() as usize - w[0].as_ptr() as usize,
            min,
            "blocks not contiguous"
        );
    }
    let mut kept = Vec::new();
    for (i, b) in blocks.into_iter().enumerate() {
        if i % 2 == 0 {
            drop(b);
        } else {
            kept.push(b);
        }
    }
    let m = arena.metrics();
    assert_eq!(m.live_bytes, total / 2);
    assert_eq!(m.largest_free_block, min, "fragmented arena: {m:?}");
    assert_full(&arena, min + 1);
    assert_full(&arena, 2 * min);

    // A minimum block still fits, in one of the holes.
    let hole = alloc(&arena, min).expect("a hole");
    drop(hole);

    // Freeing the rest coalesces everything.
    drop(kept);
    assert_fully_coalesced(&arena);
}

#[test]
fn largest_free_block_tracks_merges_step_by_step() {
    let min = 64;
    let total = min * 8;
    let arena = buddy(total, min);
    let mut blocks: Vec<Buffer> = (0..8).map(|_| alloc(&arena, min).expect("block")).collect();
    blocks.sort_by_key(|b| b.as_ptr() as usize);
    let mut blocks: Vec<Option<Buffer>> = blocks.into_iter().map(Some).collect();
    // Free in address order; after freeing 2^k blocks the largest is 2^k * min.
    let expected = [
        min,
        2 * min,
        2 * min,
        4 * min,
        4 * min,
        4 * min,
        4 * min,
        8 * min,
    ];
    for (i, exp) in expected.into_iter().enumerate() {
        blocks[i] = None;
        assert_eq!(
            arena.metrics().largest_free_block,
            exp,
            "after freeing {} blocks",
            i + 1
        );
    }
    assert_fully_coalesced(&arena);
}

struct Live {
    handle: Handle,
    start: usize,
    capacity: usize,
    tag: u8,
    len: usize,
}

enum Handle {
    Open(Buffer),
    Frozen(Bytes, Option<Bytes>),
}

impl Live {
    fn check(&self) {
        let data: &[u8] = match &self.handle {
            Handle::Open(b) => b,
            Handle::Frozen(b, extra) => {
                if let Some(extra) = extra {
                    assert!(extra.iter().all(|&x| x == self.tag), "clone corrupted");
                }
                b
            }
        };
        assert_eq!(data.len(), self.len);
        assert!(
            data.iter().all(|&x| x == self.tag),
            "block {:#x} corrupted",
            self.start
        );
    }
}

fn random_workload(seed: u64, total: usize, min: usize, ops: usize) {
    let arena = buddy(total, min);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut live: Vec<Live> = Vec::new();
    let mut live_bytes = 0usize;
    let max_shift = (total / min).trailing_zeros();
    for op in 0..ops {
        if live.is_empty() || rng.random_bool(0.55) {
            let shift = rng.random_range(0..=max_shift);
            let size = rng.random_range(1..=(min << shift));
            let want = expected_capacity(size, min);
            let largest = arena.metrics().largest_free_block;
            match alloc(&arena, size) {
                Ok(mut buf) => {
                    assert!(
                        want <= largest,
                        "seed {seed} op {op}: got {want} but largest was {largest}"
                    );
                    assert_eq!(buf.capacity(), want);
                    let start = buf.as_ptr() as usize;
                    let end = start + want;
                    for other in &live {
                        let o_end = other.start + other.capacity;
                        assert!(
                            end <= other.start || o_end <= start,
                            "seed {seed} op {op}: [{start:#x},{end:#x}) overlaps [{:#x},{o_end:#x})",
                            other.start
                        );
                    }
                    let tag = rng.random::<u8>();
                    let len = rng.random_range(1..=want.min(512));
                    buf.put_bytes(tag, len);
                    let handle = match rng.random_range(0..3) {
                        0 => Handle::Open(buf),
                        1 => Handle::Frozen(buf.freeze(), None),
                        _ => {
                            let b = buf.freeze();
                            let extra = b.slice(len / 2..);
                            Handle::Frozen(b, Some(extra))
                        }
                    };
                    live_bytes += want;
                    live.push(Live {
                        handle,
                        start,
                        capacity: want,
                        tag,
                        len,
                    });
                }
                Err(AllocError::ArenaFull) => {
                    assert!(
                        want > largest,
                        "seed {seed} op {op}: spurious ArenaFull for {want} with largest free {largest}"
                    );
                }
                Err(e) => panic!("seed {seed} op {op}: unexpected {e:?}"),
            }
        } else {
            let idx = rng.random_range(0..live.len());
            let item = live.swap_remove(idx);
            item.check();
            live_bytes -= item.capacity;
            // Drop the handles in a random order.
            match item.handle {
                Handle::Frozen(b, Some(extra)) if rng.random_bool(0.5) => {
                    drop(b);
                    drop(extra);
                }
                Handle::Frozen(b, Some(extra)) => {
                    drop(extra);
                    drop(b);
                }
                other => drop(other),
            }
        }
        assert_eq!(
            arena.metrics().live_bytes,
            live_bytes,
            "seed {seed} op {op}"
        );
    }
    for item in live.drain(..) {
        item.check();
    }
    let m = arena.metrics();
    assert!(m.split_count > 0 && m.coalesce_count > 0, "{m:?}");
    assert_fully_coalesced(&arena);
}

#[test]
fn random_workload_coalesces_back_to_one_block() {
    for seed in 0..20 {
        random_workload(seed, 1 << 15, 64, 3000);
    }
    // A shallow tree and a deep one.
    random_workload(100, 1024, 256, 500);
    random_workload(101, 1 << 16, 16, 1500);
}

#[test]
fn frozen_block_pins_until_last_handle_and_ranges_stay_distinct() {
    let arena = buddy(4096, 256);
    let mut map: BTreeMap<usize, usize> = BTreeMap::new();
    let mut frozen = Vec::new();
    for i in 0..16u8 {
        let mut b = alloc(&arena, 200).expect("block");
        b.put_bytes(i, 200);
        let start = b.as_ptr() as usize;
        assert!(map.insert(start, b.capacity()).is_none(), "duplicate block");
        let f = b.freeze();
        assert_eq!(f.as_ptr() as usize, start, "freeze copied");
        frozen.push(f);
    }
    assert_full(&arena, 1);
    let slices: Vec<Bytes> = frozen.iter().map(|f| f.slice(100..)).collect();
    drop(frozen);
    assert_full(&arena, 1);
    assert_eq!(arena.metrics().live_bytes, 4096);
    for (i, s) in slices.iter().enumerate() {
        assert!(s.iter().all(|&x| x == i as u8));
    }
    drop(slices);
    assert_fully_coalesced(&arena);
}

#[test]
fn bytes_dropped_on_another_thread() {
    let arena = buddy(1 << 14, 512);
    let mut parts = Vec::new();
    for i in 0..8u8 {
        let mut b = alloc(&arena, 1000 + i as usize).expect("block");
        b.put_bytes(i, 1000);
        parts.push(b.freeze());
    }
    assert_eq!(arena.metrics().live_bytes, 8 * 1024);
    let handle = thread::spawn(move || {
        for (i, p) in parts.into_iter().enumerate() {
            assert!(p.iter().all(|&x| x == i as u8));
        }
    });
    handle.join().expect("thread");
    assert_fully_coalesced(&arena);
}

#[test]
fn arena_handles_dropped_before_bytes() {
    let arena = buddy(1 << 12, 64);
    let clone = arena.clone();
    let mut a = alloc(&arena, 100).expect("block");
    a.put_bytes(1, 100);
    let a = a.freeze();
    let mut b = alloc(&clone, 2000).expect("block");
    b.put_bytes(2, 10);
    drop(arena);
    drop(clone);

    assert!(a.iter().all(|&x| x == 1));
    b.put_bytes(2, 10);
    let b = b.freeze();
    assert_eq!(b.len(), 20);
    let slice = a.slice(50..);
    thread::spawn(move || {
        assert!(a.iter().all(|&x| x == 1));
        assert!(b.iter().all(|&x| x == 2));
    })
    .join()
    .expect("thread");
    assert_eq!(slice.len(), 50);
    assert!(slice.iter().all(|&x| x == 1));
}

#[test]
fn single_block_arena() {
    // total == min (2^0 blocks) is a valid, if tiny, arena.
    let arena = buddy(4096, 4096);
    let b = alloc(&arena, 1).expect("the block");
    assert_eq!(b.capacity(), 4096);
    assert_full(&arena, 1);
    assert!(matches!(
        alloc(&arena, 4097),
        Err(AllocError::RequestTooLarge { .. })
    ));
    drop(b);
    assert_fully_coalesced(&arena);
}

//! Property tests: buddy invariants after random operation sequences.

use std::num::NonZeroUsize;

use arenabuf::{BuddyArena, Buffer};
use bytes::{BufMut, Bytes};
use proptest::prelude::*;

const TOTAL: usize = 64 * 1024;
const MIN: usize = 64;

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize),
    AllocFreeze(usize),
    Drop(usize),
    CloneSlice(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1..=TOTAL / 4).prop_map(Op::Alloc),
        (1..=4096usize).prop_map(Op::AllocFreeze),
        any::<usize>().prop_map(Op::Drop),
        any::<usize>().prop_map(Op::CloneSlice),
    ]
}

/// What the test holds, with the block (start address, capacity) it pins.
enum Held {
    Buf(Buffer, (usize, usize)),
    Frozen(Bytes, (usize, usize)),
}

impl Held {
    fn block(&self) -> (usize, usize) {
        match self {
            Held::Buf(_, block) | Held::Frozen(_, block) => *block,
        }
    }
}

/// Allocates largest-free blocks until nothing is left and returns how many
/// bytes that got: the memory that is really free.
fn drain_free(arena: &BuddyArena) -> usize {
    let mut got = Vec::new();
    loop {
        let largest = arena.metrics().largest_free_block;
        if largest == 0 {
            break;
        }
        got.push(arena.allocate(NonZeroUsize::new(largest).unwrap()).unwrap());
    }
    got.iter().map(Buffer::capacity).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn free_plus_live_is_total_and_everything_coalesces(ops in prop::collection::vec(op(), 1..120)) {
        let arena = BuddyArena::builder(
            NonZeroUsize::new(TOTAL).unwrap(),
            NonZeroUsize::new(MIN).unwrap(),
        )
        .build()
        .unwrap();
        let mut held: Vec<Held> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Alloc(len) => {
                    if let Ok(mut buf) = arena.allocate(NonZeroUsize::new(len).unwrap()) {
                        let cap = buf.capacity();
                        prop_assert!(cap >= len.max(MIN) && cap.is_power_of_two());
                        let start = buf.chunk_mut().as_mut_ptr() as usize;
                        buf.put_bytes(i as u8, 8.min(cap));
                        held.push(Held::Buf(buf, (start, cap)));
                    }
                }
                Op::AllocFreeze(len) => {
                    if let Ok(mut buf) = arena.allocate(NonZeroUsize::new(len).unwrap()) {
                        let block = (buf.chunk_mut().as_mut_ptr() as usize, buf.capacity());
                        buf.put_bytes(i as u8, len);
                        let bytes = buf.freeze();
                        prop_assert!(bytes.iter().all(|&b| b == i as u8));
                        held.push(Held::Frozen(bytes, block));
                    }
                }
                Op::Drop(k) if !held.is_empty() => {
                    let n = held.len();
                    if let Held::Buf(buf, _) = held.swap_remove(k % n) {
                        // Nobody else wrote into it while it was live.
                        prop_assert!(buf.iter().all(|&b| b == buf[0]));
                    }
                }
                Op::CloneSlice(k) if !held.is_empty() => {
                    let n = held.len();
                    if let Held::Frozen(bytes, block) = &held[k % n] {
                        // Both views pin the block; it is counted once below.
                        let part = bytes.slice(bytes.len() / 2..);
                        held.push(Held::Frozen(part, *block));
                    }
                }
                Op::Drop(_) | Op::CloneSlice(_) => {}
            }
            // Live memory is the distinct blocks held (slices share theirs).
            let mut blocks: Vec<(usize, usize)> = held.iter().map(Held::block).collect();
            blocks.sort_unstable();
            blocks.dedup();
            let live: usize = blocks.iter().map(|b| b.1).sum();
            prop_assert_eq!(arena.metrics().live_bytes, live);
            for pair in blocks.windows(2) {
                prop_assert!(pair[0].0 + pair[0].1 <= pair[1].0, "live blocks overlap");
            }
        }
        let live = arena.metrics().live_bytes;
        // Free + live = total, with the free part really allocatable.
        prop_assert_eq!(drain_free(&arena) + live, TOTAL);
        drop(held);
        let m = arena.metrics();
        prop_assert_eq!((m.live_bytes, m.largest_free_block), (0, TOTAL));
    }
}

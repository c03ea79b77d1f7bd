//! A counting global allocator proves that allocate / write / drop never touch
//! the heap, and that `freeze` costs at most one heap allocation.
//!
//! Counts are per thread (a const thread-local with no destructor), so tests
//! running in parallel in this binary do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::num::NonZeroUsize;

use arenabuf::{AllocError, BuddyArena, Buffer, FixedArena};
use bytes::{BufMut, Bytes};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // `try_with` fails only during thread teardown; nothing to count then.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counter touches only a const-initialised thread-local
// `Cell` and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations made on this thread while `f` runs.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCS.with(Cell::get);
    let r = f();
    let after = ALLOCS.with(Cell::get);
    (r, after - before)
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

const PAYLOAD: &[u8; 48] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL";
const ROUNDS: u64 = 200;

/// allocate + write + drop (no freeze), repeated: zero heap allocations.
fn assert_no_alloc_without_freeze(mut allocate: impl FnMut(u64) -> Buffer) {
    // Warm up once (lazy initialisation, thread-locals, ...).
    drop(allocate(0));
    let ((), n) = allocations(|| {
        for i in 0..ROUNDS {
            let mut buf = allocate(i);
            buf.put_slice(PAYLOAD);
            buf.put_u8(i as u8);
            assert_eq!(buf.len(), PAYLOAD.len() + 1);
            drop(buf);
        }
    });
    assert_eq!(
        n, 0,
        "allocate/write/drop made {n} heap allocations in {ROUNDS} rounds"
    );
}

/// allocate + write + freeze + read + drop: at most one allocation per freeze,
/// and none outside the freeze.
fn assert_freeze_allocates_at_most_once(mut allocate: impl FnMut(u64) -> Buffer) {
    let warm = allocate(0).freeze();
    drop(warm);
    let mut freeze_total = 0;
    for i in 0..ROUNDS {
        let (mut buf, n_alloc) = allocations(|| allocate(i));
        assert_eq!(n_alloc, 0, "allocate made {n_alloc} heap allocations");
        let ((), n_write) = allocations(|| buf.put_slice(PAYLOAD));
        assert_eq!(n_write, 0, "write made {n_write} heap allocations");
        let (bytes, n_freeze): (Bytes, u64) = allocations(|| buf.freeze());
        assert!(n_freeze <= 1, "freeze made {n_freeze} heap allocations");
        freeze_total += n_freeze;
        assert_eq!(&bytes[..], &PAYLOAD[..]);
        let ((), n_drop) = allocations(|| drop(bytes));
        assert_eq!(
            n_drop, 0,
            "dropping frozen bytes made {n_drop} heap allocations"
        );
    }
    assert!(freeze_total <= ROUNDS);
}

fn fixed() -> FixedArena {
    FixedArena::builder(nz(8), nz(256))
        .build()
        .expect("valid configuration")
}

fn buddy() -> BuddyArena {
    BuddyArena::builder(nz(1 << 16), nz(64))
        .build()
        .expect("valid configuration")
}

/// Varied buddy sizes so allocations split and frees coalesce.
fn buddy_size(i: u64) -> NonZeroUsize {
    nz(PAYLOAD.len() + 1 + ((i as usize * 997) % 8000))
}

#[test]
fn fixed_allocate_write_drop_is_allocation_free() {
    let arena = fixed();
    assert_no_alloc_without_freeze(|_| arena.allocate().expect("slot"));
}

#[test]
fn fixed_freeze_allocates_at_most_once() {
    let arena = fixed();
    assert_freeze_allocates_at_most_once(|_| arena.allocate().expect("slot"));
}

#[test]
fn fixed_holding_all_slots_is_allocation_free() {
    let arena = fixed();
    drop(arena.allocate().expect("warm-up"));
    let mut held: [Option<Buffer>; 8] = Default::default();
    let ((), n) = allocations(|| {
        for _ in 0..20 {
            for slot in held.iter_mut() {
                let mut b = arena.allocate().expect("slot");
                b.put_slice(PAYLOAD);
                *slot = Some(b);
            }
            assert!(matches!(arena.allocate(), Err(AllocError::ArenaFull)));
            for slot in held.iter_mut() {
                *slot = None;
            }
        }
    });
    assert_eq!(
        n, 0,
        "filling and draining the arena made {n} heap allocations"
    );
}

#[test]
fn buddy_allocate_write_drop_is_allocation_free() {
    let arena = buddy();
    assert_no_alloc_without_freeze(|i| arena.allocate(buddy_size(i)).expect("block"));
}

#[test]
fn buddy_freeze_allocates_at_most_once() {
    let arena = buddy();
    assert_freeze_allocates_at_most_once(|i| arena.allocate(buddy_size(i)).expect("block"));
}

#[test]
fn buddy_split_and_coalesce_are_allocation_free() {
    let arena = buddy();
    drop(arena.allocate(nz(1)).expect("warm-up"));
    let mut held: Vec<Buffer> = Vec::with_capacity(64);
    let ((), n) = allocations(|| {
        for round in 0..10 {
            // Many small blocks (splits), then free them all (coalesces).
            for i in 0..64usize {
                let mut b = arena
                    .allocate(nz(1 + (i * 37 + round) % 900))
                    .expect("block");
                b.put_slice(PAYLOAD);
                held.push(b);
            }
            assert!(matches!(
                arena.allocate(nz(1 << 17)),
                Err(AllocError::RequestTooLarge { .. })
            ));
            held.clear();
            let whole = arena.allocate(nz(1 << 16)).expect("coalesced");
            assert!(matches!(arena.allocate(nz(1)), Err(AllocError::ArenaFull)));
            drop(whole);
        }
    });
    assert_eq!(n, 0, "buddy split/coalesce made {n} heap allocations");
}

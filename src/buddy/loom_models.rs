//! loom models of the group-cache protocol (`cache.rs`). Run with
//! `RUSTFLAGS="--cfg arenabuf_loom" LOOM_MAX_PREEMPTIONS=3 cargo test
//! --release --features async-alloc --lib buddy --target-dir target/loom`.
//!
//! Under loom every thread has index 0, so all threads share the one shard:
//! its `freed` handle is parked in, taken from, swapped and flushed by
//! different threads at once, the tightest races the protocol has.

use bytes::BufMut;
use loom::sync::Arc;
use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::*;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// 128 blocks of 16 B (max_order 7): orders 0 and 1 are cached, order 0 in
/// groups of two. Returns the arena; blocks 0 and 1 (`a`, `b`: group 0)
/// and 2 and 3 (`c`, `d`: group 1) leased one by one through the cache;
/// and the rest of the arena leased in uncached blocks, so the free lists
/// are empty and no handle holds anything.
fn full_arena() -> (BuddyArena, [Buffer; 4], Vec<Buffer>) {
    let arena = BuddyArena::builder(nz(2048), nz(16)).build().unwrap();
    assert_eq!(arena.inner().cached_orders, 2);
    let small = [(); 4].map(|()| arena.allocate(nz(16)).unwrap());
    let rest = [64, 128, 256, 512, 1024]
        .map(|len| arena.allocate(nz(len)).unwrap())
        .into();
    (arena, small, rest)
}

/// Writes `tag` over the whole buffer, yields, and checks that nobody else
/// wrote it meanwhile (two holders of one block would).
fn use_block(mut buf: Buffer, tag: u8) {
    let len = buf.capacity();
    buf.put_bytes(tag, len);
    thread::yield_now();
    assert!(buf.iter().all(|&x| x == tag), "block overlap");
}

/// One thread releases `a` (parked next to `b` in the shared `freed`
/// handle) and then `c` of another group (the swap under the lock returns
/// `a` and `b`, which merge); the main thread meanwhile allocates 32 bytes,
/// which exist only as `a` + `b` merged: it must succeed whenever `a` was
/// released before it started (the flush under the lock finds the parked
/// pair), and every block has one holder at a time.
#[test]
fn swap_races_allocation_that_needs_the_parked_group() {
    loom::model(|| {
        let (arena, [a, b, c, d], rest) = full_arena();
        drop(b); // parked: `freed` = group 0 {b}
        let a_freed = Arc::new(AtomicBool::new(false));
        let t = {
            let a_freed = a_freed.clone();
            thread::spawn(move || {
                drop(a);
                a_freed.store(true, Ordering::SeqCst);
                drop(c);
            })
        };
        let before = a_freed.load(Ordering::SeqCst);
        match arena.allocate(nz(32)) {
            Ok(buf) => use_block(buf, 1),
            Err(e) => {
                assert!(!before, "spurious {e:?} after `a` was released");
                assert_eq!(e, AllocError::ArenaFull);
            }
        }
        t.join().unwrap();
        let m = arena.metrics();
        assert_eq!(m.live_bytes, 16 + 1984, "only `d` and the rest are leased");
        let got: Vec<_> = (0..3).map(|_| arena.allocate(nz(16)).unwrap()).collect();
        assert_eq!(arena.allocate(nz(16)).unwrap_err(), AllocError::ArenaFull);
        drop((got, d, rest));
    });
}

/// Two threads take from and park into the shared handles at once: one
/// releases `a` then allocates 16 bytes, the other releases `c` (another
/// group: a swap, or a park into a handle the first emptied) then
/// allocates 16 bytes. Each gets a block (one of the two released ones is
/// always free when its own release happened before), nobody shares one.
#[test]
fn parks_and_takes_on_one_shard() {
    loom::model(|| {
        let (arena, [a, b, c, d], rest) = full_arena();
        let worker = |arena: BuddyArena, buf: Buffer, tag: u8| {
            thread::spawn(move || {
                drop(buf);
                // Our own release is before this: at least one block free.
                let got = arena.allocate(nz(16));
                use_block(got.expect("our own block at least is free"), tag);
            })
        };
        let t1 = worker(arena.clone(), a, 1);
        let t2 = worker(arena.clone(), c, 2);
        t1.join().unwrap();
        t2.join().unwrap();
        let m = arena.metrics();
        assert_eq!(m.live_bytes, 2 * 16 + 1984);
        drop((b, d, rest));
        assert_eq!(arena.metrics().largest_free_block, 2048);
    });
}

/// The last handle closes the arena while another thread parks a frozen
/// block and then swaps groups: every block is flushed by the closer or
/// goes to the lists after it, and the arena is freed exactly once (loom
/// reports a leak otherwise, and a double free would be a use after free).
#[test]
fn park_and_swap_race_close() {
    loom::model(|| {
        let (arena, [a, b, c, d], rest) = full_arena();
        drop(b);
        let a = a.freeze();
        let t = thread::spawn(move || {
            drop(a);
            drop(c);
        });
        drop(arena);
        drop((d, rest));
        t.join().unwrap();
    });
}

/// A task that waits for 32 bytes (`a` + `b` merged) registers while
/// another thread parks `a` and swaps `c` in: whichever comes first, no
/// block stays parked where the queue cannot see it (loom reports a
/// deadlock if `block_on` is never woken), and afterwards parking resumes.
#[cfg(feature = "async-alloc")]
#[test]
fn swap_races_waiter_registration() {
    loom::model(|| {
        let (arena, [a, b, c, d], rest) = full_arena();
        drop(b);
        let t = thread::spawn(move || {
            drop(a);
            drop(c);
        });
        let buf = loom::future::block_on(arena.allocate_async(nz(32))).unwrap();
        assert_eq!(buf.capacity(), 32);
        use_block(buf, 3);
        t.join().unwrap();
        let m = arena.metrics();
        assert_eq!((m.live_bytes, m.waiting_tasks), (16 + 1984, 0));
        drop((d, rest));
        assert_eq!(arena.metrics().largest_free_block, 2048);
    });
}

//! Fixed-slot arena: allocate, write, freeze into `Bytes` without a copy,
//! hand the bytes to another thread, and watch the slot come back.
//!
//! Run with `cargo run --example fixed_buffer`.

use std::error::Error;
use std::num::NonZeroUsize;
use std::thread;

use arenabuf::{FixedArena, FixedMetrics};
use bytes::{BufMut, Bytes};

fn show(stage: &str, m: &FixedMetrics) {
    println!(
        "{stage:<28} allocs={} failures={} live_bytes={} reserved_bytes={}",
        m.alloc_count, m.alloc_failure_count, m.live_bytes, m.reserved_bytes
    );
}

fn main() -> Result<(), Box<dyn Error>> {
    let slots = NonZeroUsize::new(2).ok_or("slot count must be non-zero")?;
    let capacity = NonZeroUsize::new(1024).ok_or("slot capacity must be non-zero")?;
    let arena = FixedArena::builder(slots, capacity).build()?;
    println!(
        "fixed arena: {} slots of {} bytes",
        arena.slot_count(),
        arena.slot_capacity()
    );
    show("start", &arena.metrics());

    let mut buf = arena.allocate()?;
    buf.put_slice(b"hello from the arena");
    let ptr = buf.as_ptr();
    let bytes: Bytes = buf.freeze();
    println!(
        "frozen {} bytes, zero-copy: {}",
        bytes.len(),
        bytes.as_ptr() == ptr
    );
    show("after freeze", &arena.metrics());

    // Fill the second slot too: the arena is now full.
    let other = arena.allocate()?;
    match arena.allocate() {
        Ok(_) => println!("unexpected: a third slot"),
        Err(e) => println!("third allocation refused: {e}"),
    }
    drop(other);

    // Send the bytes to another thread; the slot returns when it drops them.
    let worker = thread::spawn(move || {
        println!("worker got {:?}", String::from_utf8_lossy(&bytes));
        // `bytes` is dropped here, releasing its slot.
    });
    worker.join().map_err(|_| "worker thread panicked")?;
    show("after the worker dropped it", &arena.metrics());

    let again = arena.allocate()?;
    println!("slot reused: capacity {}", again.capacity());
    Ok(())
}

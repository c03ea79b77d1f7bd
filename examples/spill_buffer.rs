//! Auto-spill: a buffer written past its slot's capacity moves to the heap,
//! gives its slot back at once, and keeps growing.
//!
//! Run with `cargo run --example spill_buffer`.

use std::error::Error;
use std::num::NonZeroUsize;

use arenabuf::FixedArena;
use bytes::BufMut;

fn main() -> Result<(), Box<dyn Error>> {
    let one = NonZeroUsize::new(1).ok_or("slot count must be non-zero")?;
    let capacity = NonZeroUsize::new(16).ok_or("slot capacity must be non-zero")?;
    let arena = FixedArena::builder(one, capacity).auto_spill().build()?;

    let mut buf = arena.allocate()?;
    buf.put_slice(b"0123456789");
    println!(
        "wrote {} of {} bytes, spilled: {}, live_bytes: {}",
        buf.len(),
        buf.capacity(),
        buf.is_spilled(),
        arena.metrics().live_bytes
    );

    buf.put_slice(b" -- and now well past the slot's capacity");
    let m = arena.metrics();
    println!(
        "wrote {} bytes, spilled: {}, spill_count: {}, live_bytes: {}",
        buf.len(),
        buf.is_spilled(),
        m.spill_count,
        m.live_bytes
    );

    // The only slot is free again while the spilled buffer lives on.
    let mut other = arena.allocate()?;
    other.put_slice(b"slot reused");
    println!(
        "second buffer in the arena: {:?}",
        String::from_utf8_lossy(&other)
    );

    let bytes = buf.freeze();
    println!(
        "frozen spilled buffer: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(())
}

//! Buddy arena: variable-size buffers rounded up to powers of two, blocks
//! split on allocation and coalesce again when released.
//!
//! Run with `cargo run --example buddy_buffer`.

use std::error::Error;
use std::num::NonZeroUsize;

use arenabuf::{BuddyArena, BuddyMetrics};
use bytes::BufMut;

fn show(stage: &str, m: &BuddyMetrics) {
    println!(
        "{stage:<32} live={:<6} largest_free={:<6} splits={:<2} coalesces={}",
        m.live_bytes, m.largest_free_block, m.split_count, m.coalesce_count
    );
}

fn size(n: usize) -> Result<NonZeroUsize, Box<dyn Error>> {
    Ok(NonZeroUsize::new(n).ok_or("size must be non-zero")?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let arena = BuddyArena::builder(size(64 * 1024)?, size(256)?).build()?;
    println!(
        "buddy arena: {} bytes, minimum block {} bytes",
        arena.total_size(),
        arena.min_block_size()
    );
    show("start", &arena.metrics());

    let mut held = Vec::new();
    for request in [1, 300, 5000, 20_000] {
        let mut buf = arena.allocate(size(request)?)?;
        let block = buf.capacity();
        buf.put_bytes(b'x', request);
        held.push((block, buf.freeze()));
        show(
            &format!("allocate {request} -> {block}-byte block"),
            &arena.metrics(),
        );
    }

    match arena.allocate(size(128 * 1024)?) {
        Ok(_) => println!("unexpected: an oversized request succeeded"),
        Err(e) => println!("oversized request refused: {e}"),
    }

    // Release in reverse order; free buddies merge back together.
    while let Some((block, bytes)) = held.pop() {
        drop(bytes);
        show(&format!("release {block}-byte block"), &arena.metrics());
    }

    let whole = arena.allocate(size(arena.total_size())?)?;
    println!("whole arena available again: {} bytes", whole.capacity());
    Ok(())
}

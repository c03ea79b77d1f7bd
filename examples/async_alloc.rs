//! Backpressure with `allocate_async`: two slots, three tasks. The third
//! task waits for a slot and gets it the moment a frozen `Bytes` drops.
//!
//! Run with `cargo run --example async_alloc --features async-alloc`.

use std::error::Error;
use std::num::NonZeroUsize;

use arenabuf::{FixedArena, FixedMetrics};
use bytes::{BufMut, Bytes};

fn show(stage: &str, m: &FixedMetrics) {
    println!(
        "{stage:<24} live_slots={} waiting_tasks={} wait_count={} alloc_count={}",
        m.live_slots, m.waiting_tasks, m.wait_count, m.alloc_count
    );
}

/// Waits for a slot, writes a frame into it and freezes it.
async fn frame(arena: FixedArena, task: u32) -> Bytes {
    let mut buf = arena.allocate_async().await;
    buf.put_slice(format!("frame from task {task}").as_bytes());
    buf.freeze()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let slots = NonZeroUsize::new(2).ok_or("slot count must be non-zero")?;
    let capacity = NonZeroUsize::new(1024).ok_or("slot capacity must be non-zero")?;
    let arena = FixedArena::builder(slots, capacity).build()?;
    println!(
        "fixed arena: {} slots of {} bytes",
        arena.slot_count(),
        arena.slot_capacity()
    );

    // Tasks 1 and 2 find free slots at once; their frames keep them.
    let first = tokio::spawn(frame(arena.clone(), 1)).await?;
    let second = tokio::spawn(frame(arena.clone(), 2)).await?;
    show("two frames live", &arena.metrics());

    // Task 3 finds the arena full and queues instead of failing.
    let third = tokio::spawn(frame(arena.clone(), 3));
    while arena.metrics().waiting_tasks == 0 {
        tokio::task::yield_now().await;
    }
    show("task 3 waiting", &arena.metrics());

    // The last reference to task 1's frame drops: its slot goes straight to
    // task 3, never back to the free pool.
    println!("dropping {:?}", std::str::from_utf8(&first)?);
    drop(first);
    let third = third.await?;
    println!("task 3 got a slot: {:?}", std::str::from_utf8(&third)?);
    show("after the hand-over", &arena.metrics());

    drop((second, third));
    show("all dropped", &arena.metrics());
    Ok(())
}

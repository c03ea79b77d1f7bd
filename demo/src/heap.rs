//! A counting global allocator that attributes heap bytes to the role of
//! the thread that allocates them (server, client, or other), so the
//! summary can show the server's heap alone.
//!
//! A buffer freed on a thread of another role than the one that allocated
//! it would be subtracted from the wrong role. In this demo none crosses:
//! the clients and the server share nothing but loopback sockets, and the
//! frames stay on the server's runtime from read to consumer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Which threads an allocation is counted for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The main thread (it builds the arena and prints) and any other.
    Other = 0,
    /// The server runtime's threads: readers, queue, consumer.
    Server = 1,
    /// The client runtime's threads.
    Client = 2,
}

thread_local! {
    // `const` and without `Drop`: reading it never allocates, so the
    // allocator may read it.
    static ROLE: Cell<u8> = const { Cell::new(Role::Other as u8) };
}

static NOW: [AtomicIsize; 3] = [const { AtomicIsize::new(0) }; 3];
static PEAK: [AtomicIsize; 3] = [const { AtomicIsize::new(0) }; 3];
/// `NOW` at the last [`reset_peak`]: what earlier phases left counted (a
/// runtime dropped on the main thread frees server memory as "other").
static BASE: [AtomicIsize; 3] = [const { AtomicIsize::new(0) }; 3];

/// Counts this thread's allocations for `role` from now on.
pub fn set_role(role: Role) {
    ROLE.with(|r| r.set(role as u8));
}

fn role() -> usize {
    ROLE.try_with(Cell::get).unwrap_or(Role::Other as u8) as usize
}

/// Heap bytes `role`'s threads allocated and hold now, counted from the
/// last [`reset_peak`].
pub fn now(role: Role) -> usize {
    let r = role as usize;
    (NOW[r].load(Ordering::Relaxed) - BASE[r].load(Ordering::Relaxed)).max(0) as usize
}

/// The most heap bytes `role`'s threads held at once since the last
/// [`reset_peak`] (counted from then).
pub fn peak(role: Role) -> usize {
    let r = role as usize;
    (PEAK[r].load(Ordering::Relaxed) - BASE[r].load(Ordering::Relaxed)).max(0) as usize
}

/// Starts counting `role`'s heap, and its peak, from what it holds now.
pub fn reset_peak(role: Role) {
    let r = role as usize;
    let now = NOW[r].load(Ordering::Relaxed);
    BASE[r].store(now, Ordering::Relaxed);
    PEAK[r].store(now, Ordering::Relaxed);
}

/// Forwards to the system allocator and counts sizes per role.
pub struct CountingAlloc;

// SAFETY: forwards every call to the system allocator unchanged; only
// counts sizes (the counting neither allocates nor touches the memory).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract is passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let r = role();
            let size = layout.size() as isize;
            let now = NOW[r].fetch_add(size, Ordering::Relaxed) + size;
            PEAK[r].fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW[role()].fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

//! Registering an arena's region with `io_uring` as fixed buffers and
//! reading a file straight into arena buffers with `READ_FIXED`, addressed
//! two ways: the whole region as buffer 0 (the buffer's address inside it),
//! and one registered buffer per slot (`FixedArena::slot_index`).
//!
//! Skips with a NOTICE where the kernel refuses `io_uring` (old kernels,
//! seccomp in containers, `kernel.io_uring_disabled`) or the registration
//! (the locked-memory limit).
#![cfg(all(target_os = "linux", feature = "mmap"))]

use std::io::Write;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;

use arenabuf::{Buffer, FixedArena, PagePolicy};
use bytes::BufMut;
use io_uring::{IoUring, opcode, types};

const SLOT: usize = 4096;
const SLOTS: usize = 8;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

/// Page `i` of the test file: its index in every byte, then a marker.
fn page(i: usize) -> Vec<u8> {
    let mut p = vec![i as u8; SLOT];
    p[..8].copy_from_slice(&(i as u64 * 0x0101_0101).to_le_bytes());
    p
}

/// Reads `SLOT` bytes at `offset` of `file` into `buf` with `READ_FIXED`
/// from registered buffer `index`.
fn read_fixed(ring: &mut IoUring, file: &std::fs::File, buf: &mut Buffer, index: u16, offset: u64) {
    let dst = buf.chunk_mut().as_mut_ptr();
    let sqe = opcode::ReadFixed::new(types::Fd(file.as_raw_fd()), dst, SLOT as u32, index)
        .offset(offset)
        .build()
        .user_data(offset);
    // SAFETY: `dst..dst + SLOT` is the buffer's spare capacity, which stays
    // alive and untouched until the completion below is reaped, and lies in
    // registered buffer `index`.
    unsafe { ring.submission().push(&sqe).expect("queue has room") };
    ring.submit_and_wait(1).expect("io_uring_enter");
    let cqe = ring.completion().next().expect("one completion");
    assert_eq!(cqe.user_data(), offset);
    assert_eq!(cqe.result(), SLOT as i32, "READ_FIXED result");
    // SAFETY: the kernel wrote `SLOT` bytes into the spare capacity.
    unsafe { buf.advance_mut(SLOT) };
}

#[test]
fn read_fixed_into_arena_buffers() {
    let mut ring = match IoUring::new(8) {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("NOTICE: io_uring unavailable here ({e}); skipping the registration test");
            return;
        }
    };
    let arena = FixedArena::builder(nz(SLOTS), nz(SLOT))
        .pages(PagePolicy::Mapped)
        .buffer_alignment(nz(SLOT))
        .build()
        .unwrap();

    let path = std::env::temp_dir().join(format!("arenabuf-uring-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).unwrap();
    for i in 0..SLOTS {
        file.write_all(&page(i)).unwrap();
    }
    drop(file);
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    // 1. The whole region as registered buffer 0.
    let region = arena.region();
    let whole = [libc::iovec {
        iov_base: region.as_ptr().cast(),
        iov_len: region.len(),
    }];
    // SAFETY: the region stays mapped (the arena is alive) until the
    // buffers are unregistered below.
    if let Err(e) = unsafe { ring.submitter().register_buffers(&whole) } {
        eprintln!("NOTICE: io_uring buffer registration refused ({e}); skipping");
        return;
    }
    let mut held = Vec::new();
    for i in 0..SLOTS {
        let mut buf = arena.allocate().unwrap();
        assert!(region.offset_of(buf.chunk_mut().as_mut_ptr()).is_some());
        read_fixed(&mut ring, &file, &mut buf, 0, (i * SLOT) as u64);
        assert_eq!(&buf[..], &page(i)[..], "page {i} via the whole region");
        held.push(buf.freeze());
    }
    drop(held);
    ring.submitter().unregister_buffers().unwrap();

    // 2. One registered buffer per slot, addressed by slot index.
    let per_slot: Vec<libc::iovec> = (0..SLOTS)
        .map(|s| libc::iovec {
            // SAFETY: slot `s` starts `s * SLOT` bytes into the region.
            iov_base: unsafe { region.as_ptr().add(s * SLOT) }.cast(),
            iov_len: SLOT,
        })
        .collect();
    // SAFETY: as above: the slots stay mapped until unregistered.
    unsafe { ring.submitter().register_buffers(&per_slot) }.unwrap();
    let mut seen = Vec::new();
    let mut held = Vec::new();
    for i in (0..SLOTS).rev() {
        let mut buf = arena.allocate().unwrap();
        let slot = arena.slot_index(buf.chunk_mut().as_mut_ptr()).unwrap();
        read_fixed(&mut ring, &file, &mut buf, slot as u16, (i * SLOT) as u64);
        assert_eq!(&buf[..], &page(i)[..], "page {i} via slot {slot}");
        let bytes = buf.freeze();
        assert_eq!(arena.slot_index(bytes.as_ptr()), Some(slot));
        seen.push(slot);
        held.push(bytes);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..SLOTS).collect::<Vec<_>>());
    ring.submitter().unregister_buffers().unwrap();
}

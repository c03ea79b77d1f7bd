//! Under an address-space limit, `build()` reports `OutOfMemory` for the
//! arena's side tables (not only its region) instead of aborting the
//! process.
//!
//! The test re-runs this test binary as a child with `ARENABUF_OOM_CHILD`
//! set; the child lowers its own `RLIMIT_AS` to what it uses now plus
//! 800 MiB and builds arenas whose region fits but whose bookkeeping does
//! not. An abort ("memory allocation of … bytes failed") would kill the
//! child with SIGABRT, which the parent reports.
#![cfg(target_os = "linux")]

use std::num::NonZeroUsize;
use std::process::Command;

use arenabuf::{BuddyArena, BuildError, FixedArena};

const CHILD: &str = "ARENABUF_OOM_CHILD";
const HEADROOM: u64 = 800 << 20;

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("non-zero")
}

fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kb * 1024
}

/// Runs in the child: limit the address space, then build.
fn child() {
    let limit = vm_size() + HEADROOM;
    let rlim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: plain system call with a valid pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlim) }, 0);

    // 2^27 one-byte slots: a 128 MiB region and 138 MiB of bitmap fit,
    // the 1 GiB of per-slot release counters does not.
    let err = FixedArena::builder(nz(1 << 27), nz(1))
        .build()
        .expect_err("1 GiB of counters cannot fit under the limit");
    println!("fixed: {err:?}");
    assert_eq!(err, BuildError::OutOfMemory { bytes: 8 << 27 }, "{err}");

    // 2^27 one-byte blocks: the 128 MiB region and one 512 MiB link table
    // fit, the second does not.
    let err = BuddyArena::builder(nz(1 << 27), nz(1))
        .build()
        .expect_err("1 GiB of links cannot fit under the limit");
    println!("buddy: {err:?}");
    assert_eq!(err, BuildError::OutOfMemory { bytes: 4 << 27 }, "{err}");

    // What fits still builds, under the same limit.
    let arena = FixedArena::builder(nz(1 << 20), nz(16)).build().unwrap();
    assert!(arena.allocate().is_ok());
    println!("child done");
}

#[test]
fn side_tables_that_cannot_be_allocated_are_build_errors() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "side_tables_that_cannot_be_allocated_are_build_errors",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("fixed: OutOfMemory"), "{stdout}");
    assert!(stdout.contains("buddy: OutOfMemory"), "{stdout}");
    assert!(stdout.contains("child done"), "{stdout}");
}

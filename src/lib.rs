//! `arenabuf`: an I/O buffer pool with a hard memory cap, whose buffers
//! freeze into ordinary [`bytes::Bytes`] without a copy.
//!
//! Servers that read a lot of data need buffers for many connections and
//! frames of many sizes. A fresh `BytesMut` per buffer makes memory grow with
//! whatever peers send. An arena reserves its memory once and hands it out
//! in pieces:
//!
//! - [`FixedArena`]: uniform slots, usually one atomic operation on a cache
//!   line of the calling thread's own to claim or release. The fastest
//!   choice when one size fits.
//! - [`BuddyArena`]: power-of-two blocks from one region, split on demand and
//!   merged again on release. For sizes that vary.
//!
//! Both hand out a [`Buffer`] ([`bytes::BufMut`]); [`Buffer::freeze`] turns
//! it into `Bytes` whose memory is the arena's, and the memory goes back to
//! the arena when the last clone or slice of those `Bytes` drops.
//!
//! ```
//! use std::num::NonZeroUsize;
//! use arenabuf::FixedArena;
//! use bytes::BufMut;
//!
//! let arena = FixedArena::builder(NonZeroUsize::new(1024).unwrap(), NonZeroUsize::new(4096).unwrap())
//!     .build()?;
//! let mut buf = arena.allocate()?;
//! buf.put_slice(b"request payload");
//! let bytes: bytes::Bytes = buf.freeze(); // no copy
//! let header = bytes.slice(0..7);
//! drop(bytes);
//! assert_eq!(arena.metrics().live_slots, 1); // `header` still holds the slot
//! drop(header);
//! assert_eq!(arena.metrics().live_slots, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is where
//!
//! - The allocators: [`FixedArena`] and [`BuddyArena`], their builders
//!   ([`FixedArenaBuilder`], [`BuddyArenaBuilder`]) and, with feature
//!   `async-alloc`, their waiting futures (`FixedAllocate`,
//!   `BuddyAllocate`: first come, first served, cancellation-safe).
//! - [`Buffer`]: its `BufMut` writes, auto-spill and [`Buffer::freeze`].
//! - The memory: [`Region`] (reserved by the arena, mapped with a
//!   `PagePolicy` with feature `mmap`, or provided by the caller with
//!   [`Dealloc`]) and [`RegionInfo`] (base, length and pages, for
//!   registering the memory with the kernel).
//! - [`BufferSource`] (feature `async-alloc`): what the I/O layers allocate
//!   from; both arenas implement it.
//! - [`codec`] (feature `codec`): drop-in `tokio_util` codecs whose frames
//!   are arena `Bytes`.
//! - [`io`] (feature `io`): reading any `AsyncRead` into arena buffers, with
//!   zero-copy frames and backpressure.
//! - [`tower`] (feature `tower`): `ArenaBodyLayer`, collecting HTTP request
//!   bodies into arena memory in front of any tower/hyper/axum service.
//! - Metrics: [`FixedMetrics`], [`BuddyMetrics`], [`ArenaMetrics`] (the
//!   fields both share) and [`write_prometheus`] (the Prometheus text
//!   format). With feature `tracing`, the arenas log an arena becoming full
//!   and slow waits for memory.
//! - Errors: [`AllocError`], [`BuildError`].
//!
//! How the source is laid out, and the invariants each part keeps, is in
//! `docs/architecture.md` of the repository.
//!
//! Items behind a feature say which one in their docs (and on docs.rs, where
//! every feature is built, in a badge).
//!
//! # `no_std`
//!
//! The default feature `std` can be turned off (`default-features = false`):
//! the crate is then `#![no_std]` and needs only `alloc` (a global
//! allocator) and 64-bit atomics with compare-and-swap (`x86_64-unknown-none`
//! is built in CI; `thumbv7em` targets lack 64-bit atomics). What stays: both
//! arenas, [`Buffer`] and its `freeze()` into `Bytes`, [`Region::from_static`]
//! and [`Region::from_raw_parts`] with [`Dealloc`], the geometry helpers,
//! the metrics and [`write_prometheus`], and the errors (which implement
//! `core::error::Error`). What changes: the buddy free lists are behind a
//! spin lock (the `spin` crate), threads get no cache shards of their own
//! (they all share one: more contention, never a wrong answer), and a handle-count overflow ends the program by a panic
//! that panics again while unwinding instead of `std::process::abort`.
//! Every other feature (`async-alloc` and the I/O layers above it,
//! `tracing`, `mmap`) implies `std`.

// The module map links to feature-gated items: to the item when its feature
// is on, otherwise to the docs.rs page (built with every feature), so a
// default-feature `cargo doc` has no unresolved link. (The empty line ends
// the paragraph above, which a link definition cannot interrupt.)
#![doc = ""]
#![cfg_attr(feature = "codec", doc = "[`codec`]: crate::codec")]
#![cfg_attr(
    not(feature = "codec"),
    doc = "[`codec`]: https://docs.rs/arenabuf/latest/arenabuf/codec/"
)]
#![cfg_attr(feature = "io", doc = "[`io`]: crate::io")]
#![cfg_attr(
    not(feature = "io"),
    doc = "[`io`]: https://docs.rs/arenabuf/latest/arenabuf/io/"
)]
#![cfg_attr(feature = "tower", doc = "[`tower`]: crate::tower")]
#![cfg_attr(
    not(feature = "tower"),
    doc = "[`tower`]: https://docs.rs/arenabuf/latest/arenabuf/tower/"
)]
#![cfg_attr(feature = "async-alloc", doc = "[`BufferSource`]: crate::BufferSource")]
#![cfg_attr(
    not(feature = "async-alloc"),
    doc = "[`BufferSource`]: https://docs.rs/arenabuf/latest/arenabuf/trait.BufferSource.html"
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
// Without `std` the crate is `no_std` + `alloc` (the crate docs' "no_std"
// section). Unit tests always link std (threads, channels); the library
// build without `std` is what proves the core needs none.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

extern crate alloc;

mod buddy;
mod buffer;
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub mod codec;
mod error;
mod fixed;
#[cfg(feature = "io")]
#[cfg_attr(docsrs, doc(cfg(feature = "io")))]
pub mod io;
mod metrics;
mod region;
#[cfg(feature = "async-alloc")]
mod source;
mod sync;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
mod trace;
#[cfg(feature = "async-alloc")]
mod wait;

#[cfg(feature = "async-alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-alloc")))]
pub use buddy::BuddyAllocate;
pub use buddy::{BuddyArena, BuddyArenaBuilder};
pub use buffer::Buffer;
pub use error::{AllocError, BuildError};
#[cfg(feature = "async-alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-alloc")))]
pub use fixed::FixedAllocate;
pub use fixed::{FixedArena, FixedArenaBuilder};
pub use metrics::{ArenaMetrics, BuddyMetrics, FixedMetrics, write_prometheus};
#[cfg(feature = "mmap")]
#[cfg_attr(docsrs, doc(cfg(feature = "mmap")))]
pub use region::PagePolicy;
pub use region::{Dealloc, HugePages, Region, RegionInfo, RegionSource};
#[cfg(feature = "async-alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-alloc")))]
pub use source::{BuddyWait, BufferSource, FixedWait};
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub use trace::set_slow_wait_threshold;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

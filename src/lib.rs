//! `arenabuf`: an I/O buffer pool with a hard memory cap, whose buffers
//! freeze into ordinary [`bytes::Bytes`] without a copy.
//!
//! Servers that read a lot of data need buffers for many connections and
//! frames of many sizes. A fresh `BytesMut` per buffer makes memory grow with
//! whatever peers send. An arena reserves its memory once and hands it out
//! in pieces:
//!
//! - [`FixedArena`]: uniform slots, claimed with one atomic operation on a
//!   lock-free bitmap. The fastest choice when one size fits.
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
//! # Module map
//!
//! - `fixed`, `buddy`: the allocators (with their invariants written down);
//! - `buffer`: [`Buffer`], its `BufMut` writes, auto-spill and `freeze`;
//! - `region`: the arena memory itself; `sync`: the loom shim;
//! - `wait` (feature `async-alloc`): the FIFO queue behind
//!   `allocate_async`, which hands released capacity to waiting tasks;
//! - `source` (feature `async-alloc`): [`BufferSource`], what the I/O
//!   adapters allocate from;
//! - [`codec`] (feature `codec`): drop-in `tokio_util` codecs whose frames
//!   are arena `Bytes`;
//! - [`io`] (feature `io`): `ArenaReader`, reading any `AsyncRead` into
//!   arena buffers with zero-copy frames and backpressure;
//! - [`tower`] (feature `tower`): `ArenaBodyLayer`, collecting HTTP request
//!   bodies into arena memory in front of any tower/hyper/axum service;
//! - `metrics`, `error`: snapshots and typed errors.

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod buddy;
mod buffer;
// Prototype of the slot cache (issue 14), tested on its own until `fixed/`
// is split and it is wired in.
#[allow(dead_code)]
mod cache;
#[cfg(feature = "codec")]
pub mod codec;
mod error;
mod fixed;
#[cfg(feature = "io")]
pub mod io;
mod metrics;
mod region;
#[cfg(feature = "async-alloc")]
mod source;
mod sync;
#[cfg(feature = "tower")]
pub mod tower;
#[cfg(feature = "async-alloc")]
mod wait;

#[cfg(feature = "async-alloc")]
pub use buddy::BuddyAllocate;
pub use buddy::{BuddyArena, BuddyArenaBuilder};
pub use buffer::Buffer;
pub use error::{AllocError, BuildError};
#[cfg(feature = "async-alloc")]
pub use fixed::FixedAllocate;
pub use fixed::{FixedArena, FixedArenaBuilder};
pub use metrics::{BuddyMetrics, FixedMetrics};
#[cfg(feature = "async-alloc")]
pub use source::{BufferSource, FixedWait};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

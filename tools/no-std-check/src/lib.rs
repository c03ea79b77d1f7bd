//! `arenabuf` as a `no_std` crate sees it: built without its default `std`
//! feature, so the arenas run their `no_std` code paths (a spin mutex for
//! the buddy free lists, no per-thread search hints or cache shards: every
//! thread is thread 0). This crate is `no_std` itself; only its tests link
//! `std`, for threads and assertions.
//!
//! `cargo test -p arenabuf-no-std-check` runs them (CI does, and checks
//! with `cargo tree` that arenabuf's `std` feature is off there).
#![no_std]

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests;

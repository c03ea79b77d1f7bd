//! Fallible allocation of what `build()` needs besides the region: the
//! per-slot and per-block side tables and the arena's shared state. Each
//! reports [`BuildError::OutOfMemory`] when the allocator cannot provide it,
//! where `vec![..]`, `collect()` and `Box::new` would abort the process.

use alloc::alloc::{Layout, alloc};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::error::BuildError;

/// A boxed slice of `n` values made by `f(index)`, or `OutOfMemory`.
pub(crate) fn try_table<T>(n: usize, f: impl FnMut(usize) -> T) -> Result<Box<[T]>, BuildError> {
    let bytes = n.saturating_mul(size_of::<T>());
    let mut table = Vec::new();
    table
        .try_reserve_exact(n)
        .map_err(|_| BuildError::OutOfMemory { bytes })?;
    table.extend((0..n).map(f));
    // The capacity is exactly `n`: no reallocation here.
    Ok(table.into_boxed_slice())
}

/// `Box::new(value)`, or `OutOfMemory`.
pub(crate) fn try_box<T>(value: T) -> Result<Box<T>, BuildError> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { alloc(layout) }.cast::<T>();
    let ptr = NonNull::new(ptr).ok_or(BuildError::OutOfMemory {
        bytes: layout.size(),
    })?;
    // SAFETY: `ptr` is a fresh allocation of `Layout::new::<T>()`, so it is
    // valid and aligned for one `T`; after the write it holds an
    // initialised `T`, allocated the way `Box` allocates, and nothing else
    // owns it.
    unsafe {
        ptr.as_ptr().write(value);
        Ok(Box::from_raw(ptr.as_ptr()))
    }
}

#[cfg(all(test, not(arenabuf_loom)))]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_what_was_asked_and_impossible_sizes_are_errors() {
        let t = try_table(5, |i| i * 2).unwrap();
        assert_eq!(&t[..], &[0, 2, 4, 6, 8]);
        let b = try_box([7u64; 4]).unwrap();
        assert_eq!(*b, [7; 4]);
        // More elements than the address space can hold: a capacity
        // overflow, reported instead of aborting.
        let err = try_table(usize::MAX / 4, |_| 0u64).unwrap_err();
        assert!(matches!(err, BuildError::OutOfMemory { .. }), "{err}");
    }
}

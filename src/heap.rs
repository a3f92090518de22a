//! cvm's heap: dlmalloc behind one lock.
//!
//! musl's own malloc gives freed pages back to the kernel at once, so one `cvm run` mapped,
//! faulted in and unmapped the same heap pages about a hundred times (2-5 us a fault on a
//! nested host). dlmalloc keeps what is freed for the next allocation and gives memory back only
//! when asked ([`trim`]) or when a large free block sits at the top of its heap.
//!
//! Code that runs between `clone` and `execve` in a child of cvm never allocates (see
//! `runtime::child` and `runtime::container::init`), so this lock is never taken there.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard};

use dlmalloc::Dlmalloc;

/// The heap itself. cvm's executable allocates from it (`main` installs [`Heap`]); the library's
/// tests run on the system's allocator, and only this module's own test touches it there.
static DLMALLOC: Mutex<Dlmalloc> = Mutex::new(Dlmalloc::new());

fn lock() -> MutexGuard<'static, Dlmalloc> {
    // Nothing panics while the lock is held; a poisoned lock still guards a sound heap.
    DLMALLOC.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The global allocator cvm's `main` installs.
pub struct Heap;

// SAFETY: every method forwards to dlmalloc under the lock, with the layout's size and
// alignment, which is the contract dlmalloc's functions state for their arguments; dlmalloc
// returns null on failure, as GlobalAlloc requires.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl.
        unsafe { lock().malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for the impl.
        unsafe { lock().calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for the impl; `ptr` came from this heap with `layout` (GlobalAlloc's rule).
        unsafe { lock().free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for dealloc.
        unsafe { lock().realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}

/// Gives the free memory at the top of the heap and wholly free segments back to the kernel
/// (what `malloc_trim(0)` does for glibc).
pub fn trim() {
    // SAFETY: trimming only releases memory no allocation uses.
    unsafe {
        lock().trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_frees_grows_and_trims() {
        let heap = Heap;
        let layout = Layout::from_size_align(1 << 20, 64).unwrap();
        // SAFETY: the layout is non-zero; every pointer is used within its size and freed once.
        unsafe {
            let zeroed = heap.alloc_zeroed(layout);
            assert!(!zeroed.is_null() && (zeroed as usize).is_multiple_of(64));
            assert!(std::slice::from_raw_parts(zeroed, 1 << 20).iter().all(|&b| b == 0));
            zeroed.write_bytes(7, 1 << 20);
            let grown = heap.realloc(zeroed, layout, 2 << 20);
            assert_eq!(*grown.add((1 << 20) - 1), 7);
            heap.dealloc(grown, Layout::from_size_align(2 << 20, 64).unwrap());
        }
        trim();
    }
}

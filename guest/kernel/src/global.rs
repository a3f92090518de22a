//! `Global<T>`: the kernel's mutable state.
//!
//! This kernel runs on one CPU with interrupts off and never re-enters itself (the program is
//! suspended while a system call or exception runs), so a plain cell is enough; no locks.

use core::cell::UnsafeCell;

pub struct Global<T>(UnsafeCell<T>);

// SAFETY: one CPU, no interrupts, no re-entry: there is never a second accessor.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(value: T) -> Self {
        Global(UnsafeCell::new(value))
    }

    /// Runs `f` with the only reference to the value. `f` must not reach the same global
    /// again (the kernel's call graph is shallow enough to see that it does not).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: see the type's comment; no other reference exists while `f` runs.
        f(unsafe { &mut *self.0.get() })
    }

    pub fn as_ptr(&self) -> *mut T {
        self.0.get()
    }
}

impl<T: Copy> Global<T> {
    pub fn get(&self) -> T {
        self.with(|value| *value)
    }

    pub fn set(&self, value: T) {
        self.with(|slot| *slot = value)
    }
}

//! `Global<T>`: a value the boot vCPU sets while booting and everyone only reads afterwards
//! (the TSC calibration, RAM size, where the counters are, the console backend).
//!
//! The other vCPUs read such values only once the boot vCPU has started the program (they
//! wait for their first thread, which the program creates later), so a plain cell is enough.
//! State that changes while the program runs lives behind a `SpinLock` (sync.rs) instead.

use core::cell::UnsafeCell;

pub struct Global<T>(UnsafeCell<T>);

// SAFETY: written only at boot by the boot vCPU, before any other vCPU reads it (see above).
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

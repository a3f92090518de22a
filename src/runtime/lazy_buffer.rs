//! A read buffer whose pages the kernel supplies only when a read first writes them (a private
//! anonymous mapping). cvm keeps 64 KiB buffers for a program's output and for taskstats exit
//! records for a whole run; an idle program that prints one line then costs one page of them,
//! not 64 KiB in every instance (`vec![0; n]` writes every page to zero it).

use std::ops::{Deref, DerefMut};

use anyhow::{Context, Result};

pub struct LazyBuffer {
    start: *mut u8,
    len: usize,
}

impl LazyBuffer {
    pub fn new(len: usize) -> Result<LazyBuffer> {
        let len = len.max(1);
        // SAFETY: a fresh private anonymous mapping; no address hint, no file.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mapping a read buffer");
        }
        Ok(LazyBuffer { start: start.cast(), len })
    }
}

impl Deref for LazyBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: [start, start + len) is our mapping, readable (zero until written), alive until drop.
        unsafe { std::slice::from_raw_parts(self.start, self.len) }
    }
}

impl DerefMut for LazyBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.start, self.len) }
    }
}

impl Drop for LazyBuffer {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`, once.
        unsafe { libc::munmap(self.start.cast(), self.len) };
    }
}

// SAFETY: the buffer owns its mapping exclusively, like a Vec<u8>.
unsafe impl Send for LazyBuffer {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_like_a_slice_and_starts_zeroed() {
        let mut buffer = LazyBuffer::new(64 << 10).unwrap();
        assert_eq!(buffer.len(), 64 << 10);
        assert!(buffer.iter().all(|&b| b == 0));
        buffer[100] = 7;
        assert_eq!(buffer[100], 7);
    }
}

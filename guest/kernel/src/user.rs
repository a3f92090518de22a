//! Access to the program's memory from system calls.
//!
//! The program's memory is [USER_BASE, ram_size), identity-mapped. A pointer inside that range
//! can be used directly unless the program took away its access (munmap, mprotect, the stack
//! guard; protection.rs keeps the list); a pointer outside it, or into such a page, gets
//! `-EFAULT`: the kernel never trusts an address the program hands it.

use core::mem::size_of;

use crate::errno::{Errno, EFAULT};
use crate::global::Global;
use crate::{highmem, protection};
use cvm_guest_abi::USER_BASE;

/// First address above the program's memory (the end of guest RAM).
#[link_section = ".data.hot"]
static USER_END: Global<u64> = Global::new(USER_BASE);

pub fn init(ram_size: u64) {
    USER_END.set(ram_size);
}

pub fn end() -> u64 {
    USER_END.get()
}

/// Checks that [addr, addr + len) lies in the program's memory. An empty range is always
/// fine (Linux accepts `write(1, NULL, 0)`).
pub fn check(addr: u64, len: u64) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    match addr.checked_add(len) {
        Some(end) if addr >= USER_BASE && end <= USER_END.get() => Ok(()),
        _ => Err(EFAULT),
    }
}

/// [`check`], and the program may read all of it (protection.rs).
pub fn readable(addr: u64, len: u64) -> Result<(), Errno> {
    accessible(addr, len, false)
}

/// [`check`], and the program may write all of it.
pub fn writable(addr: u64, len: u64) -> Result<(), Errno> {
    accessible(addr, len, true)
}

fn accessible(addr: u64, len: u64, write: bool) -> Result<(), Errno> {
    // Memory above guest RAM (highmem.rs): allowed by its area, and backed before we touch it.
    if let Some(end) = addr.checked_add(len).filter(|&end| len > 0 && highmem::contains(addr, end)) {
        return highmem::populate(addr, end, write);
    }
    check(addr, len)?;
    if len == 0 || protection::allows(addr, addr + len, write) {
        Ok(())
    } else {
        Err(EFAULT)
    }
}

pub fn bytes<'a>(addr: u64, len: u64) -> Result<&'a [u8], Errno> {
    if len == 0 {
        return Ok(&[]);
    }
    readable(addr, len)?;
    // SAFETY: the range is mapped user memory (checked above) that no kernel object lives in.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

pub fn bytes_mut<'a>(addr: u64, len: u64) -> Result<&'a mut [u8], Errno> {
    if len == 0 {
        return Ok(&mut []);
    }
    writable(addr, len)?;
    // SAFETY: as in `bytes`; the program is suspended while the kernel writes.
    Ok(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) })
}

/// Reads a plain-data value (any bit pattern valid) from the program.
pub fn read<T: Copy>(addr: u64) -> Result<T, Errno> {
    readable(addr, size_of::<T>() as u64)?;
    // SAFETY: checked range; read_unaligned because the program owes us no alignment.
    Ok(unsafe { (addr as *const T).read_unaligned() })
}

pub fn write<T: Copy>(addr: u64, value: T) -> Result<(), Errno> {
    writable(addr, size_of::<T>() as u64)?;
    // SAFETY: as in `read`.
    unsafe { (addr as *mut T).write_unaligned(value) };
    Ok(())
}

/// Writes `value` unless `addr` is NULL (the "old value" pointers of many calls).
pub fn write_optional<T: Copy>(addr: u64, value: T) -> Result<(), Errno> {
    if addr == 0 {
        Ok(())
    } else {
        write(addr, value)
    }
}

/// Fills a range with zeros: `rep stosb` is the fastest way and plain integer code. The range
/// must be writable (memory.rs makes it so first).
pub fn zero(addr: u64, len: u64) {
    if len == 0 {
        return;
    }
    // SAFETY: callers pass ranges inside the program's memory (memory.rs checks them).
    unsafe {
        core::arch::asm!("rep stosb", inout("rdi") addr => _, inout("rcx") len => _, in("al") 0u8,
                         options(nostack));
    }
}

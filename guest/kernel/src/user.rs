//! Access to the program's memory from system calls.
//!
//! The program's memory is [USER_BASE, ram_size), identity-mapped and present from the start,
//! so a pointer inside that range can be used directly and never faults. A pointer outside it
//! gets `-EFAULT`: the kernel never trusts an address the program hands it.

use core::mem::size_of;

use crate::errno::{Errno, EFAULT};
use crate::global::Global;
use cvm_guest_abi::USER_BASE;

/// First address above the program's memory (the end of guest RAM).
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

pub fn bytes<'a>(addr: u64, len: u64) -> Result<&'a [u8], Errno> {
    if len == 0 {
        return Ok(&[]);
    }
    check(addr, len)?;
    // SAFETY: the range is mapped user memory (checked above) that no kernel object lives in.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

pub fn bytes_mut<'a>(addr: u64, len: u64) -> Result<&'a mut [u8], Errno> {
    if len == 0 {
        return Ok(&mut []);
    }
    check(addr, len)?;
    // SAFETY: as in `bytes`; the program is suspended while the kernel writes.
    Ok(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) })
}

/// Reads a plain-data value (any bit pattern valid) from the program.
pub fn read<T: Copy>(addr: u64) -> Result<T, Errno> {
    check(addr, size_of::<T>() as u64)?;
    // SAFETY: checked range; read_unaligned because the program owes us no alignment.
    Ok(unsafe { (addr as *const T).read_unaligned() })
}

pub fn write<T: Copy>(addr: u64, value: T) -> Result<(), Errno> {
    check(addr, size_of::<T>() as u64)?;
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

/// Fills a range with zeros: `rep stosb` is the fastest way and plain integer code.
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

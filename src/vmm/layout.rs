//! The guest-physical memory map, as the guest ABI fixes it, plus the limits of the VMM.
//!
//! ```text
//! 0x0000_0000  page 0: not mapped          0x0040_0000  USER_BASE: program (ET_EXEC at its
//! 0x0000_0500  boot GDT (VMM, never read)               addresses, static-pie at PIE_LOAD_BIAS)
//! 0x0000_1000  BootInfo
//! 0x0000_2000  SyscallCounts (2 pages)     brk_start .. brk_limit      program break
//! 0x0000_8000  page tables (VMM)           brk_limit .. mmap_top       anonymous mmap
//! 0x0010_0000  guest kernel image          mmap_top .. stack_bottom    guard (64 KiB, unmapped)
//!                                          stack_bottom .. ram_size    user stack (1 MiB)
//! 0x0040_0000  top of the kernel boot stack
//! ```

pub use cvm_guest_abi::{
    BOOT_GDT_ADDR, BOOT_INFO_ADDR, KERNEL_BASE, KERNEL_BOOT_STACK_TOP, PAGE_SIZE, PAGE_TABLES_ADDR, PAGE_TABLES_END,
    PIE_LOAD_BIAS, STACK_GUARD_SIZE, SYSCALL_COUNTS_ADDR, USER_BASE, USER_STACK_SIZE,
};

/// Guest RAM when `--memory` is not given.
pub const DEFAULT_RAM_BYTES: u64 = 64 << 20;
/// Smallest guest RAM: the kernel's 4 MiB, a small program and the user stack.
pub const MIN_RAM_BYTES: u64 = 8 << 20;
/// Largest guest RAM cvm accepts (the page-table area could map more; nobody needs it here).
pub const MAX_RAM_BYTES: u64 = 64 << 30;
/// Guest RAM from USER_BASE up is mapped with 2 MiB pages, so its size is a multiple of this.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
/// Room the program must at least have for its break and mmap area.
pub const MIN_HEAP_BYTES: u64 = 1 << 20;

// The kernel's regions, in address order, do not overlap (checked when cvm compiles).
const _: () = {
    assert!(BOOT_GDT_ADDR + 64 <= BOOT_INFO_ADDR);
    assert!(BOOT_INFO_ADDR + PAGE_SIZE <= SYSCALL_COUNTS_ADDR);
    assert!(SYSCALL_COUNTS_ADDR + 2 * PAGE_SIZE <= PAGE_TABLES_ADDR);
    assert!(PAGE_TABLES_END <= KERNEL_BASE);
    assert!(KERNEL_BOOT_STACK_TOP <= USER_BASE);
};

/// Rounds `value` up to a multiple of `align` (a power of two).
pub const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

/// The guest RAM size for a requested size: rounded up to 2 MiB, checked against the limits.
pub fn ram_size(requested: Option<u64>) -> anyhow::Result<u64> {
    let bytes = requested.unwrap_or(DEFAULT_RAM_BYTES);
    if bytes < MIN_RAM_BYTES {
        anyhow::bail!(
            "--memory {} is too small for a VM: give at least {} MiB",
            crate::units::format_bytes(bytes),
            MIN_RAM_BYTES >> 20
        );
    }
    if bytes > MAX_RAM_BYTES {
        anyhow::bail!("--memory {} MiB is more than the {} GiB a cvm VM supports", bytes >> 20, MAX_RAM_BYTES >> 30);
    }
    Ok(align_up(bytes, LARGE_PAGE_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_size_rounds_and_checks() {
        assert_eq!(ram_size(None).unwrap(), 64 << 20);
        assert_eq!(ram_size(Some((10 << 20) + 1)).unwrap(), 12 << 20);
        assert!(ram_size(Some(1 << 20)).unwrap_err().to_string().contains("too small"));
        assert!(ram_size(Some(1 << 40)).is_err());
    }
}

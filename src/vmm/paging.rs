//! The guest's page tables, built by the VMM before the first instruction runs.
//!
//! Identity mapping (virtual == physical) of all guest RAM with 2 MiB pages: everything below
//! [`USER_BASE`] is supervisor-only (the kernel, its tables and stack), everything above is
//! user read/write/execute. Built once, up front, so the guest kernel never edits page tables:
//! `brk` and `mmap` only hand out addresses that are already mapped.

use anyhow::{ensure, Result};

use super::layout::{LARGE_PAGE_SIZE, PAGE_SIZE, PAGE_TABLES_ADDR, PAGE_TABLES_END, USER_BASE};
use super::memory::GuestRam;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;

const ENTRIES: u64 = 512;
const GIB: u64 = 1 << 30;

/// Guest-physical address of the top-level table (the value for CR3).
pub const PML4_ADDR: u64 = PAGE_TABLES_ADDR;
const PDPT_ADDR: u64 = PAGE_TABLES_ADDR + PAGE_SIZE;
const FIRST_PD_ADDR: u64 = PAGE_TABLES_ADDR + 2 * PAGE_SIZE;

/// The tables as bytes, starting at [`PML4_ADDR`]: PML4, PDPT, then one PD per GiB of RAM.
pub fn build(ram_size: u64) -> Result<Vec<u8>> {
    let directories = ram_size.div_ceil(GIB);
    ensure!(
        FIRST_PD_ADDR + directories * PAGE_SIZE <= PAGE_TABLES_END && directories <= ENTRIES,
        "guest RAM of {} GiB needs more page tables than the guest ABI reserves",
        ram_size / GIB
    );
    let mut tables = vec![0u64; ((2 + directories) * ENTRIES) as usize];
    tables[0] = PDPT_ADDR | PRESENT | WRITABLE | USER;
    for directory in 0..directories {
        tables[(ENTRIES + directory) as usize] = (FIRST_PD_ADDR + directory * PAGE_SIZE) | PRESENT | WRITABLE | USER;
    }
    let large_pages = ram_size / LARGE_PAGE_SIZE;
    for page in 0..large_pages {
        let address = page * LARGE_PAGE_SIZE;
        let access = if address >= USER_BASE { USER } else { 0 };
        tables[(2 * ENTRIES + page) as usize] = address | PRESENT | WRITABLE | LARGE | access;
    }
    Ok(tables.iter().flat_map(|entry| entry.to_le_bytes()).collect())
}

/// Writes the tables into guest RAM; returns the CR3 value.
pub fn install(ram: &GuestRam) -> Result<u64> {
    ram.write(PML4_ADDR, &build(ram.size())?)?;
    Ok(PML4_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tables: &[u8], index: usize) -> u64 {
        u64::from_le_bytes(tables[index * 8..index * 8 + 8].try_into().unwrap())
    }

    #[test]
    fn kernel_is_supervisor_and_user_region_is_user() {
        let tables = build(64 << 20).unwrap();
        assert_eq!(tables.len(), 3 * 4096);
        assert_eq!(entry(&tables, 0), PDPT_ADDR | 0b111);
        assert_eq!(entry(&tables, 512), FIRST_PD_ADDR | 0b111);
        // 0 and 2 MiB: the kernel's 4 MiB, not reachable from CPL3.
        assert_eq!(entry(&tables, 1024), PRESENT | WRITABLE | LARGE);
        assert_eq!(entry(&tables, 1025), (2 << 20) | PRESENT | WRITABLE | LARGE);
        assert_eq!(entry(&tables, 1026), (4 << 20) | PRESENT | WRITABLE | LARGE | USER);
        assert_eq!(entry(&tables, 1024 + 31), (62 << 20) | PRESENT | WRITABLE | LARGE | USER);
        assert_eq!(entry(&tables, 1024 + 32), 0, "nothing beyond RAM is mapped");
    }

    #[test]
    fn several_gibibytes_use_one_directory_each() {
        let tables = build(3 << 30).unwrap();
        assert_eq!(tables.len(), 5 * 4096);
        assert_eq!(entry(&tables, 514), (FIRST_PD_ADDR + 2 * 4096) | 0b111);
    }
}

//! The program's page-table entries: changing what it may do with its pages (protection.rs
//! decides, this file writes the entries). Runs at real CPL0 only (reached from a system call
//! through `cpu::privileged`), because the tables are kernel-only memory and `invlpg` is
//! privileged.
//!
//! The VMM built the tables before boot: the program's memory as 2 MiB pages, read-write. A
//! change to part of a 2 MiB page first splits it into a table of 512 4 KiB pages, taken from
//! the free pages of the page-table area (BootInfo's pool).
//!
//! Why the guest writes the entries itself and the VMM does not: on hosts without EPT (PVM,
//! shadow paging) KVM keeps its own copy of the guest's tables and learns of changes by
//! trapping the guest's writes to them; the VMM's writes from outside would go unnoticed.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::errno::{Errno, ENOMEM};
use crate::protection::Access;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
const PAGE: u64 = 4096;
const LARGE_PAGE: u64 = 2 << 20;

/// Free page-table pages: the next one, and the end.
static POOL: AtomicU64 = AtomicU64::new(0);
static POOL_END: AtomicU64 = AtomicU64::new(0);

pub fn init(pool: u64, pool_end: u64) {
    POOL.store(pool, Ordering::Relaxed);
    POOL_END.store(pool_end, Ordering::Relaxed);
}

fn bits(access: Access) -> u64 {
    match access {
        Access::None => 0,
        Access::Read => PRESENT,
        Access::ReadWrite => PRESENT | WRITABLE,
    }
}

/// One entry of the table at physical (= virtual) address `table`.
fn entry(table: u64, index: u64) -> *mut u64 {
    (table + index * 8) as *mut u64
}

/// The page-directory entry that maps `address` (the VMM maps all RAM through 4-level tables
/// with a directory per GiB).
fn directory_entry(address: u64) -> *mut u64 {
    let cr3: u64;
    // SAFETY: reading CR3 at real CPL0 (callers' contract).
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    // SAFETY: the tables are identity-mapped; the VMM made every level present for all RAM.
    unsafe {
        let pdpt = *entry(cr3 & ADDRESS_MASK, address >> 39 & 511) & ADDRESS_MASK;
        let pd = *entry(pdpt, address >> 30 & 511) & ADDRESS_MASK;
        entry(pd, address >> 21 & 511)
    }
}

/// Makes [start, end) (page-aligned, inside the program's memory) `access` and drops this
/// vCPU's cached translations of it. True when an entry changed.
///
/// # Safety
/// Real CPL0 only, with [start, end) inside the program's memory (protection.rs checks).
pub unsafe fn protect(start: u64, end: u64, access: Access) -> Result<bool, Errno> {
    // Enough free tables for every split first, so a failure changes nothing.
    let mut splits = 0;
    let mut chunk = start & !(LARGE_PAGE - 1);
    while chunk < end {
        let partial = chunk < start || end < chunk + LARGE_PAGE;
        // SAFETY: reading an entry of the VMM's identity-mapped tables.
        if partial && unsafe { *directory_entry(chunk) } & LARGE != 0 {
            splits += 1;
        }
        chunk += LARGE_PAGE;
    }
    let pool = POOL.load(Ordering::Relaxed);
    if splits > 0 && (pool == 0 || pool + splits * PAGE > POOL_END.load(Ordering::Relaxed)) {
        return Err(ENOMEM);
    }
    let mut changed = false;
    let mut chunk = start & !(LARGE_PAGE - 1);
    while chunk < end {
        let chunk_end = chunk + LARGE_PAGE;
        let pde = directory_entry(chunk);
        // SAFETY: `pde` and the tables below it are the VMM's identity-mapped page tables,
        // which only this code changes, under protection.rs's lock.
        unsafe {
            if start <= chunk && chunk_end <= end && *pde & LARGE != 0 {
                let wanted = chunk | LARGE | USER | bits(access);
                if *pde != wanted {
                    *pde = wanted;
                    invalidate(chunk);
                    changed = true;
                }
            } else {
                if *pde & LARGE != 0 {
                    split(pde, chunk)?;
                    changed = true;
                }
                let table = *pde & ADDRESS_MASK;
                let mut page = chunk.max(start);
                while page < chunk_end.min(end) {
                    let pte = entry(table, (page - chunk) / PAGE);
                    let wanted = page | USER | bits(access);
                    if *pte != wanted {
                        *pte = wanted;
                        invalidate(page);
                        changed = true;
                    }
                    page += PAGE;
                }
            }
        }
        chunk = chunk_end;
    }
    Ok(changed)
}

/// Replaces the 2 MiB page of `pde` (at `base`) by a table of 4 KiB pages with its access.
///
/// # Safety
/// As [`protect`]; `pde` maps a 2 MiB page of the program's memory.
unsafe fn split(pde: *mut u64, base: u64) -> Result<(), Errno> {
    let table = POOL.load(Ordering::Relaxed);
    if table == 0 || table + PAGE > POOL_END.load(Ordering::Relaxed) {
        return Err(ENOMEM); // `protect` checked: never
    }
    POOL.store(table + PAGE, Ordering::Relaxed);
    // SAFETY: a free page of the page-table area (the pool is the guest kernel's alone).
    unsafe {
        let flags = *pde & (PRESENT | WRITABLE | USER);
        for index in 0..512 {
            *entry(table, index) = (base + index * PAGE) | flags;
        }
        *pde = table | PRESENT | WRITABLE | USER;
    }
    invalidate(base);
    Ok(())
}

/// Drops this vCPU's cached translation of `address`.
fn invalidate(address: u64) {
    // SAFETY: invlpg only affects the TLB; real CPL0 (callers' contract).
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack)) };
}

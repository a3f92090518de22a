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
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const LARGE: u64 = 1 << 7;
/// Every entry is written present with "accessed" and "dirty" set, as the VMM writes them:
/// nothing reads them, and under shadow paging a clear bit costs KVM an extra fault to set it.
const MAPPED: u64 = PRESENT | ACCESSED | DIRTY;
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
        Access::Read => MAPPED,
        Access::ReadWrite => MAPPED | WRITABLE,
    }
}

/// The top-level table (PML4) of the page tables in use.
fn root() -> u64 {
    crate::cpu::read_cr3() & ADDRESS_MASK
}

/// One entry of the table at physical (= virtual) address `table`.
fn entry(table: u64, index: u64) -> *mut u64 {
    (table + index * 8) as *mut u64
}

/// The page-directory entry that maps `address` (the VMM maps all RAM through 4-level tables
/// with a directory per GiB).
fn directory_entry(address: u64) -> *mut u64 {
    // SAFETY: the tables are identity-mapped; the VMM made every level present for all RAM.
    unsafe {
        let pdpt = *entry(root(), address >> 39 & 511) & ADDRESS_MASK;
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
        *entry(table, 0) = base | (*pde & (MAPPED | WRITABLE | USER));
        // The other 511 entries: written by the VMM (one port exit instead of 511 stores at
        // emulated CPL0, 2.5 ms on PVM); the table is not in use until the line below.
        crate::cpu::out32(cvm_guest_abi::port::FILL_PAGE_TABLE, table as u32);
        *pde = table | MAPPED | WRITABLE | USER;
    }
    invalidate(base);
    Ok(())
}

/// Drops this vCPU's cached translation of `address`.
fn invalidate(address: u64) {
    // SAFETY: invlpg only affects the TLB; real CPL0 (callers' contract).
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack)) };
}

/// Takes a zeroed page for a page table from the pool; None when it is empty.
fn take_table() -> Option<u64> {
    let table = POOL.load(Ordering::Relaxed);
    if table == 0 || table + PAGE > POOL_END.load(Ordering::Relaxed) {
        return None;
    }
    POOL.store(table + PAGE, Ordering::Relaxed);
    // SAFETY: a free page of the page-table area, ours alone.
    unsafe { core::ptr::write_bytes(table as *mut u8, 0, PAGE as usize) };
    Some(table)
}

/// The last-level entry for `address` in the memory above guest RAM (highmem.rs), making the
/// tables on the way when `create`. None when a table is missing (and not made) or the pool
/// is empty.
///
/// # Safety
/// Real CPL0; `address` is in the high area, whose tables only this code writes.
unsafe fn high_entry(address: u64, create: bool) -> Option<*mut u64> {
    let mut table = root();
    for shift in [39u64, 30, 21] {
        let slot = entry(table, address >> shift & 511);
        // SAFETY: identity-mapped page tables.
        unsafe {
            if *slot & PRESENT == 0 {
                if !create {
                    return None;
                }
                *slot = take_table()? | MAPPED | WRITABLE | USER;
            }
            table = *slot & ADDRESS_MASK;
        }
    }
    Some(entry(table, address >> 12 & 511))
}

/// The frame mapped at `address` (high area), if any.
///
/// # Safety
/// Real CPL0.
pub unsafe fn high_frame(address: u64) -> Option<u64> {
    // SAFETY: callers' contract.
    let pte = unsafe { high_entry(address, false) }?;
    // SAFETY: an entry of the tables.
    let value = unsafe { *pte };
    (value & ADDRESS_MASK != 0).then_some(value & ADDRESS_MASK)
}

/// Calls `visit(page, entry)` for every page of [start, end) in the high area that has a
/// frame (present or not), skipping whole missing tables at once: a 512 MiB reservation with
/// three pages backed costs three visits, not 131 072.
///
/// # Safety
/// Real CPL0; [start, end) in the high area.
pub unsafe fn for_each_high_page(start: u64, end: u64, mut visit: impl FnMut(u64, *mut u64)) {
    let root = root();
    let mut address = start;
    'walk: while address < end {
        let mut table = root;
        for shift in [39u64, 30, 21] {
            let span = 1u64 << shift;
            // SAFETY: identity-mapped page tables.
            let slot = unsafe { *entry(table, address >> shift & 511) };
            if slot & PRESENT == 0 {
                // Nothing mapped in this whole span: go to its end.
                address = (address | (span - 1)).saturating_add(1);
                continue 'walk;
            }
            table = slot & ADDRESS_MASK;
        }
        let pte = entry(table, address >> 12 & 511);
        // SAFETY: an entry of the tables.
        if unsafe { *pte } & ADDRESS_MASK != 0 {
            visit(address, pte);
        }
        address += PAGE;
    }
}

/// Sets the access of every backed page of [start, end) in the high area. True when one was
/// backed.
///
/// # Safety
/// Real CPL0; [start, end) in the high area.
pub unsafe fn protect_high(start: u64, end: u64, access: Access) -> bool {
    let mut any = false;
    // SAFETY: callers' contract; `pte` is a live entry the walk found.
    unsafe {
        for_each_high_page(start, end, |page, pte| {
            *pte = (*pte & ADDRESS_MASK) | USER | bits(access);
            invalidate(page);
            any = true;
        })
    };
    any
}

/// Unmaps every backed page of [start, end) in the high area, handing each frame to
/// `released`. True when one was backed.
///
/// # Safety
/// Real CPL0; [start, end) in the high area.
pub unsafe fn unmap_high(start: u64, end: u64, mut released: impl FnMut(u64)) -> bool {
    let mut any = false;
    // SAFETY: callers' contract; `pte` is a live entry the walk found.
    unsafe {
        for_each_high_page(start, end, |page, pte| {
            released(*pte & ADDRESS_MASK);
            *pte = 0;
            invalidate(page);
            any = true;
        })
    };
    any
}

/// Maps up to `count` consecutive pages from `address` (high area, all in one page table) that
/// have no frame yet, each to a frame from `frame`, with `access`; stops at the first page that
/// has one, or when `frame` gives none. Returns how many it mapped. One walk for the whole run:
/// on nested hosts every instruction here is emulated.
///
/// # Safety
/// Real CPL0; the frames `frame` gives are free pages of guest RAM reading as zero.
pub unsafe fn map_high_run(address: u64, count: u64, access: Access, mut frame: impl FnMut() -> Option<u64>) -> u64 {
    // SAFETY: callers' contract.
    let Some(first) = (unsafe { high_entry(address, true) }) else { return 0 };
    let room = 512 - (address >> 12 & 511);
    let mut mapped = 0;
    while mapped < count.min(room) {
        // SAFETY: entries of the same page table as `first`.
        let pte = unsafe { first.add(mapped as usize) };
        // SAFETY: as above.
        if unsafe { *pte } & ADDRESS_MASK != 0 {
            break;
        }
        let Some(page) = frame() else { break };
        // SAFETY: as above; not present before, so nothing cached to invalidate.
        unsafe { *pte = page | USER | bits(access) };
        mapped += 1;
    }
    mapped
}

/// After access was taken away: other vCPUs may still cache the old translations (this one
/// invalidated its own). Without inter-processor interrupts the VMM makes them drop them
/// (port TLB_SHOOTDOWN); with one vCPU there is nobody to tell.
pub fn shoot_down() {
    if crate::percpu::count() > 1 {
        crate::cpu::out32(cvm_guest_abi::port::TLB_SHOOTDOWN, 0);
    }
}

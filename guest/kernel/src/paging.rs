//! The program's page-table entries: changing what it may do with its pages (protection.rs
//! decides, this file writes the entries).
//!
//! The VMM built the tables before boot: the program's memory as 2 MiB pages, read-write, but
//! for a few it already split into 4 KiB pages (BootInfo `split_by_vmm`). A change to part of
//! a 2 MiB page first splits it into a table of 512 4 KiB pages, taken from the free pages of
//! the page-table area (BootInfo's pool) and filled by the VMM (port FILL_PAGE_TABLE).
//!
//! The kernel plans a change from what it knows of the tables (which 2 MiB pages are split,
//! into which table), in its own memory, and enters real CPL0 only for the stores themselves
//! and their `invlpg`s (`page_table_stores_ud2`, a few instructions each). On PVM hosts the
//! system-call path runs in hardware ring 3, where the tables cannot be read, and every
//! instruction at CPL0 is emulated at about a microsecond: the walk and the checks that used
//! to run there cost 0.15 ms per change.
//!
//! Why the guest writes the entries itself and the VMM does not: on hosts without EPT (PVM,
//! shadow paging) KVM keeps its own copy of the guest's tables and learns of changes by
//! trapping the guest's writes to them; the VMM's writes from outside would go unnoticed.
//! (A table being filled is not linked yet: nothing of it is shadowed.)

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use cvm_guest_abi::{port, BootInfo, FillPageTable, PAGE_TABLES_ADDR, PAGE_TABLES_END};

use crate::errno::{Errno, ENOMEM};
use crate::protection::Access;
use crate::sync::SpinLock;

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
#[link_section = ".data.hot"]
static POOL: AtomicU64 = AtomicU64::new(0);
#[link_section = ".data.hot"]
static POOL_END: AtomicU64 = AtomicU64::new(0);

/// At most this many 2 MiB pages can ever be split: one per page of the page-table area.
const MAX_SPLITS: usize = ((PAGE_TABLES_END - PAGE_TABLES_ADDR) / PAGE) as usize;

/// What the kernel knows of the tables of the program's memory: read from the BootInfo at the
/// first change (in the system-call path, which runs natively on nested hosts, rather than at
/// boot, where every instruction is emulated).
struct Known {
    boot: *const BootInfo,
    loaded: bool,
    /// The page directories: one page per GiB (entry n maps the 2 MiB page at n * 2 MiB).
    directories: u64,
    /// The 2 MiB pages split into 4 KiB pages: (its address, its table's).
    splits: [(u64, u64); MAX_SPLITS],
    len: usize,
}

// SAFETY: the BootInfo pointer is only read, under KNOWN's lock.
unsafe impl Send for Known {}

impl Known {
    fn load(&mut self) {
        if self.loaded {
            return;
        }
        self.loaded = true;
        // SAFETY: the VMM's BootInfo, in kernel memory nothing else writes after boot.
        let boot = unsafe { &*self.boot };
        self.directories = boot.page_directories;
        for &[base, table] in boot.split_by_vmm.iter().filter(|split| split[1] != 0) {
            self.record(base, table);
        }
    }

    fn table(&self, chunk: u64) -> Option<u64> {
        self.splits[..self.len].iter().find(|(base, _)| *base == chunk).map(|(_, table)| *table)
    }

    /// Room is certain: every split takes a page of the page-table area.
    fn record(&mut self, chunk: u64, table: u64) {
        self.splits[self.len] = (chunk, table);
        self.len += 1;
    }

    fn directory_entry(&self, chunk: u64) -> u64 {
        self.directories + chunk / LARGE_PAGE * 8
    }
}

#[link_section = ".data.hot"]
static KNOWN: SpinLock<Known> = SpinLock::new(Known {
    boot: core::ptr::null(),
    loaded: false,
    directories: 0,
    splits: [(0, 0); MAX_SPLITS],
    len: 0,
});

pub fn init(boot: &'static BootInfo) {
    POOL.store(boot.page_table_pool, Ordering::Relaxed);
    POOL_END.store(boot.page_table_pool_end, Ordering::Relaxed);
    KNOWN.with(|known| known.boot = boot);
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

/// One entry to write at real CPL0, and the page whose cached translation goes with it: what
/// `page_table_stores_ud2` reads.
#[repr(C)]
#[derive(Clone, Copy)]
struct Store {
    entry: u64,
    value: u64,
    page: u64,
}

/// Stores collected for one trip to CPL0 (a change of more entries takes several trips).
struct Stores {
    list: [Store; 32],
    len: usize,
}

impl Stores {
    fn push(&mut self, entry: u64, value: u64, page: u64) {
        if self.len == self.list.len() {
            self.write();
        }
        self.list[self.len] = Store { entry, value, page };
        self.len += 1;
    }

    fn write(&mut self) {
        if self.len > 0 {
            // SAFETY: every store is an entry of the program's tables that `protect` chose,
            // under KNOWN's lock; the door writes them and drops each page's translation.
            unsafe { crate::entry::page_table_stores_ud2(self.list.as_ptr().cast(), self.len as u64) };
            self.len = 0;
        }
    }
}

/// Takes `count` consecutive free pages of the pool, or none when it has fewer.
fn take_pages(count: u64) -> Option<u64> {
    let end = POOL_END.load(Ordering::Relaxed);
    POOL.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |pool| {
        (pool != 0 && pool + count * PAGE <= end).then_some(pool + count * PAGE)
    })
    .ok()
}

/// Makes [start, end) (page-aligned, inside the program's memory) `access`; `before(chunk)`
/// is the access a 2 MiB page not yet split had before (the same for all of it). Drops this
/// vCPU's cached translations of what changed. -ENOMEM, and nothing changed, when a 2 MiB
/// page must be split and the pool is empty.
pub fn protect(start: u64, end: u64, access: Access, before: impl Fn(u64) -> Access) -> Result<(), Errno> {
    let mut known = KNOWN.lock();
    known.load();
    let chunks = || (start & !(LARGE_PAGE - 1)..end).step_by(LARGE_PAGE as usize);
    let partial = |chunk: u64| chunk < start || end < chunk + LARGE_PAGE;
    let splits = chunks().filter(|&chunk| partial(chunk) && known.table(chunk).is_none()).count() as u64;
    let mut new_table = if splits > 0 { take_pages(splits).ok_or(ENOMEM)? } else { 0 };
    let mut stores = Stores { list: [Store { entry: 0, value: 0, page: 0 }; 32], len: 0 };
    for chunk in chunks() {
        let (from, to) = (chunk.max(start), (chunk + LARGE_PAGE).min(end));
        match known.table(chunk) {
            None if !partial(chunk) => {
                stores.push(known.directory_entry(chunk), chunk | LARGE | USER | bits(access), chunk);
            }
            None => {
                let table = new_table;
                new_table += PAGE;
                let fill = FillPageTable {
                    table,
                    base: chunk,
                    bits: USER | bits(before(chunk)),
                    changed_from: (from - chunk) / PAGE,
                    changed_to: (to - chunk) / PAGE,
                    changed_bits: USER | bits(access),
                };
                // The request lives on this vCPU's stack, below 4 GiB.
                crate::cpu::out32(port::FILL_PAGE_TABLE, &fill as *const FillPageTable as u32);
                known.record(chunk, table);
                stores.push(known.directory_entry(chunk), table | MAPPED | WRITABLE | USER, chunk);
            }
            Some(table) => {
                for page in (from..to).step_by(PAGE as usize) {
                    stores.push(table + (page - chunk) / PAGE * 8, page | USER | bits(access), page);
                }
            }
        }
    }
    stores.write();
    Ok(())
}

/// Drops this vCPU's cached translation of `address`.
fn invalidate(address: u64) {
    // SAFETY: invlpg only affects the TLB; real CPL0 (callers' contract).
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack)) };
}

/// Takes a zeroed page for a page table from the pool; None when it is empty.
fn take_table() -> Option<u64> {
    let table = take_pages(1)?;
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

//! The guest's page tables, built by the VMM before the first instruction runs.
//!
//! Identity mapping (virtual == physical) of all guest RAM. Everything below [`USER_BASE`] is
//! supervisor-only (the kernel, its tables and stack), everything above is user
//! read/write/execute. The first 2 MiB are mapped with 4 KiB pages so that page 0 can be left
//! out (a NULL pointer faults); the rest uses 2 MiB pages. Built once, up front, so the guest
//! kernel never edits page tables: `brk` and `mmap` only hand out addresses already mapped.
//!
//! Why 4 KiB pages there: on nested PVM hosts the guest kernel sets the U bit on the entries
//! for [0, USER_BASE) at its first system call (its `syscall` handler runs with user page
//! permissions, see guest/kernel/src/cpu.rs `open_kernel_to_ring3`). A 2 MiB entry opens all of
//! it, page 0 included; of 4 KiB entries it leaves page 0 and the page tables closed, so a
//! program's NULL-pointer access still ends in SIGSEGV there. Only the first 2 MiB (which hold
//! both) get them, and the VMM sets the U bit on those 4 KiB entries up front (all but the page
//! tables; page 0 is absent): the directory entry above them stays supervisor-only, so on
//! hardware KVM nothing changes, while on PVM the kernel only has to open the directory entry
//! instead of walking 512 entries at emulated CPL0 (about 6 ms). When cvm knows the host is
//! such a host and the kernel is not to stay closed, it opens the directory entries itself
//! ([`KernelPages::Open`]): the program's first system call then does not fault at all.

use anyhow::{ensure, Result};

use super::layout::{LARGE_PAGE_SIZE, PAGE_SIZE, PAGE_TABLES_ADDR, PAGE_TABLES_END, USER_BASE};
use super::memory::GuestRam;
use cvm_guest_abi::{FillPageTable, MAX_SPLIT_BY_VMM};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const LARGE: u64 = 1 << 7;
/// How every entry is written: present, with the accessed and dirty bits already set (the CPU
/// ignores "dirty" above the last level). Nothing in cvm reads them, and on hosts without EPT
/// (PVM, shadow paging) a clear bit costs a fault: KVM first maps a page read-only so that it
/// can set "dirty" in the guest's entry at the first write, which faults again.
const MAPPED: u64 = PRESENT | ACCESSED | DIRTY;

const ENTRIES: u64 = 512;
const GIB: u64 = 1 << 30;
/// 2 MiB regions at the bottom of RAM mapped by page tables of 4 KiB pages: the first one,
/// which holds page 0 and the page tables.
const KERNEL_PAGE_TABLES: u64 = 1;

/// Guest-physical address of the top-level table (the value for CR3).
pub const PML4_ADDR: u64 = PAGE_TABLES_ADDR;
const PDPT_ADDR: u64 = PAGE_TABLES_ADDR + PAGE_SIZE;
/// The page tables of 4 KiB pages, one per 2 MiB.
const FIRST_PT_ADDR: u64 = PAGE_TABLES_ADDR + 2 * PAGE_SIZE;
const FIRST_PD_ADDR: u64 = FIRST_PT_ADDR + KERNEL_PAGE_TABLES * PAGE_SIZE;

const _: () = assert!(
    USER_BASE.is_multiple_of(LARGE_PAGE_SIZE)
        && KERNEL_PAGE_TABLES * LARGE_PAGE_SIZE <= USER_BASE
        && PAGE_TABLES_END <= KERNEL_PAGE_TABLES * LARGE_PAGE_SIZE
);

/// Who may reach the kernel's memory [0, USER_BASE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPages {
    /// Supervisor only (the guest kernel may open it itself at its first system call).
    Closed,
    /// Open to ring 3 already, but for page 0 and the page tables: for hosts where the
    /// guest's `syscall` handler runs in hardware ring 3 (PVM) and the kernel is not asked to
    /// stay closed (what `open_kernel_to_ring3` in the guest would do at the first system
    /// call, through a fault and about 200 emulated instructions).
    Open,
}

/// The tables as bytes, starting at [`PML4_ADDR`]: PML4, PDPT, the page table of the first
/// 2 MiB, then one PD per GiB of RAM.
pub fn build(ram_size: u64, kernel: KernelPages) -> Result<Vec<u8>> {
    let kernel_access = if kernel == KernelPages::Open { USER } else { 0 };
    let directories = ram_size.div_ceil(GIB);
    ensure!(
        FIRST_PD_ADDR + directories * PAGE_SIZE <= PAGE_TABLES_END && directories <= ENTRIES,
        "guest RAM of {} GiB needs more page tables than the guest ABI reserves",
        ram_size / GIB
    );
    let table_index = |address: u64| ((address - PAGE_TABLES_ADDR) / 8) as usize;
    let mut tables = vec![0u64; table_index(FIRST_PD_ADDR + directories * PAGE_SIZE)];
    tables[0] = PDPT_ADDR | MAPPED | WRITABLE | USER;
    for directory in 0..directories {
        tables[table_index(PDPT_ADDR) + directory as usize] =
            (FIRST_PD_ADDR + directory * PAGE_SIZE) | MAPPED | WRITABLE | USER;
    }
    let first_pde = table_index(FIRST_PD_ADDR);
    // 4 KiB pages, supervisor-only through their directory entry, page 0 not present. The
    // entries themselves carry U (but for the page tables), ready for the PVM opener.
    for table in 0..KERNEL_PAGE_TABLES {
        let table_address = FIRST_PT_ADDR + table * PAGE_SIZE;
        tables[first_pde + table as usize] = table_address | MAPPED | WRITABLE | kernel_access;
        for page in 0..ENTRIES {
            let address = table * LARGE_PAGE_SIZE + page * PAGE_SIZE;
            let opener_ready = if (PAGE_TABLES_ADDR..PAGE_TABLES_END).contains(&address) { 0 } else { USER };
            if address != 0 {
                tables[table_index(table_address) + page as usize] = address | MAPPED | WRITABLE | opener_ready;
            }
        }
    }
    // The rest: 2 MiB pages, user read/write/execute from USER_BASE up.
    for page in KERNEL_PAGE_TABLES..ram_size / LARGE_PAGE_SIZE {
        let address = page * LARGE_PAGE_SIZE;
        let access = if address >= USER_BASE { USER } else { kernel_access };
        tables[first_pde + page as usize] = address | MAPPED | WRITABLE | LARGE | access;
    }
    Ok(tables.iter().flat_map(|entry| entry.to_le_bytes()).collect())
}

/// Writes the tables into guest RAM; returns the CR3 value.
pub fn install(ram: &GuestRam, kernel: KernelPages) -> Result<u64> {
    ram.write(PML4_ADDR, &build(ram.size(), kernel)?)?;
    Ok(PML4_ADDR)
}

/// What the program may do with a page. PROT_EXEC is not told apart: the VM runs without the
/// NX bit, so whatever may be read may be executed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageAccess {
    None,
    Read,
    ReadWrite,
}

impl PageAccess {
    fn bits(self) -> u64 {
        match self {
            PageAccess::None => 0,
            PageAccess::Read => MAPPED,
            PageAccess::ReadWrite => MAPPED | WRITABLE,
        }
    }
}

/// The guest's page tables once installed, and what changing them needs: where the next 4 KiB
/// page table comes from when a 2 MiB page of the program's memory has to be split (the rest
/// of the area the guest ABI reserves for page tables).
#[derive(Clone, Debug)]
pub struct PageTables {
    ram_size: u64,
    next_table: u64,
    /// The 2 MiB pages split so far: (the 2 MiB page's address, its table's).
    splits: Vec<[u64; 2]>,
}

impl PageTables {
    /// The tables `install` wrote for `ram_size` bytes of RAM.
    pub fn installed(ram_size: u64) -> PageTables {
        PageTables { ram_size, next_table: FIRST_PD_ADDR + ram_size.div_ceil(GIB) * PAGE_SIZE, splits: Vec::new() }
    }

    /// Where the page directories are: one page per GiB of RAM (BootInfo).
    pub fn directories(&self) -> u64 {
        FIRST_PD_ADDR
    }

    /// The 2 MiB pages split into 4 KiB pages so far, as BootInfo tells the guest kernel.
    pub fn splits(&self) -> Result<[[u64; 2]; MAX_SPLIT_BY_VMM]> {
        ensure!(
            self.splits.len() <= MAX_SPLIT_BY_VMM,
            "the VMM split {} 2 MiB pages; the guest ABI tells the kernel of {MAX_SPLIT_BY_VMM} at most",
            self.splits.len()
        );
        let mut splits = [[0; 2]; MAX_SPLIT_BY_VMM];
        splits[..self.splits.len()].copy_from_slice(&self.splits);
        Ok(splits)
    }

    /// The pages of the page-table area still free, [start, end): the guest kernel's pool for
    /// the tables it adds itself (BootInfo).
    pub fn free_area(&self) -> (u64, u64) {
        (self.next_table, PAGE_TABLES_END)
    }

    /// Sets the access of the program's pages in [start, end) (page-aligned, inside
    /// [USER_BASE, RAM end)). Returns whether any entry changed, so the caller knows whether
    /// cached translations must be dropped. Fails when a 2 MiB page must be split and the
    /// page-table area is full.
    pub fn protect(&mut self, ram: &GuestRam, start: u64, end: u64, access: PageAccess) -> Result<bool, ProtectError> {
        self.try_protect(ram, start, end, access).map_err(|error| {
            if self.next_table + PAGE_SIZE > PAGE_TABLES_END {
                ProtectError::OutOfTables
            } else {
                ProtectError::Invalid(format!("{error:#}"))
            }
        })
    }

    fn try_protect(&mut self, ram: &GuestRam, start: u64, end: u64, access: PageAccess) -> Result<bool> {
        ensure!(
            start.is_multiple_of(PAGE_SIZE) && end.is_multiple_of(PAGE_SIZE) && USER_BASE <= start && start <= end,
            "protect: {start:#x}..{end:#x} is not a page-aligned range of the program's memory"
        );
        ensure!(end <= self.ram_size, "protect: {start:#x}..{end:#x} goes beyond guest RAM");
        let mut changed = false;
        let mut chunk = start & !(LARGE_PAGE_SIZE - 1);
        while chunk < end {
            let chunk_end = chunk + LARGE_PAGE_SIZE;
            let pde_address = FIRST_PD_ADDR + (chunk / LARGE_PAGE_SIZE) * 8;
            let pde = ram.read_u64(pde_address)?;
            let whole = start <= chunk && chunk_end <= end;
            if whole && pde & LARGE != 0 {
                let wanted = chunk | LARGE | USER | access.bits();
                changed |= wanted != pde;
                ram.write(pde_address, &wanted.to_le_bytes())?;
            } else {
                let table = if pde & LARGE != 0 { self.split(ram, pde_address, pde)? } else { pde & ADDRESS_MASK };
                for page in (chunk.max(start)..chunk_end.min(end)).step_by(PAGE_SIZE as usize) {
                    let pte_address = table + (page - chunk) / PAGE_SIZE * 8;
                    let wanted = page | USER | access.bits();
                    changed |= ram.read_u64(pte_address)? != wanted;
                    ram.write(pte_address, &wanted.to_le_bytes())?;
                }
            }
            chunk = chunk_end;
        }
        Ok(changed)
    }

    /// Splits the 2 MiB pages of the program's memory that overlap [start, end) into 4 KiB
    /// pages with the same access, ahead of the guest: see [`data_segment_chunks`].
    pub fn split_ahead(&mut self, ram: &GuestRam, start: u64, end: u64) -> Result<()> {
        ensure!(USER_BASE <= start && end <= self.ram_size, "split: {start:#x}..{end:#x} is not program memory");
        let mut chunk = start & !(LARGE_PAGE_SIZE - 1);
        while chunk < end {
            let pde_address = FIRST_PD_ADDR + (chunk / LARGE_PAGE_SIZE) * 8;
            let pde = ram.read_u64(pde_address)?;
            if pde & LARGE != 0 {
                self.split(ram, pde_address, pde)?;
            }
            chunk += LARGE_PAGE_SIZE;
        }
        Ok(())
    }

    /// Replaces the 2 MiB page of `pde` by a table of 512 4 KiB pages with the same access.
    fn split(&mut self, ram: &GuestRam, pde_address: u64, pde: u64) -> Result<u64> {
        ensure!(
            self.next_table + PAGE_SIZE <= PAGE_TABLES_END,
            "the page-table area is full: too many differently protected 2 MiB regions"
        );
        let table = self.next_table;
        self.next_table += PAGE_SIZE;
        let base = pde & ADDRESS_MASK & !(LARGE_PAGE_SIZE - 1);
        let bits = pde & (MAPPED | WRITABLE | USER);
        let fill = FillPageTable { table, base, bits, ..FillPageTable::default() };
        ram.write(table, &split_entries(&fill))?;
        ram.write(pde_address, &(table | MAPPED | WRITABLE | USER).to_le_bytes())?;
        self.splits.push([base, table]);
        Ok(table)
    }
}

/// The part of the program's memory worth splitting into 4 KiB pages before the guest starts:
/// the 2 MiB pages holding the start of the last loadable segment (at most two). That segment
/// is the writable one in every usual link, and its start is the RELRO part that the
/// program's start-up makes read-only (musl, glibc): that mprotect would split the 2 MiB page
/// in the guest, and under shadow paging (PVM) KVM then drops its map of all that 2 MiB and
/// every page the program had touched there faults again (about 30 faults, 1 ms, for hello).
pub fn data_segment_chunks(last_segment_start: u64, image_end: u64) -> (u64, u64) {
    let start = last_segment_start & !(LARGE_PAGE_SIZE - 1);
    let end = image_end.min(last_segment_start.saturating_add(LARGE_PAGE_SIZE)).next_multiple_of(LARGE_PAGE_SIZE);
    (start, end)
}

/// The 512 entries `fill` asks for, as bytes.
fn split_entries(fill: &FillPageTable) -> Vec<u8> {
    (0..ENTRIES)
        .flat_map(|page| {
            let bits = if (fill.changed_from..fill.changed_to).contains(&page) { fill.changed_bits } else { fill.bits };
            ((fill.base + page * PAGE_SIZE) | bits).to_le_bytes()
        })
        .collect()
}

/// Port FILL_PAGE_TABLE (guest ABI): the guest kernel is splitting a 2 MiB page of the
/// program's memory into a free page of its page-table pool [pool.0, pool.1) and asks, with
/// the [`FillPageTable`] at `request`, for the table's entries. The table is not linked into
/// the tables yet, so no shadow of it exists that a write from outside would leave stale.
/// Refuses (the guest kernel has a bug) any table outside the pool, any 2 MiB page outside
/// the program's memory, and entry bits other than present, writable, accessed, dirty and
/// user (always set).
pub fn fill_split_table(ram: &GuestRam, pool: (u64, u64), request: u64) -> Result<()> {
    let mut bytes = [0u8; std::mem::size_of::<FillPageTable>()];
    ram.read(request, &mut bytes)?;
    let field = |index: usize| u64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap_or_default());
    let fill = FillPageTable {
        table: field(0),
        base: field(1),
        bits: field(2),
        changed_from: field(3),
        changed_to: field(4),
        changed_bits: field(5),
    };
    let table = fill.table;
    ensure!(
        table.is_multiple_of(PAGE_SIZE)
            && pool.0 <= table
            && table.checked_add(PAGE_SIZE).is_some_and(|end| end <= pool.1),
        "page table to fill at {table:#x} is not a page of the page-table pool {:#x}..{:#x}",
        pool.0,
        pool.1
    );
    let base = fill.base;
    ensure!(
        base.is_multiple_of(LARGE_PAGE_SIZE)
            && USER_BASE <= base
            && base.checked_add(LARGE_PAGE_SIZE).is_some_and(|end| end <= ram.size()),
        "page table to fill at {table:#x} would map {base:#x}, not a 2 MiB page of the program's memory"
    );
    let valid_bits = |bits: u64| bits & !(MAPPED | WRITABLE | USER) == 0 && bits & USER != 0;
    ensure!(
        valid_bits(fill.bits)
            && valid_bits(fill.changed_bits)
            && fill.changed_from <= fill.changed_to
            && fill.changed_to <= ENTRIES,
        "page table to fill at {table:#x}: bits {:#x}, pages {}..{} with bits {:#x} are not valid entries",
        fill.bits,
        fill.changed_from,
        fill.changed_to,
        fill.changed_bits
    );
    ram.write(table, &split_entries(&fill))
}

#[derive(Debug)]
pub enum ProtectError {
    /// A 2 MiB page had to be split and the page-table area is full.
    OutOfTables,
    Invalid(String),
}

/// The physical-address bits of an entry.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tables: &[u8], address: u64) -> u64 {
        let at = (address - PAGE_TABLES_ADDR) as usize;
        u64::from_le_bytes(tables[at..at + 8].try_into().unwrap())
    }

    /// The entry for `address` in the table at `table`, at the level whose entries cover `span`.
    fn entry_for(tables: &[u8], table: u64, address: u64, span: u64) -> u64 {
        entry(tables, table + (address / span % ENTRIES) * 8)
    }

    /// Walks the tables like the MMU: the final entry for `address` and whether every level
    /// allows user access.
    fn walk(tables: &[u8], address: u64) -> Option<(u64, bool)> {
        let mask = 0x000f_ffff_ffff_f000;
        let present = |e: u64| (e & PRESENT != 0).then_some(e);
        let pml4e = present(entry_for(tables, PML4_ADDR, address, 512 * GIB))?;
        let pdpte = present(entry_for(tables, pml4e & mask, address, GIB))?;
        let pde = present(entry_for(tables, pdpte & mask, address, LARGE_PAGE_SIZE))?;
        let last = if pde & LARGE != 0 { pde } else { present(entry_for(tables, pde & mask, address, PAGE_SIZE))? };
        let user = [pml4e, pdpte, pde, last].iter().all(|e| e & USER != 0);
        Some((last, user))
    }

    #[test]
    fn kernel_is_supervisor_and_user_region_is_user() {
        let tables = build(64 << 20, KernelPages::Closed).unwrap();
        // PML4, PDPT, one page table, one PD.
        assert_eq!(tables.len(), 4 * 4096);
        assert_eq!(entry(&tables, PML4_ADDR), PDPT_ADDR | MAPPED | WRITABLE | USER);
        assert_eq!(entry(&tables, PDPT_ADDR), FIRST_PD_ADDR | MAPPED | WRITABLE | USER);
        // 0 and 2 MiB: the kernel's 4 MiB, not reachable from CPL3; the first 2 MiB in 4 KiB pages.
        assert_eq!(entry(&tables, FIRST_PD_ADDR), FIRST_PT_ADDR | MAPPED | WRITABLE);
        assert_eq!(entry(&tables, FIRST_PT_ADDR), 0, "page 0");
        assert_eq!(entry(&tables, FIRST_PT_ADDR + 8), 0x1000 | MAPPED | WRITABLE | USER);
        assert_eq!(entry(&tables, FIRST_PT_ADDR + 8 * 8), 0x8000 | MAPPED | WRITABLE, "page tables");
        assert_eq!(entry(&tables, FIRST_PT_ADDR + 511 * 8), 0x1f_f000 | MAPPED | WRITABLE | USER);
        assert_eq!(entry(&tables, FIRST_PD_ADDR + 8), (2 << 20) | MAPPED | WRITABLE | LARGE);
        assert_eq!(entry(&tables, FIRST_PD_ADDR + 16), (4 << 20) | MAPPED | WRITABLE | LARGE | USER);
        assert_eq!(entry(&tables, FIRST_PD_ADDR + 31 * 8), (62 << 20) | MAPPED | WRITABLE | LARGE | USER);
        assert_eq!(entry(&tables, FIRST_PD_ADDR + 32 * 8), 0, "nothing beyond RAM is mapped");
    }

    #[test]
    fn an_open_kernel_is_reachable_from_ring3_but_for_page_0_and_the_page_tables() {
        let tables = build(8 << 20, KernelPages::Open).unwrap();
        assert_eq!(walk(&tables, 0), None, "page 0");
        assert_eq!(walk(&tables, PAGE_TABLES_ADDR).map(|(_, user)| user), Some(false), "page tables");
        assert_eq!(walk(&tables, PAGE_TABLES_END - 1).map(|(_, user)| user), Some(false), "page tables");
        for address in [PAGE_SIZE, PAGE_TABLES_END, 1 << 20, LARGE_PAGE_SIZE, USER_BASE - 1, USER_BASE] {
            assert_eq!(walk(&tables, address).map(|(_, user)| user), Some(true), "{address:#x}");
        }
    }

    #[test]
    fn page_zero_is_not_mapped_and_the_rest_is_identity() {
        let tables = build(8 << 20, KernelPages::Closed).unwrap();
        assert_eq!(walk(&tables, 0), None, "page 0");
        assert_eq!(walk(&tables, 0xfff), None, "page 0");
        for address in (PAGE_SIZE..LARGE_PAGE_SIZE).step_by(PAGE_SIZE as usize) {
            let (last, user) = walk(&tables, address).unwrap();
            assert_eq!((last & !USER, user), (address | MAPPED | WRITABLE, false), "{address:#x}");
        }
        let (last, user) = walk(&tables, USER_BASE - 1).unwrap();
        assert_eq!((last, user), ((2 << 20) | MAPPED | WRITABLE | LARGE, false));
        for address in (USER_BASE..8 << 20).step_by(PAGE_SIZE as usize) {
            let (last, user) = walk(&tables, address).unwrap();
            assert!(user, "{address:#x}");
            assert_eq!(last & !(LARGE_PAGE_SIZE - 1), address & !(LARGE_PAGE_SIZE - 1));
        }
        assert_eq!(walk(&tables, 8 << 20), None);
    }

    #[test]
    fn several_gibibytes_use_one_directory_each() {
        let tables = build(3 << 30, KernelPages::Closed).unwrap();
        assert_eq!(tables.len(), 6 * 4096);
        assert_eq!(entry(&tables, PDPT_ADDR + 16), (FIRST_PD_ADDR + 2 * 4096) | MAPPED | WRITABLE | USER);
        assert_eq!(walk(&tables, (3 << 30) - 1).map(|(_, user)| user), Some(true));
    }

    #[test]
    fn the_largest_ram_fits_the_reserved_area() {
        assert!(build(super::super::layout::MAX_RAM_BYTES, KernelPages::Closed).is_ok());
    }

    #[test]
    fn protecting_splits_a_large_page_and_sets_each_entry() {
        let ram = GuestRam::new(8 << 20).unwrap();
        install(&ram, KernelPages::Closed).unwrap();
        let mut tables = PageTables::installed(8 << 20);
        let read_back = |address: u64| {
            let mut bytes = vec![0u8; (PAGE_TABLES_END - PAGE_TABLES_ADDR) as usize];
            ram.read(PAGE_TABLES_ADDR, &mut bytes).unwrap();
            walk(&bytes, address)
        };
        // One page inside a 2 MiB page: split, that page read-only, its neighbours untouched.
        assert!(tables.protect(&ram, USER_BASE + 0x3000, USER_BASE + 0x4000, PageAccess::Read).unwrap());
        assert_eq!(read_back(USER_BASE + 0x3000).unwrap().0, (USER_BASE + 0x3000) | MAPPED | USER);
        assert_eq!(read_back(USER_BASE + 0x2000).unwrap().0, (USER_BASE + 0x2000) | MAPPED | WRITABLE | USER);
        // The same again changes nothing; a whole 2 MiB page stays one entry.
        assert!(!tables.protect(&ram, USER_BASE + 0x3000, USER_BASE + 0x4000, PageAccess::Read).unwrap());
        assert!(tables.protect(&ram, 6 << 20, 8 << 20, PageAccess::None).unwrap());
        assert_eq!(read_back(7 << 20), None);
        assert_eq!(tables.next_table, PageTables::installed(8 << 20).next_table + PAGE_SIZE);
        // Outside the program's memory, or unaligned: refused.
        assert!(tables.protect(&ram, 0x1000, 0x2000, PageAccess::None).is_err());
        assert!(tables.protect(&ram, USER_BASE + 1, USER_BASE + 0x1000, PageAccess::None).is_err());
        assert!(tables.protect(&ram, 6 << 20, 10 << 20, PageAccess::None).is_err());
    }

    #[test]
    fn the_fill_port_writes_a_split_table_and_refuses_anything_else() {
        let ram = GuestRam::new(8 << 20).unwrap();
        install(&ram, KernelPages::Closed).unwrap();
        let pool = PageTables::installed(8 << 20).free_area();
        let request = 0x1000;
        let send = |fill: FillPageTable| {
            let fields = [fill.table, fill.base, fill.bits, fill.changed_from, fill.changed_to, fill.changed_bits];
            ram.write(request, &fields.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<_>>()).unwrap();
            fill_split_table(&ram, pool, request)
        };
        let fill = FillPageTable {
            table: pool.0,
            base: 6 << 20,
            bits: MAPPED | WRITABLE | USER,
            changed_from: 3,
            changed_to: 5,
            changed_bits: USER,
        };
        send(fill).unwrap();
        let entry = |index: u64| ram.read_u64(pool.0 + index * 8).unwrap();
        assert_eq!(entry(0), (6 << 20) | MAPPED | WRITABLE | USER);
        assert_eq!(entry(2), ((6 << 20) + 2 * PAGE_SIZE) | MAPPED | WRITABLE | USER);
        assert_eq!(entry(3), ((6 << 20) + 3 * PAGE_SIZE) | USER, "changed: not present");
        assert_eq!(entry(4), ((6 << 20) + 4 * PAGE_SIZE) | USER);
        assert_eq!(entry(511), ((6 << 20) + 511 * PAGE_SIZE) | MAPPED | WRITABLE | USER);

        let refused = |change: &dyn Fn(&mut FillPageTable)| {
            let mut bad = fill;
            change(&mut bad);
            send(bad).is_err()
        };
        assert!(refused(&|f| f.table = pool.0 + 8), "not page-aligned");
        assert!(refused(&|f| f.table = PML4_ADDR), "a table in use, below the pool");
        assert!(refused(&|f| f.table = pool.1), "past the pool");
        assert!(refused(&|f| f.base += PAGE_SIZE), "not the start of a 2 MiB page");
        assert!(refused(&|f| f.base = 2 << 20), "the kernel's memory");
        assert!(refused(&|f| f.base = 8 << 20), "beyond guest RAM");
        assert!(refused(&|f| f.bits = MAPPED), "not a user page");
        assert!(refused(&|f| f.changed_bits |= LARGE), "odd bits");
        assert!(refused(&|f| f.changed_to = 513), "past the table");
        assert!(refused(&|f| f.changed_from = 6), "backwards");
        assert!(fill_split_table(&ram, pool, (8 << 20) - 8).is_err(), "request beyond guest RAM");
        // Sums that would wrap around (a hostile guest can reach the port on PVM hosts).
        assert!(refused(&|f| f.table = !(PAGE_SIZE - 1)), "a table at the top of the address space");
        assert!(refused(&|f| f.base = !(LARGE_PAGE_SIZE - 1)), "a 2 MiB page at the top of the address space");
    }

    #[test]
    fn the_data_segment_chunks_are_at_most_two_2_mib_pages() {
        const MIB: u64 = 1 << 20;
        // hello: data segment inside the first 2 MiB page of the program.
        assert_eq!(data_segment_chunks(USER_BASE + 0x78_000, USER_BASE + 0x7d_000), (USER_BASE, USER_BASE + 2 * MIB));
        // Crossing a 2 MiB boundary: both pages.
        assert_eq!(data_segment_chunks(USER_BASE + MIB, USER_BASE + 3 * MIB), (USER_BASE, USER_BASE + 4 * MIB));
        // A huge last segment: only where it starts.
        assert_eq!(data_segment_chunks(USER_BASE, USER_BASE + 20 * MIB), (USER_BASE, USER_BASE + 2 * MIB));
        assert_eq!(data_segment_chunks(USER_BASE + MIB, USER_BASE + 20 * MIB), (USER_BASE, USER_BASE + 4 * MIB));
    }
}

//! The program's address space: `brk` and anonymous `mmap`/`munmap`/`mprotect`/`madvise`.
//!
//! The VMM maps all of the program's memory before the guest starts, so nothing here touches
//! a page table (no TLB flush, no privileged instruction in the syscall path). Layout, from
//! BootInfo:
//!
//! ```text
//! USER_BASE  program image | brk heap -> .. brk_limit | <- mmap area .. mmap_top | stack | ram_size
//! ```
//!
//! The mmap area is handed out top-down (as Linux does) from a sorted list of free extents.
//! Memory must read as zero when handed out. Guest RAM starts zeroed, so only pages handed
//! out before need clearing: everything at or above `mmap_low_water` (the lowest address ever
//! handed out) and below `brk_high_water` may have been written; the rest is still pristine
//! and is not touched (which also keeps `guest_touched_bytes` honest).
//!
//! Protections are real: `mmap`'s PROT bits, `mprotect` and `munmap` become page-table
//! entries (protection.rs asks the VMM), so a write to a read-only page or a touch of an
//! unmapped one faults (SIGSEGV). The stack guard below the user stack is unmapped from boot.
//! Not modelled: file mappings (`-ENODEV`/`-EBADF`), reservations larger than guest RAM.

use crate::errno::{Errno, SysResult, EBADF, EEXIST, EINVAL, ENODEV, ENOMEM};
use crate::highmem;
use crate::protection::{self, Access};
use crate::sync::SpinLock;
use crate::user;
use cvm_guest_abi::{BootInfo, PAGE_SIZE};

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MADV_DONTNEED: u64 = 4;

/// Free extents kept; when a `munmap` would need more, the range is leaked (never reused).
const MAX_FREE_EXTENTS: usize = 64;

#[derive(Clone, Copy)]
struct Extent {
    start: u64,
    end: u64,
}

struct AddressSpace {
    brk_start: u64,
    brk: u64,
    brk_limit: u64,
    /// Highest page-rounded brk ever: the heap below it may hold old data.
    brk_high_water: u64,
    mmap_base: u64,
    mmap_top: u64,
    /// Lowest mmap address ever handed out: the area above it may hold old data.
    mmap_low_water: u64,
    /// The unmapped guard between the mmap area and the stack ends here.
    stack_bottom: u64,
    /// Free parts of [mmap_base, mmap_top), sorted, neither overlapping nor touching.
    free: [Extent; MAX_FREE_EXTENTS],
    free_len: usize,
}

#[link_section = ".data.hot"]
static SPACE: SpinLock<AddressSpace> = SpinLock::new(AddressSpace {
    brk_start: 0,
    brk: 0,
    brk_limit: 0,
    brk_high_water: 0,
    mmap_base: 0,
    mmap_top: 0,
    mmap_low_water: 0,
    stack_bottom: 0,
    free: [Extent { start: 0, end: 0 }; MAX_FREE_EXTENTS],
    free_len: 0,
});

/// `ram_is_zeroed`: the VMM guarantees untouched pages read as zero. Without that promise
/// (PVH boot under QEMU) every page is treated as used before, so every allocation is cleared.
pub fn init(boot: &BootInfo, ram_is_zeroed: bool) {
    SPACE.with(|space| {
        space.brk_start = boot.brk_start;
        space.brk = boot.brk_start;
        space.brk_high_water = boot.brk_start;
        space.brk_limit = boot.brk_limit;
        space.mmap_base = boot.brk_limit;
        space.mmap_top = boot.mmap_top.max(boot.brk_limit);
        space.stack_bottom = boot.stack_bottom.max(space.mmap_top);
        space.mmap_low_water = if ram_is_zeroed { space.mmap_top } else { space.mmap_base };
        if !ram_is_zeroed {
            space.brk_high_water = space.brk_limit;
        }
        space.free[0] = Extent { start: space.mmap_base, end: space.mmap_top };
        space.free_len = usize::from(space.mmap_base < space.mmap_top);
    });
    // The VMM left the guard between the mmap area and the stack unmapped.
    protection::init_range(boot.mmap_top, boot.stack_bottom, Access::None);
}

/// Makes [start, end) read-write (it may have been unmapped or protected before) so the
/// kernel can clear it.
fn make_writable(start: u64, end: u64) -> Result<(), Errno> {
    if protection::allows(start, end, true) {
        return Ok(());
    }
    protection::set(start, end, Access::ReadWrite)
}

fn page_up(value: u64) -> Option<u64> {
    Some(value.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1))
}

fn is_page_aligned(value: u64) -> bool {
    value & (PAGE_SIZE - 1) == 0
}

/// `brk(addr)`: moves the end of the heap; always answers the current end (Linux semantics:
/// a failed request just returns the old value).
pub fn brk(requested: u64) -> SysResult {
    SPACE.with(|space| {
        if requested >= space.brk_start && requested <= space.brk_limit {
            if requested > space.brk {
                // Memory below the high-water mark may hold data from before a shrink.
                let dirty_end = requested.min(space.brk_high_water);
                if !protection::allows(space.brk, page_up(requested).unwrap_or(requested), true) {
                    return Ok(space.brk); // the program unmapped or protected pages there
                }
                if dirty_end > space.brk {
                    user::zero(space.brk, dirty_end - space.brk);
                }
            }
            space.brk = requested;
            space.brk_high_water = space.brk_high_water.max(page_up(requested).unwrap_or(requested));
        }
        Ok(space.brk)
    })
}

pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, _offset: u64) -> SysResult {
    if flags & MAP_ANONYMOUS == 0 {
        // There are no files: fds 0-2 are consoles (cannot be mapped), the rest are not open.
        return Err(if fd <= 2 { ENODEV } else { EBADF });
    }
    if flags & (MAP_SHARED | MAP_PRIVATE) == 0 || len == 0 {
        return Err(EINVAL);
    }
    // MAP_SHARED anonymous memory is the same as private here: there is one process.
    let len = page_up(len).ok_or(ENOMEM)?;
    let access = Access::from_prot(prot);
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    if fixed && highmem::contains(addr, addr.saturating_add(len)) {
        if !is_page_aligned(addr) {
            return Err(EINVAL);
        }
        if flags & MAP_FIXED_NOREPLACE != 0 && highmem::allows(addr, addr + len, false) {
            return Err(EEXIST);
        }
        highmem::map_fixed(addr, addr + len, access)?;
        return Ok(addr);
    }
    // A reservation (PROT_NONE) and what does not fit in guest RAM go to the high window,
    // backed only where touched: reservations made in guest RAM would take RAM nobody uses
    // (Go reserves hundreds of MiB and commits a little), leaving none to back the rest.
    if !fixed && access == Access::None && crate::console::hypercalls() {
        return highmem::reserve(len, access);
    }
    let start = match SPACE.with(|space| place(space, addr, len, flags)) {
        Err(ENOMEM) if !fixed => return highmem::reserve(len, access),
        placed => placed?,
    };
    let end = start + len;
    let prepared = make_writable(start, end).and_then(|()| {
        SPACE.with(|space| space.clear_for_reuse(start, end));
        protection::set(start, end, access)
    });
    if let Err(errno) = prepared {
        SPACE.with(|space| space.release(start.max(space.mmap_base), end.min(space.mmap_top)));
        return Err(errno);
    }
    Ok(start)
}

/// Where a new mapping of `len` bytes goes (and takes it from the free extents).
fn place(space: &mut AddressSpace, addr: u64, len: u64, flags: u64) -> SysResult {
    {
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
            if !is_page_aligned(addr) {
                return Err(EINVAL);
            }
            let end = addr.checked_add(len).ok_or(ENOMEM)?;
            user::check(addr, len).map_err(|_| ENOMEM)?;
            if flags & MAP_FIXED_NOREPLACE != 0 && !space.is_free(addr, end) {
                return Err(EEXIST);
            }
            space.take(addr, end)?;
            return Ok(addr);
        }
        // The address hint is ignored, as Linux may do: top-down first fit.
        let extent = space.free[..space.free_len].iter().rev().find(|e| e.end - e.start >= len).copied();
        let extent = extent.ok_or(ENOMEM)?;
        let start = extent.end - len;
        space.take(start, extent.end)?;
        Ok(start)
    }
}

/// Linux's highest user address (x86-64, 4-level paging): `munmap` beyond it is EINVAL.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// Unmaps whatever the range covers of the program's memory and of the high window; where
/// nothing is mapped (between the two, above guest RAM) there is nothing to do, and that is
/// success, as on Linux. The guest kernel's own memory below USER_BASE is never touched.
pub fn munmap(addr: u64, len: u64) -> SysResult {
    if !is_page_aligned(addr) || len == 0 {
        return Err(EINVAL);
    }
    let end = page_up(len).and_then(|len| addr.checked_add(len)).filter(|&end| end <= TASK_SIZE).ok_or(EINVAL)?;
    let (high_start, high_end) = (addr.max(highmem::HIGH_BASE), end.min(highmem::HIGH_END));
    if high_start < high_end {
        highmem::unmap(high_start, high_end)?;
    }
    let (start, end) = (addr.max(cvm_guest_abi::USER_BASE), end.min(user::end()));
    if start >= end {
        return Ok(0);
    }
    // The pages go away wherever they are (a program that unmaps its own stack faults, as on
    // Linux); only the mmap area is handed out again.
    protection::set(start, end, Access::None)?;
    SPACE.with(|space| {
        let start = start.max(space.mmap_base);
        let end = end.min(space.mmap_top);
        if start < end {
            space.release(start, end);
        }
        Ok(0)
    })
}

/// A mapped range of the program's memory gets the new access, in the page tables. As on
/// Linux, a range that reaches an unmapped page (a free part of the mmap area, the heap above
/// `brk`, the stack guard) fails with ENOMEM: the pages before the first such page get the new
/// access, the unmapped ones stay unmapped.
pub fn mprotect(addr: u64, len: u64, prot: u64) -> SysResult {
    if !is_page_aligned(addr) {
        return Err(EINVAL);
    }
    let len = page_up(len).ok_or(ENOMEM)?;
    if highmem::contains(addr, addr.saturating_add(len)) {
        highmem::protect(addr, addr + len, Access::from_prot(prot))?;
        return Ok(0);
    }
    user::check(addr, len).map_err(|_| ENOMEM)?;
    let hole = SPACE.with(|space| space.first_unmapped(addr, addr + len));
    protection::set(addr, hole.unwrap_or(addr + len), Access::from_prot(prot))?;
    match hole {
        Some(_) => Err(ENOMEM),
        None => Ok(0),
    }
}

/// MADV_DONTNEED on private anonymous memory means "zero-fill from now on": done eagerly.
/// Every other advice is a hint and is accepted.
pub fn madvise(addr: u64, len: u64, advice: u64) -> SysResult {
    if !is_page_aligned(addr) {
        return Err(EINVAL);
    }
    let len = page_up(len).ok_or(EINVAL)?;
    if highmem::contains(addr, addr.saturating_add(len)) {
        if advice == MADV_DONTNEED {
            highmem::discard(addr, addr + len)?;
        }
        return Ok(0);
    }
    user::check(addr, len).map_err(|_| ENOMEM)?;
    if advice == MADV_DONTNEED {
        let end = addr + len;
        if protection::allows(addr, end, true) {
            SPACE.with(|space| space.clear_for_reuse(addr, end));
        } else {
            // Rare: protected pages whose contents must still read as zero from now on.
            zero_protected(addr, end)?;
        }
    }
    Ok(0)
}

/// `len` bytes of the 1:1 mmap area, read-write and reading as zero, for highmem.rs to use as
/// frames.
pub fn take_frames(len: u64) -> SysResult {
    let start = SPACE.with(|space| place(space, 0, len, 0))?;
    make_writable(start, start + len)?;
    SPACE.with(|space| space.clear_for_reuse(start, start + len));
    Ok(start)
}

/// Clears [start, end) page by page, each page made writable for the moment and given back its
/// access (so unmapped pages stay unmapped, read-only ones read zeros).
fn zero_protected(start: u64, end: u64) -> Result<(), Errno> {
    let mut page = start;
    while page < end {
        let next = page + PAGE_SIZE;
        let access = if protection::allows(page, next, true) {
            Access::ReadWrite
        } else if protection::allows(page, next, false) {
            Access::Read
        } else {
            Access::None
        };
        if access != Access::None {
            make_writable(page, next)?;
            SPACE.with(|space| space.clear_for_reuse(page, next));
            protection::set(page, next, access)?;
        }
        page = next;
    }
    Ok(())
}

impl AddressSpace {
    /// Zeroes the parts of [start, end) that may hold old data, and records that the whole
    /// range is now in use.
    fn clear_for_reuse(&mut self, start: u64, end: u64) {
        let mut cursor = start;
        while cursor < end {
            let (piece_end, dirty_from, dirty_to) = if cursor < self.brk_start {
                // Program image (or below): always in use.
                (end.min(self.brk_start), cursor, end.min(self.brk_start))
            } else if cursor < self.mmap_base {
                let piece_end = end.min(self.mmap_base);
                let dirty_to = piece_end.min(self.brk_high_water);
                self.brk_high_water = self.brk_high_water.max(piece_end);
                (piece_end, cursor, dirty_to)
            } else if cursor < self.mmap_top {
                let piece_end = end.min(self.mmap_top);
                let dirty_from = cursor.max(self.mmap_low_water);
                self.mmap_low_water = self.mmap_low_water.min(cursor);
                (piece_end, dirty_from, piece_end)
            } else {
                // The stack area: always in use.
                (end, cursor, end)
            };
            if dirty_from < dirty_to {
                user::zero(dirty_from, dirty_to - dirty_from);
            }
            cursor = piece_end;
        }
    }

    /// The first address in [start, end) of a page nothing maps: a free extent of the mmap
    /// area, the heap above `brk`, or the stack guard.
    fn first_unmapped(&self, start: u64, end: u64) -> Option<u64> {
        let heap_end = page_up(self.brk).unwrap_or(self.brk);
        let gaps =
            [Extent { start: heap_end, end: self.brk_limit }, Extent { start: self.mmap_top, end: self.stack_bottom }];
        gaps.iter()
            .chain(&self.free[..self.free_len])
            .filter(|gap| gap.start < gap.end && start < gap.end && gap.start < end)
            .map(|gap| gap.start.max(start))
            .min()
    }

    fn is_free(&self, start: u64, end: u64) -> bool {
        self.free[..self.free_len].iter().any(|e| e.start <= start && end <= e.end)
    }

    /// Removes [start, end) from the free extents (parts already in use are fine).
    fn take(&mut self, start: u64, end: u64) -> Result<(), Errno> {
        let mut result = [Extent { start: 0, end: 0 }; MAX_FREE_EXTENTS];
        let mut count = 0;
        for extent in &self.free[..self.free_len] {
            for piece in [
                Extent { start: extent.start, end: extent.end.min(start) },
                Extent { start: extent.start.max(end), end: extent.end },
            ] {
                if piece.start < piece.end {
                    // Splitting one extent in two may overflow the list.
                    *result.get_mut(count).ok_or(ENOMEM)? = piece;
                    count += 1;
                }
            }
        }
        self.free = result;
        self.free_len = count;
        Ok(())
    }

    /// Adds [start, end) to the free extents, merging with neighbours.
    fn release(&mut self, start: u64, end: u64) {
        let mut merged = Extent { start, end };
        let mut result = [Extent { start: 0, end: 0 }; MAX_FREE_EXTENTS];
        let mut count = 0;
        let mut placed = false;
        for extent in &self.free[..self.free_len] {
            let piece = if extent.end < merged.start {
                *extent
            } else if extent.start > merged.end {
                if !placed {
                    if count == MAX_FREE_EXTENTS {
                        return; // full: leak the range rather than fail munmap
                    }
                    result[count] = merged;
                    count += 1;
                    placed = true;
                }
                *extent
            } else {
                merged = Extent { start: merged.start.min(extent.start), end: merged.end.max(extent.end) };
                continue;
            };
            if count == MAX_FREE_EXTENTS {
                return;
            }
            result[count] = piece;
            count += 1;
        }
        if !placed {
            if count == MAX_FREE_EXTENTS {
                return;
            }
            result[count] = merged;
            count += 1;
        }
        self.free = result;
        self.free_len = count;
    }
}

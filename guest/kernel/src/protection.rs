//! Page protections: what the program may do with each of its pages, and the kernel's own copy
//! of that, kept to check the pointers the program passes.
//!
//! A change is written into the page tables by paging.rs; when access was taken away, the VMM
//! then makes every other vCPU drop its cached translations (port TLB_SHOOTDOWN: there are no
//! inter-processor interrupts). The
//! kernel keeps the same facts as a short sorted list of the ranges that are *not* plain
//! read-write (a PROT_NONE reservation, a read-only page, the stack guard, unmapped holes), so
//! that a system call never touches a page the program could not: `user.rs` asks [`allows`]
//! before every access, and answers -EFAULT instead of faulting in the kernel.

use crate::console;
use crate::errno::Errno;
use crate::ranges::RangeMap;
use crate::sync::SpinLock;

/// What the program may do with a range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    None,
    Read,
    ReadWrite,
}

impl Access {
    /// From mmap's and mprotect's PROT_* bits (PROT_EXEC counts as reading: no NX bit here).
    pub fn from_prot(prot: u64) -> Access {
        const PROT_READ: u64 = 1;
        const PROT_WRITE: u64 = 2;
        const PROT_EXEC: u64 = 4;
        if prot & PROT_WRITE != 0 {
            Access::ReadWrite
        } else if prot & (PROT_READ | PROT_EXEC) != 0 {
            Access::Read
        } else {
            Access::None
        }
    }

    fn rank(self) -> u8 {
        match self {
            Access::None => 0,
            Access::Read => 1,
            Access::ReadWrite => 2,
        }
    }
}

/// Ranges that are not read-write (read-write is the absence of a range); more than this many
/// apart and mprotect answers -ENOMEM (as Linux does past its own map count).
const MAX_RANGES: usize = 128;

type Ranges = RangeMap<Access, MAX_RANGES>;

#[link_section = ".data.hot"]
static RANGES: SpinLock<Ranges> = SpinLock::new(RangeMap::new(Access::None));

/// The map's value for `access`: read-write is no range at all.
fn entry(access: Access) -> Option<Access> {
    (access != Access::ReadWrite).then_some(access)
}

/// Records a range the VMM already made `access` (the stack guard, at boot).
pub fn init_range(start: u64, end: u64, access: Access) {
    RANGES.with(|ranges| {
        let _ = ranges.set(start, end, entry(access));
    });
}

/// True when the program may read (or, with `write`, write) all of [start, end).
pub fn allows(start: u64, end: u64, write: bool) -> bool {
    RANGES.with(|ranges| ranges.overlapping(start, end).all(|r| r.value == Access::Read && !write))
}

/// Pages [start, end) (page-aligned, inside the program's memory: callers check) become
/// `access`: the kernel's list first (refused when full), then the page tables. Under QEMU's
/// PVH boot the tables are not the VMM's and only the list changes: the pages stay accessible.
pub fn set(start: u64, end: u64, access: Access) -> Result<(), Errno> {
    if start >= end {
        return Ok(());
    }
    RANGES.with(|ranges| {
        // The page tables say what the list says: nothing to write, and no trip to CPL0 for
        // an mmap of memory that is read-write already.
        if has_all(ranges, start, end, access) {
            return Ok(());
        }
        let saved = *ranges;
        let strongest_before = strongest(ranges, start, end);
        ranges.set(start, end, entry(access))?;
        if !console::hypercalls() {
            return Ok(());
        }
        let before = |address| saved.find(address).map_or(Access::ReadWrite, |range| range.value);
        if let Err(errno) = crate::paging::protect(start, end, access, before) {
            // paging.rs checks the pool before it changes anything: nothing did.
            *ranges = saved;
            return Err(errno);
        }
        // Access taken away from a page another vCPU may have cached: make them all forget.
        if access.rank() < strongest_before.rank() {
            crate::paging::shoot_down();
        }
        Ok(())
    })
}

/// True when every page of [start, end) has `access` now.
fn has_all(ranges: &Ranges, start: u64, end: u64, access: Access) -> bool {
    match entry(access) {
        None => ranges.overlapping(start, end).next().is_none(),
        Some(value) => {
            let mut covered = start;
            for range in ranges.overlapping(start, end) {
                if range.start > covered || range.value != value {
                    return false;
                }
                covered = range.end;
            }
            covered >= end
        }
    }
}

/// The most access any page of [start, end) has now.
fn strongest(ranges: &Ranges, start: u64, end: u64) -> Access {
    let covered: u64 = ranges.overlapping(start, end).map(|r| r.end.min(end) - r.start.max(start)).sum();
    if covered < end - start {
        return Access::ReadWrite;
    }
    ranges.overlapping(start, end).map(|r| r.value).max_by_key(|a| a.rank()).unwrap_or(Access::ReadWrite)
}

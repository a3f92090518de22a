//! Memory beyond guest RAM: address-space reservations larger than the VM's RAM, backed page
//! by page on first touch (demand paging).
//!
//! Guest RAM is mapped 1:1 below its end, and that is where `mmap` normally hands out memory.
//! A mapping that does not fit there (Go's runtime reserves hundreds of MiB of PROT_NONE
//! address space at start-up and commits a little of it at a time) goes to a high window,
//! [HIGH_BASE, HIGH_END), where only the pages actually touched get a frame: a 4 KiB page of
//! guest RAM taken from the 1:1 mmap area. The program's first touch of such a page faults;
//! the #PF handler finds the area allows it, maps a zeroed frame and lets the instruction run
//! again. A system call that is handed a pointer up here has its pages faulted in the same way
//! before it touches them (`populate`).
//!
//! Frames unmapped up here go to a free list and are reused here (never given back to the 1:1
//! area). Not done: closing a frame's 1:1 alias (the program could reach it if it looked);
//! page tables for the window come from the fixed page-table area, which caps how many 2 MiB
//! regions of it can ever be touched (about 240 for 64 MiB of RAM): past that, and when guest
//! RAM runs out, the run ends as out of memory.

use crate::cpu::privileged;
use crate::errno::{Errno, EFAULT, EINVAL, ENOMEM};
use crate::fault::privileged as op;
use crate::protection::Access;
use crate::ranges::{Range, RangeMap};
use crate::sync::SpinLock;
use crate::{console, memory, paging, user};

/// The high window: 1 TiB up, 64 GiB of address space.
pub const HIGH_BASE: u64 = 1 << 40;
pub const HIGH_END: u64 = HIGH_BASE + (64 << 30);
const PAGE: u64 = 4096;
const MAX_AREAS: usize = 256;
/// Frames are taken from the 1:1 mmap area this many bytes at a time.
const FRAME_CHUNK: u64 = 256 << 10;

struct High {
    /// What the program may do with each part of the window it holds.
    areas: RangeMap<Access, MAX_AREAS>,
    /// Where the next reservation goes, from HIGH_BASE (the window is handed out upward, never
    /// reused; an offset, so the state is all zeros at boot and costs no loaded page).
    next: u64,
    /// Frames of the current chunk not yet handed out: [chunk, chunk_end).
    chunk: u64,
    chunk_end: u64,
    /// Frames given back by munmap and madvise, as lists linked through their first word:
    /// `dirty` as they were unmapped (at CPL0), `clean` once zeroed. Zeroing runs in the system
    /// call after the privileged part ([`clean_freed`]): there it is the program's own privilege
    /// level, native speed even on hosts that emulate kernel code (about 1.7 ms a page there).
    dirty: u64,
    clean: u64,
}

#[link_section = ".data.hot"]
static HIGH: SpinLock<High> =
    SpinLock::new(High { areas: RangeMap::new(Access::None), next: 0, chunk: 0, chunk_end: 0, dirty: 0, clean: 0 });

/// True when [start, end) lies in the high window.
pub fn contains(start: u64, end: u64) -> bool {
    HIGH_BASE <= start && start <= end && end <= HIGH_END
}

/// A new area of `len` bytes (page-aligned) with `access`, nothing backed yet.
pub fn reserve(len: u64, access: Access) -> Result<u64, Errno> {
    if !console::hypercalls() {
        return Err(ENOMEM); // under QEMU the page tables are not ours to extend
    }
    HIGH.with(|high| {
        // First a hole that an unmapped area left (its page tables are there already: reusing
        // the addresses costs no new table), else fresh space at the end.
        let start = match high.hole(len) {
            Some(start) => start,
            None => {
                let start = HIGH_BASE + high.next;
                let end = start.checked_add(len).filter(|&end| end <= HIGH_END).ok_or(ENOMEM)?;
                // A page of gap between reservations, as Linux leaves between mappings.
                high.next = end + PAGE - HIGH_BASE;
                start
            }
        };
        high.areas.set(start, start + len, Some(access))?;
        Ok(start)
    })
}

/// `mmap(MAP_FIXED)` in the window: whatever was there goes, the range is `access`, unbacked.
pub fn map_fixed(start: u64, end: u64, access: Access) -> Result<(), Errno> {
    change(start, end, Change::Replace(access))
}

pub fn unmap(start: u64, end: u64) -> Result<(), Errno> {
    change(start, end, Change::Remove)
}

/// `mprotect`: every page of the range must be in an area (-ENOMEM otherwise, as Linux).
pub fn protect(start: u64, end: u64, access: Access) -> Result<(), Errno> {
    if !HIGH.with(|high| high.covered(start, end)) {
        return Err(ENOMEM);
    }
    change(start, end, Change::Protect(access))
}

/// `madvise(MADV_DONTNEED)`: the pages read as zero from now on: their frames go.
pub fn discard(start: u64, end: u64) -> Result<(), Errno> {
    change(start, end, Change::Discard)
}

#[derive(Clone, Copy)]
enum Change {
    Replace(Access),
    Remove,
    Protect(Access),
    Discard,
    /// Back every page of the range that is not yet (for a system call about to touch it).
    Populate,
}

/// What `privileged_call_ud2(HIGH, &request)` carries to [`apply`].
#[repr(C)]
pub struct Request {
    start: u64,
    end: u64,
    change: Change,
}

fn change(start: u64, end: u64, change: Change) -> Result<(), Errno> {
    if !contains(start, end) || !start.is_multiple_of(PAGE) || !end.is_multiple_of(PAGE) {
        return Err(EINVAL);
    }
    let request = Request { start, end, change };
    let answer = privileged(op::HIGH, &request as *const Request as u64);
    clean_freed();
    if answer == TOOK_ACCESS {
        crate::paging::shoot_down();
    }
    if answer == OUT_OF_MEMORY {
        return Err(ENOMEM);
    }
    Ok(())
}

const DONE: u64 = 0;
const TOOK_ACCESS: u64 = 1;
const OUT_OF_MEMORY: u64 = 2;

/// At real CPL0: carries out a [`Request`].
pub fn apply(request: u64) -> u64 {
    // SAFETY: `change` passes a pointer to a Request on this vCPU's stack, waiting for us.
    let request = unsafe { &*(request as *const Request) };
    let (start, end) = (request.start, request.end);
    HIGH.with(|high| {
        let mut took = false;
        match request.change {
            Change::Replace(access) => {
                took = high.drop_frames(start, end);
                if high.areas.set(start, end, Some(access)).is_err() {
                    return OUT_OF_MEMORY;
                }
            }
            Change::Remove => {
                took = high.drop_frames(start, end);
                if high.areas.set(start, end, None).is_err() {
                    return OUT_OF_MEMORY;
                }
            }
            Change::Discard => took = high.drop_frames(start, end),
            Change::Protect(access) => {
                if high.areas.set(start, end, Some(access)).is_err() {
                    return OUT_OF_MEMORY;
                }
                // SAFETY: real CPL0 (we are in the #UD handler), pages of the window.
                let backed = unsafe { paging::protect_high(start, end, access) };
                took = backed && access != Access::ReadWrite;
            }
            Change::Populate => {
                let mut page = start;
                while page < end {
                    // SAFETY: as above.
                    if unsafe { paging::high_frame(page) }.is_none() && !high.back(page) {
                        return OUT_OF_MEMORY;
                    }
                    page += PAGE;
                }
            }
        }
        if took {
            TOOK_ACCESS
        } else {
            DONE
        }
    })
}

/// Zeroes the frames unmapped by the last change and makes them available again.
fn clean_freed() {
    HIGH.with(|high| {
        while high.dirty != 0 {
            let frame = high.dirty;
            // SAFETY: a free frame of ours, 1:1-mapped; its first word links the list.
            high.dirty = unsafe { core::ptr::read(frame as *const u64) };
            user::zero(frame, PAGE);
            // SAFETY: as above.
            unsafe { core::ptr::write(frame as *mut u64, high.clean) };
            high.clean = frame;
        }
    });
}

/// True when the program may read (or write) all of [start, end) in the window.
pub fn allows(start: u64, end: u64, write: bool) -> bool {
    HIGH.with(|high| high.allows(start, end, write))
}

/// Before a system call touches [start, end) in the window: every page backed.
pub fn populate(start: u64, end: u64, write: bool) -> Result<(), Errno> {
    if !allows(start, end, write) {
        return Err(EFAULT);
    }
    let page_start = start & !(PAGE - 1);
    let page_end = end.div_ceil(PAGE) * PAGE;
    change(page_start, page_end, Change::Populate).map_err(|_| EFAULT)
}

/// The #PF handler's question for a fault of the program at `address` in the window: true when
/// the page was only not backed yet (now it is: run the instruction again).
pub fn fault(address: u64, write: bool) -> Fault {
    let page = address & !(PAGE - 1);
    HIGH.with(|high| {
        if !high.allows(page, page + PAGE, write) {
            return Fault::Denied;
        }
        // SAFETY: we run in the exception handler at real CPL0.
        if unsafe { paging::high_frame(page) }.is_some() {
            return Fault::Backed; // another vCPU backed it meanwhile: run the instruction again
        }
        let Some(area) = high.areas.find(page) else { return Fault::Denied };
        // Fault-around: every entry into the kernel is emulated on nested hosts (a few hundred
        // microseconds), so back the following pages of the same area now, in one run: a
        // program touching one page usually touches the next.
        let block_end = ((page | (FAULT_AROUND - 1)) + 1).min(area.end);
        let count = (block_end - page) / PAGE;
        // SAFETY: as above; the frames read as zero.
        let mapped = unsafe { paging::map_high_run(page, count, area.value, || high.take_frame()) };
        if mapped > 0 {
            Fault::Backed
        } else {
            Fault::OutOfMemory
        }
    })
}

/// What a first touch of the window came to.
#[derive(PartialEq, Eq)]
pub enum Fault {
    /// The page is backed now: run the instruction again.
    Backed,
    /// No area allows this access: the program's fault.
    Denied,
    /// No frame or page table left: the VM's memory is exhausted.
    OutOfMemory,
}

/// Pages backed together on a first touch (an aligned block of this many bytes).
const FAULT_AROUND: u64 = 64 << 10;

impl High {
    fn allows(&self, start: u64, end: u64, write: bool) -> bool {
        let permits = |a: &Range<Access>| match a.value {
            Access::None => false,
            Access::Read => !write,
            Access::ReadWrite => true,
        };
        self.covered(start, end) && self.areas.overlapping(start, end).all(permits)
    }

    /// The lowest start of `len` free bytes between the areas handed out so far, a page of gap
    /// kept on each side.
    fn hole(&self, len: u64) -> Option<u64> {
        let mut free_from = HIGH_BASE;
        for area in self.areas.iter() {
            if area.start >= free_from + len + PAGE {
                return Some(free_from);
            }
            free_from = free_from.max(area.end + PAGE);
        }
        // Between the last area and the end of what was ever handed out.
        (HIGH_BASE + self.next >= free_from + len).then_some(free_from)
    }

    fn covered(&self, start: u64, end: u64) -> bool {
        let mut cursor = start;
        for area in self.areas.iter() {
            if area.end <= cursor {
                continue;
            }
            if area.start > cursor {
                return false;
            }
            cursor = area.end;
            if cursor >= end {
                return true;
            }
        }
        cursor >= end
    }

    /// Unmaps the backed pages of [start, end), keeping their frames for reuse. True when
    /// one was backed (other vCPUs may have it cached).
    fn drop_frames(&mut self, start: u64, end: u64) -> bool {
        let dirty = &mut self.dirty;
        // SAFETY: real CPL0 (callers run in the #UD handler), pages of the window; each frame
        // is ours and 1:1-mapped, its first word links the dirty list.
        unsafe {
            paging::unmap_high(start, end, |frame| {
                core::ptr::write(frame as *mut u64, *dirty);
                *dirty = frame;
            })
        }
    }

    /// Gives `page` a zeroed frame with its area's access. False when there is no memory.
    fn back(&mut self, page: u64) -> bool {
        let Some(area) = self.areas.find(page) else { return false };
        // SAFETY: real CPL0; the frames read as zero and are ours alone.
        unsafe { paging::map_high_run(page, 1, area.value, || self.take_frame()) == 1 }
    }

    /// A frame that reads as zero: a cleaned one, or a fresh one of the current chunk.
    fn take_frame(&mut self) -> Option<u64> {
        if self.clean != 0 {
            let frame = self.clean;
            // SAFETY: a clean free frame; only its link word is not zero: clear it.
            unsafe {
                self.clean = core::ptr::read(frame as *const u64);
                core::ptr::write(frame as *mut u64, 0);
            }
            return Some(frame);
        }
        if self.chunk >= self.chunk_end {
            let chunk = memory::take_frames(FRAME_CHUNK).ok()?;
            (self.chunk, self.chunk_end) = (chunk, chunk + FRAME_CHUNK);
        }
        let frame = self.chunk;
        self.chunk += PAGE;
        Some(frame)
    }
}

//! Placing the guest kernel and the program in guest RAM, host-side, before the guest runs
//! (on nested hosts every guest-kernel instruction is emulated, so the VMM does the loading).
//!
//! [`ProgramLayout::plan`] runs before any VM exists: a program that does not fit the guest
//! RAM is refused with one line and nothing to tear down.

use anyhow::{bail, ensure, Context, Result};

use super::layout::{
    align_up, KERNEL_BASE, KERNEL_BOOT_STACK_TOP, MIN_HEAP_BYTES, PAGE_SIZE, PIE_LOAD_BIAS, STACK_GUARD_SIZE,
    USER_BASE, USER_STACK_SIZE,
};
use super::memory::GuestRam;
use crate::elf::{ElfFile, Segment};

/// Room kept free below [`KERNEL_BOOT_STACK_TOP`] for the vCPUs' stacks.
const KERNEL_BOOT_STACK_BYTES: u64 = KERNEL_BOOT_STACK_TOP - cvm_guest_abi::CPU_STACKS_BOTTOM;

/// Where the program and its memory areas go in the guest address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramLayout {
    /// Added to every virtual address of the file (0 for ET_EXEC).
    pub bias: u64,
    pub entry: u64,
    /// Program headers in guest memory (for AT_PHDR).
    pub phdr_address: u64,
    pub phent: u64,
    pub phnum: u64,
    pub brk_start: u64,
    pub brk_limit: u64,
    pub mmap_top: u64,
    pub stack_bottom: u64,
    pub stack_top: u64,
}

impl ProgramLayout {
    /// Plans the program's place in `ram_size` bytes of guest RAM, or says why it does not fit.
    pub fn plan(program: &ElfFile, ram_size: u64) -> Result<ProgramLayout> {
        let bias = if program.position_independent { PIE_LOAD_BIAS } else { 0 };
        // Every address below is computed with checked arithmetic: a hostile file can put a
        // segment anywhere in the 64-bit space, and a wrapped sum would place the heap over
        // the kernel's boot data.
        let overflow = || anyhow::anyhow!("corrupt ELF file: a segment address overflows the 64-bit address space");
        let stack_bottom = ram_size.checked_sub(USER_STACK_SIZE).context("guest RAM smaller than the user stack")?;
        let (mut low, mut high) = (u64::MAX, 0u64);
        for segment in &program.segments {
            let start = segment.vaddr.checked_add(bias).ok_or_else(overflow)?;
            let end = start.checked_add(segment.mem_size).ok_or_else(overflow)?;
            low = low.min(start);
            high = high.max(end);
        }
        if low < USER_BASE {
            bail!(
                "the program is linked at {low:#x}, below the VM's user space at {USER_BASE:#x}; \
                 link it at {USER_BASE:#x} or higher, or build it as static-pie"
            );
        }
        let entry = program.entry.checked_add(bias).ok_or_else(overflow)?;
        if !program.segments.iter().any(|s| program.entry >= s.vaddr && program.entry - s.vaddr < s.mem_size) {
            bail!("corrupt ELF file: the entry point {:#x} is not in any loadable segment", program.entry);
        }
        let too_big = || {
            anyhow::anyhow!(
                "the program needs {} MiB of memory but the VM has {} MiB of guest RAM; give it more with --memory",
                high.saturating_sub(low).saturating_add(MIN_HEAP_BYTES + USER_STACK_SIZE + USER_BASE).div_ceil(1 << 20),
                ram_size >> 20
            )
        };
        if high > stack_bottom && high - low <= stack_bottom.saturating_sub(USER_BASE + MIN_HEAP_BYTES) {
            bail!(
                "the program is linked at {low:#x}..{high:#x}, beyond the VM's {} MiB of guest RAM; give it more \
                 with --memory, or link it lower",
                ram_size >> 20
            );
        }
        let brk_start = checked_align_up(high, PAGE_SIZE).ok_or_else(too_big)?;
        if brk_start.checked_add(MIN_HEAP_BYTES).is_none_or(|end| end > stack_bottom) {
            return Err(too_big());
        }
        // A quarter of what is free for the break, the rest for mmap (where large allocations go).
        let brk_limit = brk_start + align_up((stack_bottom - brk_start) / 4, PAGE_SIZE);
        let phdr_address = program
            .program_headers_vaddr()
            .context("the program's headers are not in a loaded segment (AT_PHDR would be wrong)")?
            .checked_add(bias)
            .ok_or_else(overflow)?;
        Ok(ProgramLayout {
            bias,
            entry,
            phdr_address,
            phent: u64::from(program.phentsize),
            phnum: u64::from(program.phnum),
            brk_start,
            brk_limit,
            // Below the stack, a guard the page tables leave unmapped (builder.rs).
            mmap_top: stack_bottom - STACK_GUARD_SIZE,
            stack_bottom,
            stack_top: ram_size,
        })
    }
}

/// `value` rounded up to a multiple of `align` (a power of two), or None past 2^64.
pub fn checked_align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// Copies the program's segments to their addresses; the rest of each segment (bss) is
/// already zero because guest RAM starts as untouched zero pages. The bss pages are populated
/// too, though they stay zero: see [`populate_bss`].
pub fn load_program(ram: &GuestRam, program: &ElfFile, layout: &ProgramLayout) -> Result<()> {
    for segment in &program.segments {
        let address = segment.vaddr + layout.bias;
        ram.populate(address, segment.file_size);
        ram.write(address, program.segment_bytes(segment)).context("loading the program")?;
        populate_bss(ram, address, segment);
    }
    Ok(())
}

/// Populates a segment's zero-filled tail (its bss) in the host, as zero pages of its own.
/// Programs write their bss early (libc's state lives there), and on a host with shadow
/// paging KVM maps up to 8 neighbouring guest pages with each fault, but only pages the host
/// already holds writable: populated, the bss pages come with the fault on the data just
/// below them instead of faulting one by one (30-45 us each on a PVM host).
fn populate_bss(ram: &GuestRam, address: u64, segment: &Segment) {
    if segment.mem_size > segment.file_size {
        ram.populate(address + segment.file_size, segment.mem_size - segment.file_size);
    }
}

/// Like [`load_program`], but the whole pages of each segment are mapped from `file` (a
/// byte-for-byte copy of the program on disk) instead of copied: they stay in the page cache,
/// shared by every VM running the same program, as a process shares its executable's pages.
/// Only the partial pages at a segment's ends are copied. A segment whose address and file
/// offset disagree within a page cannot be mapped and is copied. Returns the bytes mapped.
pub fn map_program(ram: &GuestRam, program: &ElfFile, layout: &ProgramLayout, file: &std::fs::File) -> Result<u64> {
    let page = super::memory::host_page_size();
    let file_len = file.metadata().context("reading the program file's size")?.len();
    ensure!(file_len == program.bytes.len() as u64, "the program file's size does not match the program");
    let mut mapped = 0;
    for segment in &program.segments {
        let start = segment.vaddr + layout.bias;
        let end = start + segment.file_size;
        let bytes = program.segment_bytes(segment);
        populate_bss(ram, start, segment);
        let full_start = start.next_multiple_of(page);
        let full_end = end / page * page;
        if start % page != segment.offset % page || full_end <= full_start {
            ram.write(start, bytes).context("loading the program")?;
            continue;
        }
        let offset = segment.offset + (full_start - start);
        ram.map_file(full_start, full_end - full_start, file, offset)?;
        mapped += full_end - full_start;
        let head = (full_start - start) as usize;
        let tail = (full_end - start) as usize;
        ram.write(start, &bytes[..head]).context("loading the program")?;
        ram.write(full_end, &bytes[tail..]).context("loading the program")?;
    }
    Ok(mapped)
}

/// Copies the kernel's segments to their physical addresses; returns its entry point.
pub fn load_kernel(ram: &GuestRam, kernel: &ElfFile) -> Result<u64> {
    ensure!(!kernel.position_independent, "the guest kernel must be a fixed-address (ET_EXEC) ELF file");
    for segment in &kernel.segments {
        let end = segment.paddr + segment.mem_size;
        ensure!(
            segment.paddr >= KERNEL_BASE && end <= KERNEL_BOOT_STACK_TOP - KERNEL_BOOT_STACK_BYTES,
            "the guest kernel segment at {:#x}..{end:#x} is outside the kernel area {KERNEL_BASE:#x}..{:#x}",
            segment.paddr,
            KERNEL_BOOT_STACK_TOP - KERNEL_BOOT_STACK_BYTES
        );
        // One system call for the segment's pages instead of a page fault each.
        ram.populate(segment.paddr, segment.file_size);
        ram.write(segment.paddr, kernel.segment_bytes(segment)).context("loading the guest kernel")?;
    }
    ensure!(
        kernel.segments.iter().any(|s| kernel.entry >= s.vaddr && kernel.entry < s.vaddr + s.mem_size),
        "the guest kernel's entry point {:#x} is not in any of its segments",
        kernel.entry
    );
    Ok(kernel.entry)
}

/// Drops the VMM's own mapping of an embedded image once it has been copied into guest RAM,
/// so the VMM's resident memory does not keep a second copy of the program and the kernel.
/// `image` must be read-only data of the cvm executable (an `include_bytes!` static): such
/// pages are simply read again from the file if they are ever touched again.
pub fn release_embedded_image(image: &'static [u8]) {
    let page = super::memory::host_page_size() as usize;
    let start = (image.as_ptr() as usize).next_multiple_of(page);
    let end = (image.as_ptr() as usize + image.len()) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside `image`, a read-only, file-backed mapping of the
        // executable; MADV_DONTNEED only unmaps those pages, and a later read faults the
        // identical bytes back in from the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded;

    #[test]
    fn workload_fits_the_default_ram() {
        let program = ElfFile::parse(embedded::WORKLOAD_ELF).unwrap();
        let layout = ProgramLayout::plan(&program, 64 << 20).unwrap();
        assert_eq!(layout.bias, PIE_LOAD_BIAS);
        assert!(layout.phdr_address >= USER_BASE);
        assert!(layout.brk_start < layout.brk_limit && layout.brk_limit < layout.mmap_top);
        assert_eq!(layout.stack_top - layout.stack_bottom, USER_STACK_SIZE);
        assert_eq!(layout.brk_start % PAGE_SIZE, 0);
    }

    /// A segment that ends within a page of 2^64 (the wrap the security review found).
    #[test]
    fn a_segment_at_the_top_of_the_address_space_is_refused() {
        let mut program = ElfFile::parse(embedded::WORKLOAD_ELF).unwrap();
        let mut top = program.segments[0];
        top.file_size = 0;
        top.mem_size = 0x10;
        top.vaddr = u64::MAX - PIE_LOAD_BIAS - 0x20;
        program.segments.push(top);
        let err = ProgramLayout::plan(&program, 64 << 20).unwrap_err().to_string();
        assert!(err.contains("guest RAM") || err.contains("overflow"), "{err}");
        assert_eq!(checked_align_up(u64::MAX - 5, PAGE_SIZE), None);
        assert_eq!(checked_align_up(4097, PAGE_SIZE), Some(8192));
    }

    #[test]
    fn too_little_ram_is_refused_with_a_hint() {
        let program = ElfFile::parse(embedded::WORKLOAD_ELF).unwrap();
        let err = ProgramLayout::plan(&program, 6 << 20).unwrap_err().to_string();
        assert!(err.contains("--memory"), "{err}");
    }

    #[test]
    fn kernel_and_program_land_at_their_addresses() {
        let ram = GuestRam::new(16 << 20).unwrap();
        let kernel = ElfFile::parse(embedded::GUEST_KERNEL_ELF).unwrap();
        let entry = load_kernel(&ram, &kernel).unwrap();
        assert!(entry >= KERNEL_BASE);
        let program = ElfFile::parse(embedded::WORKLOAD_ELF).unwrap();
        let layout = ProgramLayout::plan(&program, ram.size()).unwrap();
        load_program(&ram, &program, &layout).unwrap();
        let mut magic = [0u8; 4];
        ram.read(PIE_LOAD_BIAS, &mut magic).unwrap();
        assert_eq!(&magic, b"\x7fELF");
        release_embedded_image(embedded::WORKLOAD_ELF);
        assert_eq!(ElfFile::parse(embedded::WORKLOAD_ELF).unwrap().entry, program.entry, "bytes come back");
    }

    #[test]
    fn the_program_bss_is_populated_and_nothing_past_it() {
        let ram = GuestRam::new(16 << 20).unwrap();
        let program = ElfFile::parse(embedded::WORKLOAD_ELF).unwrap();
        let layout = ProgramLayout::plan(&program, ram.size()).unwrap();
        load_program(&ram, &program, &layout).unwrap();
        let end = program.segments.iter().map(|s| s.vaddr + s.mem_size).max().unwrap() + layout.bias;
        let bss = program.segments.iter().find(|s| s.mem_size > s.file_size).expect("the workload has a bss");
        let bss_end = bss.vaddr + layout.bias + bss.mem_size;
        let (image, beyond) = ram.resident_split(end.next_multiple_of(PAGE_SIZE)).unwrap();
        assert_eq!(beyond, 0, "the heap above the image stays untouched");
        let last_bss_page = (bss_end - 1) / PAGE_SIZE * PAGE_SIZE;
        let (_, from_last_page) = ram.resident_split(last_bss_page).unwrap();
        assert_eq!(from_last_page, PAGE_SIZE, "the bss's last page is populated");
        assert!(image > 0);
    }
}

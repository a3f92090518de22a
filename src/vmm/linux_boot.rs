//! Booting a real Linux kernel image (an uncompressed `vmlinux`) through its PVH entry, the
//! way Firecracker and Cloud Hypervisor do it: the kernel's ELF notes name a 32-bit entry
//! point (`XEN_ELFNOTE_PHYS32_ENTRY`); the VMM loads the segments at their physical addresses,
//! writes an `hvm_start_info` (command line, memory map) and starts the vCPU in 32-bit
//! protected mode with paging off and `EBX` = the start info's address.
//!
//! On hardware KVM this is the start of a real Linux boot. On this project's nested PVM hosts
//! every instruction of the guest kernel is emulated, and a stock kernel stops on one the
//! emulator does not know, long before user space: what a student sees is the early boot on
//! the serial console, then the reason the VM stopped (or the timeout).

use anyhow::{bail, ensure, Context, Result};

use super::memory::GuestRam;
use crate::elf::ElfFile;

/// `XEN_ELFNOTE_PHYS32_ENTRY`, in a note owned by "Xen".
const PVH_ENTRY_NOTE: u32 = 18;
const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Where the VMM puts what it tells the kernel (all below 1 MiB, away from the kernel image).
/// The largest kernel image `--kernel` reads (an uncompressed vmlinux is tens of MiB).
pub const MAX_KERNEL_IMAGE_BYTES: u64 = 512 << 20;
pub const START_INFO_ADDR: u64 = 0x6000;
const MEMMAP_ADDR: u64 = 0x6100;
const CMDLINE_ADDR: u64 = 0x2_0000;
const CMDLINE_MAX: usize = 4096;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// The end of conventional memory, where a PC's BIOS area begins.
const LOW_MEMORY_END: u64 = 0x9_fc00;
const HIGH_MEMORY_START: u64 = 0x10_0000;

/// Linux's serial console and early messages on COM1; no ACPI, interrupt controllers or other
/// CPUs to look for: this VM has none of them.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 earlyprintk=serial,ttyS0,115200 acpi=off noapic nolapic nosmp tsc=reliable panic=-1 clearcpuid=xsave,cx16";

/// Guest RAM for a Linux kernel when `--memory` is not given.
pub const DEFAULT_LINUX_RAM_BYTES: u64 = 256 << 20;

/// A kernel image with a PVH entry point.
pub struct LinuxImage<'a> {
    pub elf: ElfFile<'a>,
    pub entry: u64,
}

impl<'a> LinuxImage<'a> {
    pub fn parse(bytes: &'a [u8], ram_bytes: u64) -> Result<LinuxImage<'a>> {
        let elf = ElfFile::parse(bytes).context("not an uncompressed Linux kernel image (vmlinux)")?;
        let entry =
            elf.notes().iter().find(|note| note.name == b"Xen" && note.kind == PVH_ENTRY_NOTE).and_then(|note| {
                match note.desc.len() {
                    4 => Some(u64::from(u32::from_le_bytes(note.desc.try_into().ok()?))),
                    8 => Some(u64::from_le_bytes(note.desc.try_into().ok()?)),
                    _ => None,
                }
            });
        let Some(entry) = entry else {
            bail!(
                "the kernel image has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): build it with CONFIG_PVH=y, \
                 and pass the uncompressed vmlinux, not a bzImage"
            );
        };
        let end = elf.segments.iter().map(|s| s.paddr + s.mem_size).max().unwrap_or(0);
        let needed = end.saturating_add(16 << 20);
        ensure!(
            needed <= ram_bytes,
            "the kernel image needs more than {} MiB of guest RAM; give it more with --memory",
            needed >> 20
        );
        ensure!(
            elf.segments.iter().all(|s| s.paddr >= HIGH_MEMORY_START),
            "the kernel image has a segment below 1 MiB"
        );
        Ok(LinuxImage { elf, entry })
    }

    /// Copies the segments to their physical addresses.
    pub fn load(&self, ram: &GuestRam) -> Result<()> {
        for segment in &self.elf.segments {
            ram.write(segment.paddr, self.elf.segment_bytes(segment)).context("loading the kernel image")?;
        }
        Ok(())
    }
}

/// Writes the command line, the memory map and the `hvm_start_info`; returns its address.
pub fn write_start_info(ram: &GuestRam, cmdline: &str) -> Result<u64> {
    ensure!(cmdline.len() < CMDLINE_MAX, "the kernel command line is longer than {CMDLINE_MAX} bytes");
    let mut text = cmdline.as_bytes().to_vec();
    text.push(0);
    ram.write(CMDLINE_ADDR, &text)?;

    let memory_map = [
        (0, LOW_MEMORY_END, E820_RAM),
        (LOW_MEMORY_END, HIGH_MEMORY_START - LOW_MEMORY_END, E820_RESERVED),
        (HIGH_MEMORY_START, ram.size() - HIGH_MEMORY_START, E820_RAM),
    ];
    let mut table = Vec::new();
    for (address, size, kind) in memory_map {
        table.extend_from_slice(&address.to_le_bytes());
        table.extend_from_slice(&size.to_le_bytes());
        table.extend_from_slice(&kind.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
    }
    ram.write(MEMMAP_ADDR, &table)?;

    // struct hvm_start_info, version 1 (with a memory map).
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&START_INFO_MAGIC.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&0u32.to_le_bytes()); // nr_modules
    info.extend_from_slice(&0u64.to_le_bytes()); // modlist_paddr
    info.extend_from_slice(&CMDLINE_ADDR.to_le_bytes());
    info.extend_from_slice(&0u64.to_le_bytes()); // rsdp_paddr: no ACPI
    info.extend_from_slice(&MEMMAP_ADDR.to_le_bytes());
    info.extend_from_slice(&(memory_map.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    ram.write(START_INFO_ADDR, &info)?;
    Ok(START_INFO_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_kernel_is_not_a_pvh_linux_image_unless_it_says_so() {
        // The builtin kernel may or may not carry a PVH note; a plain workload never does.
        let err = LinuxImage::parse(crate::embedded::WORKLOAD_ELF, 256 << 20).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("PVH")));
    }

    #[test]
    fn start_info_points_at_the_command_line_and_memory_map() {
        let ram = GuestRam::new(64 << 20).unwrap();
        let at = write_start_info(&ram, "console=ttyS0").unwrap();
        assert_eq!(ram.read_u64(at).unwrap() & 0xffff_ffff, u64::from(START_INFO_MAGIC));
        assert_eq!(ram.read_u64(at + 24).unwrap(), CMDLINE_ADDR);
        assert_eq!(ram.read_u64(at + 40).unwrap(), MEMMAP_ADDR);
        assert_eq!(ram.read_u64(MEMMAP_ADDR + 2 * 24 + 8).unwrap(), (64 << 20) - HIGH_MEMORY_START);
        let mut text = [0u8; 14];
        ram.read(CMDLINE_ADDR, &mut text).unwrap();
        assert_eq!(&text, b"console=ttyS0\0");
    }
}

//! The vCPU's first state: 64-bit long mode at CPL0, paging on, interrupts off, as the guest
//! ABI promises the kernel. A real GDT is written to guest RAM because the descriptors KVM is
//! given must match one (and the kernel reloads segments from a GDT before its first `iretq`).

use anyhow::{Context, Result};
use cvm_guest_abi::DirectEntry;
use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;

use super::layout::BOOT_GDT_ADDR;
use super::memory::GuestRam;

pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_FSGSBASE: u64 = 1 << 16;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_RESERVED: u64 = 1 << 1;
const RFLAGS_IF: u64 = 1 << 9;
/// A 64-bit TSS descriptor's type once loaded (busy).
const TSS_BUSY: u8 = 0xb;
const MSR_STAR: u32 = 0xC000_0081;
const MSR_LSTAR: u32 = 0xC000_0082;
const MSR_SFMASK: u32 = 0xC000_0084;

/// One segment as KVM wants it; `gdt_entries` encodes the same segment for guest memory.
fn segment(selector: u16, kind: u8, code_data: bool, long: bool, big: bool, limit: u32) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit,
        selector,
        type_: kind,
        present: 1,
        dpl: 0,
        db: u8::from(big),
        s: u8::from(code_data),
        l: u8::from(long),
        g: u8::from(limit == u32::MAX),
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

fn code_segment() -> kvm_segment {
    segment(CODE_SELECTOR, 0xb, true, true, false, u32::MAX)
}
fn data_segment() -> kvm_segment {
    segment(DATA_SELECTOR, 0x3, true, false, true, u32::MAX)
}
fn tss_segment() -> kvm_segment {
    segment(TSS_SELECTOR, 0xb, false, false, false, 0x67)
}

/// An 8-byte descriptor from the fields of a KVM segment (base 0).
fn descriptor(segment: &kvm_segment) -> u64 {
    let (limit, granular) = if segment.g == 1 { (segment.limit >> 12, 1u64) } else { (segment.limit, 0) };
    let access = u64::from(segment.type_)
        | u64::from(segment.s) << 4
        | u64::from(segment.dpl) << 5
        | u64::from(segment.present) << 7;
    let flags = u64::from(segment.avl) | u64::from(segment.l) << 1 | u64::from(segment.db) << 2 | granular << 3;
    u64::from(limit & 0xffff) | access << 40 | u64::from((limit >> 16) & 0xf) << 48 | flags << 52
}

fn code_segment_32() -> kvm_segment {
    segment(CODE_SELECTOR, 0xb, true, false, true, u32::MAX)
}

/// The boot GDT: null, code, data, then the 16-byte TSS descriptor.
fn gdt_bytes(code: &kvm_segment) -> Vec<u8> {
    [0, descriptor(code), descriptor(&data_segment()), descriptor(&tss_segment()), 0]
        .iter()
        .flat_map(|entry| entry.to_le_bytes())
        .collect()
}

/// Writes the boot GDT and puts the vCPU in long mode at `entry` with `rsp` and `rdi`.
/// Where a vCPU starts in long mode, and its first two arguments.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub rip: u64,
    pub rsp: u64,
    pub rdi: u64,
    pub rsi: u64,
}

pub fn setup_long_mode(vcpu: &VcpuFd, ram: &GuestRam, cr3: u64, fsgsbase: bool, entry: Entry) -> Result<()> {
    let gdt = gdt_bytes(&code_segment());
    ram.write(BOOT_GDT_ADDR, &gdt)?;
    let mut sregs = vcpu.get_sregs().context("reading the vCPU's special registers")?;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (gdt.len() - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = code_segment();
    let data = data_segment();
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = tss_segment();
    long_mode_paging(&mut sregs, cr3, fsgsbase);
    vcpu.set_sregs(&sregs).context("putting the vCPU in 64-bit long mode")?;
    let regs = kvm_regs {
        rip: entry.rip,
        rsp: entry.rsp,
        rdi: entry.rdi,
        rsi: entry.rsi,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    vcpu.set_regs(&regs).context("setting the vCPU's registers")?;
    Ok(())
}

/// 64-bit long mode with paging on the page tables at `cr3`, SSE allowed, `syscall` enabled.
fn long_mode_paging(sregs: &mut kvm_sregs, cr3: u64, fsgsbase: bool) {
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if fsgsbase { CR4_FSGSBASE } else { 0 };
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA;
}

/// Writes `(index, value)` MSRs into the vCPU; an MSR KVM does not take is an error naming it.
pub fn set_msrs(vcpu: &VcpuFd, entries: &[(u32, u64)]) -> Result<()> {
    let entries: Vec<kvm_msr_entry> =
        entries.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
    let msrs = Msrs::from_entries(&entries).context("building the MSR list")?;
    let written = vcpu.set_msrs(&msrs).context("setting the vCPU's MSRs")?;
    anyhow::ensure!(written == entries.len(), "KVM refused MSR {:#x}", entries[written].index);
    Ok(())
}

/// vCPU 0 of the builtin kernel started the direct way (guest ABI [`DirectEntry`]): at CPL3
/// on the kernel's boot trampoline, with the GDT, IDT, TSS and system-call MSRs the kernel
/// would install at CPL0 already in place (its TSS descriptor written into its GDT here),
/// so the boot runs entirely in the system-call path. Long mode and paging as in
/// [`setup_long_mode`].
pub fn setup_direct_entry(vcpu: &VcpuFd, ram: &GuestRam, cr3: u64, fsgsbase: bool, entry: &DirectEntry) -> Result<()> {
    let slot = entry.gdt.checked_add(entry.tss_selector & !7).context("the kernel's TSS selector is out of range")?;
    let descriptor = cvm_guest_abi::tss_descriptor(entry.tss, entry.tss_limit, true);
    let bytes: Vec<u8> = descriptor.iter().flat_map(|word| word.to_le_bytes()).collect();
    ram.write(slot, &bytes).context("writing the kernel's TSS descriptor")?;
    let mut sregs = vcpu.get_sregs().context("reading the vCPU's special registers")?;
    sregs.gdt.base = entry.gdt;
    sregs.gdt.limit = entry.gdt_limit as u16;
    sregs.idt.base = entry.idt;
    sregs.idt.limit = entry.idt_limit as u16;
    sregs.cs = kvm_segment { dpl: 3, ..segment(entry.user_code_selector as u16, 0xb, true, true, false, u32::MAX) };
    sregs.ss = kvm_segment { dpl: 3, ..segment(entry.user_data_selector as u16, 0x3, true, false, true, u32::MAX) };
    // As after the kernel's iretq to CPL3: no data segments loaded (64-bit mode ignores them).
    let null = kvm_segment { unusable: 1, present: 0, ..segment(0, 0, false, false, false, 0) };
    (sregs.ds, sregs.es, sregs.fs, sregs.gs) = (null, null, null, null);
    sregs.tr = kvm_segment {
        base: entry.tss,
        ..segment(entry.tss_selector as u16, TSS_BUSY, false, false, false, entry.tss_limit as u32)
    };
    long_mode_paging(&mut sregs, cr3, fsgsbase);
    vcpu.set_sregs(&sregs).context("putting the vCPU in 64-bit long mode at CPL3")?;
    set_msrs(vcpu, &[(MSR_STAR, entry.star), (MSR_LSTAR, entry.lstar), (MSR_SFMASK, entry.sfmask)])?;
    let regs = kvm_regs { rip: entry.trampoline, rflags: RFLAGS_RESERVED | RFLAGS_IF, ..Default::default() };
    vcpu.set_regs(&regs).context("setting the vCPU's registers")?;
    Ok(())
}

/// The PVH entry state for a Linux kernel: 32-bit protected mode, flat segments, paging off,
/// `EBX` = the `hvm_start_info` address.
pub fn setup_pvh_entry(vcpu: &VcpuFd, ram: &GuestRam, entry: u64, start_info: u64) -> Result<()> {
    let code = code_segment_32();
    let gdt = gdt_bytes(&code);
    ram.write(BOOT_GDT_ADDR, &gdt)?;
    let mut sregs = vcpu.get_sregs().context("reading the vCPU's special registers")?;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (gdt.len() - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = code;
    let data = data_segment();
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = tss_segment();
    sregs.cr0 = CR0_PE | CR0_ET;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).context("putting the vCPU in 32-bit protected mode")?;
    let regs = kvm_regs { rip: entry, rbx: start_info, rflags: RFLAGS_RESERVED, ..Default::default() };
    vcpu.set_regs(&regs).context("setting the vCPU's registers")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_classic_encodings() {
        assert_eq!(descriptor(&code_segment()), 0x00af_9b00_0000_ffff);
        assert_eq!(descriptor(&data_segment()), 0x00cf_9300_0000_ffff);
        assert_eq!(descriptor(&tss_segment()), 0x0000_8b00_0000_0067);
        assert_eq!(descriptor(&code_segment_32()), 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt_bytes(&code_segment()).len(), 40);
    }

    #[test]
    fn a_tss_descriptor_spreads_its_base_and_limit_as_the_cpu_reads_them() {
        let busy = cvm_guest_abi::tss_descriptor(0x1234_5678_9abc, 0x67, true);
        assert_eq!(busy, [0x5600_8b78_9abc_0067, 0x1234]);
        let available = cvm_guest_abi::tss_descriptor(0x1234_5678_9abc, 0x67, false);
        assert_eq!(available, [0x5600_8978_9abc_0067, 0x1234]);
    }
}

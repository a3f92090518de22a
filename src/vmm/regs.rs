//! The vCPU's first state: 64-bit long mode at CPL0, paging on, interrupts off, as the guest
//! ABI promises the kernel. A real GDT is written to guest RAM because the descriptors KVM is
//! given must match one (and the kernel reloads segments from a GDT before its first `iretq`).

use anyhow::{Context, Result};
use kvm_bindings::{kvm_regs, kvm_segment};
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
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if fsgsbase { CR4_FSGSBASE } else { 0 };
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA;
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
}

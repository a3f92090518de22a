//! What the guest's CPU looks like: CPUID (what KVM supports, minus what the guest must not
//! use) and the few model-specific registers the VMM sets.
//!
//! Hidden, and why:
//! - XSAVE and every feature whose state lives in XSAVE areas (AVX, AVX2, AVX-512, FMA, F16C,
//!   AMX, XOP/FMA4): the guest kernel does not enable XCR0, so a program that believed CPUID
//!   would take `#UD`; programs fall back to SSE code paths, as they do on older CPUs;
//! - VMX/SVM, MONITOR/MWAIT, x2APIC, TSC-deadline: no nested virtualization, no idle loop, no
//!   interrupt controller in this VM.
//!
//! On nested PVM hosts a `cpuid` executed by guest *user* code is answered by the outer
//! hypervisor, not by KVM, so the program sees the host's CPUID (AVX included) — and AVX works
//! there, because that code runs natively with the host's XCR0. The filter still decides what
//! the guest kernel sees, and everything on hardware KVM.

use std::sync::OnceLock;

use anyhow::{Context, Result};
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

const fn bit(n: u32) -> u32 {
    1 << n
}

/// (leaf, register, bits to clear). Register: 0 eax, 1 ebx, 2 ecx, 3 edx. Applies to every subleaf.
const HIDDEN: &[(u32, usize, u32)] = &[
    // leaf 1 ecx: MONITOR, VMX, FMA, x2APIC, TSC-deadline, XSAVE, OSXSAVE, AVX, F16C
    (1, 2, bit(3) | bit(5) | bit(12) | bit(21) | bit(24) | bit(26) | bit(27) | bit(28) | bit(29)),
    // leaf 7 ebx: AVX2 and the AVX-512 family
    (7, 1, bit(5) | bit(16) | bit(17) | bit(21) | bit(26) | bit(27) | bit(28) | bit(30) | bit(31)),
    // leaf 7 ecx: AVX-512 VBMI/VBMI2/VNNI/BITALG/VPOPCNTDQ, VAES and VPCLMULQDQ (VEX forms)
    (7, 2, bit(1) | bit(6) | bit(9) | bit(10) | bit(11) | bit(12) | bit(14)),
    // leaf 7 edx: AVX-512 4VNNIW/4FMAPS/VP2INTERSECT/FP16, AMX
    (7, 3, bit(2) | bit(3) | bit(8) | bit(22) | bit(23) | bit(24) | bit(25)),
    // leaf 7 subleaf 1 eax: AVX-VNNI, AVX512-BF16 (and friends)
    (7, 0, bit(4) | bit(5) | bit(23)),
    // leaf 0x80000001 ecx: SVM, XOP, FMA4
    (0x8000_0001, 2, bit(2) | bit(11) | bit(16)),
];

const XSAVE_LEAF: u32 = 0xd;
const LEAF7_EBX_FSGSBASE: u32 = bit(0);

/// The CPU the guest sees.
pub struct GuestCpu {
    pub cpuid: CpuId,
    /// `wrfsbase` is available (and CR4.FSGSBASE will be set).
    pub fsgsbase: bool,
    /// CPUID.1:EDX, which Linux passes to programs as AT_HWCAP.
    pub hwcap: u64,
}

impl GuestCpu {
    /// The filtered CPUID of this host; asked from KVM once per boot of the host (it cannot
    /// change before a reboot), then read from cvm's cache: `KVM_GET_SUPPORTED_CPUID` takes
    /// 0.7-0.9 ms on a nested host, a tenth of a VM's set-up.
    pub fn from_host(kvm: &Kvm) -> Result<GuestCpu> {
        static FILTERED: OnceLock<CpuId> = OnceLock::new();
        let cpuid = match FILTERED.get() {
            Some(cpuid) => cpuid.clone(),
            None => {
                let mut cpuid = match supported_cache::read() {
                    Some(cpuid) => cpuid,
                    None => {
                        let cpuid = kvm
                            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                            .context("asking KVM which CPUID it supports")?;
                        supported_cache::write(&cpuid);
                        cpuid
                    }
                };
                filter(cpuid.as_mut_slice());
                FILTERED.get_or_init(|| cpuid).clone()
            }
        };
        let leaf = |function: u32| cpuid.as_slice().iter().find(|e| e.function == function && e.index == 0).copied();
        let fsgsbase = leaf(7).is_some_and(|e| e.ebx & LEAF7_EBX_FSGSBASE != 0);
        let hwcap = leaf(1).map_or(0, |e| u64::from(e.edx));
        Ok(GuestCpu { cpuid, fsgsbase, hwcap })
    }

    /// For a stock Linux kernel: also hide CMPXCHG16B, which the instruction emulator of nested
    /// (PVM) hosts cannot run when guest kernel code uses it.
    pub fn hide_cmpxchg16b(&mut self) {
        for entry in self.cpuid.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
            entry.ecx &= !bit(13);
        }
    }

    /// Gives vCPU number `index` this CPUID (with its own APIC id) and the boot MSRs.
    pub fn configure(&self, vcpu: &VcpuFd, index: usize) -> Result<()> {
        let mut cpuid = self.cpuid.clone();
        for entry in cpuid.as_mut_slice().iter_mut() {
            match entry.function {
                1 => entry.ebx = (entry.ebx & 0x00ff_ffff) | ((index as u32) << 24),
                0xb | 0x1f => entry.edx = index as u32,
                _ => {}
            }
        }
        if let Err(error) = vcpu.set_cpuid2(&cpuid) {
            // Should the cached answer be what KVM refuses, the next run asks KVM again.
            supported_cache::remove();
            return Err(error).context("setting the vCPU's CPUID (cvm's cached copy of KVM's answer was removed)");
        }
        super::regs::set_msrs(vcpu, &[(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING)])
    }
}

/// KVM's supported CPUID as it answered it, kept in cvm's cache under the host's boot id
/// (`/proc/sys/kernel/random/boot_id`): a new kernel, KVM module or CPU means a new boot.
mod supported_cache {
    use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};

    const ENTRY: usize = std::mem::size_of::<kvm_cpuid_entry2>();

    fn path() -> Option<std::path::PathBuf> {
        let boot = crate::host::read_kernel_file("/proc/sys/kernel/random/boot_id").ok()?;
        let boot = boot.trim();
        if boot.is_empty() || !boot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return None;
        }
        Some(crate::embedded::cache_dir().join("kvm").join(format!("supported-cpuid-{boot}")))
    }

    /// The cached answer; None when there is none or it is not a plausible one (then KVM is
    /// asked again and the file rewritten).
    pub fn read() -> Option<CpuId> {
        read_from(&path()?)
    }

    /// The file: the entries' bytes, then their FNV-1a hash (8 bytes, little-endian), so a
    /// torn or damaged file is asked again, never used.
    pub fn read_from(path: &std::path::Path) -> Option<CpuId> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // A regular file of at most the largest answer: not a FIFO (which would block) nor a
        // link to a device (which would never end).
        let file =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
        let limit = (KVM_MAX_CPUID_ENTRIES * ENTRY + 8) as u64;
        if !file.metadata().is_ok_and(|m| m.is_file() && m.len() <= limit) {
            return None;
        }
        let mut bytes = Vec::with_capacity(limit as usize + 1);
        file.take(limit + 1).read_to_end(&mut bytes).ok()?;
        let (bytes, hash) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
        if u64::from_le_bytes(hash.try_into().ok()?) != fnv1a(bytes) {
            return None;
        }
        if bytes.is_empty() || bytes.len() % ENTRY != 0 || bytes.len() / ENTRY > KVM_MAX_CPUID_ENTRIES {
            return None;
        }
        let entries: Vec<kvm_cpuid_entry2> = bytes
            .chunks_exact(ENTRY)
            // SAFETY: kvm_cpuid_entry2 is plain integers (repr(C), no padding invariants); the
            // chunk has exactly its size, and read_unaligned copies it out.
            .map(|chunk| unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<kvm_cpuid_entry2>()) })
            .collect();
        // Leaf 0 (the highest basic leaf and the vendor) and leaf 1 (the features) must be there.
        if ![0, 1].iter().all(|&leaf| entries.iter().any(|e| e.function == leaf)) {
            return None;
        }
        CpuId::from_entries(&entries).ok()
    }

    /// Keeps KVM's answer for the next runs; a failure only costs the next run the question.
    /// Forgets the cached answer (KVM refused it): the next run asks KVM again.
    pub fn remove() {
        if let Some(path) = path() {
            let _ = std::fs::remove_file(path);
        }
    }

    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }

    pub fn write(cpuid: &CpuId) {
        if let Some(path) = path() {
            write_to(&path, cpuid);
        }
    }

    pub fn write_to(path: &std::path::Path, cpuid: &CpuId) {
        let entries = cpuid.as_slice();
        // SAFETY: the entries are plain integers; the slice covers exactly their bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(entries.as_ptr().cast::<u8>(), std::mem::size_of_val(entries)) };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut contents = bytes.to_vec();
        contents.extend_from_slice(&fnv1a(bytes).to_le_bytes());
        let _ = crate::image::layout::write_atomically(path, &contents);
    }
}

fn filter(entries: &mut [kvm_bindings::kvm_cpuid_entry2]) {
    for entry in entries.iter_mut() {
        if entry.function == XSAVE_LEAF {
            (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0);
            continue;
        }
        for &(function, register, hidden) in HIDDEN {
            // Leaf 7 subleaf 1 has its own eax list; the others apply to subleaf 0.
            let subleaf_matches = if function == 7 { (register == 0) == (entry.index == 1) } else { true };
            if entry.function == function && subleaf_matches {
                let value = match register {
                    0 => &mut entry.eax,
                    1 => &mut entry.ebx,
                    2 => &mut entry.ecx,
                    _ => &mut entry.edx,
                };
                *value &= !hidden;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn the_cached_supported_cpuid_reads_back_as_written_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supported-cpuid");
        let entries = [
            kvm_cpuid_entry2 { function: 0, eax: 0xd, ebx: 0x756e_6547, ..Default::default() },
            kvm_cpuid_entry2 { function: 1, ecx: 0x1234, edx: 0x5678, ..Default::default() },
            kvm_cpuid_entry2 { function: 7, index: 1, eax: 9, ..Default::default() },
        ];
        let cpuid = CpuId::from_entries(&entries).unwrap();
        supported_cache::write_to(&path, &cpuid);
        let back = supported_cache::read_from(&path).unwrap();
        assert_eq!(back.as_slice(), cpuid.as_slice());
        std::fs::write(&path, [1u8; 7]).unwrap();
        assert!(supported_cache::read_from(&path).is_none(), "a torn file");
        supported_cache::write_to(&path, &cpuid);
        let mut damaged = std::fs::read(&path).unwrap();
        damaged[20] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        assert!(supported_cache::read_from(&path).is_none(), "a changed register");
        let fifo = dir.path().join("fifo");
        let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        assert!(supported_cache::read_from(&fifo).is_none(), "a FIFO is not read (nor waited on)");
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
        assert!(supported_cache::read_from(&dir.path().join("zero")).is_none(), "a link is not followed");
        let no_leaf_one = CpuId::from_entries(&entries[..1]).unwrap();
        supported_cache::write_to(&path, &no_leaf_one);
        assert!(supported_cache::read_from(&path).is_none(), "leaf 1 missing");
    }

    #[test]
    fn avx_and_xsave_are_hidden_sse_is_kept() {
        let mut entries = [
            kvm_cpuid_entry2 { function: 1, ecx: u32::MAX, edx: u32::MAX, ..Default::default() },
            kvm_cpuid_entry2 { function: 7, index: 0, eax: 2, ebx: u32::MAX, ..Default::default() },
            kvm_cpuid_entry2 { function: 7, index: 1, eax: u32::MAX, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xd, eax: 7, ..Default::default() },
        ];
        filter(&mut entries);
        assert_eq!(entries[0].ecx & bit(28), 0, "AVX hidden");
        assert_eq!(entries[0].ecx & bit(26), 0, "XSAVE hidden");
        assert_ne!(entries[0].ecx & bit(0), 0, "SSE3 kept");
        assert_eq!(entries[0].edx, u32::MAX, "SSE/SSE2 kept");
        assert_eq!(entries[1].ebx & bit(5), 0, "AVX2 hidden");
        assert_ne!(entries[1].ebx & LEAF7_EBX_FSGSBASE, 0, "FSGSBASE kept");
        assert_ne!(entries[1].ebx & bit(29), 0, "SHA kept");
        assert_eq!(entries[1].eax, 2, "subleaf count kept");
        assert_eq!(entries[2].eax & bit(4), 0, "AVX-VNNI hidden");
        assert_eq!(entries[3].eax, 0, "XSAVE leaf emptied");
    }
}

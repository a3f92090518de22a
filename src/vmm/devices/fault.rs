//! Port 0x501: the guest kernel reports a fault (`FaultReport`) and the run ends. A fault of
//! the program is a crash, like SIGSEGV on the host; a fault of the kernel is a kernel bug.

use cvm_guest_abi::{fault_kind, FaultReport};

use crate::vmm::memory::GuestRam;
use crate::vmm::VmStop;

/// The name of an x86 exception vector.
pub fn vector_name(vector: u32) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug exception",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating-point error",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating-point exception",
        _ => "exception",
    }
}

/// Where it happened, in words: "page fault at 0x10 (rip 0x401000)".
pub fn describe(report: &FaultReport) -> String {
    let what = vector_name(report.vector);
    if report.vector == 14 {
        let access = match report.error_code {
            code if code & 0x10 != 0 => "executing",
            code if code & 0x2 != 0 => "writing",
            _ => "reading",
        };
        format!("{what} {access} {:#x} (rip {:#x})", report.cr2, report.rip)
    } else {
        format!("{what} (vector {}, rip {:#x}, error code {:#x})", report.vector, report.rip, report.error_code)
    }
}

pub fn read_report(address: u64, ram: &GuestRam) -> Option<FaultReport> {
    let mut raw = [0u8; std::mem::size_of::<FaultReport>()];
    ram.read(address, &mut raw).ok()?;
    let word = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    let quad = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    Some(FaultReport {
        kind: word(0),
        vector: word(4),
        error_code: quad(8),
        rip: quad(16),
        rsp: quad(24),
        cr2: quad(32),
        signal: word(40),
        _reserved: 0,
    })
}

/// How the run ends for a report at `address`.
pub fn stop(address: u64, ram: &GuestRam) -> VmStop {
    let Some(report) = read_report(address, ram) else {
        return VmStop::KernelFault {
            reason: format!(
                "the guest kernel reported a fault, but its report address {address:#x} is outside guest RAM"
            ),
        };
    };
    match report.kind {
        fault_kind::PROGRAM => {
            let signal = if (1..=64).contains(&report.signal) { report.signal as i32 } else { libc::SIGSEGV };
            VmStop::ProgramFault { signal, reason: format!("the program crashed in the guest: {}", describe(&report)) }
        }
        fault_kind::SIGNALED if (1..=64).contains(&report.signal) => VmStop::Signaled { signal: report.signal as i32 },
        fault_kind::OUT_OF_MEMORY => VmStop::OutOfMemory {
            reason: format!(
                "the guest kernel ran out of memory for the program (at rip {:#x}, touching {:#x}): guest RAM or its \
                 page tables are exhausted; give the VM more with --memory",
                report.rip, report.cr2
            ),
        },
        fault_kind::KERNEL => {
            VmStop::KernelFault { reason: format!("the guest kernel crashed: {}", describe(&report)) }
        }
        other => VmStop::KernelFault {
            reason: format!("the guest kernel reported a fault of unknown kind {other}: {}", describe(&report)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_what_the_decoder_reads() {
        assert_eq!(std::mem::size_of::<FaultReport>(), 48);
        assert_eq!(std::mem::offset_of!(FaultReport, signal), 40);
        assert_eq!(std::mem::offset_of!(FaultReport, cr2), 32);
    }

    #[test]
    fn program_page_fault_reads_like_a_crash() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let report = [
            1u32.to_le_bytes().to_vec(),
            14u32.to_le_bytes().to_vec(),
            6u64.to_le_bytes().to_vec(),
            0x40_1234u64.to_le_bytes().to_vec(),
            0x7f_0000u64.to_le_bytes().to_vec(),
            0x10u64.to_le_bytes().to_vec(),
            11u32.to_le_bytes().to_vec(),
            0u32.to_le_bytes().to_vec(),
        ]
        .concat();
        ram.write(0x3000, &report).unwrap();
        match stop(0x3000, &ram) {
            VmStop::ProgramFault { signal, reason } => {
                assert_eq!(signal, 11);
                assert_eq!(reason, "the program crashed in the guest: page fault writing 0x10 (rip 0x401234)");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

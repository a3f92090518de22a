//! Exceptions: every one ends the run with a [`FaultReport`] to the VMM (port 0x501).
//!
//! A fault at CPL3 is the program's (reported as the signal Linux would have sent, and the run
//! ends as a crash would: 128 + signal); anything else is the kernel's own bug. The kernel
//! delivers no signals to the program's handlers.

use crate::console;
use crate::cpu::{self, halt_forever, out32};
use crate::global::Global;
use cvm_guest_abi::{fault_kind, port, FaultReport, KERNEL_BASE, USER_BASE};

/// What the exception stubs in entry.rs leave on the stack.
#[repr(C)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const SIGILL: u32 = 4;
const SIGTRAP: u32 = 5;
const SIGBUS: u32 = 7;
const SIGFPE: u32 = 8;
const SIGSEGV: u32 = 11;

const PAGE_FAULT: u64 = 14;

/// The signal Linux sends for each exception vector.
fn signal_for(vector: u64) -> u32 {
    match vector {
        0 | 16 | 19 => SIGFPE,  // divide error, x87 error, SIMD error
        1 | 3 => SIGTRAP,       // debug, breakpoint
        6 => SIGILL,            // invalid opcode
        7 => SIGFPE,            // device not available
        11 | 12 | 17 => SIGBUS, // segment not present, stack segment, alignment check
        _ => SIGSEGV,           // general protection, page fault, and the rest
    }
}

static REPORT: Global<FaultReport> =
    Global::new(FaultReport { kind: 0, vector: 0, error_code: 0, rip: 0, rsp: 0, cr2: 0, signal: 0, _reserved: 0 });

static KERNEL_OPENED_TO_RING3: Global<bool> = Global::new(false);

/// Called by `exception_common` at real CPL0. Returns only when it repaired the cause (the
/// stub then retries the instruction); otherwise the run ends here.
pub extern "C" fn handle_exception(frame: &ExceptionFrame) {
    let cr2 = if frame.vector == PAGE_FAULT { cpu::read_cr2() } else { 0 };
    extern "C" {
        fn syscall_entry();
    }
    // PVM: the syscall handler's first fetch faults as a user-mode access (see cpu.rs).
    let syscall_entry = syscall_entry as *const () as u64;
    if frame.vector == PAGE_FAULT && frame.rip == syscall_entry && cr2 == syscall_entry && !KERNEL_OPENED_TO_RING3.get()
    {
        KERNEL_OPENED_TO_RING3.set(true);
        cpu::open_kernel_to_ring3();
        return;
    }
    // On PVM the syscall path runs with CS = 0x33, so the code address decides whose it is.
    let in_kernel_code = (KERNEL_BASE..USER_BASE).contains(&frame.rip);
    let from_program = frame.cs & 3 == 3 && !in_kernel_code;
    let signal = signal_for(frame.vector);
    if !from_program {
        console::serial_write(b"cvm-guest: kernel exception ");
        console::serial_hex(frame.vector);
        console::serial_write(b" at rip ");
        console::serial_hex(frame.rip);
        console::serial_write(b" cr2 ");
        console::serial_hex(cr2);
        console::serial_write(b"\n");
    }
    report(FaultReport {
        kind: if from_program { fault_kind::PROGRAM } else { fault_kind::KERNEL },
        vector: frame.vector as u32,
        error_code: frame.error_code,
        rip: frame.rip,
        rsp: frame.rsp,
        cr2,
        signal,
        _reserved: 0,
    });
    if crate::qemu_mode() {
        // isa-debug-exit: end QEMU with status 128 + signal, as a crashed process would.
        out32(port::EXIT, 128 + signal);
    }
    halt_forever()
}

/// A Rust panic in the kernel: reported as a kernel fault with vector 0xff (not an x86
/// vector), the message on the serial port.
pub fn report_panic(rip: u64) -> ! {
    report(FaultReport { kind: fault_kind::KERNEL, vector: 0xff, rip, signal: SIGSEGV, ..Default::default() });
    if crate::qemu_mode() {
        out32(port::EXIT, 128 + SIGSEGV);
    }
    // A panic may happen in the syscall path, where `hlt` is not allowed on PVM.
    crate::cpu::spin_forever()
}

fn report(fault: FaultReport) {
    REPORT.set(fault);
    out32(port::GUEST_FAULT, REPORT.as_ptr() as u64 as u32);
}

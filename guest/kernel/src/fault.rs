//! Exceptions and interrupts. The timer interrupt goes to the scheduler; every exception ends
//! the run with a [`FaultReport`] to the VMM (port 0x501).
//!
//! A fault at CPL3 is the program's: the signal Linux would send goes to the program's handler
//! when it has one (signal.rs); otherwise the run ends as a crash would (128 + signal).
//! Anything else is the kernel's own bug.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::console;
use crate::cpu::{self, halt_forever, out32};
use crate::entry::{is_syscall_entry, UserFrame};
use crate::percpu;
use cvm_guest_abi::{fault_kind, port, FaultReport, KERNEL_BASE, MAX_CPUS, TIMER_VECTOR, USER_BASE};

use crate::signal::{self, code, SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP};

const PAGE_FAULT: u64 = 14;
const INVALID_OPCODE: u64 = 6;

/// `privileged_call_ud2` operations.
pub mod privileged {
    /// Change the memory above guest RAM; the argument points at a [`crate::highmem::Request`].
    pub const HIGH: u64 = 2;
}

/// What the kernel does at real CPL0 on request from code that may not be there.
fn privileged_call(op: u64, arg: u64) -> u64 {
    match op {
        privileged::HIGH => crate::highmem::apply(arg),
        _ => u64::MAX,
    }
}

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

/// `si_code` and `si_addr` of the signal for a fault, as Linux fills them.
fn signal_details(frame: &UserFrame, cr2: u64) -> (i32, u64) {
    match frame.vector {
        PAGE_FAULT if frame.error_code & 1 != 0 => (code::SEGV_ACCERR, cr2), // present: a permission
        PAGE_FAULT => (code::SEGV_MAPERR, cr2),
        0 => (code::FPE_INTDIV, frame.rip),
        6 => (code::ILL_ILLOPN, frame.rip),
        1 | 3 => (code::TRAP_BRKPT, frame.rip),
        11 | 12 | 17 => (code::BUS_ADRERR, 0),
        _ => (code::SI_KERNEL, 0), // a general protection fault has no address
    }
}

#[link_section = ".data.hot"]
static KERNEL_OPENED_TO_RING3: AtomicBool = AtomicBool::new(false);
#[link_section = ".data.hot"]
static KERNEL_OPEN_DONE: AtomicBool = AtomicBool::new(false);
/// Per vCPU: its first syscall faulted once already (it must not twice).
#[link_section = ".data.hot"]
static RETRIED_SYSCALL_ENTRY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Called by `exception_common` at real CPL0 with the interrupted registers. Returns when it
/// repaired the cause (the instruction is retried) or handled an interrupt (the frame may now
/// hold another thread); otherwise the run ends here.
pub extern "C" fn handle_exception(frame: &mut UserFrame) {
    let cpu = percpu::current_cpu();
    if frame.vector == u64::from(TIMER_VECTOR) {
        // The VMM injects it only while the program runs; should one still arrive in the
        // kernel, the interrupted code is not a thread to switch away from.
        if frame.rip >= USER_BASE {
            crate::sched::timer_interrupt(frame, cpu);
            signal::deliver_pending(frame, cpu);
        }
        return;
    }
    if frame.vector >= 32 {
        return; // no other interrupt is ever sent; a stray one is ignored
    }
    if frame.vector == INVALID_OPCODE && frame.rip == crate::entry::privileged_call_address() {
        frame.rax = privileged_call(frame.rdi, frame.rsi);
        frame.rip += 2; // past the ud2
        return;
    }
    let cr2 = if frame.vector == PAGE_FAULT { cpu::read_cr2() } else { 0 };
    // PVM: the syscall handler's first fetch faults as a user-mode access (see cpu.rs). The
    // first vCPU to see it opens the kernel's pages; each vCPU then drops its stale view once.
    if frame.vector == PAGE_FAULT && frame.rip == cr2 && is_syscall_entry(cr2) && crate::kernel_closed() {
        // The kernel stays closed: this fault *is* the system call's way in (registers as
        // `syscall` left them: RCX = the program's RIP, R11 = its RFLAGS).
        frame.rip = frame.rcx;
        frame.rflags = frame.r11;
        frame.cs = u64::from(crate::cpu::selector::USER_CODE);
        frame.ss = u64::from(crate::cpu::selector::USER_DATA);
        frame.vector = crate::entry::SYSCALL_VECTOR;
        frame.error_code = 0;
        crate::syscalls::dispatch(frame);
        return;
    }
    if frame.vector == PAGE_FAULT
        && frame.rip == cr2
        && is_syscall_entry(cr2)
        && crate::syscall_may_fault()
        && !RETRIED_SYSCALL_ENTRY[cpu].swap(true, Ordering::Relaxed)
    {
        if !KERNEL_OPENED_TO_RING3.swap(true, Ordering::AcqRel) {
            cpu::open_kernel_to_ring3();
            KERNEL_OPEN_DONE.store(true, Ordering::Release);
        }
        while !KERNEL_OPEN_DONE.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        cpu::reload_cr3();
        return;
    }
    // On PVM the syscall path runs with CS = 0x33, so the code address decides whose it is;
    // but the kernel always runs on its own stacks, so kernel code running on a user stack is
    // the program having jumped there.
    let in_kernel_code = (KERNEL_BASE..USER_BASE).contains(&frame.rip);
    let on_user_stack = frame.rsp >= USER_BASE;
    let from_program = frame.cs & 3 == 3 && (!in_kernel_code || on_user_stack);
    let signal = signal_for(frame.vector);
    // A first touch of memory above guest RAM: back the page and run the instruction again.
    let first_touch = from_program && frame.vector == PAGE_FAULT && frame.error_code & 1 == 0;
    if first_touch && crate::highmem::contains(cr2, cr2) {
        match crate::highmem::fault(cr2, frame.error_code & 2 != 0) {
            crate::highmem::Fault::Backed => return,
            crate::highmem::Fault::OutOfMemory => out_of_memory(frame.rip, cr2),
            crate::highmem::Fault::Denied => {}
        }
    }
    if from_program {
        let (code, address) = signal_details(frame, cr2);
        if signal::deliver_fault(frame, cpu, signal, code, address) {
            return;
        }
    }
    // Under QEMU no VMM reads the fault report: say it on the serial line.
    if !from_program || crate::qemu_mode() {
        console::serial_write(if from_program {
            b"cvm-guest: program exception "
        } else {
            b"cvm-guest: kernel exception "
        });
        console::serial_hex(frame.vector);
        console::serial_write(b" at rip ");
        console::serial_hex(frame.rip);
        console::serial_write(b" cr2 ");
        console::serial_hex(cr2);
        console::serial_write(b" rsp ");
        console::serial_hex(frame.rsp);
        console::serial_write(b" on vCPU ");
        console::serial_hex(cpu as u64);
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
        out32(port::EXIT, crate::exit_port_value(128 + signal));
    }
    halt_forever()
}

/// The program needs a page and the VM has none left: the run ends as Linux's OOM killer
/// would end it (SIGKILL), and the VMM says why.
fn out_of_memory(rip: u64, address: u64) -> ! {
    report(FaultReport {
        kind: fault_kind::OUT_OF_MEMORY,
        vector: PAGE_FAULT as u32,
        rip,
        cr2: address,
        signal: 9,
        ..Default::default()
    });
    if crate::qemu_mode() {
        out32(port::EXIT, crate::exit_port_value(128 + 9));
    }
    crate::cpu::spin_forever()
}

/// A Rust panic in the kernel: reported as a kernel fault with vector 0xff (not an x86
/// vector), the message on the serial port.
pub fn report_panic(rip: u64) -> ! {
    report(FaultReport { kind: fault_kind::KERNEL, vector: 0xff, rip, signal: SIGSEGV, ..Default::default() });
    if crate::qemu_mode() {
        out32(port::EXIT, crate::exit_port_value(128 + SIGSEGV));
    }
    // A panic may happen in the syscall path, where `hlt` is not allowed on PVM.
    crate::cpu::spin_forever()
}

pub fn report(fault: FaultReport) {
    // On this vCPU's stack (below 4 GiB, identity-mapped: the address is guest-physical).
    out32(port::GUEST_FAULT, &fault as *const FaultReport as u64 as u32);
}

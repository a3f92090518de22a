//! cvm's builtin guest kernel: runs one static x86-64 Linux program, with its threads, at
//! CPL3 on every vCPU and answers its system calls. See README.md for the design and the
//! system-call table (syscalls.rs).
//!
//! Boot sequence (entry.rs `_start`, then [`kernel_main`]), on every vCPU at once:
//! 1. the boot vCPU writes KERNEL_ENTERED to port 0x80; each switches to its own stack;
//! 2. GDT, its TSS, IDT, STAR/LSTAR/SFMASK (cpu.rs; tables built at compile time);
//! 3. the boot vCPU reads the TSC (time zero of the monotonic clock), copies what the system
//!    calls need out of BootInfo, writes PROGRAM_ENTERED and iretqs to the program as its
//!    first thread (sched.rs); the other vCPUs park until a thread is there for them.
//!
//! On a PVM host cvm's VMM starts the boot vCPU another way ([`boot_call`]): no step 1, step 2
//! done by the VMM from this kernel's `CVM` ELF note, and the vCPU at CPL3 on a trampoline
//! whose system call runs step 3 at native speed. The other vCPUs boot as above.
//!
//! Everything else (page tables, loading the program, its stack) the VMM did before we ran:
//! on nested PVM hosts each kernel-mode instruction costs about a microsecond.
#![no_std]
#![no_main]

mod clock;
mod console;
mod cpu;
mod entry;
mod epoll;
mod errno;
mod fault;
mod files;
mod futex;
mod global;
mod highmem;
mod memory;
mod paging;
mod percpu;
mod pipe;
mod process;
mod protection;
mod pvh;
mod ranges;
mod sched;
mod signal;
mod sync;
mod syscalls;
mod user;

use core::sync::atomic::{AtomicBool, Ordering};

use cvm_guest_abi::{boot_flags, BootInfo, BOOT_INFO_MAGIC};
use global::Global;

/// Set when booted by QEMU through the PVH entry (no cvm hypercalls there).
#[link_section = ".data.hot"]
static QEMU_MODE: Global<bool> = Global::new(false);

pub fn qemu_mode() -> bool {
    QEMU_MODE.get()
}

/// What the kernel writes to the exit port for the program's `status` (128 + n: killed by
/// signal n). Under QEMU, isa-debug-exit ends QEMU with `(value << 1) | 1`, and QEMU's own
/// failures exit 1: the value is `status + 1`, so 1 never comes from the guest, and every
/// status from 126 up (a signal among them) is 127, which cvm reports as "126 or more".
pub fn exit_port_value(status: u32) -> u32 {
    if qemu_mode() {
        status.min(126) + 1
    } else {
        status
    }
}

/// BootInfo's KERNEL_CLOSED: system calls enter through the page fault (fault.rs).
#[link_section = ".data.hot"]
static KERNEL_CLOSED: Global<bool> = Global::new(false);

pub fn kernel_closed() -> bool {
    KERNEL_CLOSED.get()
}

/// BootInfo's SYSCALL_MAY_FAULT (fault.rs).
#[link_section = ".data.hot"]
static SYSCALL_MAY_FAULT: Global<bool> = Global::new(false);

pub fn syscall_may_fault() -> bool {
    SYSCALL_MAY_FAULT.get()
}

/// Where `_start` lands on every vCPU, on its own stack, with RDI = &BootInfo, RSI = its number.
pub extern "C" fn kernel_main(boot: &'static BootInfo, cpu: usize) -> ! {
    if cpu == 0 {
        start(boot, console::Backend::Hypercall)
    }
    cpu::init(cpu);
    sched::start_secondary(cpu)
}

/// The boot vCPU's path at real CPL0, shared by the long-mode entry (cvm's VMM where the
/// kernel stays closed to ring 3) and the PVH entry (QEMU): installs the CPU's tables and
/// MSRs, then boots.
pub fn start(boot: &'static BootInfo, backend: console::Backend) -> ! {
    // Booted this way: no boot system call, ever.
    BOOT_CALL_PENDING.store(false, Ordering::Release);
    cpu::init(0);
    boot_unprivileged(boot, backend)
}

/// True until the first boot system call ([`cvm_guest_abi::BOOT_SYSCALL`]) or `start`.
#[link_section = ".data.hot"]
static BOOT_CALL_PENDING: AtomicBool = AtomicBool::new(true);

/// The boot system call: where cvm's VMM starts vCPU 0 when the kernel is open to ring 3 (a
/// PVM host): at CPL3 on `boot_syscall_trampoline` (entry.rs), with the tables and MSRs that
/// `cpu::init(0)` would install already set from this kernel's `CVM` ELF note (cpu.rs). On
/// such a host KVM emulates every instruction at CPL0 (about a microsecond each) but runs
/// the system-call path natively: so no instruction of the boot runs at CPL0 (it took about
/// 530 emulated instructions, 0.5 ms of every VM run). Honoured once; a program making this
/// call later gets ENOSYS.
pub fn boot_call() {
    if BOOT_CALL_PENDING.swap(false, Ordering::AcqRel) {
        // SAFETY: the VMM that starts the kernel this way left BootInfo at its ABI address.
        let boot = unsafe { &*(cvm_guest_abi::BOOT_INFO_ADDR as *const BootInfo) };
        boot_unprivileged(boot, console::Backend::Hypercall)
    }
}

/// The part of the boot that needs no privilege: copies what the system calls need out of
/// BootInfo and starts the program. At real CPL0 or in the boot system call.
fn boot_unprivileged(boot: &'static BootInfo, backend: console::Backend) -> ! {
    let tsc_at_boot = cpu::rdtsc();
    QEMU_MODE.set(backend == console::Backend::Serial);
    console::init(backend);
    if boot.magic != BOOT_INFO_MAGIC {
        console::serial_write(b"cvm-guest: BootInfo has the wrong magic\n");
        fault::report_panic(0);
    }
    percpu::init(boot.cpus);
    clock::init(tsc_at_boot, boot.tsc_khz, boot.realtime_ns_at_boot);
    user::init(boot.ram_size);
    // Under QEMU, firmware ran in this RAM before us: nothing can be assumed zero.
    memory::init(boot, backend == console::Backend::Hypercall);
    paging::init(boot);
    syscalls::init(boot.syscall_counts_addr);
    let have_fsgsbase = boot.flags & boot_flags::FSGSBASE != 0;
    KERNEL_CLOSED.set(boot.flags & boot_flags::KERNEL_CLOSED != 0);
    SYSCALL_MAY_FAULT.set(boot.flags & boot_flags::SYSCALL_MAY_FAULT != 0);
    process::init(&boot.hostname, have_fsgsbase);
    // The VMM (or the PVH loader) placed the program and its stack at these addresses; from
    // here on the kernel runs only on system calls, exceptions and timer interrupts.
    sched::start_program(boot.user_entry, boot.user_stack_pointer, have_fsgsbase)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::serial_write(b"cvm-guest: kernel panic");
    if let Some(location) = info.location() {
        console::serial_write(b" at ");
        console::serial_write(location.file().as_bytes());
        console::serial_write(b":");
        console::serial_hex(location.line() as u64);
    }
    console::serial_write(b"\n");
    fault::report_panic(0)
}

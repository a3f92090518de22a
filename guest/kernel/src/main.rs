//! cvm's builtin guest kernel: runs one static x86-64 Linux program at CPL3 and answers its
//! system calls. See README.md for the design and the system-call table (syscalls.rs).
//!
//! Boot sequence (entry.rs `_start`, then [`kernel_main`]):
//! 1. port 0x80 <- KERNEL_ENTERED; switch to the kernel stack;
//! 2. read the TSC (time zero of the monotonic clock);
//! 3. GDT, TSS, IDT, STAR/LSTAR/SFMASK (cpu.rs; tables built at compile time);
//! 4. copy what the system calls need out of BootInfo;
//! 5. port 0x80 <- PROGRAM_ENTERED; iretq to the program (entry.rs `enter_program`).
//!
//! Everything else (page tables, loading the program, its stack) the VMM did before we ran:
//! on nested PVM hosts each kernel-mode instruction costs about a microsecond.
#![no_std]
#![no_main]

mod clock;
mod console;
mod cpu;
mod entry;
mod errno;
mod fault;
mod files;
mod global;
mod memory;
mod process;
mod pvh;
mod syscalls;
mod user;

use cvm_guest_abi::{boot_flags, BootInfo, BOOT_INFO_MAGIC};
use global::Global;

/// Set when booted by QEMU through the PVH entry (no cvm hypercalls there).
static QEMU_MODE: Global<bool> = Global::new(false);

pub fn qemu_mode() -> bool {
    QEMU_MODE.get()
}

/// Where `_start` lands, on the kernel stack, with RDI = &BootInfo.
pub extern "C" fn kernel_main(boot: &BootInfo) -> ! {
    start(boot, console::Backend::Hypercall)
}

/// The common boot path of the direct (cvm VMM) and the PVH (QEMU) entries.
pub fn start(boot: &BootInfo, backend: console::Backend) -> ! {
    let tsc_at_boot = cpu::rdtsc();
    QEMU_MODE.set(backend == console::Backend::Serial);
    console::init(backend);
    if boot.magic != BOOT_INFO_MAGIC {
        console::serial_write(b"cvm-guest: BootInfo has the wrong magic\n");
        fault::report_panic(0);
    }
    cpu::init();
    clock::init(tsc_at_boot, boot.tsc_khz, boot.realtime_ns_at_boot);
    user::init(boot.ram_size);
    // Under QEMU, firmware ran in this RAM before us: nothing can be assumed zero.
    memory::init(boot, backend == console::Backend::Hypercall);
    syscalls::init(boot.syscall_counts_addr);
    process::init(&boot.hostname, boot.flags & boot_flags::FSGSBASE != 0);
    // SAFETY: the VMM (or the PVH loader) placed the program and its stack at these
    // addresses; from here on the kernel runs only on system calls and exceptions.
    unsafe { entry::enter_program(boot.user_entry, boot.user_stack_pointer) }
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

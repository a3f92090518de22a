//! Which CPU am I? Each vCPU has its own stacks at a fixed place (guest ABI:
//! `cpu_stack_top`), and every way into the kernel switches to one of them: `syscall` through
//! the vCPU's own entry trampoline (each vCPU's LSTAR points at its own), exceptions and
//! interrupts through its TSS. So the stack pointer says which vCPU runs this code, without
//! `swapgs` or a per-CPU segment (neither is allowed in the syscall path on PVM hosts).
//!
//! ```text
//! cpu_stack_top(i)           the first thread's frame (FIRST_FRAME_SLOT bytes), then the
//!                            system-call and boot stack (40 KiB in all)
//!      - 0xa000              exception and interrupt stack, TSS.RSP0 (20 KiB)
//!      - 0xf000              double-fault stack, IST1 (4 KiB)
//!      - 0x10000             = cpu_stack_top(i + 1)
//! ```

use cvm_guest_abi::{cpu_stack_top, CPU_STACKS_SIZE, KERNEL_BOOT_STACK_TOP, MAX_CPUS};

use crate::global::Global;

pub const SYSCALL_STACK_SIZE: u64 = 0xa000;
pub const EXCEPTION_STACK_SIZE: u64 = 0x5000;

/// Bytes kept free at the top of each vCPU's system-call stack, where the boot path builds the
/// frame of the first thread it runs (entry.rs `first_frame_address`): the boot code's own
/// stack starts below it, or loading that frame would overwrite the return addresses of the
/// very code loading it.
pub const FIRST_FRAME_SLOT: u64 = 256;

/// Where the boot code of vCPU `cpu` starts its stack (entry.rs `_start`, pvh.rs).
pub const fn boot_stack_top(cpu: usize) -> u64 {
    syscall_stack_top(cpu) - FIRST_FRAME_SLOT
}

pub const fn syscall_stack_top(cpu: usize) -> u64 {
    cpu_stack_top(cpu)
}

pub const fn exception_stack_top(cpu: usize) -> u64 {
    cpu_stack_top(cpu) - SYSCALL_STACK_SIZE
}

pub const fn double_fault_stack_top(cpu: usize) -> u64 {
    exception_stack_top(cpu) - EXCEPTION_STACK_SIZE
}

/// The vCPU whose stacks hold `stack_pointer`.
pub fn cpu_of_stack(stack_pointer: u64) -> usize {
    let below_top = KERNEL_BOOT_STACK_TOP.wrapping_sub(stack_pointer + 1);
    ((below_top / CPU_STACKS_SIZE) as usize).min(MAX_CPUS - 1)
}

/// The vCPU running this code.
#[inline(always)]
pub fn current_cpu() -> usize {
    let marker = 0u8;
    cpu_of_stack(core::ptr::addr_of!(marker) as u64)
}

/// How many vCPUs the VM has (BootInfo), set once by the boot CPU before the others run.
#[link_section = ".data.hot"]
static CPUS: Global<usize> = Global::new(1);

pub fn init(cpus: u32) {
    CPUS.set((cpus as usize).clamp(1, MAX_CPUS));
}

pub fn count() -> usize {
    CPUS.get()
}

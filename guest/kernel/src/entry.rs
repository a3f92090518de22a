//! Every way into and out of the kernel, in assembly: the boot entry, the exception stubs, the
//! `syscall` entry and the jump to the program. This is the only file with assembly besides
//! the one-instruction wrappers in `cpu.rs` and the PVH stub in `pvh.rs`.
//!
//! Rules this code follows because of nested PVM hosts (see README): the `syscall` path uses
//! no privileged instruction (no `swapgs`, `wrmsr`, `cli`/`sti`, `hlt`, `sysretq`): it saves
//! the user stack pointer in a static, switches to a fixed kernel stack and returns with
//! `iretq`. What it cannot avoid (`out`, `wrmsr FS_BASE` without FSGSBASE) it reaches through
//! the #GP and #UD handlers below, which run at real CPL0.

use core::arch::global_asm;

use crate::cpu::{selector, KERNEL_STACK_TOP};
use crate::{fault, kernel_main, syscalls};
use cvm_guest_abi::{boot_code, port};

extern "C" {
    /// Sets the FS base with `wrmsr` (value in RDI) by way of the `#UD` handler: executes
    /// `ud2`, which the `#UD` stub recognises by its address. For CPUs without FSGSBASE.
    pub fn set_fs_base_through_ud2(value: u64);
    /// `out dx, eax` / `out dx, al` that also work from the syscall path on PVM (see #GP).
    pub fn port_out32(port: u32, value: u32);
    pub fn port_out8(port: u32, value: u32);
    /// Drops to CPL3 at `entry` with `stack` (IF=0, all other registers zero). Never returns.
    pub fn enter_program(entry: u64, stack: u64) -> !;
}

// The boot entry. The VMM starts us here in long mode with RDI = &BootInfo; the first thing
// the host sees is the boot-timer code, then we run on our own stack.
global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    mov al, {kernel_entered}",
    "    out {boot_timer}, al",
    "    mov rsp, {stack_top}",
    "    jmp {kernel_main}",
    kernel_entered = const boot_code::KERNEL_ENTERED,
    boot_timer = const port::BOOT_TIMER,
    stack_top = const KERNEL_STACK_TOP,
    kernel_main = sym kernel_main,
);

// Exception stubs: 32 slots of 16 bytes at KERNEL_BASE (the linker script puts this section
// first), so `cpu.rs` can build the IDT at compile time. Each stub pushes a dummy error code
// when the CPU pushes none, then its vector, so `exception_common` always sees the same frame.
// Exception stubs: 32 slots of 16 bytes at KERNEL_BASE (the linker script puts this section
// first), so `cpu.rs` can build the IDT at compile time. Each stub pushes a dummy error code
// when the CPU pushes none, then its vector, so `exception_common` always sees the same frame.
global_asm!(
    ".section .text.vectors, \"ax\"",
    ".macro vector_stub num, error_code",
    // .org fails to assemble if the previous stub outgrew its slot.
    "    .org exception_vectors + \\num * 16",
    "    .if \\error_code == 0",
    "    push 0",
    "    .endif",
    "    push \\num",
    "    jmp exception_common",
    ".endm",
    ".global exception_vectors",
    "exception_vectors:",
    "vector_stub 0, 0",
    "vector_stub 1, 0",
    "vector_stub 2, 0",
    "vector_stub 3, 0",
    "vector_stub 4, 0",
    "vector_stub 5, 0",
    "    .org exception_vectors + 6 * 16",
    "    jmp invalid_opcode_entry",
    "vector_stub 7, 0",
    "vector_stub 8, 1",
    "vector_stub 9, 0",
    "vector_stub 10, 1",
    "vector_stub 11, 1",
    "vector_stub 12, 1",
    "    .org exception_vectors + 13 * 16",
    "    jmp general_protection_entry",
    "vector_stub 14, 1",
    "vector_stub 15, 0",
    "vector_stub 16, 0",
    "vector_stub 17, 1",
    "vector_stub 18, 0",
    "vector_stub 19, 0",
    "vector_stub 20, 0",
    "vector_stub 21, 1",
    "vector_stub 22, 0",
    "vector_stub 23, 0",
    "vector_stub 24, 0",
    "vector_stub 25, 0",
    "vector_stub 26, 0",
    "vector_stub 27, 0",
    "vector_stub 28, 0",
    "vector_stub 29, 1",
    "vector_stub 30, 1",
    "vector_stub 31, 0",
    "    .org exception_vectors + 32 * 16",
    // #UD: if it is our own `ud2` in set_fs_base_through_ud2, we are at real CPL0 here and
    // may use wrmsr (the syscall path may not). RAX/RCX/RDX are caller-saved around that
    // extern "C" call, so they are free to use. Anything else is a real #UD.
    "invalid_opcode_entry:",
    "    push rax",
    "    lea rax, [rip + fs_base_ud2]",
    "    cmp rax, [rsp + 8]",
    "    pop rax",
    "    jne 2f",
    "    mov ecx, 0xC0000100", // IA32_FS_BASE
    "    mov eax, edi",
    "    mov rdx, rdi",
    "    shr rdx, 32",
    "    wrmsr",
    "    add qword ptr [rsp], 2", // past the ud2
    "    iretq",
    "2:  push 0",
    "    push 6",
    "    jmp exception_common",
    // #GP: on PVM hosts the syscall handler runs in hardware ring 3, where `out` faults. If
    // the fault is one of the two `out` instructions of port_out32/port_out8, do the `out`
    // here (real CPL0; DX and EAX/AL still hold the interrupted code's port and value) and
    // step over it (one byte). On hardware KVM those instructions never fault.
    "general_protection_entry:", // [rsp] = error code, [rsp + 8] = RIP
    "    push rax",
    "    lea rax, [rip + port_out32_insn]",
    "    cmp rax, [rsp + 16]",
    "    je 2f",
    "    lea rax, [rip + port_out8_insn]",
    "    cmp rax, [rsp + 16]",
    "    je 3f",
    "    pop rax",
    "    push 13",
    "    jmp exception_common",
    "2:  pop rax",
    "    out dx, eax",
    "    jmp 4f",
    "3:  pop rax",
    "    out dx, al",
    "4:  add rsp, 8", // the error code
    "    add qword ptr [rsp], 1",
    "    iretq",
    // Frame: vector, error code, RIP, CS, RFLAGS, RSP, SS. The caller-saved registers are
    // kept so that a handler that repaired the fault (see fault.rs) can return to it.
    "exception_common:",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    lea rdi, [rsp + 72]",
    "    push rbp",
    "    mov rbp, rsp",
    "    and rsp, -16",
    "    call {handle_exception}",
    "    mov rsp, rbp",
    "    pop rbp",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    "    add rsp, 16", // vector, error code
    "    iretq",
    handle_exception = sym fault::handle_exception,
);

// The syscall entry (LSTAR). On entry RCX = user RIP, R11 = user RFLAGS, RSP = user stack,
// CS/SS = kernel selectors from STAR. We build an iretq frame plus the saved argument
// registers on the kernel stack (the layout of `SyscallFrame`), call the dispatcher, then
// restore everything Linux preserves (all but RAX, RCX, R11) and return with iretq.
global_asm!(
    ".section .text",
    ".global syscall_entry",
    "syscall_entry:",
    "    mov [rip + {user_rsp}], rsp",
    "    mov rsp, {stack_top}",
    "    push {user_ss}",
    "    push qword ptr [rip + {user_rsp}]",
    "    push r11",
    "    push {user_cs}",
    "    push rcx",
    "    push rax",
    "    push r9",
    "    push r8",
    "    push r10",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    mov rdi, rsp",
    "    call {dispatch}",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop r10",
    "    pop r8",
    "    pop r9",
    "    add rsp, 8",
    "    mov rcx, [rsp]",
    "    mov r11, [rsp + 16]",
    "    iretq",
    user_rsp = sym syscalls::USER_RSP,
    stack_top = const KERNEL_STACK_TOP,
    user_ss = const selector::USER_DATA,
    user_cs = const selector::USER_CODE,
    dispatch = sym syscalls::dispatch,
);

// Port output, the kernel's only way to talk to the VMM. Each `out` has a label the #GP
// handler knows (see above). Arguments: EDI = port, ESI = value.
global_asm!(
    ".section .text",
    ".global port_out32",
    "port_out32:",
    "    mov edx, edi",
    "    mov eax, esi",
    "port_out32_insn:",
    "    out dx, eax",
    "    ret",
    ".global port_out8",
    "port_out8:",
    "    mov edx, edi",
    "    mov eax, esi",
    "port_out8_insn:",
    "    out dx, al",
    "    ret",
);

global_asm!(
    ".section .text",
    ".global set_fs_base_through_ud2",
    "set_fs_base_through_ud2:",
    "fs_base_ud2:",
    "    ud2",
    "    ret",
    ".global enter_program",
    "enter_program:",
    "    push {user_ss}",
    "    push rsi",
    "    push 2", // RFLAGS: IF=0 (no interrupts are used), IOPL=0
    "    push {user_cs}",
    "    push rdi",
    "    mov al, {program_entered}",
    "    out {boot_timer}, al",
    // The ELF ABI wants RDX = 0 (no exit function); zero the rest so nothing leaks.
    "    xor eax, eax",
    "    xor ebx, ebx",
    "    xor ecx, ecx",
    "    xor edx, edx",
    "    xor esi, esi",
    "    xor edi, edi",
    "    xor ebp, ebp",
    "    xor r8d, r8d",
    "    xor r9d, r9d",
    "    xor r10d, r10d",
    "    xor r11d, r11d",
    "    xor r12d, r12d",
    "    xor r13d, r13d",
    "    xor r14d, r14d",
    "    xor r15d, r15d",
    "    iretq",
    user_ss = const selector::USER_DATA,
    user_cs = const selector::USER_CODE,
    program_entered = const boot_code::PROGRAM_ENTERED,
    boot_timer = const port::BOOT_TIMER,
);

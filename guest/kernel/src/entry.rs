//! Every way into and out of the kernel, in assembly: the boot entry, the exception and
//! interrupt stubs, each vCPU's `syscall` trampoline and the return to the program. This is the
//! only file with assembly besides the one-instruction wrappers in `cpu.rs` and the PVH stub
//! in `pvh.rs`.
//!
//! Every entry saves the program's registers in the same layout, a [`UserFrame`], so a system
//! call, an interrupt or an exception can end in another thread: the scheduler copies another
//! thread's frame over this one, and the common exit path restores it and `iretq`s into it.
//!
//! Rules this code follows because of nested PVM hosts (see README): the `syscall` path uses
//! no privileged instruction (no `swapgs`, `wrmsr`, `cli`/`sti`, `hlt`, `sysretq`): it saves
//! the user stack pointer in its vCPU's own slot, switches to that vCPU's kernel stack and
//! returns with `iretq`. What it cannot avoid (`out`, `wrmsr FS_BASE` without FSGSBASE) it
//! reaches through the #GP and #UD handlers below, which run at real CPL0.

use core::arch::global_asm;

use crate::cpu::selector;
use crate::percpu::{syscall_stack_top, FIRST_FRAME_SLOT};
use crate::{fault, kernel_main, syscalls};
use cvm_guest_abi::{boot_code, port, CPU_STACKS_SIZE, KERNEL_BOOT_STACK_TOP, MAX_CPUS};

/// The program's registers at the moment it entered the kernel, as the entry stubs push them
/// (lowest address first). `vector` is the exception or interrupt number, or
/// [`SYSCALL_VECTOR`] for a system call; `error_code` is the CPU's (0 when it pushes none).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct UserFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// `UserFrame::vector` of a system call (not an x86 vector).
pub const SYSCALL_VECTOR: u64 = 0x100;
/// RFLAGS of a program: IF set (the timer interrupt may preempt it), IOPL 0, bit 1 always on.
pub const USER_RFLAGS: u64 = 0x202;

impl UserFrame {
    /// A thread about to start at `rip` with stack `rsp` and all other registers zero.
    pub fn starting(rip: u64, rsp: u64) -> UserFrame {
        UserFrame {
            rip,
            rsp,
            cs: u64::from(selector::USER_CODE),
            ss: u64::from(selector::USER_DATA),
            rflags: USER_RFLAGS,
            ..UserFrame::default()
        }
    }
}

extern "C" {
    /// Sets the FS base with `wrmsr` (value in RDI) by way of the `#UD` handler: executes
    /// `ud2`, which the `#UD` stub recognises by its address. For CPUs without FSGSBASE.
    pub fn set_fs_base_through_ud2(value: u64);
    /// `out dx, eax` / `out dx, al` that also work from the syscall path on PVM (see #GP).
    pub fn port_out32(port: u32, value: u32);
    pub fn port_out8(port: u32, value: u32);
    /// Runs `fault::privileged_call(op, arg)` at real CPL0 and returns its result, from
    /// anywhere (the syscall path on PVM hosts runs in hardware ring 3): a `ud2` the #UD
    /// handler recognises by its address, as `set_fs_base_through_ud2`.
    pub fn privileged_call_ud2(op: u64, arg: u64) -> u64;
    /// Writes `count` (at least one) page-table entries at real CPL0, each followed by an
    /// `invlpg` of its page: the `#UD` stub's shortest path, a few instructions a store
    /// (paging.rs). `stores` points at `count` {entry address, value, page} triples.
    pub fn page_table_stores_ud2(stores: *const u8, count: u64);
    /// Restores the registers in `frame` and `iretq`s to the program. Never returns.
    pub fn return_to_user(frame: *const UserFrame) -> !;
}

// Where cvm's VMM starts the boot vCPU when the kernel is open to ring 3 (main.rs
// `boot_call`): at CPL3, with no stack (these instructions use none). The boot system call
// never returns here.
global_asm!(
    ".section .text",
    ".global boot_syscall_trampoline",
    "boot_syscall_trampoline:",
    "    mov eax, {boot_syscall}",
    "    syscall",
    "    ud2",
    boot_syscall = const cvm_guest_abi::BOOT_SYSCALL,
);

// The boot entry. The VMM starts every vCPU here in long mode with RDI = &BootInfo and RSI =
// its number; only the boot vCPU reports to the boot timer. Each runs on its own stack, below
// the slot for its first thread's frame.
global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    test esi, esi",
    "    jnz 2f",
    "    mov al, {kernel_entered}",
    "    out {boot_timer}, al",
    "2:  mov rax, rsi",
    "    imul rax, rax, {stacks_size}",
    "    mov rsp, {stacks_top} - {frame_slot}",
    "    sub rsp, rax",
    "    jmp {kernel_main}",
    kernel_entered = const boot_code::KERNEL_ENTERED,
    boot_timer = const port::BOOT_TIMER,
    stacks_size = const CPU_STACKS_SIZE,
    stacks_top = const KERNEL_BOOT_STACK_TOP,
    frame_slot = const FIRST_FRAME_SLOT,
    kernel_main = sym kernel_main,
);

// Exception and interrupt stubs: 48 slots of 16 bytes at KERNEL_BASE (the linker script puts
// this section first), so `cpu.rs` can build the IDT at compile time. Each stub pushes a dummy
// error code when the CPU pushes none, then its vector, so `exception_common` always builds
// the same frame.
global_asm!(
    ".section .text.vectors, \"ax\"",
    // The general registers of a UserFrame, RDI first (highest address) to R15 (lowest):
    // every entry saves them the same way (used here and by `syscall_common` below).
    ".macro push_user_registers",
    "    push rdi",
    "    push rsi",
    "    push rdx",
    "    push rcx",
    "    push rax",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    ".endm",
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
    ".irp num, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47",
    "vector_stub \\num, 0",
    ".endr",
    "    .org exception_vectors + 48 * 16",
    // #UD: if it is our own `ud2` in set_fs_base_through_ud2 or page_table_stores_ud2, we
    // are at real CPL0 here and may use wrmsr or write page tables and invlpg (the syscall
    // path may not). RAX/RCX/RDX/RDI/RSI are caller-saved around those extern "C" calls, so
    // they are free to use. Anything else is a real #UD.
    "invalid_opcode_entry:",
    "    push rax",
    "    lea rax, [rip + fs_base_ud2]",
    "    cmp rax, [rsp + 8]",
    "    je 6f",
    "    lea rax, [rip + page_table_stores_insn]",
    "    cmp rax, [rsp + 8]",
    "    je 7f",
    "    pop rax",
    "    push 0",
    "    push 6",
    "    jmp exception_common",
    "6:  pop rax",
    "    mov ecx, 0xC0000100", // IA32_FS_BASE
    "    mov eax, edi",
    "    mov rdx, rdi",
    "    shr rdx, 32",
    "    wrmsr",
    "    add qword ptr [rsp], 2", // past the ud2
    "    iretq",
    "7:  pop rax",
    "8:  mov rax, [rdi]", // RDI: the next {entry, value, page}; RSI: how many are left
    "    mov rcx, [rdi + 8]",
    "    mov [rax], rcx",
    "    mov rax, [rdi + 16]",
    "    invlpg [rax]",
    "    add rdi, 24",
    "    dec rsi",
    "    jnz 8b",
    "    add qword ptr [rsp], 2", // past the ud2
    "    iretq",
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
    // The CPU pushed SS, RSP, RFLAGS, CS, RIP (and maybe an error code), the stub the rest of
    // vector and error code: save every register into a UserFrame and let the handler decide
    // whether to come back here, go on with another thread, or end the run.
    "exception_common:",
    // The program may have left DF set (`std`); the kernel's Rust code assumes it clear
    // (SFMASK clears it for `syscall`; nothing does for exceptions and interrupts).
    "    cld",
    "    push_user_registers",
    "    mov rdi, rsp",
    "    call {handle_exception}",
    "    jmp return_from_frame",
    handle_exception = sym fault::handle_exception,
);

// One `syscall` trampoline per vCPU (each vCPU's LSTAR points at its own): it saves the
// program's RSP in the vCPU's slot, switches to the vCPU's kernel stack and builds the iretq
// frame; `syscall_common` saves the rest as a UserFrame. RCX = user RIP, R11 = user RFLAGS.
global_asm!(
    ".section .text",
    ".macro syscall_trampoline cpu",
    ".global syscall_entry_\\cpu",
    "syscall_entry_\\cpu:",
    "    mov [rip + user_rsp_slots + \\cpu * 64], rsp",
    "    mov rsp, {stacks_top} - \\cpu * {stacks_size}",
    "    push {user_ss}",
    "    push qword ptr [rip + user_rsp_slots + \\cpu * 64]",
    "    jmp syscall_common",
    ".endm",
    ".irp cpu, 0, 1, 2, 3, 4, 5, 6, 7",
    "syscall_trampoline \\cpu",
    ".endr",
    "syscall_common:",
    "    push r11",
    "    push {user_cs}",
    "    push rcx",
    "    push 0",
    "    push {syscall_vector}",
    "    push_user_registers",
    "    mov rdi, rsp",
    "    call {dispatch}",
    "    jmp return_from_frame",
    // RDI = a UserFrame anywhere on this vCPU's stacks (a thread's first entry).
    ".global return_to_user",
    "return_to_user:",
    "    mov rsp, rdi",
    "return_from_frame:",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rax",
    "    pop rcx",
    "    pop rdx",
    "    pop rsi",
    "    pop rdi",
    "    add rsp, 16", // vector, error code
    "    iretq",
    ".section .data",
    ".balign 64",
    // Each vCPU's user RSP while it enters a system call; a cache line each.
    "user_rsp_slots: .skip 64 * {max_cpus}",
    stacks_top = const KERNEL_BOOT_STACK_TOP,
    stacks_size = const CPU_STACKS_SIZE,
    user_ss = const selector::USER_DATA,
    user_cs = const selector::USER_CODE,
    syscall_vector = const SYSCALL_VECTOR,
    dispatch = sym syscalls::dispatch,
    max_cpus = const MAX_CPUS,
);

extern "C" {
    fn syscall_entry_0();
    fn syscall_entry_1();
    fn syscall_entry_2();
    fn syscall_entry_3();
    fn syscall_entry_4();
    fn syscall_entry_5();
    fn syscall_entry_6();
    fn syscall_entry_7();
}

/// A table in the image rather than one built on the stack: `cpu::init` reads it at emulated
/// CPL0, where building it took 24 instructions.
static SYSCALL_ENTRIES: [unsafe extern "C" fn(); MAX_CPUS] = [
    syscall_entry_0,
    syscall_entry_1,
    syscall_entry_2,
    syscall_entry_3,
    syscall_entry_4,
    syscall_entry_5,
    syscall_entry_6,
    syscall_entry_7,
];

/// The address of vCPU `cpu`'s `syscall` trampoline, for its LSTAR.
pub fn syscall_entry_of(cpu: usize) -> u64 {
    SYSCALL_ENTRIES[cpu.min(MAX_CPUS - 1)] as *const () as u64
}

/// True when `address` is the first instruction of a vCPU's `syscall` trampoline.
pub fn is_syscall_entry(address: u64) -> bool {
    (0..MAX_CPUS).any(|cpu| syscall_entry_of(cpu) == address)
}

/// Where a vCPU builds the frame of the first thread it runs: the top of its system-call stack.
pub fn first_frame_address(cpu: usize) -> *mut UserFrame {
    (syscall_stack_top(cpu) - core::mem::size_of::<UserFrame>() as u64) as *mut UserFrame
}

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

global_asm!(".section .text", ".global privileged_call_ud2", "privileged_call_ud2:", "    ud2", "    ret",);

/// The address of the `ud2` in `privileged_call_ud2`.
pub fn privileged_call_address() -> u64 {
    privileged_call_ud2 as *const () as u64
}

global_asm!(
    ".section .text",
    ".global page_table_stores_ud2",
    "page_table_stores_ud2:",
    "page_table_stores_insn:",
    "    ud2",
    "    ret",
);

global_asm!(
    ".section .text",
    ".global set_fs_base_through_ud2",
    "set_fs_base_through_ud2:",
    "fs_base_ud2:",
    "    ud2",
    "    ret",
);

const _: () = assert!(core::mem::size_of::<UserFrame>() == 22 * 8);
const _: () = assert!(core::mem::size_of::<UserFrame>() as u64 <= FIRST_FRAME_SLOT);
const _: () = assert!(MAX_CPUS == 8, "the trampolines above are written out for 8 vCPUs");

//! The CPU tables (GDT, TSS, IDT) and the system-call MSRs, for every vCPU.
//!
//! Every instruction at boot costs about a microsecond on nested PVM hosts, so the tables are
//! built at compile time: the IDT can be, because the entry stubs sit at a fixed address (see
//! `entry.rs` and `linker.ld`). One GDT holds a TSS descriptor per vCPU; each vCPU fills in its
//! own TSS descriptor, loads the shared tables, and points its LSTAR at its own `syscall`
//! trampoline (which is how the syscall path knows which vCPU it runs on: `percpu.rs`).

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::sync::atomic::{AtomicU64, Ordering};

use cvm_guest_abi::{KERNEL_BASE, MAX_CPUS, PAGE_TABLES_ADDR, PAGE_TABLES_END, TIMER_VECTOR};

use crate::percpu::{double_fault_stack_top, exception_stack_top};

/// GDT selectors, laid out as Linux does so `STAR` works: `syscall` loads CS = 0x08,
/// SS = 0x10; user data = STAR[63:48] + 8 = 0x2b, user code = STAR[63:48] + 16 = 0x33.
pub mod selector {
    pub const KERNEL_CODE: u16 = 0x08;
    pub const KERNEL_DATA: u16 = 0x10;
    /// STAR[63:48]: the (unused) 32-bit user code segment, RPL 3.
    pub const USER_BASE: u16 = 0x20 | 3;
    pub const USER_DATA: u16 = 0x28 | 3;
    pub const USER_CODE: u16 = 0x30 | 3;
    /// vCPU i's TSS is at TSS + 16 * i (a 64-bit TSS descriptor takes two slots).
    pub const TSS: u16 = 0x38;
}

const TSS_FIRST_SLOT: usize = (selector::TSS / 8) as usize;
const GDT_ENTRIES: usize = TSS_FIRST_SLOT + 2 * MAX_CPUS;

const fn build_gdt() -> [u64; GDT_ENTRIES] {
    let mut gdt = [0; GDT_ENTRIES];
    gdt[1] = 0x00af_9b00_0000_ffff; // 0x08 kernel code, 64-bit
    gdt[2] = 0x00cf_9300_0000_ffff; // 0x10 kernel data
    gdt[4] = 0x00cf_fb00_0000_ffff; // 0x20 user code, 32-bit (only to anchor STAR's layout)
    gdt[5] = 0x00cf_f300_0000_ffff; // 0x28 user data
    gdt[6] = 0x00af_fb00_0000_ffff; // 0x30 user code, 64-bit
    gdt // TSS descriptors: filled by each vCPU's `init` (they need the TSS address)
}

/// Descriptors with the accessed bit preset, so the CPU never writes to the table (except the
/// busy bit of each TSS descriptor, which `ltr` sets).
static GDT: Table<[u64; GDT_ENTRIES]> = Table(UnsafeCell::new(build_gdt()));

#[repr(C, packed)]
#[derive(Clone, Copy)]
struct TaskStateSegment {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    io_map_base: u16,
}

const fn build_tss(cpu: usize) -> TaskStateSegment {
    TaskStateSegment {
        _reserved0: 0,
        rsp: [exception_stack_top(cpu), 0, 0],
        _reserved1: 0,
        ist: [double_fault_stack_top(cpu), 0, 0, 0, 0, 0, 0],
        _reserved2: 0,
        _reserved3: 0,
        // No I/O permission bitmap: the program cannot use `in`/`out`.
        io_map_base: size_of::<TaskStateSegment>() as u16,
    }
}

const fn build_all_tss() -> [TaskStateSegment; MAX_CPUS] {
    let mut all = [build_tss(0); MAX_CPUS];
    let mut cpu = 0;
    while cpu < MAX_CPUS {
        all[cpu] = build_tss(cpu);
        cpu += 1;
    }
    all
}

static TSS: Table<[TaskStateSegment; MAX_CPUS]> = Table(UnsafeCell::new(build_all_tss()));

/// Exceptions 0-31 and interrupts 32-47, one 16-byte stub each (entry.rs).
pub const IDT_ENTRIES: usize = 48;
const STUB_SIZE: u64 = 16;
const DOUBLE_FAULT: usize = 8;

/// 64-bit interrupt gate to the stub of `vector` in the kernel code segment.
const fn gate(vector: usize) -> [u64; 2] {
    let handler = KERNEL_BASE + vector as u64 * STUB_SIZE;
    let ist = if vector == DOUBLE_FAULT { 1 } else { 0 };
    let low = (handler & 0xffff)
        | ((selector::KERNEL_CODE as u64) << 16)
        | (ist << 32)
        | (0x8e << 40) // present, DPL 0, interrupt gate
        | ((handler >> 16) & 0xffff) << 48;
    [low, handler >> 32]
}

const fn build_idt() -> [[u64; 2]; IDT_ENTRIES] {
    let mut idt = [[0; 2]; IDT_ENTRIES];
    let mut vector = 0;
    while vector < IDT_ENTRIES {
        idt[vector] = gate(vector);
        vector += 1;
    }
    idt
}

const _: () = assert!((TIMER_VECTOR as usize) < IDT_ENTRIES);

static IDT: Table<[[u64; 2]; IDT_ENTRIES]> = Table(UnsafeCell::new(build_idt()));

/// A table the CPU reads (and, for a TSS descriptor, writes the busy bit of).
struct Table<T>(UnsafeCell<T>);
// SAFETY: each vCPU writes only its own TSS descriptor, once, in `init`, before it loads it;
// afterwards only the CPUs touch the tables.
unsafe impl<T> Sync for Table<T> {}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

mod msr {
    pub const STAR: u32 = 0xC000_0081;
    pub const LSTAR: u32 = 0xC000_0082;
    pub const SFMASK: u32 = 0xC000_0084;
}

/// RFLAGS bits cleared on `syscall`: TF, IF, DF, IOPL, NT, AC (as Linux does).
const SYSCALL_FLAG_MASK: u64 = 0x4_7700;

// The `CVM` direct-entry note (guest ABI `DirectEntry`): what `init(0)` would install, for a
// VMM that sets it up itself and starts vCPU 0 at CPL3 on the boot trampoline (main.rs).
global_asm!(
    ".section .note.cvm, \"a\", @note",
    ".balign 4",
    ".long 4", // name size ("CVM\0")
    ".long {words} * 8",
    ".long {kind}",
    ".asciz \"CVM\"",
    ".balign 4",
    ".quad {gdt}",
    ".quad {gdt_limit}",
    ".quad {idt}",
    ".quad {idt_limit}",
    ".quad {tss}",
    ".quad {tss_limit}",
    ".quad {tss_selector}",
    ".quad {star}",
    ".quad syscall_entry_0",
    ".quad {sfmask}",
    ".quad {user_code}",
    ".quad {user_data}",
    ".quad boot_syscall_trampoline",
    words = const cvm_guest_abi::DIRECT_ENTRY_WORDS,
    kind = const cvm_guest_abi::DIRECT_ENTRY_NOTE,
    gdt = sym GDT,
    gdt_limit = const GDT_ENTRIES * 8 - 1,
    idt = sym IDT,
    idt_limit = const IDT_ENTRIES * 16 - 1,
    tss = sym TSS,
    tss_limit = const size_of::<TaskStateSegment>() - 1,
    tss_selector = const selector::TSS,
    star = const STAR,
    sfmask = const SYSCALL_FLAG_MASK,
    user_code = const selector::USER_CODE,
    user_data = const selector::USER_DATA,
);

/// STAR: `sysret`'s base selector (user) and `syscall`'s (kernel code).
const STAR: u64 = (selector::USER_BASE as u64) << 48 | (selector::KERNEL_CODE as u64) << 32;

/// Installs GDT, this vCPU's TSS, the IDT and the syscall MSRs. Runs once per vCPU, at boot,
/// at CPL0.
pub fn init(cpu: usize) {
    let tss = TSS.0.get() as u64 + (cpu * size_of::<TaskStateSegment>()) as u64;
    let tss_limit = size_of::<TaskStateSegment>() as u64 - 1;
    let gdt = GDT.0.get();
    let slot = TSS_FIRST_SLOT + 2 * cpu;
    let tss_selector = selector::TSS + 16 * cpu as u16;
    // SAFETY: boot runs at CPL0; the tables are ours and stay alive forever; this vCPU's TSS
    // slots are written by it alone. The far return reloads CS from the new GDT; the data
    // selectors follow.
    unsafe {
        [(*gdt)[slot], (*gdt)[slot + 1]] = cvm_guest_abi::tss_descriptor(tss, tss_limit, false);
        let gdtr = DescriptorPointer { limit: (GDT_ENTRIES * 8 - 1) as u16, base: gdt as u64 };
        let idtr = DescriptorPointer { limit: (IDT_ENTRIES * 16 - 1) as u16, base: IDT.0.get() as u64 };
        asm!(
            "lgdt [{gdtr}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {data:e}",
            "mov ds, {data:e}",
            "mov es, {data:e}",
            "ltr {tss:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &gdtr,
            idtr = in(reg) &idtr,
            code = const selector::KERNEL_CODE,
            data = in(reg) selector::KERNEL_DATA as u32,
            tss = in(reg) tss_selector,
            tmp = out(reg) _,
        );
        write_msr(msr::STAR, STAR);
        write_msr(msr::LSTAR, crate::entry::syscall_entry_of(cpu));
        write_msr(msr::SFMASK, SYSCALL_FLAG_MASK);
    }
}

const PRESENT: u64 = 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Makes the kernel's memory ([0, USER_BASE)) reachable from ring 3 in the VMM's page tables.
///
/// Needed on nested PVM hosts only: there the `syscall` handler runs in hardware ring 3 with
/// user-mode page permissions, so its first instruction fetch faults; the #PF handler then
/// calls this once and retries (fault.rs). The price on such hosts: the program can read and
/// write kernel memory. On hardware KVM this never runs and the kernel stays supervisor-only.
pub fn open_kernel_to_ring3() {
    // SAFETY: exception handler at real CPL0; the VMM's tables are identity-mapped kernel
    // memory, and only permission bits of entries for [0, USER_BASE) change.
    unsafe {
        let entry = |table: u64, index: u64| (table + index * 8) as *mut u64;
        let pml4 = read_cr3() & ADDRESS_MASK;
        *entry(pml4, 0) |= USER;
        let pdpt = *entry(pml4, 0) & ADDRESS_MASK;
        *entry(pdpt, 0) |= USER;
        let pd = *entry(pdpt, 0) & ADDRESS_MASK;
        for index in 0..cvm_guest_abi::USER_BASE >> 21 {
            let pde = entry(pd, index);
            if *pde & PRESENT == 0 {
                continue;
            }
            *pde |= USER;
            // 4 KiB pages: the null page and the page tables stay closed. cvm's VMM sets U on
            // the other entries up front (its directory entry keeps them closed on hardware),
            // which spares 512 emulated iterations here.
            let pt = *pde & ADDRESS_MASK;
            if *pde & LARGE == 0 && *entry(pt, 1) & USER == 0 {
                for pte in 0..512 {
                    let address = index << 21 | pte << 12;
                    let page_tables = (PAGE_TABLES_ADDR..PAGE_TABLES_END).contains(&address);
                    if address != 0 && !page_tables {
                        *entry(pt, pte) |= USER;
                    }
                }
            }
        }
    }
    reload_cr3();
}

/// Reloads CR3, dropping this vCPU's cached translations. CPL0 only (an exception handler).
/// CR3: the page tables' root. Real CPL0 only (exception handlers, the privileged door).
pub fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 changes nothing; callers run at real CPL0.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    cr3
}

pub fn reload_cr3() {
    // SAFETY: rewriting CR3 with its own value changes no mapping; exception handlers run at
    // real CPL0.
    unsafe {
        asm!("mov {tmp}, cr3", "mov cr3, {tmp}", tmp = out(reg) _, options(nostack));
    }
}

/// Runs `op` of `fault::privileged_call` at real CPL0 (see entry.rs `privileged_call_ud2`).
pub fn privileged(op: u64, arg: u64) -> u64 {
    // SAFETY: the #UD handler recognises this ud2 and steps over it; op and arg are checked
    // by the operation itself.
    unsafe { crate::entry::privileged_call_ud2(op, arg) }
}

/// The program's SSE and x87 state (FXSAVE layout, 512 bytes).
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct FpuState(pub [u8; 512]);

/// The non-zero bytes of the initial state: FCW 0x037f, MXCSR 0x1f80, MXCSR_MASK 0xffff.
const INITIAL_CONTROLS: [(usize, u8); 6] = [(0, 0x7f), (1, 0x03), (24, 0x80), (25, 0x1f), (28, 0xff), (29, 0xff)];

impl FpuState {
    /// The state after `fninit` with SSE's default MXCSR (0x1f80): what a new program starts with.
    pub const fn initial() -> FpuState {
        let mut bytes = [0u8; 512];
        let mut index = 0;
        while index < INITIAL_CONTROLS.len() {
            bytes[INITIAL_CONTROLS[index].0] = INITIAL_CONTROLS[index].1;
            index += 1;
        }
        FpuState(bytes)
    }

    /// Writes [`FpuState::initial`]'s non-zero bytes into a state that is all zeros (without
    /// building the 512 bytes: this runs at boot, emulated on PVM hosts).
    pub fn set_initial_controls(&mut self) {
        for (index, byte) in INITIAL_CONTROLS {
            self.0[index] = byte;
        }
    }

    /// Saves the registers the program left (the kernel itself never touches them).
    pub fn save(&mut self) {
        // SAFETY: fxsave64 writes 512 bytes to a 16-byte aligned buffer we own; it is allowed
        // at every privilege level.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
    }

    pub fn restore(&self) {
        // SAFETY: fxrstor64 reads 512 bytes of a state saved by fxsave64 (or `initial`).
        unsafe { asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack)) };
    }
}

/// The program's FS base as it is now (it may have changed it itself with `wrfsbase`).
pub fn read_fs_base(have_fsgsbase: bool, remembered: u64) -> u64 {
    if !have_fsgsbase {
        return remembered;
    }
    let value: u64;
    // SAFETY: CR4.FSGSBASE is set (BootInfo says so); rdfsbase only reads FS.base.
    unsafe { asm!("rdfsbase {}", out(reg) value, options(nomem, nostack)) };
    value
}

/// # Safety
/// CPL0 only (boot or an exception handler), never in the syscall path.
pub unsafe fn write_msr(index: u32, value: u64) {
    // SAFETY: the caller guarantees real CPL0; the MSRs written here only steer syscall entry
    // and the FS base.
    unsafe {
        asm!("wrmsr", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack));
    }
}

pub fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: rdtsc reads the time-stamp counter; allowed at every privilege level here.
    unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) };
    (high as u64) << 32 | low as u64
}

/// A hardware random number, or None when the CPU has none to give right now.
pub fn rdrand() -> Option<u64> {
    let value: u64;
    let ok: u8;
    // SAFETY: rdrand only writes its register and CF. (A CPU without RDRAND would #UD;
    // callers check CPUID first.)
    unsafe { asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok, options(nomem, nostack)) };
    (ok != 0).then_some(value)
}

pub fn has_rdrand() -> bool {
    let ecx: u32;
    // SAFETY: cpuid leaf 1 exists on every x86-64 CPU. RBX is reserved by LLVM, so it is
    // saved around the instruction by hand.
    unsafe {
        asm!("mov {tmp}, rbx", "cpuid", "mov rbx, {tmp}", tmp = out(reg) _,
             inout("eax") 1u32 => _, inout("ecx") 0u32 => ecx, out("edx") _, options(nostack));
    }
    ecx & (1 << 30) != 0
}

/// Sets the user FS base (the program's thread pointer) from the syscall path.
pub fn set_fs_base(cpu: usize, value: u64, have_fsgsbase: bool) {
    if have_fsgsbase {
        // SAFETY: CR4.FSGSBASE is set (BootInfo says so); wrfsbase only changes FS.base.
        unsafe { asm!("wrfsbase {}", in(reg) value, options(nostack)) };
    } else {
        // SAFETY: the #UD handler recognises this ud2 and does wrmsr(FS_BASE, value) at CPL0.
        unsafe { crate::entry::set_fs_base_through_ud2(value) };
        FS_BASE_SET[cpu.min(MAX_CPUS - 1)].store(value, Ordering::Relaxed);
    }
}

/// [`set_fs_base`] when a thread is put back on `cpu`: nothing to do where the FS base this
/// vCPU last set through the `#UD` door is the thread's already (the boot's 0, or the same
/// thread resumed), which saves an exception and 13 emulated instructions on a PVM host.
/// Without FSGSBASE the program's only other way to change FS.base is loading a selector,
/// whose base here is 0; Linux, too, then keeps that base across switches.
pub fn restore_fs_base(cpu: usize, value: u64, have_fsgsbase: bool) {
    if have_fsgsbase || FS_BASE_SET[cpu.min(MAX_CPUS - 1)].load(Ordering::Relaxed) != value {
        set_fs_base(cpu, value, have_fsgsbase);
    }
}

/// The FS base each vCPU last set through the `#UD` door; every way into the kernel starts a
/// vCPU with FS.base 0.
#[link_section = ".data.hot"]
static FS_BASE_SET: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Port output; the VMM (or QEMU) handles the port. Works in every kernel context, including
/// the syscall path on PVM (entry.rs emulates the `out` in the #GP handler there).
pub fn out8(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects in this kernel's view.
    unsafe { crate::entry::port_out8(port.into(), value.into()) };
}

pub fn in8(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port input from a device the VMM or QEMU emulates; no memory effects.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
    value
}

pub fn out32(port: u16, value: u32) {
    // SAFETY: as out8. A hypercall port reads guest memory the value points to; the call is
    // opaque to the compiler, so that memory is written before it.
    unsafe { crate::entry::port_out32(port.into(), value) };
}

pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: exception handlers run at real CPL0, where reading CR2 is allowed.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack)) };
    value
}

/// Stops this CPU for good. Only from boot or an exception handler (real CPL0): `hlt` in
/// the syscall path shuts a PVM guest down.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: interrupts are off; hlt just parks the CPU.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}

/// Waits for the VMM to end the run, from the syscall path (no `hlt` allowed there).
pub fn spin_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

//! The contract between cvm's VMM (host side, `src/vmm`) and the builtin guest kernel
//! (`guest/kernel`). Both sides compile this one file, so they cannot disagree.
//!
//! # Entry state (cvm's VMM, direct 64-bit entry)
//!
//! The VMM does every piece of set-up that can be done before the guest runs, because on
//! nested PVM hosts each guest-kernel instruction is emulated (about 1 µs each):
//!
//! - guest RAM is one region at guest-physical 0; addresses below [`USER_BASE`] belong to the
//!   kernel and are mapped supervisor-only; [`USER_BASE`]..`ram_size` is mapped user
//!   read/write/execute, except page 0, which is not mapped at all (NULL pointers fault; the
//!   boot GDT there is never read once the kernel runs on its own GDT). All mappings are
//!   identity (guest-virtual == guest-physical) and are created up front, so `brk`/`mmap`
//!   never change page tables;
//! - the kernel ELF is loaded at its physical addresses (linked at [`KERNEL_BASE`]);
//! - the program ELF is loaded (ET_EXEC at its addresses, static-pie ET_DYN at
//!   [`PIE_LOAD_BIAS`]) and its initial stack (argc, argv, envp, auxv, AT_RANDOM bytes) is built;
//! - every vCPU (there are [`BootInfo::cpus`], at most [`MAX_CPUS`]) starts at the same time in
//!   64-bit long mode, CPL0, interrupts off, paging on, `CR4.FSGSBASE` set when the CPU has it,
//!   `EFER.SCE` set, `RIP` = kernel ELF entry, `RSP` = [`cpu_stack_top`] of its number,
//!   `RDI` = [`BOOT_INFO_ADDR`], `RSI` = its number (0 is the boot CPU). The kernel installs
//!   its own GDT, IDT, TSS and syscall MSRs on each.
//!
//! # Ports (all `out` instructions; 32-bit values unless noted)
//!
//! | port | name | value |
//! |---|---|---|
//! | 0x3f8..0x3ff | 16550 serial COM1 | bytes (kernel diagnostics; the console under QEMU) |
//! | 0xf4 | [`port::EXIT`] | program exit status (isa-debug-exit semantics); ends the run |
//! | 0x80 | [`port::BOOT_TIMER`] | 8-bit code, [`boot_code`]; the host timestamps it |
//! | 0x500 | [`port::CONSOLE_WRITE`] | guest-physical address of a [`ConsoleWrite`] |
//! | 0x501 | [`port::GUEST_FAULT`] | guest-physical address of a [`FaultReport`]; ends the run |
//! | 0x502 | [`port::SLEEP`] | microseconds the vCPU has nothing to do: the VMM parks its thread |
//! | 0x503 | [`port::WAKE`] | a vCPU number: ends that vCPU's park (work arrived for it) |
//! | 0x504 | [`port::TIMER`] | microseconds until this vCPU gets interrupt [`TIMER_VECTOR`] (0: none) |
//! | 0x507 | [`port::FILL_PAGE_TABLE`] | guest-physical address of a [`FillPageTable`] |
#![no_std]

/// The VMM's boot GDT (null, 64-bit code 0x08, data 0x10, TSS 0x18), valid only until the
/// kernel loads its own: page 0 is the VMM's.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Where the VMM writes the [`BootInfo`].
pub const BOOT_INFO_ADDR: u64 = 0x1000;
/// Where the VMM reserves the [`SyscallCounts`] table (2 pages).
pub const SYSCALL_COUNTS_ADDR: u64 = 0x2000;
/// Page tables built by the VMM live in [PAGE_TABLES_ADDR, PAGE_TABLES_END).
pub const PAGE_TABLES_ADDR: u64 = 0x8000;
pub const PAGE_TABLES_END: u64 = 0x10_0000;
/// The kernel image is linked and loaded here (1 MiB).
pub const KERNEL_BASE: u64 = 0x10_0000;
/// The kernel's boot stack grows down from here (the kernel may switch to its own).
pub const KERNEL_BOOT_STACK_TOP: u64 = 0x40_0000;
/// Most vCPUs a VM has.
pub const MAX_CPUS: usize = 8;
/// Each vCPU's stacks take this much below [`KERNEL_BOOT_STACK_TOP`], vCPU 0 at the top.
pub const CPU_STACKS_SIZE: u64 = 0x1_0000;
/// Lowest address of the vCPUs' stacks: the kernel image must end below it.
pub const CPU_STACKS_BOTTOM: u64 = KERNEL_BOOT_STACK_TOP - MAX_CPUS as u64 * CPU_STACKS_SIZE;
/// The interrupt vector of the per-vCPU timer ([`port::TIMER`]).
pub const TIMER_VECTOR: u8 = 0x20;

/// Where vCPU `cpu`'s boot and system-call stack starts (grows down).
pub const fn cpu_stack_top(cpu: usize) -> u64 {
    KERNEL_BOOT_STACK_TOP - cpu as u64 * CPU_STACKS_SIZE
}
/// First user address: everything from here to the end of RAM is user memory.
pub const USER_BASE: u64 = 0x40_0000;
/// Where a static-pie (ET_DYN) program is loaded.
pub const PIE_LOAD_BIAS: u64 = 0x40_0000;
/// Size of the user stack area at the top of RAM.
pub const USER_STACK_SIZE: u64 = 1 << 20;
pub const PAGE_SIZE: u64 = 4096;

/// `BootInfo::magic`: "CVMBOOT1".
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"CVMBOOT1");

/// What the guest kernel calls itself in `uname`: a different kernel from the host's.
pub const KERNEL_NAME: &str = "cvm-guest";
pub const KERNEL_RELEASE: &str = "0.1.0-cvm";
pub const KERNEL_VERSION: &str = "#1 cvm builtin guest kernel";

pub mod port {
    pub const SERIAL_COM1: u16 = 0x3f8;
    pub const EXIT: u16 = 0xf4;
    pub const BOOT_TIMER: u16 = 0x80;
    pub const CONSOLE_WRITE: u16 = 0x500;
    pub const GUEST_FAULT: u16 = 0x501;
    /// The guest has nothing to run for this many microseconds (32-bit): the VMM puts the vCPU
    /// thread to sleep instead of letting the guest spin. It may return earlier (the run's
    /// deadline, Ctrl-C, a [`WAKE`] from another vCPU); the guest checks its clock and its run
    /// queue and asks again.
    pub const SLEEP: u16 = 0x502;
    /// Ends the park of the vCPU whose number is written (it has work now).
    pub const WAKE: u16 = 0x503;
    /// In this many microseconds, interrupt this vCPU with [`super::TIMER_VECTOR`] (a one-shot
    /// timer, like a TSC-deadline timer); 0 cancels. The interrupt waits while the guest runs
    /// with interrupts off (in its kernel) and arrives when it returns to the program.
    pub const TIMER: u16 = 0x504;
    /// The guest kernel took access to some pages away (munmap, mprotect): every other vCPU
    /// must drop its cached translations before it runs guest code again. The VMM makes them
    /// (the guest has no inter-processor interrupts) and returns once they have. The value
    /// written is ignored.
    pub const TLB_SHOOTDOWN: u16 = 0x505;
    /// Interrupt the vCPU whose number is written, now (its timer interrupt, delivered once it
    /// runs the program): how the guest makes another vCPU look at a signal for the thread it
    /// runs, without inter-processor interrupts.
    pub const INTERRUPT: u16 = 0x506;
    /// Fill a new 4 KiB page table that is to replace a 2 MiB page (the guest kernel splits a
    /// 2 MiB page when part of it changes protection). The value written is the guest-physical
    /// address of a [`super::FillPageTable`]; the VMM writes the table's 512 entries and
    /// returns. 512 stores cost the guest about 2.5 ms on hosts that emulate its kernel code
    /// (PVM); the table is not in use yet, so a write from outside the guest is safe even
    /// under shadow paging.
    pub const FILL_PAGE_TABLE: u16 = 0x507;
}

/// Unmapped pages between the mmap area and the user stack: a stack overflow faults there
/// instead of silently writing into mmap'd memory.
pub const STACK_GUARD_SIZE: u64 = 64 << 10;

/// Codes written to [`port::BOOT_TIMER`] (as Cloud Hypervisor's debug port does).
pub mod boot_code {
    /// The kernel's first instruction ran.
    pub const KERNEL_ENTERED: u8 = 0x40;
    /// The kernel is about to enter the program at CPL3.
    pub const PROGRAM_ENTERED: u8 = 0x41;
}

/// `BootInfo::flags` bits.
pub mod boot_flags {
    /// `wrfsbase` is usable (CPU has FSGSBASE and the VMM set CR4.FSGSBASE).
    pub const FSGSBASE: u32 = 1 << 0;
    /// The guest kernel keeps its memory closed to the program. Where the `syscall` path runs
    /// with user page permissions (PVM hosts), every system call then enters the kernel
    /// through the page fault its first instruction fetch takes, at real CPL0.
    pub const KERNEL_CLOSED: u32 = 1 << 1;
    /// The host may run the `syscall` path with user page permissions (PVM, or a host the VMM
    /// could not identify): the kernel may open its memory at the first system call's fault.
    /// Not set on hardware VT-x/AMD-V, where such a fault can only be a program jumping into
    /// the kernel, and must stay a fault.
    pub const SYSCALL_MAY_FAULT: u32 = 1 << 2;
}

/// Everything the VMM tells the kernel, at [`BOOT_INFO_ADDR`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    pub magic: u64,
    pub flags: u32,
    /// How many vCPUs the VM has (1..=[`MAX_CPUS`]).
    pub cpus: u32,
    pub ram_size: u64,
    /// The program's entry point (load bias applied).
    pub user_entry: u64,
    /// Initial user `RSP`, pointing at argc.
    pub user_stack_pointer: u64,
    /// First byte after the program's highest segment, page aligned: the initial `brk`.
    pub brk_start: u64,
    /// `brk` may grow up to here; anonymous `mmap` may use [brk_limit, mmap_top).
    pub brk_limit: u64,
    pub mmap_top: u64,
    /// Lowest address of the user stack area ([`USER_STACK_SIZE`] below the top of RAM).
    pub stack_bottom: u64,
    /// Guest TSC frequency, for `clock_gettime`.
    pub tsc_khz: u64,
    /// Host `CLOCK_REALTIME` in ns just before the vCPU first ran.
    pub realtime_ns_at_boot: u64,
    /// Guest-physical address of the [`SyscallCounts`] table.
    pub syscall_counts_addr: u64,
    /// Free pages of the page-table area, [pool, pool_end): where the guest kernel takes a
    /// 4 KiB page table when it splits a 2 MiB page of the program's memory (mprotect).
    pub page_table_pool: u64,
    pub page_table_pool_end: u64,
    /// The page directories of guest RAM: one page per GiB from here (entry `n` maps the 2 MiB
    /// page at `n * 2 MiB`).
    pub page_directories: u64,
    /// The 2 MiB pages the VMM already split into 4 KiB pages: (the 2 MiB page's address, its
    /// table's), unused slots zero.
    pub split_by_vmm: [[u64; 2]; MAX_SPLIT_BY_VMM],
    /// NUL-terminated host name the guest reports in `uname`.
    pub hostname: [u8; 65],
    pub _pad: [u8; 7],
}

impl BootInfo {
    /// All fields zero, `magic` set.
    pub const fn empty() -> Self {
        BootInfo {
            magic: BOOT_INFO_MAGIC,
            flags: 0,
            cpus: 1,
            ram_size: 0,
            user_entry: 0,
            user_stack_pointer: 0,
            brk_start: 0,
            brk_limit: 0,
            mmap_top: 0,
            stack_bottom: 0,
            tsc_khz: 0,
            realtime_ns_at_boot: 0,
            syscall_counts_addr: 0,
            page_table_pool: 0,
            page_table_pool_end: 0,
            page_directories: 0,
            split_by_vmm: [[0; 2]; MAX_SPLIT_BY_VMM],
            hostname: [0; 65],
            _pad: [0; 7],
        }
    }
}

/// Number of system-call numbers counted individually; higher numbers land in the last slot.
pub const SYSCALL_SLOTS: usize = 512;

/// Per-number counters kept by the guest kernel and read by the VMM after the run.
#[repr(C)]
pub struct SyscallCounts {
    /// Calls served, by number.
    pub calls: [u32; SYSCALL_SLOTS],
    /// Calls answered with `-ENOSYS`, by number.
    pub unsupported: [u32; SYSCALL_SLOTS],
}

/// The most bytes one [`ConsoleWrite`] carries; the guest kernel splits a larger write.
pub const CONSOLE_WRITE_MAX: u64 = 16 << 20;

/// Argument of [`port::CONSOLE_WRITE`]: the host copies `len` bytes at guest address `addr`
/// to the run's stdout (fd 1) or stderr (fd 2); `len` is at most [`CONSOLE_WRITE_MAX`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleWrite {
    pub fd: u32,
    pub len: u32,
    pub addr: u64,
}

/// What [`port::FILL_PAGE_TABLE`] asks for: the 4 KiB page table at `table` (a free page of
/// the BootInfo's page-table pool) maps the 2 MiB page at `base`, page `i` as
/// `base + i * PAGE_SIZE | bits`, except pages `changed_from..changed_to`, which get
/// `changed_bits` (the part of the 2 MiB page whose protection is being changed). Both bit
/// sets are a page-table entry's low bits: present, writable, user, accessed, dirty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FillPageTable {
    pub table: u64,
    pub base: u64,
    pub bits: u64,
    pub changed_from: u64,
    pub changed_to: u64,
    pub changed_bits: u64,
}

/// How many 2 MiB pages the VMM may split into 4 KiB pages before boot ([`BootInfo::split_by_vmm`]).
pub const MAX_SPLIT_BY_VMM: usize = 4;

/// `FaultReport::kind`.
pub mod fault_kind {
    /// The program faulted at CPL3 (the run ends like a crash: exit status 128 + signal).
    pub const PROGRAM: u32 = 1;
    /// The guest kernel itself faulted.
    pub const KERNEL: u32 = 2;
    /// A signal's default action ended the program (kill, tgkill, abort): exit status
    /// 128 + signal, as a process killed by that signal.
    pub const SIGNALED: u32 = 3;
    /// The program needed memory the VM does not have (guest RAM or page tables exhausted):
    /// the run ends as an out-of-memory kill.
    pub const OUT_OF_MEMORY: u32 = 4;
}

/// Argument of [`port::GUEST_FAULT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultReport {
    pub kind: u32,
    /// x86 exception vector (14 = page fault, 13 = general protection, 6 = invalid opcode ...).
    pub vector: u32,
    pub error_code: u64,
    pub rip: u64,
    pub rsp: u64,
    /// Faulting address for a page fault.
    pub cr2: u64,
    /// The Linux signal number the fault maps to (SIGSEGV = 11, SIGILL = 4, SIGFPE = 8 ...).
    pub signal: u32,
    pub _reserved: u32,
}

/// The ELF note (name [`DIRECT_ENTRY_NOTE_NAME`], kind [`DIRECT_ENTRY_NOTE`]) by which the
/// builtin kernel tells a VMM how to start its boot vCPU directly at CPL3, on `trampoline`,
/// a `syscall` of [`BOOT_SYSCALL`] that runs the whole boot in the system-call path: the CPU's
/// tables and system-call MSRs, which the kernel would otherwise install at CPL0. Its
/// descriptor is these 13 little-endian u64s, in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectEntry {
    pub gdt: u64,
    pub gdt_limit: u64,
    pub idt: u64,
    pub idt_limit: u64,
    /// vCPU 0's TSS, its limit and selector (a 16-byte descriptor at `gdt + selector`).
    pub tss: u64,
    pub tss_limit: u64,
    pub tss_selector: u64,
    pub star: u64,
    /// vCPU 0's `syscall` trampoline.
    pub lstar: u64,
    pub sfmask: u64,
    pub user_code_selector: u64,
    pub user_data_selector: u64,
    pub trampoline: u64,
}

/// A 64-bit TSS descriptor (two GDT slots) for the TSS at `base` with `limit`: type 9
/// (available), as the kernel writes it before `ltr`, or 11 (busy), as a VMM writes it when
/// it loads the task register itself ([`DirectEntry`]).
pub const fn tss_descriptor(base: u64, limit: u64, busy: bool) -> [u64; 2] {
    let kind = if busy { 0xb } else { 0x9 };
    let low = (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | (0x80 | kind) << 40 // present
        | ((limit >> 16) & 0xf) << 48
        | ((base >> 24) & 0xff) << 56;
    [low, base >> 32]
}

pub const DIRECT_ENTRY_NOTE_NAME: &[u8] = b"CVM";
pub const DIRECT_ENTRY_NOTE: u32 = 1;
pub const DIRECT_ENTRY_WORDS: usize = 13;
/// The system call the trampoline of [`DirectEntry`] makes: not a Linux number, honoured once,
/// and only when the VMM started the kernel that way.
pub const BOOT_SYSCALL: u64 = 0xB007_CA11;

impl DirectEntry {
    /// The note's descriptor, or None when it is not 13 u64s.
    pub fn parse(desc: &[u8]) -> Option<DirectEntry> {
        if desc.len() != DIRECT_ENTRY_WORDS * 8 {
            return None;
        }
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&desc[i * 8..i * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        Some(DirectEntry {
            gdt: word(0),
            gdt_limit: word(1),
            idt: word(2),
            idt_limit: word(3),
            tss: word(4),
            tss_limit: word(5),
            tss_selector: word(6),
            star: word(7),
            lstar: word(8),
            sfmask: word(9),
            user_code_selector: word(10),
            user_data_selector: word(11),
            trampoline: word(12),
        })
    }
}

//! PVH entry: lets QEMU boot this same kernel with `-kernel cvm-guest-kernel -initrd PROGRAM
//! -append "ARGS"`, without cvm's VMM.
//!
//! QEMU finds the `Xen` ELF note (XEN_ELFNOTE_PHYS32_ENTRY) and starts us in 32-bit protected
//! mode, paging off, EBX = &hvm_start_info. The stub below does what cvm's VMM otherwise does
//! before the guest runs: page tables (1 GiB identity, 2 MiB pages, the kernel's 4 MiB
//! supervisor-only), long mode; then [`pvh_main`] loads the program ELF from the first module,
//! builds its stack and a BootInfo, and joins the normal boot path. Console: COM1; exit:
//! isa-debug-exit at port 0xf4 (QEMU exits with status (value << 1) | 1; the value is the
//! program's status + 1, see `exit_port_value`).

use core::arch::global_asm;

use crate::console::Backend;
use crate::cpu;
use crate::global::Global;
use cvm_guest_abi::{BootInfo, SyscallCounts, PAGE_SIZE, PIE_LOAD_BIAS, SYSCALL_SLOTS, USER_BASE, USER_STACK_SIZE};

// The ELF note QEMU looks for (in a PT_NOTE segment; see linker.ld).
global_asm!(
    ".section .note.Xen, \"a\", @note",
    ".balign 4",
    ".long 4",  // name size ("Xen\0")
    ".long 4",  // descriptor size
    ".long 18", // XEN_ELFNOTE_PHYS32_ENTRY
    ".asciz \"Xen\"",
    ".balign 4",
    ".long pvh_start",
);

global_asm!(
    ".section .bss.pvh_tables, \"aw\", @nobits",
    ".balign 4096",
    "pvh_pml4: .skip 4096",
    "pvh_pdpt: .skip 4096",
    "pvh_pd: .skip 4096",
    ".section .text.pvh, \"ax\"",
    ".code32",
    ".global pvh_start",
    "pvh_start:",
    "    mov esi, ebx",
    "    mov eax, offset pvh_pdpt",
    "    or eax, 7",
    "    mov dword ptr [pvh_pml4], eax",
    "    mov eax, offset pvh_pd",
    "    or eax, 7",
    "    mov dword ptr [pvh_pdpt], eax",
    "    xor ecx, ecx",
    "2:  mov eax, ecx",
    "    shl eax, 21",
    "    or eax, 0x87", // present, writable, user, 2 MiB
    "    cmp ecx, 2",
    "    jae 3f",
    "    and eax, 0xfffffffb", // the kernel's 4 MiB: supervisor only
    "3:  mov dword ptr [pvh_pd + ecx * 8], eax",
    "    inc ecx",
    "    cmp ecx, 512",
    "    jb 2b",
    "    mov eax, offset pvh_pml4",
    "    mov cr3, eax",
    "    mov eax, cr4",
    "    or eax, 0x620", // PAE, OSFXSR, OSXMMEXCPT (the program uses SSE)
    "    mov cr4, eax",
    "    mov ecx, 0xC0000080", // EFER
    "    rdmsr",
    "    or eax, 0x101", // LME, SCE
    "    wrmsr",
    "    mov eax, cr0",
    "    and eax, 0xfffffff3", // no EM, no TS
    "    or eax, 0x80010023",  // PG, WP, NE, MP, PE
    "    mov cr0, eax",
    "    lgdt [pvh_gdt_pointer]",
    "    .byte 0xea", // ljmp 0x08:pvh_long
    "    .long pvh_long",
    "    .word 0x08",
    ".code64",
    "pvh_long:",
    "    mov eax, 0x10",
    "    mov ds, eax",
    "    mov es, eax",
    "    mov ss, eax",
    "    mov rsp, {stack_top}",
    "    mov edi, esi",
    "    jmp {pvh_main}",
    ".balign 8",
    "pvh_gdt:",
    "    .quad 0",
    "    .quad 0x00af9b000000ffff",
    "    .quad 0x00cf93000000ffff",
    "pvh_gdt_pointer:",
    "    .word 23",
    "    .long pvh_gdt",
    stack_top = const crate::percpu::boot_stack_top(0),
    pvh_main = sym pvh_main,
);

/// The two 8259 PICs' mask registers.
const PIC1_DATA: u16 = 0x21;
const PIC2_DATA: u16 = 0xa1;

/// What the PVH boot builds in place of the VMM's BootInfo and counters.
static BOOT: Global<BootInfo> = Global::new(BootInfo::empty());
static COUNTS: Global<SyscallCounts> =
    Global::new(SyscallCounts { calls: [0; SYSCALL_SLOTS], unsupported: [0; SYSCALL_SLOTS] });

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The stub maps the first GiB; the program's memory ends there at most.
const MAPPED_LIMIT: u64 = 1 << 30;
const E820_RAM: u32 = 1;

/// Reads a plain value at a physical address (identity-mapped, inside the first GiB).
fn peek<T: Copy>(address: u64) -> T {
    // SAFETY: only called on addresses QEMU handed us in hvm_start_info, all in mapped RAM.
    unsafe { (address as *const T).read_unaligned() }
}

fn poke<T: Copy>(address: u64, value: T) {
    // SAFETY: only called on the program's memory, which this boot path owns.
    unsafe { (address as *mut T).write_unaligned(value) }
}

fn copy(destination: u64, source: u64, len: u64) {
    // SAFETY: both ranges lie in RAM this boot path owns and do not overlap (the module sits
    // above where the program goes).
    unsafe { core::ptr::copy(source as *const u8, destination as *mut u8, len as usize) }
}

fn fail(message: &[u8]) -> ! {
    crate::console::serial_write(b"cvm-guest (pvh): ");
    crate::console::serial_write(message);
    crate::console::serial_write(b"\n");
    // 0: QEMU exits 1, as when it fails itself (the guest's own statuses are 3 and up).
    cpu::out32(cvm_guest_abi::port::EXIT, 0);
    cpu::halt_forever()
}

extern "C" fn pvh_main(start_info: u64) -> ! {
    if peek::<u32>(start_info) != START_INFO_MAGIC {
        fail(b"no hvm_start_info");
    }
    let modules: u32 = peek(start_info + 12);
    let module_list: u64 = peek(start_info + 16);
    let mut cmdline: u64 = peek(start_info + 24);
    if modules == 0 {
        fail(b"no program: pass it with -initrd");
    }
    let (program, program_size): (u64, u64) = (peek(module_list), peek(module_list + 8));
    let ram_end = ram_end(start_info).min(MAPPED_LIMIT);

    // The firmware left the legacy PIC routing the PIT's IRQ 0 to vector 8; the program runs
    // with interrupts on (for this kernel's own timer), so silence the PIC altogether.
    crate::cpu::out8(PIC1_DATA, 0xff);
    crate::cpu::out8(PIC2_DATA, 0xff);

    let boot = BOOT.as_ptr();
    // SAFETY: BOOT is only touched here, before the normal boot path reads it.
    let boot = unsafe { &mut *boot };
    // Leading `cvm.` words of the command line are for this kernel, the rest is the program's.
    // On a host without VT-x or AMD-V (PVM) the program's `syscall` enters the kernel's code
    // at ring 3; cvm's VMM says so in BootInfo, under QEMU the one who starts it says so with
    // `cvm.syscall_may_fault` (`cvm run --runtime qemu` does). `cvm.argv0=NAME`: the program's
    // argv[0] (multi-call programs such as busybox choose what to be by it).
    let mut argv0: (u64, u64) = (0, 0);
    let mut tsc_khz = 0;
    while cmdline != 0 && starts_with(cmdline, b"cvm.") {
        let len = word_len(cmdline);
        if starts_with(cmdline, SYSCALL_MAY_FAULT_OPTION) && len == SYSCALL_MAY_FAULT_OPTION.len() as u64 {
            boot.flags |= cvm_guest_abi::boot_flags::SYSCALL_MAY_FAULT;
        } else if starts_with(cmdline, ARGV0_OPTION) {
            let name = ARGV0_OPTION.len() as u64;
            argv0 = (cmdline + name, len - name);
        } else if starts_with(cmdline, TSC_KHZ_OPTION) {
            let name = TSC_KHZ_OPTION.len() as u64;
            tsc_khz = parse_decimal(cmdline + name, len - name);
        }
        cmdline += len;
        while peek::<u8>(cmdline) == b' ' {
            cmdline += 1;
        }
    }
    ARGV0.set(argv0);
    load_program(program, program_size, ram_end, boot);
    boot.ram_size = ram_end;
    boot.stack_bottom = ram_end - USER_STACK_SIZE;
    boot.mmap_top = boot.stack_bottom;
    // A quarter of the free memory for the break, the rest for mmap, as cvm's VMM does.
    boot.brk_limit = boot.brk_start + (((boot.stack_bottom - boot.brk_start) / 4) & !(PAGE_SIZE - 1));
    boot.user_stack_pointer = build_stack(ram_end, cmdline, boot);
    // The PIT calibration needs port 0x61, which QEMU's microvm may not have (it then ends at
    // once and the clock runs hundreds of times fast): cvm passes the host's TSC rate.
    boot.tsc_khz = if tsc_khz != 0 { tsc_khz } else { calibrate_tsc_khz() };
    boot.realtime_ns_at_boot = rtc_seconds() * 1_000_000_000;
    boot.syscall_counts_addr = COUNTS.as_ptr() as u64;
    boot.hostname[..8].copy_from_slice(b"cvm-qemu");
    crate::start(boot, Backend::Serial)
}

/// Command-line options of this kernel (leading words): the program's system calls may fault
/// on entry; the program's argv[0]; the TSC's rate in kHz.
const SYSCALL_MAY_FAULT_OPTION: &[u8] = b"cvm.syscall_may_fault";
const ARGV0_OPTION: &[u8] = b"cvm.argv0=";
const TSC_KHZ_OPTION: &[u8] = b"cvm.tsc_khz=";

/// The decimal number in the `len` bytes at `address`; 0 when they are not one.
fn parse_decimal(address: u64, len: u64) -> u64 {
    let mut value: u64 = 0;
    for i in 0..len {
        let digit = peek::<u8>(address + i);
        if !digit.is_ascii_digit() || len > 12 {
            return 0;
        }
        value = value * 10 + u64::from(digit - b'0');
    }
    value
}

/// Where `cvm.argv0=` put the program's name in the command line, and its length.
static ARGV0: Global<(u64, u64)> = Global::new((0, 0));

fn starts_with(address: u64, prefix: &[u8]) -> bool {
    prefix.iter().enumerate().all(|(i, &byte)| peek::<u8>(address + i as u64) == byte)
}

/// Length of the word at `address` (up to a space or the end).
fn word_len(address: u64) -> u64 {
    let mut len = 0;
    while !matches!(peek::<u8>(address + len), b' ' | 0) {
        len += 1;
    }
    len
}

/// End of the RAM region that holds the kernel (e820 from hvm_start_info, version >= 1).
fn ram_end(start_info: u64) -> u64 {
    let version: u32 = peek(start_info + 4);
    let (map, entries): (u64, u32) = (peek(start_info + 40), peek(start_info + 48));
    if version < 1 || map == 0 {
        return 128 << 20; // QEMU's default RAM
    }
    (0..u64::from(entries))
        .map(|i| map + i * 24)
        .filter(|&entry| peek::<u32>(entry + 16) == E820_RAM)
        .map(|entry| (peek::<u64>(entry), peek::<u64>(entry + 8)))
        .find(|&(base, size)| base <= USER_BASE && USER_BASE < base + size)
        .map_or_else(|| fail(b"no RAM at USER_BASE"), |(base, size)| (base + size) & !(PAGE_SIZE - 1))
}

const PT_LOAD: u32 = 1;

/// Copies the program's PT_LOAD segments to their addresses (static-pie at PIE_LOAD_BIAS)
/// and zeroes their bss; fills entry, brk_start and the aux values in `boot`.
fn load_program(elf: u64, size: u64, ram_end: u64, boot: &mut BootInfo) {
    if size < 64 || peek::<[u8; 4]>(elf) != *b"\x7fELF" || peek::<u16>(elf + 18) != 62 {
        fail(b"the module is not an x86-64 ELF program");
    }
    let bias = if peek::<u16>(elf + 16) == 3 { PIE_LOAD_BIAS } else { 0 };
    let (phoff, phentsize, phnum): (u64, u16, u16) = (peek(elf + 32), peek(elf + 54), peek(elf + 56));
    let mut high = 0;
    let mut phdr_address = 0;
    for i in 0..u64::from(phnum) {
        let header = elf + phoff + i * u64::from(phentsize);
        if peek::<u32>(header) != PT_LOAD {
            continue;
        }
        let (offset, vaddr, filesz, memsz): (u64, u64, u64, u64) =
            (peek(header + 8), peek(header + 16), peek(header + 32), peek(header + 40));
        let address = vaddr + bias;
        if address < USER_BASE || address + memsz > ram_end || offset + filesz > size {
            fail(b"a program segment does not fit");
        }
        copy(address, elf + offset, filesz);
        crate::user::zero(address + filesz, memsz - filesz);
        if offset <= phoff && phoff < offset + filesz {
            phdr_address = address + (phoff - offset);
        }
        high = high.max(address + memsz);
    }
    boot.user_entry = peek::<u64>(elf + 24) + bias;
    boot.brk_start = (high + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    AUX.set([phdr_address, u64::from(phentsize), u64::from(phnum), boot.user_entry]);
}

/// AT_PHDR, AT_PHENT, AT_PHNUM, AT_ENTRY of the loaded program.
static AUX: Global<[u64; 4]> = Global::new([0; 4]);

const MAX_ARGS: usize = 32;

/// The initial stack as Linux builds it: argc, argv, envp (empty), auxv; strings on top.
/// argv[0] is `cvm.argv0=`'s or "program", then the program's words of the kernel command line
/// (-append).
fn build_stack(top: u64, cmdline: u64, boot: &BootInfo) -> u64 {
    let mut cursor = top - 16;
    let mut push_string = |bytes: &[u8]| {
        cursor -= bytes.len() as u64 + 1;
        copy(cursor, bytes.as_ptr() as u64, bytes.len() as u64);
        poke(cursor + bytes.len() as u64, 0u8);
        cursor
    };
    let mut argv = [0u64; MAX_ARGS];
    let mut argc = 0;
    argv[argc] = match ARGV0.get() {
        (0, _) | (_, 0) => push_string(b"program"),
        // SAFETY: [start, start + len) is a word of the command line, read byte by byte above.
        (start, len) => push_string(unsafe { core::slice::from_raw_parts(start as *const u8, len as usize) }),
    };
    argc += 1;
    // The command line lives in low memory, outside the stack: read it in place.
    let mut word_start = None;
    let mut i = 0;
    while cmdline != 0 && argc < MAX_ARGS {
        let byte: u8 = peek(cmdline + i);
        let is_space = byte == b' ' || byte == 0;
        match (word_start, is_space) {
            (None, false) => word_start = Some(i),
            (Some(start), true) => {
                // SAFETY: [start, i) of the command line was just read byte by byte.
                let word = unsafe { core::slice::from_raw_parts((cmdline + start) as *const u8, (i - start) as usize) };
                argv[argc] = push_string(word);
                argc += 1;
                word_start = None;
            }
            _ => {}
        }
        if byte == 0 {
            break;
        }
        i += 1;
    }
    cursor &= !15;
    cursor -= 16;
    let random = cursor;
    poke(random, [cpu::rdtsc().wrapping_mul(0x9e37_79b9_7f4a_7c15), cpu::rdtsc().rotate_left(29) ^ boot.user_entry]);

    let [phdr, phent, phnum, entry] = AUX.get();
    let aux: [(u64, u64); 12] = [
        (3, phdr),      // AT_PHDR
        (4, phent),     // AT_PHENT
        (5, phnum),     // AT_PHNUM
        (6, PAGE_SIZE), // AT_PAGESZ
        (9, entry),     // AT_ENTRY
        (11, 0),        // AT_UID
        (12, 0),        // AT_EUID
        (13, 0),        // AT_GID
        (14, 0),        // AT_EGID
        (23, 0),        // AT_SECURE
        (25, random),   // AT_RANDOM
        (0, 0),         // AT_NULL
    ];
    let words = 1 + (argc as u64 + 1) + 1 + 2 * aux.len() as u64;
    let pointer = (cursor - words * 8) & !15;
    let mut slot = pointer;
    let mut push = |value: u64| {
        poke(slot, value);
        slot += 8;
    };
    push(argc as u64);
    argv[..argc].iter().for_each(|&arg| push(arg));
    push(0); // end of argv
    push(0); // empty environment
    for (key, value) in aux {
        push(key);
        push(value);
    }
    pointer
}

/// TSC ticks in 10 ms of PIT channel 2 (the classic calibration; QEMU has no better clock
/// source for us here).
fn calibrate_tsc_khz() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const COUNT: u64 = PIT_HZ / 100;
    let gate = cpu::in8(0x61);
    cpu::out8(0x61, (gate & !0x02) | 0x01); // speaker off, gate on
    cpu::out8(0x43, 0xb0); // channel 2, lobyte/hibyte, mode 0
    cpu::out8(0x42, COUNT as u8);
    cpu::out8(0x42, (COUNT >> 8) as u8);
    let start = cpu::rdtsc();
    while cpu::in8(0x61) & 0x20 == 0 {}
    let ticks = cpu::rdtsc() - start;
    ticks / 10
}

/// Wall-clock time from the CMOS real-time clock, in seconds since 1970 (UTC, as QEMU keeps it).
fn rtc_seconds() -> u64 {
    let read = |register: u8| {
        cpu::out8(0x70, register);
        cpu::in8(0x71)
    };
    while read(0x0a) & 0x80 != 0 {} // an update is in progress
    let binary = read(0x0b) & 0x04 != 0;
    let value = |register: u8| {
        let raw = read(register);
        u64::from(if binary { raw } else { (raw >> 4) * 10 + (raw & 0x0f) })
    };
    let (second, minute, hour) = (value(0x00), value(0x02), value(0x04));
    let (day, month, year) = (value(0x07), value(0x08), 2000 + value(0x09));
    days_since_epoch(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
}

/// Days from 1970-01-01 to a date of the Gregorian calendar (Howard Hinnant's algorithm).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

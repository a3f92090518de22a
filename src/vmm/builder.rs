//! The one place that assembles a VM, in order: KVM, the VM, guest RAM, the kernel and the
//! program loaded, page tables, the initial user stack, `BootInfo`, the vCPU in long mode.
//!
//! [`VmPlan::new`] does everything that can fail because of the program (ELF checks, does it
//! fit) before [`build`] opens `/dev/kvm`, so a bad program is refused with nothing to undo.
//! Every resource of a [`MicroVm`] is an owned value: dropping it closes the vCPU, VM and KVM
//! descriptors and unmaps guest RAM, on every path.

use std::time::Instant;

use anyhow::{Context, Result};
use cvm_guest_abi::{boot_flags, cpu_stack_top, BootInfo, DirectEntry, DIRECT_ENTRY_NOTE, DIRECT_ENTRY_NOTE_NAME};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::cpu::GuestCpu;
use super::layout::{BOOT_INFO_ADDR, PAGE_SIZE, SYSCALL_COUNTS_ADDR, USER_STACK_SIZE};
use super::linux_boot::{self, LinuxImage};
use super::loader::{self, ProgramLayout};
use super::memory::GuestRam;
use super::paging::{self, PageAccess, PageTables};
use super::regs;
use super::user_stack;
use crate::elf::ElfFile;
use crate::explain::Narrator;

/// What to run and how big the VM is.
pub struct VmRequest<'a> {
    pub kernel: &'a [u8],
    pub program: &'a [u8],
    /// The same bytes as a file cvm keeps (the embedded workload's cache copy): when given, the
    /// program's whole pages are mapped from it, shared with every other VM, not copied.
    pub program_file: Option<std::fs::File>,
    pub ram_bytes: u64,
    /// vCPUs (1..=MAX_CPUS).
    pub cpus: usize,
    /// Keep the guest kernel closed to the program even where that costs a fault per system
    /// call (BootInfo KERNEL_CLOSED).
    pub protect_kernel: bool,
    /// argv, including argv[0].
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// The host name the guest reports.
    pub hostname: String,
}

/// A request whose kernel and program were parsed and placed on paper.
pub struct VmPlan<'a> {
    pub request: &'a VmRequest<'a>,
    pub kernel: ElfFile<'a>,
    pub program: ElfFile<'a>,
    pub layout: ProgramLayout,
}

impl<'a> VmPlan<'a> {
    pub fn new(request: &'a VmRequest<'a>) -> Result<VmPlan<'a>> {
        let kernel = ElfFile::parse(request.kernel).context("the guest kernel image")?;
        let program = ElfFile::parse(request.program)?;
        let layout = ProgramLayout::plan(&program, request.ram_bytes)?;
        Ok(VmPlan { request, kernel, program, layout })
    }
}

/// A built VM, ready to run. Field order is drop order: vCPUs, VM, KVM, then guest RAM.
pub struct MicroVm {
    /// vCPU i at index i.
    pub vcpus: Vec<VcpuFd>,
    _vm: VmFd,
    _kvm: Kvm,
    pub ram: GuestRam,
    pub fsgsbase: bool,
    pub tsc_khz: u64,
    /// The free pages of the page-table area the guest kernel takes its new tables from,
    /// [start, end) (none for a Linux guest).
    pub page_table_pool: (u64, u64),
    /// vCPU 0 starts at CPL3 on the kernel's boot trampoline (`regs::setup_direct_entry`).
    pub direct_entry: bool,
}

/// Opens /dev/kvm, with a one-line fix when it cannot.
pub fn open_kvm() -> Result<Kvm> {
    let kvm = Kvm::new().map_err(|error| kvm_open_error(error.errno()))?;
    let version = kvm.get_api_version();
    anyhow::ensure!(version == 12, "/dev/kvm speaks KVM API version {version}; cvm needs version 12");
    Ok(kvm)
}

/// Why /dev/kvm could not be opened, and what to do about it, in one line.
fn kvm_open_error(errno: i32) -> anyhow::Error {
    match errno {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => anyhow::anyhow!(
            "/dev/kvm does not exist: this machine offers no KVM; enable virtualization in the firmware \
             and load the kvm_intel or kvm_amd module, or use --runtime process or container"
        ),
        libc::EACCES | libc::EPERM => anyhow::anyhow!(
            "cannot open /dev/kvm: permission denied; add yourself to the kvm group \
             (sudo usermod -aG kvm $USER, then log in again) or run as root"
        ),
        other => anyhow::anyhow!("cannot open /dev/kvm: {}", std::io::Error::from_raw_os_error(other)),
    }
}

/// An empty VM with its guest RAM: the first two steps of every build.
fn create_vm_with_ram(ram_bytes: u64, narrator: &Narrator) -> Result<(Kvm, VmFd, GuestRam)> {
    let started = Instant::now();
    let kvm = open_kvm()?;
    let vm = kvm.create_vm().context("creating the VM (KVM_CREATE_VM)")?;
    narrator.step(|| {
        format!(
            "vm: opened /dev/kvm and asked KVM for a new, empty virtual machine (KVM_CREATE_VM). \
         It has no memory, no CPU and no devices yet: the VMM (cvm) adds each one{}.",
            took(started)
        )
    });

    let started = Instant::now();
    let ram = GuestRam::new(ram_bytes)?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram.size(),
        userspace_addr: ram.host_address()?,
    };
    // SAFETY: the region is the live mapping owned by `ram`, which the returned MicroVm keeps
    // until after the VM descriptor is closed (field order), so the guest never sees freed memory.
    unsafe { vm.set_user_memory_region(region) }.context("giving the guest its RAM (KVM_SET_USER_MEMORY_REGION)")?;
    narrator.step(|| {
        format!(
            "vm: mapped {} MiB of anonymous host memory and gave it to the guest as its RAM at guest-physical \
             address 0. The host allocates a page only when someone first touches it, so an idle VM costs \
             almost nothing: the guest's 'physical' memory is ordinary virtual memory of the cvm process{}.",
            ram.size() >> 20,
            took(started)
        )
    });
    Ok((kvm, vm, ram))
}

/// Builds a VM that boots the builtin guest kernel, which runs the program.
pub fn build(plan: &VmPlan, narrator: &Narrator) -> Result<MicroVm> {
    let request = plan.request;
    let (kvm, vm, ram) = create_vm_with_ram(request.ram_bytes, narrator)?;

    let started = Instant::now();
    let kernel_entry = loader::load_kernel(&ram, &plan.kernel)?;
    let shared = match &request.program_file {
        Some(file) => loader::map_program(&ram, &plan.program, &plan.layout, file)?,
        None => {
            loader::load_program(&ram, &plan.program, &plan.layout)?;
            0
        }
    };
    // On hosts where the guest's syscall path runs in hardware ring 3 the kernel is opened
    // anyway (at its first system call, through a fault): open it here instead, unless asked
    // to keep it closed.
    let kernel_pages = if request.protect_kernel || hardware_virtualization() {
        paging::KernelPages::Closed
    } else {
        paging::KernelPages::Open
    };
    let cr3 = paging::install(&ram, kernel_pages)?;
    let mut page_tables = PageTables::installed(ram.size());
    page_tables
        .protect(&ram, plan.layout.mmap_top, plan.layout.stack_bottom, PageAccess::None)
        .map_err(|error| anyhow::anyhow!("unmapping the stack guard: {error:?}"))?;
    if let Some(last) = plan.program.segments.iter().max_by_key(|segment| segment.vaddr) {
        let image_end = plan.program.virtual_extent().1 + plan.layout.bias;
        let (start, end) = paging::data_segment_chunks(last.vaddr + plan.layout.bias, image_end);
        page_tables.split_ahead(&ram, start, end.min(ram.size()))?;
    }
    narrator.step(|| {
        format!(
            "vm: copied the guest kernel ({} KiB, entry {:#x}) and loaded the program ({} KiB, {}) at {:#x} in guest \
             RAM{}, then wrote page tables that map all guest RAM 1:1: the first 4 MiB for the kernel only (page 0 \
             left unmapped, so NULL pointers fault), the rest for the program with 2 MiB pages (4 KiB ones where its data \
             segment is, which its start-up makes partly read-only). A real kernel does \
             this work itself while booting; here the VMM does it beforehand because every guest-kernel \
             instruction is expensive on a nested host{}.",
            request.kernel.len() >> 10,
            kernel_entry,
            request.program.len() >> 10,
            if plan.program.position_independent { "static-pie" } else { "static" },
            plan.program.virtual_extent().0 + plan.layout.bias,
            if shared > 0 {
                format!(
                    " ({} KiB of it mapped from cvm's cached copy of the program file, copy-on-write: those pages \
                     stay in the host's page cache, shared by every VM and process running it)",
                    shared >> 10
                )
            } else {
                String::new()
            },
            took(started)
        )
    });

    let started = Instant::now();
    let cpus = request.cpus.clamp(1, cvm_guest_abi::MAX_CPUS);
    let cpu = GuestCpu::from_host(&kvm)?;
    let mut vcpus = Vec::with_capacity(cpus);
    for index in 0..cpus {
        let vcpu = vm.create_vcpu(index as u64).with_context(|| format!("creating vCPU {index} (KVM_CREATE_VCPU)"))?;
        cpu.configure(&vcpu, index)?;
        vcpus.push(vcpu);
    }
    let tsc_khz = vcpus[0].get_tsc_khz().map(u64::from).unwrap_or(0);
    narrator.step(|| {
        format!(
            "vm: created {} and gave {} the host CPU's CPUID minus AVX/XSAVE and the virtualization \
             extensions the guest must not use{}{}.",
            if cpus == 1 {
                "one virtual CPU".to_string()
            } else {
                format!("{cpus} virtual CPUs (each one a thread of cvm)")
            },
            if cpus == 1 { "it" } else { "each" },
            if cpu.fsgsbase {
                " (FSGSBASE kept, so the kernel can set a thread pointer without a privileged MSR write)"
            } else {
                ""
            },
            took(started)
        )
    });

    let stack = initial_stack(plan, cpu.hwcap, cpu.fsgsbase)?;
    ram.write(stack.base, &stack.bytes)?;
    let mut boot_info = boot_info(plan, stack.pointer, cpu.fsgsbase, tsc_khz);
    (boot_info.page_table_pool, boot_info.page_table_pool_end) = page_tables.free_area();
    boot_info.page_directories = page_tables.directories();
    boot_info.split_by_vmm = page_tables.splits()?;
    ram.write(BOOT_INFO_ADDR, boot_info_bytes(&boot_info))?;
    narrator.step(|| {
        format!(
            "vm: built the program's initial stack at the top of guest RAM exactly as Linux's execve would \
             (argc = {}, argv, environment, auxiliary vector with AT_PHDR, AT_ENTRY, AT_RANDOM ...) and left a \
             BootInfo page at {BOOT_INFO_ADDR:#x} telling the guest kernel where everything is.",
            request.args.len()
        )
    });

    // Where the kernel is open to ring 3 (this host runs its system-call path in hardware
    // ring 3), vCPU 0 skips the kernel's CPL0 boot: see `regs::setup_direct_entry`.
    let direct = direct_entry(&plan.kernel).filter(|_| kernel_pages == paging::KernelPages::Open);
    for (index, vcpu) in vcpus.iter_mut().enumerate() {
        match &direct {
            Some(direct) if index == 0 => regs::setup_direct_entry(vcpu, &ram, cr3, cpu.fsgsbase, direct)?,
            _ => {
                let rsp = cpu_stack_top(index);
                let entry = regs::Entry { rip: kernel_entry, rsp, rdi: BOOT_INFO_ADDR, rsi: index as u64 };
                regs::setup_long_mode(vcpu, &ram, cr3, cpu.fsgsbase, entry)?
            }
        }
        vcpu.set_kvm_immediate_exit(0);
    }
    narrator.step(|| match &direct {
        None => format!(
            "vm: set the registers of {} directly to 64-bit long mode (GDT, CR0.PG, CR4.PAE, EFER.LME, CR3 = the \
             page tables) with RIP at the kernel's entry {kernel_entry:#x}: no BIOS, no bootloader, no real mode{}.",
            if cpus == 1 { "the vCPU" } else { "every vCPU" },
            if cpus == 1 { "" } else { "; each gets its number in RSI and its own stack, and all start at once" }
        ),
        Some(direct) => format!(
            "vm: set the registers of vCPU 0 directly to 64-bit long mode (CR0.PG, CR4.PAE, EFER.LME, CR3 = the \
             page tables) with the guest kernel's own GDT, IDT, TSS and system-call MSRs (from its CVM ELF note) \
             and RIP at its boot trampoline {:#x} in user mode (CPL3): on this host KVM emulates every \
             guest-kernel instruction at CPL0 but runs the system-call path natively, so the kernel boots in a \
             system call. No BIOS, no bootloader, no real mode{}.",
            direct.trampoline,
            if cpus == 1 { "" } else { "; the other vCPUs start at the kernel's entry, each with its own stack" }
        ),
    });
    let page_table_pool = page_tables.free_area();
    let direct_entry = direct.is_some();
    Ok(MicroVm { vcpus, _vm: vm, _kvm: kvm, ram, fsgsbase: cpu.fsgsbase, tsc_khz, page_table_pool, direct_entry })
}

/// The kernel's `CVM` direct-entry note (guest ABI), when it has one.
fn direct_entry(kernel: &ElfFile) -> Option<DirectEntry> {
    kernel
        .notes()
        .iter()
        .find(|note| note.name == DIRECT_ENTRY_NOTE_NAME && note.kind == DIRECT_ENTRY_NOTE)
        .and_then(|note| DirectEntry::parse(note.desc))
}

/// Builds a VM that boots a Linux kernel image through its PVH entry (see `linux_boot`).
pub fn build_linux(image: &LinuxImage, ram_bytes: u64, cmdline: &str, narrator: &Narrator) -> Result<MicroVm> {
    let (kvm, vm, ram) = create_vm_with_ram(ram_bytes, narrator)?;
    image.load(&ram)?;
    let start_info = linux_boot::write_start_info(&ram, cmdline)?;
    narrator.step(|| {
        format!(
            "vm: copied the Linux kernel's segments to their physical addresses and wrote an hvm_start_info at \
             {start_info:#x} with the command line \"{cmdline}\" and a memory map; the kernel's PVH note says \
             its 32-bit entry point is {:#x}.",
            image.entry
        )
    });
    let vcpu = vm.create_vcpu(0).context("creating the vCPU (KVM_CREATE_VCPU)")?;
    let mut cpu = GuestCpu::from_host(&kvm)?;
    cpu.hide_cmpxchg16b();
    cpu.configure(&vcpu, 0)?;
    let tsc_khz = vcpu.get_tsc_khz().map(u64::from).unwrap_or(0);
    regs::setup_pvh_entry(&vcpu, &ram, image.entry, start_info)?;
    narrator.step(|| {
        "vm: created one vCPU (CPUID without AVX/XSAVE and CMPXCHG16B) in 32-bit protected mode with paging \
         off, as the PVH boot protocol asks; Linux builds its own page tables and switches to long mode itself."
            .into()
    });
    Ok(MicroVm {
        vcpus: vec![vcpu],
        _vm: vm,
        _kvm: kvm,
        ram,
        fsgsbase: cpu.fsgsbase,
        tsc_khz,
        page_table_pool: (0, 0),
        direct_entry: false,
    })
}

/// " (took 0.42 ms)": how long a narrated step took, for students comparing the steps.
fn took(started: Instant) -> String {
    format!(" (took {:.2} ms)", started.elapsed().as_secs_f64() * 1e3)
}

fn initial_stack(plan: &VmPlan, hwcap: u64, fsgsbase: bool) -> Result<user_stack::InitialStack> {
    use user_stack::*;
    let layout = &plan.layout;
    let mut random = [0u8; 16];
    fill_random(&mut random);
    let execfn = plan.request.args.first().map(String::as_str).unwrap_or("/program");
    let contents = StackContents {
        args: &plan.request.args,
        env: &plan.request.env,
        execfn,
        platform: "x86_64",
        random,
        aux: vec![
            (AT_PHDR, layout.phdr_address),
            (AT_PHENT, layout.phent),
            (AT_PHNUM, layout.phnum),
            (AT_PAGESZ, PAGE_SIZE),
            (AT_BASE, 0),
            (AT_FLAGS, 0),
            (AT_ENTRY, layout.entry),
            (AT_UID, 0),
            (AT_EUID, 0),
            (AT_GID, 0),
            (AT_EGID, 0),
            (AT_SECURE, 0),
            (AT_HWCAP, hwcap),
            (AT_HWCAP2, if fsgsbase { 2 } else { 0 }),
            (AT_CLKTCK, 100),
        ],
    };
    user_stack::build(layout.stack_top, USER_STACK_SIZE / 2, &contents)
}

fn fill_random(bytes: &mut [u8]) {
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        // Not for cryptography: AT_RANDOM seeds stack protectors and hash maps.
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = (seed >> ((index % 16) * 8)) as u8 ^ index as u8;
        }
    }
}

/// True on VT-x or AMD-V hosts, where the guest's syscall path runs at real CPL0.
pub fn hardware_virtualization() -> bool {
    matches!(crate::host::HostInfo::current().virtualization.as_str(), "vmx" | "svm")
}

fn boot_info(plan: &VmPlan, user_stack_pointer: u64, fsgsbase: bool, tsc_khz: u64) -> BootInfo {
    let layout = &plan.layout;
    let mut info = BootInfo::empty();
    info.flags = if fsgsbase { boot_flags::FSGSBASE } else { 0 };
    if plan.request.protect_kernel {
        info.flags |= boot_flags::KERNEL_CLOSED;
    }
    if !hardware_virtualization() {
        info.flags |= boot_flags::SYSCALL_MAY_FAULT;
    }
    info.cpus = plan.request.cpus.clamp(1, cvm_guest_abi::MAX_CPUS) as u32;
    info.ram_size = plan.request.ram_bytes;
    info.user_entry = layout.entry;
    info.user_stack_pointer = user_stack_pointer;
    info.brk_start = layout.brk_start;
    info.brk_limit = layout.brk_limit;
    info.mmap_top = layout.mmap_top;
    info.stack_bottom = layout.stack_bottom;
    info.tsc_khz = tsc_khz;
    info.realtime_ns_at_boot =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    info.syscall_counts_addr = SYSCALL_COUNTS_ADDR;
    let name = plan.request.hostname.as_bytes();
    let length = name.len().min(info.hostname.len() - 1);
    info.hostname[..length].copy_from_slice(&name[..length]);
    info
}

// The ABI struct spells out its padding (`_reserved`, `_pad`), so it has no implicit holes.
const _: () = assert!(std::mem::size_of::<BootInfo>().is_multiple_of(8));

fn boot_info_bytes(info: &BootInfo) -> &[u8] {
    // SAFETY: BootInfo is repr(C), Copy, made only of integers and byte arrays with explicit
    // padding fields, so every byte is initialized; the slice borrows `info`.
    unsafe { std::slice::from_raw_parts((info as *const BootInfo).cast::<u8>(), std::mem::size_of::<BootInfo>()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded;

    #[test]
    fn kvm_errors_say_how_to_fix_them() {
        assert!(kvm_open_error(libc::EACCES).to_string().contains("kvm group"));
        assert!(kvm_open_error(libc::ENOENT).to_string().contains("does not exist"));
        assert!(kvm_open_error(libc::EBUSY).to_string().starts_with("cannot open /dev/kvm"));
        assert_eq!(kvm_open_error(libc::EACCES).to_string().lines().count(), 1);
    }

    #[test]
    fn boot_info_carries_the_layout() {
        let request = VmRequest {
            program_file: None,
            kernel: embedded::GUEST_KERNEL_ELF,
            program: embedded::WORKLOAD_ELF,
            ram_bytes: 64 << 20,
            cpus: 1,
            protect_kernel: false,
            args: vec!["/cvm-workload".into(), "hello".into()],
            env: vec![],
            hostname: "cvm-vm".into(),
        };
        let plan = VmPlan::new(&request).unwrap();
        let info = boot_info(&plan, 0x3ff_ff00, true, 2_000_000);
        let bytes = boot_info_bytes(&info);
        assert_eq!(&bytes[..8], b"CVMBOOT1");
        assert_ne!(info.flags & boot_flags::FSGSBASE, 0);
        assert_eq!(info.flags & boot_flags::KERNEL_CLOSED, 0, "closed only when asked");
        assert_eq!(info.user_entry, plan.layout.entry);
        assert_eq!(&info.hostname[..7], b"cvm-vm\0");
    }
}

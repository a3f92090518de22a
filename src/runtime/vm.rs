//! The vm runtime: the program inside a KVM micro-VM with cvm's own guest kernel, or the early
//! boot of a Linux kernel image with `--kernel PATH` (see `src/vmm` and docs/vm.md). One VM per
//! run: built, run until the guest ends the run, measured, torn down.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cvm_guest_abi::{SYSCALL_COUNTS_ADDR, SYSCALL_SLOTS};

use super::{KernelChoice, RunClock, RunSpec, Runtime, SeccompProfile};
use crate::embedded;
use crate::own_usage as usage;
use crate::program::Program;
use crate::record::{GuestStats, Outcome, OwnMemory, RunRecord, RuntimeKind};
use crate::vmm::builder::{self, MicroVm, VmPlan, VmRequest};
use crate::vmm::devices::{lock, Devices};
use crate::vmm::linux_boot::{self, LinuxImage};
use crate::vmm::memory::GuestRam;
use crate::vmm::run::{self, RunOutcome};
use crate::vmm::syscall_names::syscall_name;
use crate::vmm::{layout, loader, VmStop};

/// The host name the guest kernel reports: not the host's.
pub const GUEST_HOSTNAME: &str = "cvm-vm";
/// The exit status cvm reports when the VM, not the program, ended the run.
pub const VM_FAILURE_EXIT_CODE: i32 = 125;

pub struct VmRuntime;

impl Runtime for VmRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Vm
    }

    fn check_available(&self) -> Result<()> {
        builder::open_kvm().map(drop)
    }

    fn run(&self, spec: &RunSpec) -> Result<RunRecord> {
        let clock = RunClock::for_spec(spec);
        if matches!(spec.program, Program::Image(_)) {
            bail!("{}", crate::program::IMAGE_RUNTIME_ONLY);
        }
        vcpu_count(spec)?;
        let deadline = clock.started_at() + spec.timeout;
        let booted = match &spec.kernel {
            KernelChoice::Builtin => boot_builtin(spec, deadline)?,
            KernelChoice::Image(path) => boot_linux(spec, path, deadline)?,
        };
        run_and_record(spec, clock, booted)
    }
}

/// `--cpus N` for a VM: N whole vCPUs, 1 to MAX_CPUS (a Linux image gets one).
fn vcpu_count(spec: &RunSpec) -> Result<usize> {
    let max = cvm_guest_abi::MAX_CPUS;
    let Some(cpus) = spec.cpus else { return Ok(1) };
    if cpus.fract() != 0.0 || !(1.0..=max as f64).contains(&cpus) {
        bail!("--cpus {cpus}: a VM has whole vCPUs, from 1 to {max} (a container's --cpus may be a fraction)");
    }
    if matches!(spec.kernel, KernelChoice::Image(_)) && cpus != 1.0 {
        bail!("--cpus {cpus}: a Linux kernel image is booted with one vCPU here");
    }
    Ok(cpus as usize)
}

/// A built VM, ready for `KVM_RUN`, with the devices its kernel expects.
struct Booted {
    vm: MicroVm,
    devices: Devices,
    builtin: bool,
    cpu_before: (u64, u64),
    own_before: Option<usage::Resident>,
}

/// The builtin guest kernel running the program.
fn boot_builtin(spec: &RunSpec, deadline: Instant) -> Result<Booted> {
    let own_before = usage::resident();
    let program = spec.program.bytes()?;
    let ram_bytes = layout::ram_size(spec.memory_bytes)?;
    let cpus = vcpu_count(spec)?;
    let request = VmRequest {
        kernel: embedded::GUEST_KERNEL_ELF,
        program: &program,
        program_file: shared_program_file(spec),
        ram_bytes,
        cpus,
        protect_kernel: spec.protect_guest_kernel,
        args: guest_argv(spec),
        env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into(), "HOME=/".into()],
        hostname: GUEST_HOSTNAME.into(),
    };
    let plan = VmPlan::new(&request).with_context(|| format!("cannot run {} in a VM", spec.program.label()))?;

    usage::reset_peak_rss();
    let cpu_before = usage::thread_cpu_ns();
    let vm = builder::build(&plan, &spec.narrator)?;
    // Guest RAM has its own copy now: the VMM keeps none.
    drop(plan);
    drop(program);
    loader::release_embedded_image(embedded::GUEST_KERNEL_ELF);
    if matches!(spec.program, Program::Workload { .. }) {
        loader::release_embedded_image(embedded::WORKLOAD_ELF);
    }
    let direct_entry = vm.direct_entry;
    spec.narrator.step(|| {
        format!(
            "vm: starting the vCPU (KVM_RUN). The guest kernel now {}, then jumps to the program at CPL3 (user \
             mode). From here the VMM only wakes up on a VM exit: an I/O port access (console output, boot timer, \
             exit) or a fault.",
            if direct_entry {
                "makes its boot system call and sets itself up in it"
            } else {
                "sets up its own GDT, IDT and system-call entry"
            }
        )
    });
    let devices = Devices::builtin(cpus, spec.echo_output, deadline, vm.page_table_pool)?;
    Ok(Booted { vm, devices, builtin: true, cpu_before, own_before })
}

/// The embedded workload's cache copy (the process runtime runs the same file), opened for the
/// VM to map its pages from; None when there is none, and the program is copied instead.
fn shared_program_file(spec: &RunSpec) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !matches!(spec.program, Program::Workload { .. }) {
        return None;
    }
    let path = embedded::workload_path().ok()?;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
    let meta = file.metadata().ok()?;
    (meta.is_file() && meta.len() == embedded::WORKLOAD_ELF.len() as u64).then_some(file)
}

/// A Linux kernel image (`--kernel PATH`), booted through its PVH entry; it has no root file
/// system, so the program itself is not run.
fn boot_linux(spec: &RunSpec, path: &Path, deadline: Instant) -> Result<Booted> {
    let own_before = usage::resident();
    let image = crate::program::read_regular_file(path, linux_boot::MAX_KERNEL_IMAGE_BYTES)
        .with_context(|| format!("cannot read the kernel image {}", path.display()))?;
    let ram_bytes = layout::ram_size(Some(spec.memory_bytes.unwrap_or(linux_boot::DEFAULT_LINUX_RAM_BYTES)))?;
    let linux = LinuxImage::parse(&image, ram_bytes).with_context(|| format!("cannot boot {}", path.display()))?;
    usage::reset_peak_rss();
    let cpu_before = usage::thread_cpu_ns();
    let vm = builder::build_linux(&linux, ram_bytes, linux_boot::DEFAULT_CMDLINE, &spec.narrator)?;
    drop(linux);
    drop(image);
    spec.narrator.step(|| {
        "vm: starting the vCPU (KVM_RUN). Linux prints its boot messages on the serial console, one VM exit per \
         byte. It has no disk and no root file system here, so it cannot start the program: watch how far it \
         gets before the timeout or before KVM gives up."
            .into()
    });
    Ok(Booted { vm, devices: Devices::for_linux(spec.echo_output, deadline)?, builtin: false, cpu_before, own_before })
}

/// Runs the VM to its end, measures it, tears it down and fills the record.
fn run_and_record(spec: &RunSpec, clock: RunClock, booted: Booted) -> Result<RunRecord> {
    let Booted { mut vm, devices, builtin, cpu_before, own_before } = booted;
    let narrator = &spec.narrator;
    let setup = clock.now_ns();
    let ram_bytes = vm.ram.size();
    let vcpus = vm.vcpus.len() as u64;
    let deadline = clock.started_at() + spec.timeout;
    usage::release_setup_memory();
    let RunOutcome { stop, exits, others_user_ns, others_system_ns } =
        run::run_all(&mut vm.vcpus, &vm.ram, &devices, deadline)?;
    let exited_at = Instant::now();
    let serial_first_output = lock(&devices.serial).first_output();
    let (console, console_bytes) = lock(&devices.serial).finish();

    // Measure before teardown: the guest RAM mapping is still there.
    let guest = guest_memory(&vm.ram);
    let (resident, peak_rss) = usage::resident_and_peak();
    let (syscalls, unsupported) = if builtin { read_syscall_counts(&vm.ram) } else { Default::default() };
    let cpu_after = usage::thread_cpu_ns();
    narrator.step(|| {
        format!(
            "vm: the run ended ({}) after {} VM exits. The guest touched {} KiB of its {} MiB of RAM.",
            describe(&stop),
            exits.total(),
            guest.map_or(0, |g| g.touched) >> 10,
            ram_bytes >> 20
        )
    });
    drop(vm);
    let teardown = clock.now_ns();
    narrator.step(|| "vm: closed the vCPU, VM and /dev/kvm descriptors and unmapped guest RAM: the VM is gone.".into());

    let mut record = RunRecord::new(RuntimeKind::Vm, &spec.kernel.label(), &spec.program.label(), &spec.args);
    if spec.pids.is_some() {
        record
            .notes
            .push("--pids not applied: the builtin guest kernel runs exactly one program and starts no others".into());
    }
    if spec.seccomp != SeccompProfile::Default {
        record.notes.push(
            "--seccomp applies to the container runtime: a VM's program talks to the guest kernel, not the host's"
                .into(),
        );
    }
    let (stdout, stderr, console_first_output) = {
        let mut program_console = lock(&devices.console);
        let first = program_console.first_output;
        (
            std::mem::take(&mut program_console.stdout).finish(),
            std::mem::take(&mut program_console.stderr).finish(),
            first,
        )
    };
    let program_entered = devices.program_entered();
    record.set_output(&stdout, &stderr);
    apply_stop(&mut record, &stop, spec);
    let phases = &mut record.phases_ns;
    phases.setup = setup;
    phases.boot = program_entered.map_or(setup, |t| clock.since(t));
    let first_output = if builtin { console_first_output } else { serial_first_output };
    phases.first_output = first_output.map(|t| clock.since(t));
    phases.exit = clock.since(exited_at);
    phases.teardown = teardown;
    phases.total = teardown;
    let memory = &mut record.memory;
    memory.guest_ram_bytes = Some(ram_bytes);
    memory.guest_touched_bytes = guest.map(|g| g.touched);
    memory.peak_rss_bytes = peak_rss;
    memory.runtime_overhead_bytes = resident.zip(guest).map(|(rss, g)| rss.total.saturating_sub(g.touched));
    if let Some(g) = guest {
        if builtin {
            memory.guest_kernel_bytes = Some(g.kernel);
            memory.program_peak_rss_bytes = Some(g.touched.saturating_sub(g.kernel));
        } else {
            // A Linux image runs no program here: everything it touched is the kernel's.
            memory.guest_kernel_bytes = Some(g.touched);
        }
    }
    // The guest's anonymous pages are in the VMM's anonymous RSS; they are the guest's, not
    // the runtime's. Its shared program pages are file-backed and never were.
    memory.set_runtime_own(
        OwnMemory { before: own_before, after: resident },
        guest.map_or(0, |g| g.anonymous),
        guest.map_or(0, |g| g.touched.saturating_sub(g.anonymous)),
    );
    // This thread (setup, vCPU 0, teardown) plus every other vCPU's thread.
    record.cpu.user_ns = cpu_after.0.saturating_sub(cpu_before.0) + others_user_ns;
    record.cpu.system_ns = cpu_after.1.saturating_sub(cpu_before.1) + others_system_ns;
    let kernel_open_to_program = builtin && !spec.protect_guest_kernel && !builder::hardware_virtualization();
    record.guest = Some(GuestStats {
        vcpus,
        kernel_open_to_program,
        exits: exits.to_map(),
        syscalls,
        unsupported_syscalls: unsupported,
    });

    if !builtin {
        record.notes.push(
            "a Linux kernel image was booted (PVH entry, serial console): it has no root file system here, so the \
             program was not run; the record shows how far the boot got"
                .into(),
        );
    } else if program_entered.is_none() {
        record.notes.push("the guest kernel never reported entering the program (boot code 0x41)".into());
    }
    if !console.is_empty() {
        let cut = if console_bytes > console.len() as u64 { " (cut)" } else { "" };
        record.notes.push(format!("guest console{cut}: {}", console.trim_end()));
    }
    Ok(record)
}

/// What guest RAM costs the host, read before it is unmapped.
#[derive(Clone, Copy, Debug)]
struct GuestMemory {
    /// Pages populated in the VMM's page tables: touched by the VMM while loading or by the guest.
    touched: u64,
    /// The anonymous (private) ones among them; the rest are the shared program file's pages.
    anonymous: u64,
    /// Populated pages below USER_BASE: the guest kernel's.
    kernel: u64,
}

fn guest_memory(ram: &crate::vmm::memory::GuestRam) -> Option<GuestMemory> {
    if let Ok(pages) = ram.residency(layout::USER_BASE) {
        return Some(GuestMemory {
            touched: pages.below + pages.above,
            anonymous: pages.anonymous,
            kernel: pages.below,
        });
    }
    let (kernel, above) = ram.resident_split(layout::USER_BASE).ok()?;
    let start = ram.host_address().ok()?;
    match usage::mapped_in(start, start + ram.size()) {
        Some((touched, anonymous)) if touched > 0 => Some(GuestMemory { touched, anonymous, kernel }),
        // Without smaps, mincore's count (all of guest RAM is anonymous then).
        _ => Some(GuestMemory { touched: kernel + above, anonymous: kernel + above, kernel }),
    }
}

/// argv as the guest sees it: a short absolute name, then the workload subcommand and arguments.
pub fn guest_argv(spec: &RunSpec) -> Vec<String> {
    let name = match &spec.program {
        Program::Workload { .. } => "cvm-workload".to_string(),
        Program::Binary { .. } | Program::Image(_) => spec.program.label(),
    };
    let mut argv = vec![format!("/{name}")];
    argv.extend(spec.program_args());
    argv
}

fn apply_stop(record: &mut RunRecord, stop: &VmStop, spec: &RunSpec) {
    let (outcome, exit_code, signal, reason) = match stop {
        VmStop::Exited { status } => (Outcome::Exited, *status, None, None),
        VmStop::Signaled { signal } => (
            Outcome::Signaled,
            128 + signal,
            Some(*signal),
            Some(format!(
                "the program was killed by {} ({signal}) in the guest",
                super::supervise::signal_name(*signal)
            )),
        ),
        VmStop::OutOfMemory { reason } => {
            (Outcome::OomKilled, 128 + libc::SIGKILL, Some(libc::SIGKILL), Some(reason.clone()))
        }
        VmStop::ProgramFault { signal, reason } => {
            (Outcome::GuestProgramFault, 128 + signal, Some(*signal), Some(reason.clone()))
        }
        VmStop::KernelFault { reason } => (Outcome::GuestKernelFault, VM_FAILURE_EXIT_CODE, None, Some(reason.clone())),
        VmStop::UnhandledDevice { reason } => {
            (Outcome::UnhandledDeviceAccess, VM_FAILURE_EXIT_CODE, None, Some(reason.clone()))
        }
        VmStop::TimedOut => (
            Outcome::TimedOut,
            128 + libc::SIGKILL,
            None,
            Some(format!(
                "the program was still running after the {} s timeout and the VM was stopped",
                spec.timeout.as_secs_f64()
            )),
        ),
        VmStop::Interrupted { signal } => (
            Outcome::Interrupted,
            128 + signal,
            None,
            Some(format!("cvm was interrupted by signal {signal} and stopped the VM")),
        ),
    };
    record.outcome = outcome;
    record.exit_code = exit_code;
    record.signal = signal;
    record.reason = reason;
}

fn describe(stop: &VmStop) -> String {
    match stop {
        VmStop::Exited { status } => format!("the guest kernel wrote exit status {status} to port 0xf4"),
        VmStop::ProgramFault { reason, .. }
        | VmStop::KernelFault { reason }
        | VmStop::UnhandledDevice { reason }
        | VmStop::OutOfMemory { reason } => reason.clone(),
        VmStop::Signaled { signal } => format!("the guest kernel reported the program killed by signal {signal}"),
        VmStop::TimedOut => "timed out".into(),
        VmStop::Interrupted { signal } => format!("interrupted by signal {signal}"),
    }
}

/// The guest kernel's per-number counters, by name (zero counts left out).
fn read_syscall_counts(ram: &GuestRam) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let table_bytes = (2 * SYSCALL_SLOTS * 4) as u64;
    let Ok(raw) = ram.read_vec(SYSCALL_COUNTS_ADDR, table_bytes) else { return Default::default() };
    let counts = |half: &[u8]| -> BTreeMap<String, u64> {
        half.chunks_exact(4)
            .enumerate()
            .filter_map(|(number, bytes)| {
                let count = u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
                let name = if number == SYSCALL_SLOTS - 1 { "other".to_string() } else { syscall_name(number) };
                (count > 0).then_some((name, u64::from(count)))
            })
            .collect()
    };
    let (calls, unsupported) = raw.split_at(SYSCALL_SLOTS * 4);
    (counts(calls), counts(unsupported))
}

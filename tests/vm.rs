//! The `vm` runtime and cvm's VMM: the workloads in a micro-VM through the real binary, the
//! bad-program and bad-option refusals, timeouts and interruption, VMM behaviour with tiny
//! hand-assembled guest kernels (exit port, unknown port, triple fault, hlt, a CPL0 loop), and
//! no leaked descriptors, threads or memory after 100 VMs in one process.
//!
//! Every test here needs a readable and writable /dev/kvm (`require_kvm`: under CI=true a
//! missing /dev/kvm fails the test; elsewhere the test says why it did not run).

mod common;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{cvm, require_kvm, run_cvm, run_json, run_json_in};
use cvm::explain::Narrator;
use cvm::program::Program;
use cvm::record::{Outcome, RuntimeKind};
use cvm::runtime::{self, RunSpec};
use cvm::vmm::builder::{self, VmPlan, VmRequest};
use cvm::vmm::devices::{lock, Devices};
use cvm::vmm::{run, VmStop};

/// The tests of this file run one at a time: the resource test counts the whole process's
/// descriptors and threads, which a concurrent test would disturb.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn phase(record: &serde_json::Value, name: &str) -> u64 {
    record["phases_ns"][name].as_u64().unwrap_or_else(|| panic!("phase {name} missing: {record}"))
}

#[test]
fn vm_hello_returns_a_complete_record_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let record = run_json_in("vm", &["hello"]);
    assert_eq!(record["runtime"], "vm");
    assert_eq!(record["kernel"], "builtin");
    assert_eq!(record["outcome"], "exited", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    assert!(record["stdout"].as_str().unwrap().contains("Hello"), "{record}");
    assert_eq!(record["result"]["workload"], "hello");
    let order = ["setup", "boot", "first_output", "exit", "teardown"];
    for pair in order.windows(2) {
        assert!(phase(&record, pair[0]) <= phase(&record, pair[1]), "{pair:?} out of order: {}", record["phases_ns"]);
    }
    assert_eq!(phase(&record, "total"), phase(&record, "teardown"));
    let memory = &record["memory"];
    let ram = memory["guest_ram_bytes"].as_u64().unwrap();
    let touched = memory["guest_touched_bytes"].as_u64().unwrap();
    assert_eq!(ram, 64 << 20);
    assert!(touched > 0 && touched < ram / 4, "touched {touched} of {ram}");
    assert!(memory["runtime_overhead_bytes"].as_u64().unwrap() > 0);
    assert!(memory["peak_rss_bytes"].as_u64().unwrap() >= touched);
    // The split: the guest's pages are the program's or the guest kernel's, never the VMM's.
    let program = memory["program_peak_rss_bytes"].as_u64().unwrap();
    let kernel = memory["guest_kernel_bytes"].as_u64().unwrap();
    assert_eq!(program + kernel, touched, "{memory}");
    assert!(kernel > 0 && program > kernel, "{memory}");
    let private = memory["runtime_private_bytes"].as_u64().unwrap();
    assert!(private > 0 && private < 4 << 20, "the VMM's own private memory: {memory}");
    assert!(memory["runtime_shared_bytes"].as_u64().unwrap() > 0, "{memory}");
    let exits = &record["guest"]["exits"];
    assert!(exits["io"].as_u64().unwrap() >= 3, "boot timer, console and exit port at least: {exits}");
    assert!(record["guest"]["syscalls"]["write"].as_u64().unwrap_or(0) >= 1, "{record}");
}

#[test]
fn vm_runs_every_workload_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    for workload in [&["hello"][..], &["cpu", "5000"], &["mem", "8"], &["syscall", "2000"], &["probe"]] {
        let record = run_json_in("vm", workload);
        assert_eq!(record["exit_code"], 0, "{workload:?}: {record}");
        assert_eq!(record["result"]["workload"], workload[0], "{workload:?}: {record}");
        assert_eq!(record["kernel"], "builtin");
    }
}

#[test]
fn vm_probe_reports_a_kernel_other_than_the_hosts_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let host = run_json(&["--runtime", "process", "probe"]);
    let guest = run_json_in("vm", &["probe"]);
    for field in ["kernel_name", "kernel_release", "hostname"] {
        assert_ne!(host["result"][field], guest["result"][field], "{field}: {}", guest["result"]);
    }
    assert_eq!(guest["result"]["kernel_release"], cvm_guest_abi::KERNEL_RELEASE);
}

#[test]
fn vm_memory_option_sizes_guest_ram_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let record = run_json_in("vm", &["--memory", "32M", "mem", "4"]);
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["memory"]["guest_ram_bytes"], 32 << 20);
    assert!(record["memory"]["guest_touched_bytes"].as_u64().unwrap() >= 4 << 20, "{record}");
}

#[test]
fn vm_program_exit_status_becomes_cvms_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    // The workload exits with status 2 on a bad argument.
    let out = run_cvm(&["run", "--runtime", "vm", "cpu", "notanumber"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let record = run_json_in("vm", &["cpu", "notanumber"]);
    assert_eq!(record["outcome"], "exited");
    assert_eq!(record["exit_code"], 2);
}

#[test]
fn vm_timeout_stops_a_guest_that_never_ends_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let started = Instant::now();
    let record = run_json_in("vm", &["--timeout", "1", "cpu", "100000000000"]);
    assert_eq!(record["outcome"], "timed_out", "{record}");
    assert_ne!(record["exit_code"], 0);
    assert!(record["reason"].as_str().unwrap().contains("timeout"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(phase(&record, "exit") >= 1_000_000_000);
}

#[test]
fn vm_sigint_stops_the_vm_cleanly_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let child = cvm()
        .args(["run", "--runtime", "vm", "--json", "--timeout", "60", "cpu", "100000000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "cvm took {:?} to stop", started.elapsed());
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON record");
    assert_eq!(record["outcome"], "interrupted", "{record}");
}

#[test]
fn vm_refuses_bad_programs_with_one_line_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A valid static program whose last segment wants 512 MiB of memory: it cannot fit 64 MiB.
    let oversized = dir.path().join("oversized");
    std::fs::write(&oversized, with_last_segment_memory(cvm::embedded::WORKLOAD_ELF, 512 << 20)).unwrap();
    let mut cases = common::bad_programs(dir.path());
    cases.push((oversized.display().to_string(), "--memory"));
    for (path, expected) in cases {
        common::assert_refused_with_one_line("vm", &path, expected);
    }
}

#[test]
fn vm_refuses_unsupported_options_with_one_line_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    for (args, expected) in [
        (&["--cpus", "1.5", "hello"][..], "whole vCPUs"),
        (&["--kernel", "/nonexistent/vmlinux", "--cpus", "2", "hello"], "one vCPU"),
        (&["--kernel", "/nonexistent/vmlinux", "hello"], "cannot read the kernel image"),
        (&["--memory", "1M", "hello"], "too small"),
    ] {
        let mut full = vec!["run", "--runtime", "vm"];
        full.extend_from_slice(args);
        let out = run_cvm(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn vm_kernel_image_without_a_pvh_entry_is_refused_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    // A static program is an ELF file, but not a kernel with a PVH entry note.
    let program = cvm::embedded::workload_path().unwrap();
    let out = run_cvm(&["run", "--runtime", "vm", "--kernel", program.to_str().unwrap(), "hello"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("PVH entry"), "{stderr}");
}

/// Boots a real Linux vmlinux when `CVM_TEST_VMLINUX` names one (not in CI: it takes a minute
/// on nested hosts). The banner must reach the serial console before the timeout.
#[test]
fn vm_boots_a_linux_vmlinux_to_its_banner_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    let Some(vmlinux) = std::env::var_os("CVM_TEST_VMLINUX") else {
        eprintln!("skipped: set CVM_TEST_VMLINUX=/path/to/vmlinux to boot a real Linux kernel");
        return;
    };
    if !require_kvm() {
        return;
    }
    let record = run_json_in("vm", &["--kernel", vmlinux.to_str().unwrap(), "--timeout", "60", "hello"]);
    let console = record["notes"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect::<Vec<_>>().join("\n");
    assert!(console.contains("Linux version"), "{record}");
    assert_ne!(record["outcome"], "exited");
}

#[test]
fn vm_trace_syscalls_prints_the_guest_table_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let out = run_cvm(&["run", "--runtime", "vm", "--trace-syscalls", "hello"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("builtin guest kernel") && stderr.contains("write"), "{stderr}");
}

#[test]
fn vm_explain_narrates_the_boot_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let out = run_cvm(&["run", "--runtime", "vm", "--explain", "hello"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in ["KVM_CREATE_VM", "page tables", "long mode", "KVM_RUN"] {
        assert!(stderr.contains(expected), "missing {expected}:\n{stderr}");
    }
}

#[test]
fn null_pointer_write_is_a_segfault_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    // A system call first: on PVM hosts the first one makes the guest kernel open its memory
    // below USER_BASE to ring 3 (guest/kernel/src/cpu.rs), which must leave page 0 and the
    // page tables closed. Then the access, then exit_group(0), which must not be reached.
    let getpid = [0xb8, 39, 0, 0, 0, 0x0f, 0x05]; // mov eax, 39; syscall
    let exit_group = [0xb8, 231, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]; // mov eax, 231; xor edi, edi; syscall
    let cases: [(&[u8], &str); 2] = [
        (&[0xc7, 0x04, 0x25, 0x08, 0, 0, 0, 1, 0, 0, 0], "writing 0x8"), // mov dword [8], 1
        (&[0x8b, 0x04, 0x25, 0x00, 0x80, 0, 0], "reading 0x8000"),       // mov eax, [0x8000]: a page table
    ];
    for (access, expected) in cases {
        let program = common::tiny_program(&[&getpid[..], access, &exit_group].concat());
        let record = run_json_in("vm", &["--binary", program.to_str().unwrap()]);
        assert_eq!(record["outcome"], "guest_program_fault", "{expected}: {record}");
        assert_eq!(record["exit_code"], 139, "{expected}: {record}");
        assert_eq!(record["signal"], 11, "{expected}: {record}");
        assert!(record["reason"].as_str().unwrap().contains(expected), "{expected}: {record}");
        assert_eq!(record["guest"]["syscalls"]["getpid"], 1, "{expected}: {record}");
    }
}

// ---- The VMM with hand-assembled guest kernels --------------------------------------------

const KERNEL_BASE: u64 = cvm_guest_abi::KERNEL_BASE;

/// A minimal ELF64 ET_EXEC with one segment holding `image` at KERNEL_BASE (entry there).
fn kernel_elf(image: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; 0x1000];
    elf[..4].copy_from_slice(b"\x7fELF");
    (elf[4], elf[5], elf[6]) = (2, 1, 1);
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&KERNEL_BASE.to_le_bytes()); // entry
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = 64;
    elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf[ph + 4..ph + 8].copy_from_slice(&7u32.to_le_bytes());
    elf[ph + 8..ph + 16].copy_from_slice(&0x1000u64.to_le_bytes());
    elf[ph + 16..ph + 24].copy_from_slice(&KERNEL_BASE.to_le_bytes());
    elf[ph + 24..ph + 32].copy_from_slice(&KERNEL_BASE.to_le_bytes());
    elf[ph + 32..ph + 40].copy_from_slice(&(image.len() as u64).to_le_bytes());
    elf[ph + 40..ph + 48].copy_from_slice(&(image.len() as u64).to_le_bytes());
    elf.extend_from_slice(image);
    elf
}

/// The workload with its last PT_LOAD's memory size set to `bytes` (a huge bss).
fn with_last_segment_memory(elf: &[u8], bytes: u64) -> Vec<u8> {
    let mut elf = elf.to_vec();
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(elf[56..58].try_into().unwrap()) as usize;
    let last_load = (0..phnum)
        .rev()
        .map(|i| phoff + i * 56)
        .find(|&at| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 1)
        .unwrap();
    elf[last_load + 40..last_load + 48].copy_from_slice(&bytes.to_le_bytes());
    elf
}

struct Ended {
    stop: VmStop,
    exits: BTreeMap<String, u64>,
    devices: Devices,
}

/// Boots `image` as the guest kernel (with the workload as the program) and runs it to its end.
fn run_kernel(image: &[u8], timeout: Duration) -> Ended {
    let kernel = kernel_elf(image);
    let request = VmRequest {
        program_file: None,
        kernel: &kernel,
        program: cvm::embedded::WORKLOAD_ELF,
        ram_bytes: 16 << 20,
        cpus: 1,
        protect_kernel: false,
        args: vec!["/cvm-workload".into()],
        env: vec![],
        hostname: "test".into(),
    };
    let plan = VmPlan::new(&request).unwrap();
    let mut vm = builder::build(&plan, &Narrator::new(false)).unwrap();
    let devices = Devices::builtin(1, false, Instant::now() + timeout, vm.page_table_pool).unwrap();
    let outcome = run::run_all(&mut vm.vcpus, &vm.ram, &devices, Instant::now() + timeout).unwrap();
    Ended { stop: outcome.stop, exits: outcome.exits.to_map(), devices }
}

const OUT_EXIT_42: &[u8] = &[0xb0, 42, 0xe6, 0xf4]; // mov al, 42; out 0xf4, al
const JMP_SELF: &[u8] = &[0xeb, 0xfe];

#[test]
fn vmm_exit_port_ends_the_run_with_the_status_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    // Boot timer 0x40, "ok\n" on the serial port, then exit 42.
    let mut code = vec![0xb0, 0x40, 0xe6, 0x80, 0x66, 0xba, 0xf8, 0x03]; // mov al,0x40; out 0x80,al; mov dx,0x3f8
    for byte in b"ok\n" {
        code.extend_from_slice(&[0xb0, *byte, 0xee]); // mov al, byte; out dx, al
    }
    code.extend_from_slice(OUT_EXIT_42);
    code.extend_from_slice(JMP_SELF);
    let ended = run_kernel(&code, Duration::from_secs(10));
    assert_eq!(ended.stop, VmStop::Exited { status: 42 });
    assert!(lock(&ended.devices.boot_timer).kernel_entered.is_some());
    assert_eq!(lock(&ended.devices.serial).finish().0, "ok\n");
    assert_eq!(ended.exits["io"], 5);
}

#[test]
fn vmm_console_write_hypercall_copies_program_output_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    // ConsoleWrite {fd 1, len 6, addr KERNEL_BASE + 0x80} at KERNEL_BASE + 0x40.
    let request_at = KERNEL_BASE as u32 + 0x40;
    let mut code = vec![0xb8];
    code.extend_from_slice(&request_at.to_le_bytes()); // mov eax, request
    code.extend_from_slice(&[0x66, 0xba, 0x00, 0x05, 0xef]); // mov dx, 0x500; out dx, eax
    code.extend_from_slice(OUT_EXIT_42);
    code.extend_from_slice(JMP_SELF);
    code.resize(0x40, 0x90);
    code.extend_from_slice(&1u32.to_le_bytes());
    code.extend_from_slice(&6u32.to_le_bytes());
    code.extend_from_slice(&(KERNEL_BASE + 0x80).to_le_bytes());
    code.resize(0x80, 0);
    code.extend_from_slice(b"hello\n");
    let ended = run_kernel(&code, Duration::from_secs(10));
    assert_eq!(ended.stop, VmStop::Exited { status: 42 });
    let mut console = lock(&ended.devices.console);
    assert_eq!(std::mem::take(&mut console.stdout).finish().bytes, b"hello\n");
    assert!(console.first_output.is_some());
}

#[test]
fn vmm_unknown_port_ends_the_run_with_its_number_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let ended = run_kernel(&[0x66, 0xba, 0x34, 0x12, 0xee, 0xeb, 0xfe], Duration::from_secs(10)); // out 0x1234, al
    match ended.stop {
        VmStop::UnhandledDevice { reason } => assert!(reason.contains("0x1234"), "{reason}"),
        other => panic!("expected an unhandled device access, got {other:?}"),
    }
}

#[test]
fn vmm_triple_fault_is_a_kernel_fault_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    // ud2 with no IDT: #UD, then #DF, then a triple fault.
    let ended = run_kernel(&[0x0f, 0x0b], Duration::from_secs(10));
    match &ended.stop {
        VmStop::KernelFault { reason } => assert!(reason.contains("triple fault"), "{reason}"),
        other => panic!("expected a triple fault, got {other:?}"),
    }
    assert_eq!(ended.exits.get("shutdown"), Some(&1));
}

#[test]
fn vmm_hlt_without_interrupts_ends_the_run_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let ended = run_kernel(&[0xf4], Duration::from_secs(10));
    match &ended.stop {
        VmStop::KernelFault { reason } => assert!(reason.contains("hlt"), "{reason}"),
        other => panic!("expected a halted kernel, got {other:?}"),
    }
}

#[test]
fn vmm_kernel_that_spins_is_stopped_at_the_deadline_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let started = Instant::now();
    let ended = run_kernel(JMP_SELF, Duration::from_millis(300));
    assert_eq!(ended.stop, VmStop::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

// ---- Resources: 100 VMs in one process ------------------------------------------------------

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

#[test]
fn vm_runs_100_times_in_one_process_without_leaks_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let vm = runtime::runtime(RuntimeKind::Vm);
    let spec = RunSpec::new(Program::workload("hello").unwrap(), Vec::new());
    // Warm up: lazily created state (host facts, CPUID cache, allocator arenas).
    for _ in 0..3 {
        assert_eq!(vm.run(&spec).unwrap().outcome, Outcome::Exited);
    }
    let (fds, tasks, rss) = (open_descriptors(), threads(), resident_bytes());
    for run in 0..100 {
        let record = vm.run(&spec).unwrap();
        assert!(record.succeeded(), "run {run}: {:?} {:?}", record.outcome, record.reason);
    }
    assert_eq!(open_descriptors(), fds, "file descriptors leaked");
    assert_eq!(threads(), tasks, "threads leaked");
    let growth = resident_bytes().saturating_sub(rss);
    assert!(growth < 8 << 20, "resident memory grew by {} KiB over 100 VMs", growth >> 10);
}

/// An idle VM sleeps in the VMM (port SLEEP): the elapsed time is right and the host's CPU
/// is not spent spinning (the guest kernel's old sleep burnt a whole core).
#[test]
fn an_idle_vm_sleeps_on_time_without_spinning_with_kvm() {
    let _one_at_a_time = one_at_a_time();
    if !require_kvm() {
        return;
    }
    let record = run_json_in("vm", &["idle", "1"]);
    assert_eq!(record["outcome"], "exited", "{record}");
    let late_ms = record["result"]["late_ms"].as_f64().unwrap();
    assert!((0.0..50.0).contains(&late_ms), "woke {late_ms} ms late: {record}");
    let cpu_ns = record["cpu"]["user_ns"].as_u64().unwrap() + record["cpu"]["system_ns"].as_u64().unwrap();
    assert!(cpu_ns < 300_000_000, "a 1 s sleep took {cpu_ns} ns of CPU: {record}");
}

//! The builtin guest kernel (guest/kernel), through the real binary: the identity it reports,
//! its system-call counters, error answers and fault reports (with tiny hand-assembled static
//! programs), and the PVH boot under QEMU. The workloads themselves run in tests/vm.rs.
//!
//! Tests named `*_with_kvm` need /dev/kvm; `pvh_*` needs qemu-system-x86_64 (TCG, no KVM).

mod common;

use std::process::Command;

use common::{require_kvm, run_json_in};

#[test]
fn vm_probe_sees_the_guest_kernel_not_the_host_with_kvm() {
    if !require_kvm() {
        return;
    }
    let result = &run_json_in("vm", &["probe"])["result"];
    assert_eq!(result["kernel_name"], cvm_guest_abi::KERNEL_NAME);
    assert_eq!(result["kernel_release"], cvm_guest_abi::KERNEL_RELEASE);
    assert_eq!(result["pid"], 1);
    assert_eq!(result["ppid"], 0);
    assert_eq!(result["uid"], 0);
    // No /proc in the guest: the probe must say "not visible", not guess.
    assert!(result["visible_processes"].is_null(), "{result}");
    assert!(result["mounts"].is_null(), "{result}");
}

#[test]
fn vm_counts_the_system_calls_it_served_with_kvm() {
    if !require_kvm() {
        return;
    }
    let record = run_json_in("vm", &["syscall", "300"]);
    let syscalls = &record["guest"]["syscalls"];
    assert!(syscalls["getppid"].as_u64().unwrap() >= 300, "{syscalls}");
    assert!(syscalls["write"].as_u64().unwrap() >= 1, "{syscalls}");
    assert_eq!(syscalls["exit_group"], 1, "{syscalls}");
    assert_eq!(syscalls["arch_prctl"], 1, "{syscalls}");
}

/// Machine code: `syscall(number, arg0, arg1, arg2)`, then exit with the negated result
/// (so an error answer becomes the exit status).
fn call_then_exit_with_errno(number: u32, arg0: u32, arg1: u32, arg2: u32) -> Vec<u8> {
    let mut code = Vec::new();
    for (opcode, value) in [(0xb8u8, number), (0xbf, arg0), (0xbe, arg1), (0xba, arg2)] {
        code.push(opcode); // mov r32, imm32 (eax, edi, esi, edx)
        code.extend_from_slice(&value.to_le_bytes());
    }
    code.extend_from_slice(&[0x0f, 0x05]); // syscall
    code.extend_from_slice(&[0xf7, 0xd8]); // neg eax
    code.extend_from_slice(&[0x89, 0xc7]); // mov edi, eax
    code.extend_from_slice(&[0xb8, 60, 0, 0, 0]); // mov eax, 60 (exit)
    code.extend_from_slice(&[0x0f, 0x05]);
    code
}

const EBADF: u64 = 9;
const EFAULT: u64 = 14;
const ENOSYS: u64 = 38;
const SIGILL: u64 = 4;

fn run_tiny(code: &[u8]) -> serde_json::Value {
    let program = common::tiny_program(code);
    run_json_in("vm", &["--binary", program.to_str().unwrap()])
}

#[test]
fn vm_answers_unknown_calls_with_enosys_and_counts_them_with_kvm() {
    if !require_kvm() {
        return;
    }
    let record = run_tiny(&call_then_exit_with_errno(400, 0, 0, 0));
    assert_eq!(record["exit_code"], ENOSYS, "{record}");
    let unsupported = record["guest"]["unsupported_syscalls"].as_object().unwrap();
    assert_eq!(unsupported.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 1, "{record}");
}

#[test]
fn vm_refuses_kernel_pointers_with_efault_with_kvm() {
    if !require_kvm() {
        return;
    }
    // write(1, 0x100000 (the kernel image), 4)
    let record = run_tiny(&call_then_exit_with_errno(1, 1, 0x10_0000, 4));
    assert_eq!(record["exit_code"], EFAULT, "{record}");

    // write(5, user address, 1): no such file
    let record = run_tiny(&call_then_exit_with_errno(1, 5, 0x40_0000, 1));
    assert_eq!(record["exit_code"], EBADF, "{record}");
}

#[test]
fn vm_reports_a_program_fault_as_its_signal_with_kvm() {
    if !require_kvm() {
        return;
    }
    let record = run_tiny(&[0x0f, 0x0b]); // ud2
    assert_eq!(record["exit_code"], 128 + SIGILL, "{record}");
    assert_eq!(record["outcome"], "guest_program_fault", "{record}");
}

fn qemu_available() -> bool {
    common::debian_package("qemu-system-x86", || common::command_runs("qemu-system-x86_64", "-version"))
}

#[test]
fn pvh_boot_under_qemu_runs_the_workload() {
    if !qemu_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("cvm-guest-kernel");
    let program = dir.path().join("cvm-workload");
    std::fs::write(&kernel, cvm::embedded::GUEST_KERNEL_ELF).unwrap();
    std::fs::write(&program, cvm::embedded::WORKLOAD_ELF).unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-M", "q35", "-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel)
        .arg("-initrd")
        .arg(&program)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-append", "probe"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // isa-debug-exit: QEMU exits with (value << 1) | 1, the value being the program's status
    // + 1 (so QEMU's own failure, 1, is never a program's): the program's 0 becomes 3.
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("kernel:     cvm-guest"), "{stdout}");
    assert!(stdout.contains("CVM-RESULT {\"workload\":\"probe\""), "{stdout}");
}

/// `--protect-guest-kernel`: every system call enters through the page fault, the program
/// still runs, and a read of guest-kernel memory is SIGSEGV. Without it, on a PVM host, the
/// record says the kernel was open (and the read succeeds there).
#[test]
fn a_protected_guest_kernel_is_closed_to_the_program_with_kvm() {
    if !require_kvm() {
        return;
    }
    let Some(peek) = common::c_program("peek_kernel") else { return };
    let peek = peek.to_str().unwrap();
    let protected = run_json_in("vm", &["--protect-guest-kernel", "--binary", peek]);
    assert_eq!(protected["outcome"], "guest_program_fault", "{protected}");
    assert_eq!(protected["signal"], 11, "{protected}");
    assert_eq!(protected["stdout"], "reading the kernel\n");
    assert_eq!(protected["guest"]["kernel_open_to_program"], false);
    let hello = run_json_in("vm", &["--protect-guest-kernel", "syscall", "100"]);
    assert_eq!(hello["outcome"], "exited", "{hello}");
    assert!(hello["guest"]["syscalls"]["getppid"].as_u64().unwrap() >= 100, "{hello}");

    let default = run_json_in("vm", &["--binary", peek]);
    if default["guest"]["kernel_open_to_program"] == true {
        assert_eq!(default["outcome"], "exited", "the PVM opening lets the program read it: {default}");
    } else {
        assert_eq!(default["signal"], 11, "{default}");
    }
}

/// The boot system call (guest ABI BOOT_SYSCALL) starts the kernel once, before the program:
/// the program making it gets ENOSYS, whether vCPU 0 booted through it (the kernel open to
/// ring 3, this host's default) or at CPL0 (protected).
#[test]
fn a_program_cannot_make_the_boot_system_call_with_kvm() {
    if !require_kvm() {
        return;
    }
    let Some(program) = common::c_program("boot_call") else { return };
    let program = program.to_str().unwrap();
    for extra in [&[][..], &["--protect-guest-kernel"][..]] {
        let args: Vec<&str> = extra.iter().copied().chain(["--binary", program]).collect();
        let record = run_json_in("vm", &args);
        assert_eq!(record["outcome"], "exited", "{extra:?}: {record}");
        assert_eq!(record["stdout"], "boot call ENOSYS\nboot call ENOSYS\n", "{extra:?}: {record}");
    }
}

/// Memory beyond guest RAM (tests/programs/high_memory.c): vCPUs racing to back the same
/// page, frames and page tables reused across map/unmap rounds, an honest out-of-memory end,
/// and SIGPIPE from a pipe nobody reads.
#[test]
fn memory_beyond_guest_ram_is_backed_reused_and_runs_out_honestly_with_kvm() {
    if !require_kvm() {
        return;
    }
    let Some(program) = common::c_program("high_memory") else { return };
    let program = program.to_str().unwrap();
    let race = run_json_in("vm", &["--cpus", "4", "--binary", program, "race"]);
    assert_eq!(race["stdout"], "sum 252\n", "{race}");
    let churn = run_json_in("vm", &["--timeout", "60", "--binary", program, "churn"]);
    assert_eq!(churn["stdout"], "6 rounds\n", "{churn}");
    let oom = run_json_in("vm", &["--binary", program, "oom"]);
    assert_eq!(oom["outcome"], "oom_killed", "{oom}");
    assert_eq!(oom["exit_code"], 137, "{oom}");
    assert!(oom["reason"].as_str().unwrap().contains("--memory"), "{oom}");
    let pipe = run_json_in("vm", &["--binary", program, "pipe"]);
    assert_eq!(pipe["outcome"], "signaled", "{pipe}");
    assert_eq!(pipe["signal"], 13, "{pipe}");
}

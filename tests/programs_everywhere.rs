//! Programs nobody wrote for cvm's guest kernel, run the same way in every runtime: a Go program
//! (tests/programs/go: goroutines, channels, timers, os/signal, a fault recovered), C programs
//! using musl's pthreads (tests/programs/threads.c: mutex, condition variable, sleeps, a
//! spinning thread that must be preempted) and signals (tests/programs/signals.c: handlers,
//! masks, faults caught, an alternate stack, abort), page protections where the guest kernel's
//! page tables change shape (tests/programs/protections.c), and the workload's Rust std::thread
//! `cpu N T`. Each must print the same as a plain process does, in a container, and in the VM
//! with 1 vCPU (every thread on one CPU: only preemption lets the spinner's victim run) and 4.

mod common;

use common::{c_program, go_program, require_kvm, require_root, run_json_in};

/// Where each program runs: runtime and extra flags.
const PLACES: [(&str, &[&str]); 4] =
    [("process", &[]), ("container", &[]), ("vm", &["--cpus", "1"]), ("vm", &["--cpus", "4"])];

fn run_everywhere(program: &[&str]) -> Vec<(String, serde_json::Value)> {
    PLACES
        .iter()
        .map(|(runtime, flags)| {
            let mut args = vec!["--timeout", "60"];
            args.extend_from_slice(flags);
            args.extend_from_slice(program);
            let record = run_json_in(runtime, &args);
            (format!("{runtime} {}", flags.join(" ")), record)
        })
        .collect()
}

#[test]
fn c_pthreads_print_the_same_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(threads) = c_program("threads") else { return };
    let path = threads.to_str().unwrap();
    let runs = run_everywhere(&["--binary", path, "3"]);
    let expected = "mutex: 3 threads added 60000\ncondvar: 2000 items handed over, sum 2001000\n\
                    sleep: 20 ms took at least 20 ms: yes\n\
                    preemption: a spinning thread let the main thread stop it\n\
                    mprotect: the writing thread faulted (1) and wrote 0 times after\n";
    for (place, record) in &runs {
        assert_eq!(record["outcome"], "exited", "{place}: {record}");
        assert_eq!(record["exit_code"], 0, "{place}: {record}");
        assert_eq!(record["stdout"], expected, "{place}");
    }
}

#[test]
fn page_protections_print_the_same_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(protections) = c_program("protections") else { return };
    let runs = run_everywhere(&["--binary", protections.to_str().unwrap()]);
    let (_, process) = &runs[0];
    let expected = process["stdout"].as_str().unwrap();
    assert!(expected.contains("one page read-only: r-\n") && expected.contains("an unmapped page: --\n"), "{expected}");
    assert!(!expected.contains("changed"), "{expected}");
    for (place, record) in &runs {
        assert_eq!(record["outcome"], "exited", "{place}: {record}");
        assert_eq!(record["stdout"], expected, "{place}");
    }
}

#[test]
fn rust_threads_compute_the_same_checksum_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let runs = run_everywhere(&["cpu", "20000", "3"]);
    let (_, first) = &runs[0];
    let checksum = &first["result"]["checksum"];
    assert!(checksum.is_string(), "{first}");
    for (place, record) in &runs {
        assert_eq!(record["outcome"], "exited", "{place}: {record}");
        assert_eq!(record["result"]["threads"], 3, "{place}");
        assert_eq!(record["result"]["iterations"], 60000, "{place}");
        assert_eq!(&record["result"]["checksum"], checksum, "{place}");
    }
}

#[test]
fn a_vm_has_whole_vcpus() {
    for (cpus, expected) in [("0", "positive"), ("1.5", "whole vCPUs"), ("9", "from 1 to 8")] {
        let out = common::run_cvm(&["run", "--runtime", "vm", "--cpus", cpus, "hello"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "--cpus {cpus}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn signal_handlers_run_the_same_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(signals) = c_program("signals") else { return };
    let runs = run_everywhere(&["--binary", signals.to_str().unwrap()]);
    let expected = "raise: handler ran for signal 10, si_code SI_TKILL\n\
                    mask: blocked signal waited (0, pending 1), ran when unblocked (10)\n\
                    segv: caught signal 11 at address 0\n\
                    fpe: caught signal 8\n\
                    ill: caught signal 4\n\
                    read-only page: write caught (signal 11, SEGV_ACCERR, at the page: yes), still reads 42\n\
                    unmapped page: touch caught (signal 11, SEGV_MAPERR)\n\
                    PROT_NONE reservation: touch caught (signal 11), usable after mprotect: yes\n\
                    sigaltstack: handler ran on the alternate stack: yes\n";
    for (place, record) in &runs {
        assert_eq!(record["outcome"], "exited", "{place}: {record}");
        assert_eq!(record["stdout"], expected, "{place}");
    }
}

/// A signal's default action ends the program: killed by that signal, exit status 128 + signal,
/// as a process, and in the VM (whose program is alone, with nobody to protect it from). In a
/// container the program is PID 1 of its PID namespace, and Linux ignores a signal without a
/// handler that init sends itself: `kill(getpid(), SIGTERM)` does nothing, and abort(), after
/// its SIGABRT is ignored, crashes on purpose (musl: SIGSEGV). That is why containers want an
/// init (`docker run --init`); the record shows it.
#[test]
fn abort_and_kill_end_the_program_signaled_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(signals) = c_program("signals") else { return };
    for (mode, signal) in [("abort", 6), ("term", 15)] {
        for (place, record) in run_everywhere(&["--binary", signals.to_str().unwrap(), mode]) {
            match (place.starts_with("container"), mode) {
                (true, "abort") => assert_eq!(record["signal"], 11, "{place}: {record}"),
                (true, _) => {
                    assert_eq!(record["outcome"], "exited", "{place}: {record}");
                    assert_eq!(record["stdout"], "terminating\nstill here\n", "{place}: {record}");
                }
                (false, _) => {
                    assert_eq!(record["outcome"], "signaled", "{mode} {place}: {record}");
                    assert_eq!(record["signal"], signal, "{mode} {place}: {record}");
                    assert_eq!(record["exit_code"], 128 + signal, "{mode} {place}: {record}");
                }
            }
        }
    }
}

/// Threads and signals together (tests/programs/thread_signals.c): the cases a hostile probe
/// found the first SMP kernel getting wrong, and a fault with the direction flag set.
#[test]
fn threads_and_signals_together_behave_the_same_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(program) = c_program("thread_signals") else { return };
    let path = program.to_str().unwrap();
    let expected = "a thread created while its creator spins runs\n\
                    a thread spinning elsewhere got its signal\n\
                    nanosleep cut short: EINTR yes, about 1.8 s left: yes\n\
                    kill(getpid()) from a thread that blocks it reached main: yes\n\
                    sigsuspend: -1, handler ran: yes, mask back: yes\n\
                    pause returned after the handler: yes\n";
    for (place, record) in run_everywhere(&["--binary", path]) {
        assert_eq!(record["outcome"], "exited", "{place}: {record}");
        assert_eq!(record["stdout"], expected, "{place}");
    }
    for (place, record) in run_everywhere(&["--binary", path, "std"]) {
        assert_eq!(record["exit_code"], 5, "{place}: {record}");
        assert_eq!(record["stdout"], "handler ran with DF set by the program\n", "{place}");
    }
}

/// Go's runtime: several threads, its network poller (epoll and a pipe) for timers, signals for
/// preemption and os/signal, hundreds of MiB of address space reserved up front (beyond the
/// VM's RAM: the guest kernel backs only the pages touched), and a fault turned into a panic.
#[test]
fn a_go_program_prints_the_same_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(program) = go_program() else { return };
    let expected = "mutex: 8 goroutines added 36000\n\
                    channel: received sum 5050\n\
                    sleep: 20 ms took at least 20 ms: true\n\
                    signal: received user defined signal 1\n\
                    read-only page: write caught: true still reads 42\n\
                    threads: GOMAXPROCS is at least 1: true\n";
    for (place, record) in run_everywhere(&["--binary", program.to_str().unwrap()]) {
        assert_eq!(record["outcome"], "exited", "{place}: {record}");
        assert_eq!(record["stdout"], expected, "{place}: {record}");
    }
}

/// The workload's `threads` (Rust std and libc, built for x86_64-unknown-linux-musl): Mutex,
/// Condvar, a sleep, a signal handler, and a write to a read-only page a SIGSEGV handler lets
/// through by making it writable and returning (the write runs again after rt_sigreturn).
#[test]
fn rust_threads_and_signals_work_the_same_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let runs = run_everywhere(&["threads"]);
    let (_, first) = &runs[0];
    for (place, record) in &runs {
        assert_eq!(record["outcome"], "exited", "{place}: {record}");
        assert_eq!(record["result"]["ok"], "yes", "{place}: {record}");
        assert_eq!(record["stdout"], first["stdout"], "{place}");
    }
}

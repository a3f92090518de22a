//! The baseline: the program as a plain child process of cvm, sharing everything with the host.

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};

use super::spawn;
use super::supervise::{pipe, supervise, KillScope, Watched};
use super::{taskstats, RunClock, RunSpec, Runtime, SeccompProfile};
use crate::own_usage;
use crate::record::{OwnMemory, RunRecord, RuntimeKind};

pub struct ProcessRuntime;

impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn check_available(&self) -> Result<()> {
        Ok(())
    }

    fn run(&self, spec: &RunSpec) -> Result<RunRecord> {
        let taskstats = taskstats::ensure_listening();
        if !taskstats {
            // The fallback reads ru_maxrss, into which vfork folds cvm's own high-water mark:
            // start that mark afresh, so earlier work (a VM's guest RAM) does not count.
            own_usage::reset_peak_rss();
        }
        let own_before = own_usage::resident();
        let clock = RunClock::for_spec(spec);
        let narrator = &spec.narrator;
        let path = spec.program.host_path()?;
        let args = spec.program_args();
        let mut notes = ignored_limits(spec);
        let (stdout, stdout_for_child) = pipe()?;
        let (stderr, stderr_for_child) = pipe()?;
        let stdin = std::fs::File::open("/dev/null").context("opening /dev/null")?;
        narrator.step(|| {
            format!(
                "process: start {} {} as a plain child process (clone with CLONE_VM|CLONE_VFORK, then execve, \
                 as posix_spawn does) in a process group of its own, tied to cvm's life by a parent-death \
                 signal, with stdin from /dev/null, stdout and stderr through pipes and no other inherited \
                 descriptor. It shares everything else with cvm: the host kernel, the pid numbering, the host \
                 name, the file system, the network and all capabilities. This is the baseline the other \
                 runtimes are compared with.",
                path.display(),
                args.join(" ")
            )
        });
        let setup = clock.now_ns();
        let stdio = spawn::Stdio {
            stdin: stdin.as_raw_fd(),
            stdout: stdout_for_child.as_raw_fd(),
            stderr: stderr_for_child.as_raw_fd(),
        };
        let child = spawn::spawn(&path, &args, stdio)?;
        drop((stdout_for_child, stderr_for_child, stdin));
        let pid = child.pid;
        let deadline = clock.started_at() + spec.timeout;
        let done = supervise(Watched {
            pid,
            pidfd: &child.pidfd,
            stdout,
            stderr,
            kill: KillScope::ProcessGroup,
            deadline,
            echo: spec.echo_output,
        })?;
        narrator.step(|| {
            format!(
                "process: the program ended ({}); cvm collected its exit status and resource usage with wait4.",
                done.describe_end()
            )
        });

        // cvm's own memory as the launcher, read while it still holds the program's output.
        let own = own_usage::resident();
        let teardown = clock.now_ns();
        let mut record = RunRecord::new(RuntimeKind::Process, "host", &spec.program.label(), &spec.args);
        record.set_output(&done.stdout, &done.stderr);
        record.notes.append(&mut notes);
        record.exit_code = done.exit_code();
        record.signal = done.signal;
        record.outcome = done.outcome();
        record.reason = done.reason(spec.timeout);
        record.phases_ns.setup = setup;
        record.phases_ns.boot = setup;
        record.phases_ns.first_output = done.first_output.map(|t| clock.since(t));
        record.phases_ns.exit = clock.since(done.exited_at);
        record.phases_ns.teardown = teardown;
        // The kernel's exit record of the program has its own peak; without it (not root),
        // ru_maxrss, which vfork mixes with cvm's own.
        record.memory.peak_rss_bytes = match taskstats.then(|| taskstats::peak_rss_of(pid)).flatten() {
            Some(peak) => Some(peak),
            None => program_peak_rss(done.peak_rss_bytes(), own_usage::peak_rss_bytes(), &mut record.notes),
        };
        record.memory.program_peak_rss_bytes = record.memory.peak_rss_bytes;
        record.memory.set_runtime_own(OwnMemory { before: own_before, after: own }, 0, 0);
        record.cpu.user_ns = done.user_ns();
        record.cpu.system_ns = done.system_ns();
        record.phases_ns.total = teardown;
        Ok(record)
    }
}

/// A plain process has no limits: say so instead of ignoring `--memory`, `--cpus`, `--pids`.
fn ignored_limits(spec: &RunSpec) -> Vec<String> {
    let given: Vec<&str> =
        [spec.memory_bytes.map(|_| "--memory"), spec.cpus.map(|_| "--cpus"), spec.pids.map(|_| "--pids")]
            .into_iter()
            .flatten()
            .collect();
    let mut notes = Vec::new();
    if !given.is_empty() {
        notes.push(format!(
            "{} not applied: the process runtime is the unconfined baseline (no cgroup); use --runtime container",
            given.join(", ")
        ));
    }
    if spec.seccomp != SeccompProfile::Default {
        notes.push("--seccomp applies to the container runtime: a plain process has no filter".into());
    }
    notes
}

/// The program's own peak RSS when `ru_maxrss` shows it above cvm's; otherwise it is hidden
/// under cvm's own high-water mark, and the record says so instead of reporting cvm's memory.
fn program_peak_rss(ru_maxrss: u64, launcher_peak: Option<u64>, notes: &mut Vec<String>) -> Option<u64> {
    match launcher_peak {
        Some(launcher) if ru_maxrss <= launcher => {
            notes.push(format!(
                "peak RSS not measured: the program stayed below cvm's own {} KiB, which Linux's ru_maxrss \
                 cannot tell apart when the child is started with vfork",
                launcher / 1024
            ));
            None
        }
        _ => Some(ru_maxrss),
    }
}

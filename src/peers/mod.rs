//! The industry's tools beside cvm's runtimes, behind the same [`Runtime`] interface: runc and
//! crun run an OCI bundle of the same one-layer image, `unshare(1)` starts the program in the
//! container's namespaces and nothing else (the floor under any container), QEMU boots cvm's
//! builtin guest kernel with the same program (VMM against VMM on one guest). Every peer run
//! is one whole command, spawned and timed from outside (`whole_command.rs`); in the peer view
//! cvm's own runtimes are measured the same way (`own.rs`: `cvm run --json` as a command).
//! A peer missing from PATH, or one that refuses this host, is unavailable with its reason.

pub mod bundle;
pub mod own;
pub mod whole_command;

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

use crate::program::Program;
use crate::record::{Outcome, RunRecord, RuntimeKind};
use crate::runtime::{KernelChoice, RunSpec, Runtime};
use whole_command::find_on_path;

/// A peer runtime: the tool's program and how cvm drives it.
pub struct PeerRuntime {
    kind: RuntimeKind,
}

impl PeerRuntime {
    pub fn new(kind: RuntimeKind) -> PeerRuntime {
        assert!(kind.is_peer(), "{kind} is one of cvm's own runtimes");
        PeerRuntime { kind }
    }

    /// The program the peer's command starts.
    fn program_name(&self) -> &'static str {
        match self.kind {
            RuntimeKind::Qemu => "qemu-system-x86_64",
            other => other.name(),
        }
    }

    fn program(&self) -> Result<PathBuf> {
        find_on_path(self.program_name())
            .ok_or_else(|| anyhow!("{} is not installed (not on PATH)", self.program_name()))
    }

    /// The whole command for one run, and a container name for runc and crun.
    fn command(&self, spec: &RunSpec) -> Result<(Vec<String>, Option<String>)> {
        let tool = self.program()?.display().to_string();
        if matches!(spec.program, Program::Image(_)) {
            bail!("--image runs in cvm's container runtime only; the peers run a workload or --binary");
        }
        let text = |path: PathBuf| path.display().to_string();
        Ok(match self.kind {
            RuntimeKind::Runc | RuntimeKind::Crun => {
                let bundle = bundle::prepare(spec)?;
                let name = container_name();
                let argv = vec![tool, "run".into(), "--bundle".into(), text(bundle), name.clone()];
                (argv, Some(name))
            }
            RuntimeKind::Unshare => {
                // pid, mount, uts, ipc, network and cgroup: the namespaces of cvm's container.
                let mut argv = vec![tool, "--pid".into(), "--mount".into(), "--uts".into(), "--ipc".into()];
                argv.extend(["--net".into(), "--cgroup".into(), "--fork".into(), "--kill-child".into()]);
                if !is_root() {
                    argv.push("--map-root-user".into());
                }
                argv.push(text(spec.program.host_path()?));
                argv.extend(spec.program_args());
                (argv, None)
            }
            RuntimeKind::Qemu => (qemu_command(tool, spec)?, None),
            own => bail!("{own} is not a peer"),
        })
    }
}

/// The availability trial's own time limit (one `hello`).
const TRIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// runc and crun name every container: unique per cvm process and run.
fn container_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("cvm-peer-{}-{n}", std::process::id())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The host's TSC rate (a KVM guest's TSC runs at it), measured once per cvm process against
/// the monotonic clock over 5 ms.
fn host_tsc_khz() -> u64 {
    static KHZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        // SAFETY: rdtsc has no preconditions on x86-64.
        let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
        let (start, ticks_start) = (std::time::Instant::now(), tsc());
        while start.elapsed() < std::time::Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        let (elapsed, ticks) = (start.elapsed(), tsc() - ticks_start);
        (ticks as u128 * 1_000_000 / elapsed.as_nanos().max(1)) as u64
    })
}

/// argv[0] and the program's words the PVH entry takes (its MAX_ARGS, 32, less room for the
/// kernel's own words).
const QEMU_MAX_ARGS: usize = 30;

/// Guest RAM QEMU gets when no `--memory` is given: cvm's VM default.
const QEMU_DEFAULT_RAM_MIB: u64 = 64;

/// QEMU's microvm with KVM, cvm's builtin guest kernel booted through PVH, the program as the
/// initrd and its arguments as the kernel command line; the guest ends QEMU through
/// isa-debug-exit. `-cpu qemu64`: `-cpu host` aborts on an MSR on nested hosts.
fn qemu_command(tool: String, spec: &RunSpec) -> Result<Vec<String>> {
    if spec.kernel != KernelChoice::Builtin {
        bail!("the qemu peer boots cvm's builtin guest kernel only (VMM against VMM on the same guest)");
    }
    let mut words = Vec::new();
    if !crate::vmm::builder::hardware_virtualization() {
        // The guest kernel's PVH entry cannot tell it runs on PVM; cvm's VMM tells it in
        // BootInfo, here the command line does.
        words.push("cvm.syscall_may_fault".to_string());
    }
    // The guest's clock: under QEMU's microvm it cannot calibrate its TSC itself here.
    words.push(format!("cvm.tsc_khz={}", host_tsc_khz()));
    let argv = crate::runtime::vm::guest_argv(spec);
    if argv.len() > QEMU_MAX_ARGS {
        bail!("qemu passes the program's arguments on the kernel command line, where cvm's guest kernel takes at most {} of them", QEMU_MAX_ARGS - 1);
    }
    for (index, arg) in argv.iter().enumerate() {
        if index > 0 && arg.starts_with("cvm.") {
            bail!("qemu passes the program's arguments on the kernel command line, where {arg:?} would be taken as an option of cvm's guest kernel");
        }
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            bail!("qemu passes the program's arguments on the kernel command line: {arg:?} cannot be one word there");
        }
        // argv[0] as cvm's VMM gives it, so a multi-call program (busybox) behaves the same.
        words.push(if index == 0 { format!("cvm.argv0={arg}") } else { arg.clone() });
    }
    let ram_mib = match spec.memory_bytes {
        // The same bounds as cvm's own VM.
        Some(bytes) => crate::vmm::layout::ram_size(Some(bytes))? >> 20,
        None => QEMU_DEFAULT_RAM_MIB,
    };
    let kernel = crate::embedded::guest_kernel_path()?;
    let program = spec.program.host_path()?;
    let mut argv = vec![tool];
    argv.extend(["-accel", "kvm", "-M", "microvm,pic=on,pit=on,rtc=on", "-cpu", "qemu64", "-m"].map(String::from));
    argv.push(format!("{ram_mib}M"));
    argv.extend(["-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-kernel"].map(String::from));
    argv.push(kernel.display().to_string());
    argv.push("-initrd".into());
    argv.push(program.display().to_string());
    argv.extend(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-append"].map(String::from));
    argv.push(words.join(" "));
    Ok(argv)
}

impl Runtime for PeerRuntime {
    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// On PATH, and one hello of the workload runs: a tool that refuses this host (crun on
    /// hybrid cgroups, say) is unavailable with its own words. Checked once per cvm process.
    fn check_available(&self) -> Result<()> {
        static CHECKED: Mutex<Vec<(RuntimeKind, std::result::Result<(), String>)>> = Mutex::new(Vec::new());
        let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, verdict)) = checked.iter().find(|(kind, _)| *kind == self.kind) {
            return verdict.clone().map_err(|e| anyhow!(e));
        }
        let verdict = self.trial().map_err(|e| format!("{e:#}"));
        checked.push((self.kind, verdict.clone()));
        verdict.map_err(|e| anyhow!(e))
    }

    fn run(&self, spec: &RunSpec) -> Result<RunRecord> {
        let (argv, container) = self.command(spec)?;
        let finished = whole_command::run(&argv, spec, whole_command::KillScope::ProcessGroup, spec.timeout);
        let kernel = if self.kind == RuntimeKind::Qemu { "builtin" } else { "host" };
        let finished = match finished {
            Ok(finished) => finished,
            Err(error) => {
                let _ = self.remove_container(container.as_deref());
                return Err(error);
            }
        };
        let mut record = whole_command::peer_record(self.kind, kernel, spec, finished);
        if !record.succeeded() {
            // Killed at the deadline or on Ctrl-C, runc may leave its container behind.
            if let Some(trouble) = self.remove_container(container.as_deref()) {
                record.notes.push(trouble);
            }
        }
        if self.kind == RuntimeKind::Qemu {
            decode_qemu_exit(&mut record)?;
        }
        record.notes.push(self.note().into());
        record.notes.extend(ignored_options(self.kind, spec));
        Ok(record)
    }
}

impl PeerRuntime {
    fn trial(&self) -> Result<()> {
        let tool = self.program()?;
        if self.kind == RuntimeKind::Qemu {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .context("qemu needs /dev/kvm, which cvm cannot open")?;
        }
        let mut spec = RunSpec::new(Program::workload("hello")?, Vec::new());
        spec.timeout = TRIAL_TIMEOUT;
        let record = self.run(&spec).with_context(|| format!("{} refuses to run here", tool.display()))?;
        if record.outcome == Outcome::Interrupted {
            return Ok(()); // Ctrl-C: the run that follows stops at once and says so
        }
        // It must have run the program: exit 0 and hello's own result line.
        let ran_hello = record.result.as_ref().and_then(|r| r.get("workload")).is_some_and(|w| w == "hello");
        if !record.succeeded() || !ran_hello {
            let why = match whole_command::last_line(&record.stderr) {
                Some(line) if !record.succeeded() => line.to_string(),
                _ if record.succeeded() => "it exited 0 without running the program (no hello result)".to_string(),
                _ => crate::stats::cell::describe_failure(&record),
            };
            bail!("{} refuses to run here: {why}", tool.display());
        }
        Ok(())
    }

    /// `runc delete --force NAME` (crun's the same), bounded in time; what went wrong, if
    /// anything did.
    fn remove_container(&self, name: Option<&str>) -> Option<String> {
        let (Some(name), Ok(tool)) = (name, self.program()) else { return None };
        match whole_command::run_briefly(&tool, &["delete", "--force", name], whole_command::HELPER_LIMIT) {
            Some((0, _)) => None,
            Some((status, _)) => Some(format!(
                "`{} delete --force {name}` after the run ended with status {status}: the container may be left \
                 behind (`{} list`)",
                self.program_name(),
                self.program_name()
            )),
            None => Some(format!(
                "`{} delete --force {name}` did not finish in time and was killed: the container may be left \
                 behind (`{} list`)",
                self.program_name(),
                self.program_name()
            )),
        }
    }

    /// What the record measures, for a reader of the JSON.
    fn note(&self) -> &'static str {
        match self.kind {
            RuntimeKind::Runc | RuntimeKind::Crun => {
                "whole command `run --bundle`: the bundle (config.json as `runc spec` writes it, so no seccomp filter \
                 and no resource limits; a read-only root file system of the same one-layer image) is made once and \
                 not timed; cvm's container gets a fresh writable layer per run"
            }
            RuntimeKind::Unshare => {
                "whole command: unshare(1) with the container's namespaces and nothing else (no cgroup, image, \
                 seccomp filter or capability drop): the floor under any container"
            }
            RuntimeKind::Qemu => {
                "whole command: QEMU microvm with KVM booting cvm's builtin guest kernel (PVH) with the program as \
                 the initrd, one vCPU; the program's stdout and stderr both arrive on the serial line (as stdout, \
                 with CRLF line ends), and its exit status through isa-debug-exit (126 or more, a signal included, \
                 is 126)"
            }
            _ => "",
        }
    }
}

/// The run's options a peer does not apply, said instead of ignored: the bundle runc and crun
/// run sets no limits, unshare has none, and QEMU runs one vCPU with its own kernel.
fn ignored_options(kind: RuntimeKind, spec: &RunSpec) -> Option<String> {
    let qemu = kind == RuntimeKind::Qemu;
    let given: Vec<&str> = [
        (spec.memory_bytes.is_some() && !qemu).then_some("--memory"),
        spec.cpus.is_some().then_some("--cpus"),
        spec.pids.is_some().then_some("--pids"),
        (spec.seccomp != crate::runtime::SeccompProfile::Default).then_some("--seccomp"),
        (spec.kernel != KernelChoice::Builtin && !qemu).then_some("--kernel"),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!given.is_empty()).then(|| {
        format!(
            "{} not applied: the peer {kind} runs with its own defaults (these are cvm's options)",
            given.join(", ")
        )
    })
}

/// isa-debug-exit makes QEMU exit with `(value << 1) | 1`, the guest writing the program's
/// status + 1 (`exit_port_value` in the guest kernel). Any other exit is QEMU's own failure:
/// the runtime could not do its job, said with its last line.
fn decode_qemu_exit(record: &mut RunRecord) -> Result<()> {
    if record.outcome != Outcome::Exited {
        return Ok(()); // timed out, interrupted, or QEMU killed by a signal: as recorded
    }
    let status = record.exit_code;
    if status & 1 == 0 || status < 3 {
        let why = whole_command::last_line(&record.stderr)
            .or_else(|| whole_command::last_line(&record.stdout))
            .unwrap_or("no message");
        bail!("qemu failed (exit status {status}): {why}");
    }
    match (status >> 1) - 1 {
        126 => {
            record.exit_code = 126;
            record.notes.push(
                "the program ended with status 126 or more, or was killed by a signal: isa-debug-exit \
                 cannot tell which"
                    .into(),
            );
        }
        program => record.exit_code = program,
    }
    Ok(())
}

/// A peer's version line for `cvm doctor` and the report, or why it is missing.
pub fn describe(kind: RuntimeKind) -> std::result::Result<String, String> {
    let runtime = PeerRuntime::new(kind);
    let tool = runtime.program().map_err(|e| e.to_string())?;
    let flag = if kind == RuntimeKind::Qemu { "-version" } else { "--version" };
    let version = whole_command::version_line(&tool, flag).unwrap_or_else(|| "version unknown".into());
    Ok(format!("{} ({version})", tool.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_exit_status_is_the_guest_value_and_qemus_own_failure_is_an_error() {
        let decoded = |status: i32| {
            let mut record = RunRecord::new(RuntimeKind::Qemu, "builtin", "hello", &[]);
            record.exit_code = status;
            decode_qemu_exit(&mut record).map(|()| record.exit_code)
        };
        assert_eq!(decoded(3).unwrap(), 0);
        assert_eq!(decoded(5).unwrap(), 1);
        assert_eq!(decoded(255).unwrap(), 126);
        assert!(decoded(1).is_err(), "QEMU's own exit 1");
        assert!(decoded(0).is_err());
        assert!(decoded(2).is_err());
    }

    #[test]
    fn every_peer_parses_by_name() {
        for kind in RuntimeKind::PEERS {
            assert_eq!(kind.name().parse::<RuntimeKind>().unwrap(), kind);
            assert!(kind.is_peer());
        }
        assert!(!RuntimeKind::Vm.is_peer());
    }
}

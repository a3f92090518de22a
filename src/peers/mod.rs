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
    let argv = crate::runtime::vm::guest_argv(spec);
    for (index, arg) in argv.iter().enumerate() {
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            bail!("qemu passes the program's arguments on the kernel command line: {arg:?} cannot be one word there");
        }
        // argv[0] as cvm's VMM gives it, so a multi-call program (busybox) behaves the same.
        words.push(if index == 0 { format!("cvm.argv0={arg}") } else { arg.clone() });
    }
    let ram_mib = spec.memory_bytes.map_or(QEMU_DEFAULT_RAM_MIB, |bytes| bytes.div_ceil(1 << 20));
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
        let finished = whole_command::run(&argv, spec);
        let kernel = if self.kind == RuntimeKind::Qemu { "builtin" } else { "host" };
        let finished = match finished {
            Ok(finished) => finished,
            Err(error) => {
                self.remove_container(container.as_deref());
                return Err(error);
            }
        };
        let mut record = whole_command::peer_record(self.kind, kernel, spec, finished);
        if !record.succeeded() {
            // Killed at the deadline or on Ctrl-C, runc may leave its container behind.
            self.remove_container(container.as_deref());
        }
        if self.kind == RuntimeKind::Qemu {
            decode_qemu_exit(&mut record);
        }
        record.notes.push(self.note().into());
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
        spec.timeout = std::time::Duration::from_secs(20);
        let record = self.run(&spec)?;
        if !record.succeeded() {
            let why = match whole_command::last_line(&record.stderr) {
                Some(line) => line.to_string(),
                None => crate::stats::cell::describe_failure(&record),
            };
            bail!("{} refuses to run here: {why}", tool.display());
        }
        Ok(())
    }

    fn remove_container(&self, name: Option<&str>) {
        let (Some(name), Ok(tool)) = (name, self.program()) else { return };
        let _ = std::process::Command::new(tool)
            .args(["delete", "--force", name])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// What the record measures, for a reader of the JSON.
    fn note(&self) -> &'static str {
        match self.kind {
            RuntimeKind::Runc | RuntimeKind::Crun => {
                "whole command `run --bundle`: the bundle (config.json, a read-only root file system of the same \
                 one-layer image) is made once and not timed; cvm's container gets a fresh writable layer per run"
            }
            RuntimeKind::Unshare => {
                "whole command: unshare(1) with the container's namespaces and nothing else (no cgroup, image, \
                 seccomp filter or capability drop): the floor under any container"
            }
            RuntimeKind::Qemu => {
                "whole command: QEMU microvm with KVM booting cvm's builtin guest kernel (PVH) with the program as \
                 the initrd; the exit status comes through isa-debug-exit, so it is the guest's value modulo 128"
            }
            _ => "",
        }
    }
}

/// isa-debug-exit makes QEMU exit with `(value << 1) | 1`: back to the guest's value.
fn decode_qemu_exit(record: &mut RunRecord) {
    if record.outcome == Outcome::Exited && record.exit_code & 1 == 1 {
        record.exit_code >>= 1;
    }
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
    fn qemu_exit_status_is_the_guest_value() {
        let mut record = RunRecord::new(RuntimeKind::Qemu, "builtin", "hello", &[]);
        record.exit_code = 1;
        decode_qemu_exit(&mut record);
        assert_eq!(record.exit_code, 0);
        record.exit_code = 7;
        decode_qemu_exit(&mut record);
        assert_eq!(record.exit_code, 3);
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

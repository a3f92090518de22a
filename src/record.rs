//! The run record: what every runtime returns for one run of one program, and what every
//! later layer (statistics, export, plots, reports, labs) consumes. Versioned by `schema`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::host::HostInfo;
use crate::runtime::capture::{Captured, KEEP_EACH};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Process,
    Container,
    Vm,
    /// Peer: `runc run` of an OCI bundle made from the same image.
    Runc,
    /// Peer: `crun run` of the same bundle.
    Crun,
    /// Peer: `unshare(1)` with the container's namespaces and nothing else (the floor).
    Unshare,
    /// Peer: QEMU (microvm, KVM) booting cvm's builtin guest kernel with the same program.
    Qemu,
}

impl RuntimeKind {
    /// cvm's own three runtimes.
    pub const ALL: [RuntimeKind; 3] = [RuntimeKind::Process, RuntimeKind::Container, RuntimeKind::Vm];
    /// The industry's tools cvm measures beside its own runtimes (found on PATH).
    pub const PEERS: [RuntimeKind; 4] = [RuntimeKind::Runc, RuntimeKind::Crun, RuntimeKind::Unshare, RuntimeKind::Qemu];

    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Container => "container",
            RuntimeKind::Vm => "vm",
            RuntimeKind::Runc => "runc",
            RuntimeKind::Crun => "crun",
            RuntimeKind::Unshare => "unshare",
            RuntimeKind::Qemu => "qemu",
        }
    }

    /// True for another project's tool, false for cvm's own runtimes.
    pub fn is_peer(self) -> bool {
        Self::PEERS.contains(&self)
    }

    /// What kind of isolation it is: a peer is a process, a container or a VM too.
    pub fn family(self) -> RuntimeKind {
        match self {
            RuntimeKind::Runc | RuntimeKind::Crun | RuntimeKind::Unshare => RuntimeKind::Container,
            RuntimeKind::Qemu => RuntimeKind::Vm,
            own => own,
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        RuntimeKind::ALL.into_iter().chain(RuntimeKind::PEERS).find(|kind| kind.name() == text).ok_or_else(|| {
            format!(
                "unknown runtime '{text}' (expected process, container or vm, or a peer: runc, crun, unshare, qemu)"
            )
        })
    }
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The program called exit; `exit_code` is its status.
    #[default]
    Exited,
    /// The program was killed by a signal (a crash); `exit_code` is 128 + signal.
    Signaled,
    /// The kernel's OOM killer ended the program because of the memory limit.
    OomKilled,
    /// The program outlived `--timeout` and was killed.
    TimedOut,
    /// cvm itself was interrupted (SIGINT/SIGTERM) and stopped the run.
    Interrupted,
    /// vm: the program faulted inside the guest (like a crash on the host).
    GuestProgramFault,
    /// vm: the guest kernel faulted, the VM triple-faulted or KVM could not run an instruction.
    GuestKernelFault,
    /// vm: the guest touched a port or MMIO address no device answers.
    UnhandledDeviceAccess,
}

impl Outcome {
    /// The outcome in words, as the record spells it (`oom_killed` → "oom-killed").
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::Signaled => "signaled",
            Outcome::OomKilled => "oom-killed",
            Outcome::TimedOut => "timed out",
            Outcome::Interrupted => "interrupted",
            Outcome::GuestProgramFault => "guest program fault",
            Outcome::GuestKernelFault => "guest kernel fault",
            Outcome::UnhandledDeviceAccess => "unhandled device access",
        }
    }
}

/// Timestamps in ns on the host's monotonic clock, from the start of the run (cumulative).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Phases {
    /// Runtime ready to start the program.
    pub setup: u64,
    /// Guest kernel handed control to the program (vm); equal to `setup` elsewhere.
    pub boot: u64,
    /// First byte of the program's output reached the host; None when it printed nothing.
    pub first_output: Option<u64>,
    /// The program ended.
    pub exit: u64,
    /// All resources released.
    pub teardown: u64,
    /// The whole run as the user waits for it.
    pub total: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Memory {
    /// The program's own memory. process, container: its peak RSS. vm: the guest RAM touched at
    /// or above USER_BASE, where the guest kernel keeps the program (its image, break, mmaps
    /// and stack): what the program made resident, counted in host pages.
    pub program_peak_rss_bytes: Option<u64>,
    /// cvm's own private memory at the end of the run (anonymous pages: its USS), guest RAM
    /// excluded: the launcher (process), the container's supervisor (container) or the VMM
    /// (vm). A second instance pays this again.
    pub runtime_private_bytes: Option<u64>,
    /// The private memory this run added to cvm (`runtime_private_bytes` minus what cvm held
    /// before the run's set-up): the VMM's or the supervisor's own structures and buffers. Unlike
    /// `runtime_private_bytes` it means the same inside `cvm bench`, where one cvm process
    /// runs every run and also holds the harness.
    pub runtime_added_bytes: Option<u64>,
    /// cvm's own file-backed resident pages (its binary, libraries) at the end of the run.
    /// Shared with the page cache and with every other cvm instance: a second one costs none.
    pub runtime_shared_bytes: Option<u64>,
    /// vm: guest RAM touched below USER_BASE (the guest kernel's image, stack, page tables and
    /// boot data).
    pub guest_kernel_bytes: Option<u64>,
    /// Kept for the JSON contract, but it mixes two measures: the program's peak RSS
    /// (process, container) or the whole VMM process's peak RSS (vm). Tables use the fields
    /// above instead.
    pub peak_rss_bytes: Option<u64>,
    /// vm: configured guest RAM.
    pub guest_ram_bytes: Option<u64>,
    /// vm: guest pages actually populated (`guest_kernel_bytes` + the program's part).
    pub guest_touched_bytes: Option<u64>,
    /// Kept for the JSON contract. vm: VMM RSS excluding guest RAM (file-backed pages
    /// included); container: cgroup peak minus the program's RSS.
    pub runtime_overhead_bytes: Option<u64>,
    /// container: peak memory charged to the run's cgroup.
    pub cgroup_peak_bytes: Option<u64>,
}

impl Memory {
    /// Fills the runtime's figures from cvm's own resident memory before the run's set-up and at
    /// its end. Guest RAM inside it (vm) is the guest's, not the runtime's: `guest_anonymous`
    /// of its pages are private, `guest_file` are the shared program file's.
    pub fn set_runtime_own(&mut self, own: OwnMemory, guest_anonymous: u64, guest_file: u64) {
        let private = own.after.map(|after| after.private().saturating_sub(guest_anonymous));
        self.runtime_private_bytes = private;
        self.runtime_added_bytes =
            private.zip(own.before).map(|(after, before)| after.saturating_sub(before.private()));
        self.runtime_shared_bytes = own.after.map(|after| after.file_backed.saturating_sub(guest_file));
    }
}

/// cvm's own resident memory just before a run's set-up and at its end.
#[derive(Clone, Copy, Debug, Default)]
pub struct OwnMemory {
    pub before: Option<crate::own_usage::Resident>,
    pub after: Option<crate::own_usage::Resident>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Cpu {
    pub user_ns: u64,
    pub system_ns: u64,
}

/// The size of the program's output. A record keeps at most the first and the last
/// `kept_each_end_bytes` of each stream; the bytes between them are counted, not kept.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct OutputSizes {
    pub stdout_bytes: u64,
    pub stdout_dropped_bytes: u64,
    pub stderr_bytes: u64,
    pub stderr_dropped_bytes: u64,
    pub kept_each_end_bytes: u64,
}

/// vm only: what happened inside the micro-VM.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GuestStats {
    /// The VM's virtual CPUs (`--cpus`; 1 by default).
    pub vcpus: u64,
    /// True when the guest kernel's memory was open to the program (PVM hosts without
    /// `--protect-guest-kernel`): then `syscalls` and a reported guest fault are what the guest
    /// said, not verified.
    pub kernel_open_to_program: bool,
    /// VM exits by reason (io, mmio, hlt, shutdown, ...).
    pub exits: BTreeMap<String, u64>,
    /// System calls the guest kernel served, by name (reported by the guest).
    pub syscalls: BTreeMap<String, u64>,
    /// System calls answered with -ENOSYS, by name.
    pub unsupported_syscalls: BTreeMap<String, u64>,
}

/// container only: the cgroup and isolation set-up of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ContainerInfo {
    /// "v2", "v1" or "none" (rusage only).
    pub cgroup_version: String,
    pub cgroup_path: Option<String>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_limit: Option<f64>,
    pub pids_limit: Option<u64>,
    pub oom_kills: Option<u64>,
    pub namespaces: Vec<String>,
    /// "overlayfs" or the fallback used.
    pub rootfs: String,
    /// The system-call filter: "default" (Docker's default profile) or "unconfined".
    pub seccomp: String,
    pub hostname: String,
    /// Host folders mounted in (`--volume`), as `HOST:CONTAINER[:ro]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub schema: u32,
    pub runtime: RuntimeKind,
    /// "host", "builtin" or the path of the guest kernel image.
    pub kernel: String,
    pub workload: String,
    #[serde(default)]
    pub args: Vec<String>,
    pub exit_code: i32,
    #[serde(default)]
    pub outcome: Outcome,
    /// Signal that ended the program, when one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Why the run did not end normally, in words.
    #[serde(default)]
    pub reason: Option<String>,
    pub phases_ns: Phases,
    pub memory: Memory,
    pub cpu: Cpu,
    /// The workload's own `CVM-RESULT` object, when it printed one.
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    #[serde(default)]
    pub guest: Option<GuestStats>,
    #[serde(default)]
    pub container: Option<ContainerInfo>,
    pub host: HostInfo,
    /// The program's stdout as text (bytes that are not UTF-8 become U+FFFD; see
    /// `stdout_base64`). At most the first and the last 64 KiB: see `output`.
    pub stdout: String,
    /// The same bytes as `stdout`, base64-encoded, present only when they are not valid
    /// UTF-8, so nothing the program printed is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_base64: Option<String>,
    /// The program's stderr, kept the same way.
    #[serde(default)]
    pub stderr: String,
    /// Like `stdout_base64`, for stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_base64: Option<String>,
    /// How much the program printed and how much of it this record dropped.
    #[serde(default)]
    pub output: OutputSizes,
    /// Caveats about how this record was measured (for example "no cgroup: rusage only").
    #[serde(default)]
    pub notes: Vec<String>,
    /// The peer view: the run measured from outside as one whole command (as hyperfine does),
    /// the same way for cvm's runtimes and the peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<WholeCommand>,
}

/// A run measured as a whole command the harness spawned and reaped.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct WholeCommand {
    /// What was run, program path first.
    pub argv: Vec<String>,
    /// From just before the spawn to the command's exit, as the user waits for it.
    pub wall_ns: u64,
    /// The peak RSS of the command's own process after exec, from the kernel's taskstats exit
    /// record (root only): for a VMM, guest RAM it touched included; for runc or cvm's
    /// container, the tool's process, not the container's program.
    pub peak_rss_bytes: Option<u64>,
    /// CPU time of the command and the children it waited for.
    pub user_ns: u64,
    pub system_ns: u64,
}

impl RunRecord {
    /// A record with the fields every runtime fills the same way.
    pub fn new(runtime: RuntimeKind, kernel: &str, workload: &str, args: &[String]) -> Self {
        RunRecord {
            schema: SCHEMA_VERSION,
            runtime,
            kernel: kernel.to_string(),
            workload: workload.to_string(),
            args: args.to_vec(),
            exit_code: 0,
            outcome: Outcome::Exited,
            signal: None,
            reason: None,
            phases_ns: Phases::default(),
            memory: Memory::default(),
            cpu: Cpu::default(),
            result: None,
            guest: None,
            container: None,
            host: HostInfo::current().clone(),
            stdout: String::new(),
            stdout_base64: None,
            stderr: String::new(),
            stderr_base64: None,
            output: OutputSizes::default(),
            notes: Vec::new(),
            command: None,
        }
    }

    /// Fills `stdout`, `stderr`, `output` and `result` from the program's captured output.
    pub fn set_output(&mut self, stdout: &Captured, stderr: &Captured) {
        (self.stdout, self.stdout_base64) = text_and_base64(&stdout.bytes);
        (self.stderr, self.stderr_base64) = text_and_base64(&stderr.bytes);
        self.result = parse_result_line(&self.stdout);
        self.output = OutputSizes {
            stdout_bytes: stdout.total,
            stdout_dropped_bytes: stdout.dropped,
            stderr_bytes: stderr.total,
            stderr_dropped_bytes: stderr.dropped,
            kept_each_end_bytes: KEEP_EACH as u64,
        };
        for (name, stream) in [("stdout", stdout), ("stderr", stderr)] {
            if stream.dropped > 0 {
                self.notes.push(format!(
                    "the program wrote {} bytes to {name}: the record keeps the first and the last {} KiB and \
                     dropped the {} bytes between them",
                    stream.total,
                    KEEP_EACH >> 10,
                    stream.dropped
                ));
            }
        }
    }

    pub fn succeeded(&self) -> bool {
        self.outcome == Outcome::Exited && self.exit_code == 0
    }
}

/// Output as text, and as base64 too when it is not valid UTF-8 (the text then has U+FFFD in
/// place of the bytes that are not), so nothing is lost.
fn text_and_base64(bytes: &[u8]) -> (String, Option<String>) {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), None),
        Err(_) => {
            (String::from_utf8_lossy(bytes).into_owned(), Some(base64::engine::general_purpose::STANDARD.encode(bytes)))
        }
    }
}

/// The JSON object of the last `CVM-RESULT {json}` line, if any.
pub fn parse_result_line(stdout: &str) -> Option<serde_json::Value> {
    stdout
        .lines()
        .rev()
        .find_map(|line| line.trim_end().strip_prefix("CVM-RESULT "))
        .and_then(|json| serde_json::from_str(json).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_is_the_last_one() {
        let out = "hi\nCVM-RESULT {\"a\":1}\nCVM-RESULT {\"a\":2}\n";
        assert_eq!(parse_result_line(out).unwrap()["a"], 2);
        assert!(parse_result_line("no result\n").is_none());
        assert!(parse_result_line("CVM-RESULT {broken\n").is_none());
    }

    #[test]
    fn record_round_trips_through_json() {
        let mut record = RunRecord::new(RuntimeKind::Container, "host", "hello", &["x".into()]);
        record.set_output(
            &Captured::whole(b"Hello\nCVM-RESULT {\"workload\":\"hello\"}\n".to_vec()),
            &Captured::default(),
        );
        let text = serde_json::to_string(&record).unwrap();
        let back: RunRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
        assert!(text.contains("\"schema\":1"));
        assert!(text.contains("\"runtime\":\"container\""));
        assert!(!text.contains("stdout_base64"));
    }

    #[test]
    fn output_that_is_not_utf8_is_kept_losslessly() {
        use base64::Engine;
        let mut record = RunRecord::new(RuntimeKind::Process, "host", "x", &[]);
        let bytes = b"ok \xff\xfe bytes\n".to_vec();
        record.set_output(&Captured::whole(bytes.clone()), &Captured::default());
        assert!(record.stdout.contains('\u{fffd}'));
        let decoded = base64::engine::general_purpose::STANDARD.decode(record.stdout_base64.unwrap()).unwrap();
        assert_eq!(decoded, bytes);
    }
}

//! The three runtimes behind one small interface: each runs a [`RunSpec`] and returns a
//! [`RunRecord`]. Everything above this layer (bench, compare, reports, labs) only sees records.

pub mod capture;
pub mod child;
pub mod container;
pub mod lazy_buffer;
pub mod process;
pub mod relay;
pub mod spawn;
pub mod supervise;
pub mod taskstats;
pub mod vm;

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::explain::Narrator;
use crate::program::Program;
use crate::record::{RunRecord, RuntimeKind};

/// Which guest kernel a VM boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// cvm's own small guest kernel, embedded in the binary.
    Builtin,
    /// A Linux kernel image (vmlinux) given with `--kernel PATH`.
    Image(std::path::PathBuf),
}

impl KernelChoice {
    /// `--kernel`: `builtin`, or the path of a kernel image.
    pub fn from_arg(text: &str) -> KernelChoice {
        match text {
            "builtin" => KernelChoice::Builtin,
            path => KernelChoice::Image(path.into()),
        }
    }

    pub fn label(&self) -> String {
        match self {
            KernelChoice::Builtin => "builtin".into(),
            KernelChoice::Image(path) => path.display().to_string(),
        }
    }
}

/// Everything a runtime needs to run one program once.
#[derive(Debug)]
pub struct RunSpec {
    pub program: Program,
    /// The user's arguments (the workload's subcommand is added by the runtime).
    pub args: Vec<String>,
    /// container: cgroup memory limit; vm: guest RAM (default 64 MiB); process: ignored.
    pub memory_bytes: Option<u64>,
    /// container: CPU quota in CPUs; vm: vCPUs (whole, 1 to 8); process: ignored.
    pub cpus: Option<f64>,
    /// container: pids limit.
    pub pids: Option<u64>,
    pub timeout: Duration,
    pub kernel: KernelChoice,
    pub narrator: Narrator,
    /// vm: print a `strace -c`-like table of the guest's system calls.
    pub trace_syscalls: bool,
    /// vm: the guest kernel stays closed to the program at any price (`--protect-guest-kernel`).
    pub protect_guest_kernel: bool,
    /// Copy the program's output to cvm's stdout as it arrives (off for `--json` and benches).
    pub echo_output: bool,
    /// container: the system-call filter.
    pub seccomp: SeccompProfile,
    /// container: a created container's kept writable layer (`cvm start`); None: a layer
    /// that lives only as long as the run.
    pub writable: Option<container::rootfs::Writable>,
    /// container: host folders mounted in (`--volume`).
    pub volumes: Vec<container::volumes::Volume>,
    /// When the run's clock starts: `cvm run` and `cvm start` set it to cvm's own start (main),
    /// so the phases and `total` count cvm's argument parsing and program check too; None
    /// (bench, labs, where one cvm runs many runs): when the runtime begins.
    pub started: Option<Instant>,
}

/// The container's system-call filter (`--seccomp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompProfile {
    /// Docker's default profile: about 300 allowed system calls, EPERM for the rest.
    #[default]
    Default,
    /// No filter (to show what the filter refuses).
    Unconfined,
}

impl RunSpec {
    pub fn new(program: Program, args: Vec<String>) -> Self {
        RunSpec {
            program,
            args,
            memory_bytes: None,
            cpus: None,
            pids: None,
            timeout: Duration::from_secs(30),
            kernel: KernelChoice::Builtin,
            narrator: Narrator::new(false),
            trace_syscalls: false,
            protect_guest_kernel: false,
            echo_output: false,
            seccomp: SeccompProfile::Default,
            writable: None,
            volumes: Vec::new(),
            started: None,
        }
    }

    /// argv[1..] of the program file: the workload subcommand, then the user's arguments (an
    /// image's argv already holds them).
    pub fn program_args(&self) -> Vec<String> {
        let mut args = self.program.leading_args();
        if !matches!(self.program, Program::Image(_)) {
            args.extend(self.args.iter().cloned());
        }
        args
    }
}

pub trait Runtime {
    fn kind(&self) -> RuntimeKind;

    /// Ok when this host can run this runtime; otherwise the reason and how to fix it.
    fn check_available(&self) -> Result<()>;

    /// Runs the program once. A program that fails, crashes or times out is a record with
    /// that outcome; an `Err` means the runtime itself could not do its job.
    fn run(&self, spec: &RunSpec) -> Result<RunRecord>;
}

pub fn runtime(kind: RuntimeKind) -> Box<dyn Runtime> {
    match kind {
        RuntimeKind::Process => Box::new(process::ProcessRuntime),
        RuntimeKind::Container => Box::new(container::ContainerRuntime),
        RuntimeKind::Vm => Box::new(vm::VmRuntime),
        peer => Box::new(crate::peers::PeerRuntime::new(peer)),
    }
}

/// When this cvm process reached `main` (set there, first thing).
static PROCESS_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Notes that cvm's `main` began: the origin of a `cvm run`'s phases.
pub fn note_process_start() {
    let _ = PROCESS_START.set(Instant::now());
}

/// When cvm's `main` began, if it said so.
pub fn process_start() -> Option<Instant> {
    PROCESS_START.get().copied()
}

/// The run's clock: every phase is nanoseconds since the run started.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    pub fn start() -> Self {
        RunClock { start: Instant::now() }
    }

    /// The clock of `spec`'s run: from `spec.started` when given, else from now.
    pub fn for_spec(spec: &RunSpec) -> Self {
        RunClock { start: spec.started.unwrap_or_else(Instant::now) }
    }

    pub fn started_at(&self) -> Instant {
        self.start
    }

    pub fn now_ns(&self) -> u64 {
        self.since(Instant::now())
    }

    pub fn since(&self, instant: Instant) -> u64 {
        instant.saturating_duration_since(self.start).as_nanos() as u64
    }
}

//! The command line (the contract in the product brief; more options are welcome).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::record::RuntimeKind;
use crate::runtime::SeccompProfile;

#[derive(Parser, Debug)]
#[command(
    name = "cvm",
    version,
    about = "Containers vs micro-VMs, measured: one static program run as a process, a container and a KVM micro-VM",
    after_help = "Start with `cvm compare`: it runs the workloads every way this machine can and writes a report."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one program once in one runtime and show what happened.
    Run(RunArgs),
    /// The main job: run the default workloads on every runtime, print a side-by-side table
    /// and write a report folder.
    Compare(CompareArgs),
    /// Benchmark a runtime x workload matrix with warm-up and repetitions; export the results.
    Bench(BenchArgs),
    /// Render a report folder from one or more results files.
    Report(ReportArgs),
    /// Check what this machine can do (KVM, namespaces, cgroups, overlayfs) and how to fix it.
    Doctor(DoctorArgs),
    /// Classroom labs: list them, show one, check your observation.
    Lab(LabArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// process, container or vm.
    #[arg(long, default_value = "container")]
    pub runtime: RuntimeKind,
    /// vm: the guest kernel, `builtin` or the path of a Linux kernel image.
    #[arg(long, default_value = "builtin")]
    pub kernel: String,
    /// container: memory limit of the cgroup; vm: guest RAM (default 64M). Units K, M, G.
    #[arg(long)]
    pub memory: Option<String>,
    /// container: CPU quota in CPUs (for example 0.5); vm: number of vCPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// container: the most processes the container may have.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Kill the program (or stop the VM) after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Print exactly one JSON run record on stdout and nothing else.
    #[arg(long)]
    pub json: bool,
    /// Narrate, step by step, what the runtime does (on stderr).
    #[arg(long)]
    pub explain: bool,
    /// vm: print a table of the system calls the guest kernel served.
    #[arg(long)]
    pub trace_syscalls: bool,
    /// container: the system-call filter, `default` (Docker's default profile) or `unconfined`.
    #[arg(long, value_enum, default_value = "default", value_name = "PROFILE")]
    pub seccomp: SeccompProfile,
    /// Run this static x86-64 Linux program instead of a built-in workload.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// WORKLOAD [ARGS...] (hello, cpu, mem, syscall, probe), or the ARGS of --binary.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "WORKLOAD [ARGS]")]
    pub rest: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// One workload to compare, NAME or NAME:ARG such as cpu:500000 (default: hello, cpu 100000,
    /// mem 16 and probe).
    pub workload: Option<String>,
    /// Measured runs per runtime and workload.
    #[arg(long)]
    pub runs: Option<usize>,
    /// Comma-separated runtimes (default: all three).
    #[arg(long, value_delimiter = ',')]
    pub runtimes: Option<Vec<RuntimeKind>>,
    /// Report folder (default: reports/compare-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Unmeasured warm-up runs per runtime and workload (default: 2 for hello, 1 otherwise).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// vm: the guest kernel, `builtin` or the path of a Linux kernel image.
    #[arg(long, default_value = "builtin")]
    pub kernel: String,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Comma-separated runtimes (default: all three).
    #[arg(long, value_delimiter = ',')]
    pub runtimes: Option<Vec<RuntimeKind>>,
    /// Comma-separated workloads, each NAME or NAME:ARG (for example hello,cpu:100000,mem:16;
    /// default: hello).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<String>>,
    /// Measured runs per cell.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Unmeasured warm-up runs per cell.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Write the results file (environment, every raw run record, summaries) as JSON.
    #[arg(long, value_name = "FILE")]
    pub export_json: Option<PathBuf>,
    /// Write the summary tables as Markdown.
    #[arg(long, value_name = "FILE")]
    pub export_markdown: Option<PathBuf>,
    /// Write one CSV row per measured run.
    #[arg(long, value_name = "FILE")]
    pub export_csv: Option<PathBuf>,
    /// vm: the guest kernel, `builtin` or the path of a Linux kernel image.
    #[arg(long, default_value = "builtin")]
    pub kernel: String,
    /// Kill a run (or stop its VM) after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Results files written by `cvm bench --export-json` or `cvm compare`.
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Report folder (default: reports/report-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print the checks as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub action: LabAction,
}

#[derive(Subcommand, Debug)]
pub enum LabAction {
    /// List the labs.
    List,
    /// Show a lab's instructions.
    Show { number: u32 },
    /// Check the lab's observation on this machine.
    Check { number: u32 },
}

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

impl Cli {
    /// The command line's command. `cvm run` (what every whole command of the peer view and
    /// every density instance starts) is parsed by [`RunCli`] alone: clap builds the parser of
    /// every subcommand first, which took 0.5 ms of each `cvm run` here, 75 µs for `run`'s own.
    pub fn parse_command() -> Result<Command, clap::Error> {
        if std::env::args_os().nth(1).is_some_and(|first| first == "run") {
            return RunCli::try_parse_from(std::env::args_os().skip(1)).map(|run| Command::Run(run.args));
        }
        Cli::try_parse().map(|cli| cli.command)
    }
}

/// `cvm run` on its own (see [`Cli::parse_command`]); the same options, help and errors.
#[derive(Parser, Debug)]
#[command(name = "cvm run", bin_name = "cvm run", about = RUN_ABOUT)]
pub struct RunCli {
    #[command(flatten)]
    pub args: RunArgs,
}

const RUN_ABOUT: &str = "Run one program once in one runtime and show what happened";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one program once in one runtime and show what happened.
    #[command(about = RUN_ABOUT)]
    Run(RunArgs),
    /// The main job: run the default workloads on every runtime, print a side-by-side table
    /// and write a report folder.
    Compare(CompareArgs),
    /// Benchmark a runtime x workload matrix with warm-up and repetitions; export the results.
    Bench(BenchArgs),
    /// How many containers and micro-VMs fit on this machine: start N of each at once, measure
    /// memory per instance, start latency and idle CPU from outside, write a report folder.
    Density(DensityArgs),
    /// Render a report folder from one or more results files.
    Report(ReportArgs),
    /// Check what this machine can do (KVM, namespaces, cgroups, overlayfs) and how to fix it.
    Doctor(DoctorArgs),
    /// Classroom labs: list, show, start a workspace, check (grade) your answers.
    Lab(LabArgs),
    /// OCI images: build, list, inspect, push to and pull from a registry folder, save, load.
    Image(ImageArgs),
    /// Make a container from an image that keeps its changes until `cvm rm`.
    Create(CreateArgs),
    /// Run a created container, attached (its output here, its exit status cvm's).
    Start(StartArgs),
    /// List containers (running ones; -a: all).
    Ps(PsArgs),
    /// What a container changed against its image (A added, C changed, D deleted).
    Diff(NameArg),
    /// Remove a container; its image stays exactly as it was.
    Rm(RmArgs),
    /// Turn a container's changes into a new image layer.
    Commit(CommitArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// process, container or vm; or a peer measured as one whole command: runc, crun, unshare, qemu.
    #[arg(long, default_value = "container")]
    pub runtime: RuntimeKind,
    /// vm: the guest kernel, `builtin` or the path of a Linux kernel image.
    #[arg(long, default_value = "builtin")]
    pub kernel: String,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Print exactly one JSON run record on stdout and nothing else.
    #[arg(long)]
    pub json: bool,
    /// Narrate, step by step, what the runtime does (on stderr).
    #[arg(long)]
    pub explain: bool,
    /// vm: print a table of the system calls the guest kernel served.
    #[arg(long)]
    pub trace_syscalls: bool,
    /// vm: keep the guest kernel's memory closed to the program even on hosts (PVM) where that
    /// makes every system call enter through a page fault (about 6x slower per call there).
    #[arg(long)]
    pub protect_guest_kernel: bool,
    /// Run this static x86-64 Linux program instead of a built-in workload.
    #[arg(long, value_name = "PATH", conflicts_with = "image")]
    pub binary: Option<PathBuf>,
    /// container: run an image of the store (ARGS follow its entrypoint), in a throwaway container.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub image: Option<String>,
    /// WORKLOAD [ARGS...] (hello, cpu, mem, syscall, probe), or the ARGS of --binary or --image.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "WORKLOAD [ARGS]")]
    pub rest: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub action: ImageAction,
}

#[derive(Subcommand, Debug)]
pub enum ImageAction {
    /// Build an image: each --binary and --add is one layer, on top of --from's layers.
    Build(BuildArgs),
    /// List the store's images.
    Ls,
    /// Everything about one image, as JSON: digest, config, layers and their sizes.
    Inspect(ImageName),
    /// What made each layer of an image.
    History(ImageName),
    /// Re-read every blob of an image and check it against its digest.
    Verify(ImageName),
    /// Remove an image name (its blobs go when no image or container needs them).
    Rm(ImageRmArgs),
    /// Remove the blobs and unpacked layers no image or container needs (a killed pull's, say).
    Prune,
    /// Copy an image into a registry folder (an OCI image layout; created when missing).
    Push { image: String, registry: PathBuf },
    /// Copy an image from a registry folder (an OCI image layout) into the store.
    Pull { registry: PathBuf, image: String },
    /// Write an image into one tar file (an OCI image layout).
    Save {
        image: String,
        #[arg(short, long, value_name = "FILE.tar")]
        output: PathBuf,
    },
    /// Read the images of a tar file written by `image save` (or skopeo) into the store.
    Load {
        #[arg(short, long, value_name = "FILE.tar")]
        input: PathBuf,
    },
    /// Write an OCI runtime bundle (config.json and rootfs) that runc runs.
    Bundle {
        image: String,
        dir: PathBuf,
        /// Arguments after the entrypoint (default: the image's command).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The new image's name.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tag: String,
    /// Start from this image's layers and config.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub from: Option<String>,
    /// A program to put at /bin/<its name> (one layer each); the last is the entrypoint.
    #[arg(long, value_name = "PATH")]
    pub binary: Vec<PathBuf>,
    /// A host file or folder to put at DEST in the image (one layer each).
    #[arg(long, value_name = "SRC:DEST")]
    pub add: Vec<String>,
    /// The entrypoint, one word per --entrypoint.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// Default arguments after the entrypoint, one word per --cmd.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub cmd: Vec<String>,
    /// An environment variable of the image.
    #[arg(long, value_name = "K=V")]
    pub env: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImageName {
    #[arg(value_name = "NAME[:TAG]")]
    pub image: String,
}

#[derive(Args, Debug)]
pub struct ImageRmArgs {
    #[arg(value_name = "NAME[:TAG]")]
    pub image: String,
    /// Remove the name even if a container uses the image (the container keeps its layers).
    #[arg(short, long)]
    pub force: bool,
}

/// Limits and options of a run (`create` stores them and applies them at every `start`).
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// container: memory limit of the cgroup; vm: guest RAM (default 64M). Units K, M, G.
    #[arg(long)]
    pub memory: Option<String>,
    /// container: CPU quota in CPUs (for example 0.5); vm: number of vCPUs.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// container: the most processes the container may have.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Kill the program (or stop the VM) after this many seconds (default: 30 for `run`; none,
    /// a week, for a container made with `create`).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// container: the system-call filter, `default` (Docker's default profile) or `unconfined`.
    #[arg(long, value_enum, default_value = "default", value_name = "PROFILE")]
    pub seccomp: SeccompProfile,
    /// container: mount the host folder HOST at CONTAINER (`:ro`: read-only); repeatable. What
    /// the container writes there stays in the host folder, outside its layer.
    #[arg(short = 'v', long, value_name = "HOST:CONTAINER[:ro]")]
    pub volume: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The container's name.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub options: LimitArgs,
    /// The image to make it from.
    #[arg(long, value_name = "NAME[:TAG]")]
    pub image: String,
    /// Arguments after the image's entrypoint (default: the image's command).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Print one JSON run record on stdout instead of the program's output.
    #[arg(long)]
    pub json: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// All containers, not only running ones.
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct NameArg {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Stop the container first if it is running.
    #[arg(short, long)]
    pub force: bool,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    pub name: String,
    #[arg(value_name = "NAME[:TAG]")]
    pub image: String,
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
    /// Skip the short density look (8 idle containers and 8 idle micro-VMs at once).
    #[arg(long)]
    pub no_density: bool,
    /// Add the peer view: runc, crun, unshare and QEMU (those on PATH) beside cvm's runtimes,
    /// each run of each measured as one whole command (`--runtimes` may name peers too).
    #[arg(long)]
    pub peers: bool,
}

#[derive(Args, Debug)]
pub struct DensityArgs {
    /// Comma-separated runtimes (default: all three).
    #[arg(long, value_delimiter = ',')]
    pub runtimes: Option<Vec<RuntimeKind>>,
    /// Comma-separated numbers of instances started at once.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub instances: Vec<u64>,
    /// What every instance runs: `idle`, the workload that says it is ready and waits.
    #[arg(long, default_value = "idle")]
    pub workload: String,
    /// How many times every step is measured (the spread comes from these).
    #[arg(long, default_value_t = 3)]
    pub repeat: u64,
    /// Print the results as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Report folder (default: reports/density-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Comma-separated runtimes (default: cvm's three). Naming a peer (runc, crun, unshare,
    /// qemu) measures every cell as one whole command, as hyperfine would.
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
    /// List the labs: time, what each needs, lecture topics.
    List,
    /// Show a lab's sheet.
    Show { number: u32 },
    /// Make a workspace for a lab: its sheet, answers.toml and an evidence folder.
    Start {
        number: u32,
        /// The workspace (default ./cvm-lab-N).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Grade the answers and evidence of a workspace against what this machine measures.
    Check {
        number: u32,
        /// The workspace (default ./cvm-lab-N).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Grade every workspace in this class folder (one subfolder per student) and sum up.
        #[arg(long, conflicts_with = "dir", value_name = "FOLDER")]
        class: Option<PathBuf>,
    },
    /// For teachers: fill a workspace as a student who got everything right would (answers and
    /// task evidence), so that `check` passes.
    Key {
        number: u32,
        /// The workspace (default ./cvm-lab-N).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

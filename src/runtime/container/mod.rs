//! The container runtime: the program on the host kernel, but in namespaces of its own, inside
//! a fresh cgroup, with an image as its root file system and most privileges dropped.
//!
//! One run, in order (see docs/container.md):
//! 1. the image (cached by content hash) and the run's cgroup (limits applied) are made ready;
//! 2. `clone3` starts the container's first process inside new namespaces ([`namespaces`]);
//!    without root, cvm writes its user id maps and says "go" ([`sync`]);
//! 3. the process follows its [`init::InitPlan`]: join the cgroup, host name, loopback, mounts,
//!    `pivot_root`, capabilities, no_new_privs ([`rootfs`], [`capabilities`]), then reports
//!    "ready" with a timestamp and execs the program;
//! 4. cvm supervises it like a plain process, reads the report, the cgroup's accounting, and
//!    removes the cgroup. Mounts and namespaces vanish with the container's last process.

pub mod capabilities;
pub mod cgroup;
pub mod image;
pub mod init;
pub mod namespaces;
mod narration;
pub mod rootfs;
pub mod seccomp;
pub mod sync;
pub mod volumes;

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

use super::supervise::{pipe, supervise, KillScope, Supervised, Watched};
use super::{taskstats, RunClock, RunSpec, Runtime, SeccompProfile};
use crate::program::Program;
use crate::record::{ContainerInfo, Outcome, OwnMemory, RunRecord, RuntimeKind};
use crate::units::format_bytes;
use cgroup::{Limits, Placement, RunCgroup, Usage};
use init::{InitFds, InitPlan, Planned, Step};
use namespaces::{Cloned, Namespace};
use sync::{Report, RootfsKind};

pub struct ContainerRuntime;

impl Runtime for ContainerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Container
    }

    fn check_available(&self) -> Result<()> {
        host_can_run_containers().context("cannot run containers")
    }

    fn run(&self, spec: &RunSpec) -> Result<RunRecord> {
        run_container(spec)
    }
}

/// Ok when this host can run a container; otherwise the reason and the fix.
pub fn host_can_run_containers() -> Result<()> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!("containers need Linux on x86-64");
    }
    if !running_as_root() {
        namespaces::user_namespaces_usable()?;
    }
    Ok(())
}

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run_container(spec: &RunSpec) -> Result<RunRecord> {
    let taskstats = taskstats::ensure_listening();
    let own_before = crate::own_usage::resident();
    let clock = RunClock::for_spec(spec);
    let anchor = ClockAnchor::now();
    let deadline = clock.started_at() + spec.timeout;
    let narrator = &spec.narrator;
    let as_root = running_as_root();
    let id = run_id();
    let hostname = format!("cvm-{id}");
    let namespaces = namespaces::for_run(as_root);
    let mut notes = Vec::new();

    let image = image::prepare(&spec.program)?;
    narrator.step(|| narration::image(&image));

    let limits = Limits { memory_bytes: spec.memory_bytes, cpus: spec.cpus, pids: spec.pids };
    limits.validate()?;
    let hierarchy = cgroup::hierarchy();
    let devices = cgroup::devices::allowed_devices(&rootfs::device_names());
    let cgroup = match RunCgroup::create(hierarchy, &hostname, limits, &devices) {
        Ok(cgroup) => Some(cgroup),
        Err(err) if !limits.any() => {
            notes.push(format!("{err:#}; memory and CPU time come from rusage only"));
            None
        }
        Err(err) => return Err(err.context("the resource limits need a cgroup")),
    };
    if let Some(cgroup) = &cgroup {
        notes.extend(cgroup.notes().iter().cloned());
    }
    narrator.step(|| narration::cgroup(hierarchy, cgroup.as_ref(), limits));

    let writable = match &spec.writable {
        Some(kept) => kept.clone(),
        None => rootfs::Writable::Throwaway { scratch: rootfs::scratch_dir()? },
    };
    let placement = cgroup.as_ref().map(RunCgroup::placement).transpose()?;
    let join_files = match &placement {
        Some(Placement::JoinSelf(files)) => files.iter().map(AsRawFd::as_raw_fd).collect(),
        _ => Vec::new(),
    };
    let plan = init_plan(spec, &image, &writable, &hostname, &namespaces, as_root, join_files)?;
    let (output, output_for_child) = pipe()?;
    let (errors, errors_for_child) = pipe()?;
    let (go_for_child, go) = pipe()?;
    let (report, report_for_child) = pipe()?;
    let stdin = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    let fds = InitFds {
        go: go_for_child.as_raw_fd(),
        go_other_end: go.as_raw_fd(),
        report: report_for_child.as_raw_fd(),
        report_other_end: report.as_raw_fd(),
        stdin: stdin.as_raw_fd(),
        stdout: output_for_child.as_raw_fd(),
        stderr: errors_for_child.as_raw_fd(),
        stdout_other_end: output.as_raw_fd(),
        stderr_other_end: errors.as_raw_fd(),
    };

    let clone_into = match &placement {
        Some(Placement::CloneInto(dir)) => Some(dir.as_raw_fd()),
        _ => None,
    };
    let mut child = match namespaces::clone_into_namespaces(namespaces::clone_flags(&namespaces), clone_into)? {
        Cloned::Child => init::run(&plan, fds),
        Cloned::Parent { pid, pidfd } => ContainerProcess { pid, pidfd, reaped: false },
    };
    drop((go_for_child, report_for_child, output_for_child, errors_for_child, stdin, placement));
    if !as_root {
        namespaces::map_caller_to_root(child.pid)?;
        sync::go(&go)?;
    }

    // cvm does not wait for "ready": the first process timestamps it, and cvm reads the report
    // after the program ended, so no hand-off between the two is on the start-up path. With
    // --explain, the set-up is narrated before the program's output instead.
    let mut reports = Vec::new();
    if narrator.enabled() {
        reports.extend(sync::next_report(&report, Some(deadline))?);
        if let Some(Report::Ready { rootfs, step_ns, .. }) = reports.first() {
            let joined = cgroup.as_ref().map(|_| hierarchy.version());
            narration::container(narrator, &plan, &namespaces, &hostname, *rootfs, as_root, joined);
            narrator.step(|| narration::step_times(&plan, step_ns));
        }
    }
    let watched = Watched {
        pid: child.pid,
        pidfd: &child.pidfd,
        stdout: output,
        stderr: errors,
        kill: KillScope::Process,
        deadline,
        echo: spec.echo_output,
    };
    let done = supervise(watched)?;
    child.reaped = true;
    let program_pid = child.pid;
    drop((child, go));
    // Every process of the container is gone: the report pipe has no writer left.
    while let Some(next) = sync::next_report(&report, None)? {
        reports.push(next);
    }
    if let Some(Report::Failed { step, errno }) = reports.iter().find(|r| matches!(r, Report::Failed { .. })) {
        bail!(setup_error(&plan, *step, *errno, as_root));
    }
    let (rootfs_kind, setup) = match reports.first() {
        Some(Report::Ready { rootfs, ready_ns, .. }) => (Some(*rootfs), anchor.to_run_clock(&clock, *ready_ns)),
        // Killed (timeout, interrupt) before it was ready: it never got to the program.
        _ if done.timed_out || done.interrupted.is_some() => (None, clock.since(done.exited_at)),
        _ if cgroup.as_ref().is_some_and(|c| c.usage().oom_kills.unwrap_or(0) > 0) => bail!(
            "the container was OOM-killed during its set-up: {} is too little memory even to start it",
            limits.memory_bytes.map_or_else(|| "its limit".to_string(), |b| format!("--memory {}", format_bytes(b)))
        ),
        _ => bail!("the container's first process ended during set-up ({})", done.describe_end()),
    };
    if rootfs_kind == Some(RootfsKind::Copy) {
        notes.push(if rootfs::want_overlay() {
            "overlayfs could not be mounted: the image was copied into a per-run tmpfs instead".to_string()
        } else {
            "overlayfs not used (unavailable or CVM_ROOTFS=copy): the image was copied into a per-run tmpfs".to_string()
        });
    }
    let usage = cgroup.as_ref().map(RunCgroup::usage).unwrap_or_default();
    // cvm's own memory as the container's supervisor, read while it still holds the output.
    let supervisor = crate::own_usage::resident();
    let cgroup_path = cgroup.as_ref().map(|c| c.path().display().to_string());
    if let Some(cgroup) = cgroup {
        if let Err(err) = cgroup.remove() {
            notes.push(format!("{err:#}"));
        }
    }
    let oom_killed = was_oom_killed(&done, &usage, limits);
    narrator.step(|| narration::end(&done, oom_killed, cgroup_path.as_deref()));
    let teardown = clock.now_ns();
    // The program is the first process after execve: its exit record has its own peak RSS.
    let program_peak = taskstats.then(|| taskstats::peak_rss_of(program_pid)).flatten();

    let cgroup_version = if cgroup_path.is_some() { hierarchy.version() } else { "none" };
    let ended = Ended {
        done,
        usage,
        oom_killed,
        setup,
        teardown,
        rootfs: rootfs_kind,
        cgroup_version,
        cgroup_path,
        program_peak,
        own: OwnMemory { before: own_before, after: supervisor },
    };
    let mut record = ended.record(spec, &clock, limits);
    if let Some(info) = record.container.as_mut() {
        info.namespaces = namespaces::names(&namespaces);
        info.hostname = hostname;
        info.seccomp = match spec.seccomp {
            SeccompProfile::Default => "default".into(),
            SeccompProfile::Unconfined => "unconfined".into(),
        };
    }
    record.notes = notes;
    Ok(record)
}

/// What is known once the container is gone.
struct Ended {
    done: Supervised,
    usage: Usage,
    oom_killed: bool,
    /// ns since the run started
    setup: u64,
    teardown: u64,
    /// None when it was stopped before it was ready.
    rootfs: Option<RootfsKind>,
    cgroup_version: &'static str,
    cgroup_path: Option<String>,
    /// The program's own peak RSS from taskstats; None: rusage's.
    program_peak: Option<u64>,
    /// cvm's own resident memory before the set-up and while it supervised the container.
    own: OwnMemory,
}

impl Ended {
    fn record(self, spec: &RunSpec, clock: &RunClock, limits: Limits) -> RunRecord {
        let Ended { done, usage, oom_killed, setup, teardown, rootfs, cgroup_version, cgroup_path, program_peak, own } =
            self;
        let mut record = RunRecord::new(RuntimeKind::Container, "host", &spec.program.label(), &spec.args);
        record.set_output(&done.stdout, &done.stderr);
        record.exit_code = done.exit_code();
        record.signal = done.signal;
        record.outcome = if oom_killed { Outcome::OomKilled } else { done.outcome() };
        record.reason = if oom_killed { Some(oom_reason(limits)) } else { done.reason(spec.timeout) };
        record.phases_ns.setup = setup;
        record.phases_ns.boot = setup;
        record.phases_ns.first_output = done.first_output.map(|t| clock.since(t));
        record.phases_ns.exit = clock.since(done.exited_at);
        record.phases_ns.teardown = teardown;
        record.phases_ns.total = teardown;
        let peak_rss = program_peak.unwrap_or_else(|| done.peak_rss_bytes());
        record.memory.peak_rss_bytes = Some(peak_rss);
        record.memory.program_peak_rss_bytes = Some(peak_rss);
        record.memory.set_runtime_own(own, 0, 0);
        record.memory.cgroup_peak_bytes = usage.peak_bytes;
        record.memory.runtime_overhead_bytes = usage.peak_bytes.map(|peak| peak.saturating_sub(peak_rss));
        record.cpu.user_ns = usage.user_ns.unwrap_or_else(|| done.user_ns());
        record.cpu.system_ns = usage.system_ns.unwrap_or_else(|| done.system_ns());
        record.container = Some(ContainerInfo {
            cgroup_version: cgroup_version.to_string(),
            cgroup_path,
            memory_limit_bytes: limits.memory_bytes,
            cpu_limit: limits.cpus,
            pids_limit: limits.pids,
            oom_kills: usage.oom_kills,
            rootfs: rootfs.map_or("not ready", RootfsKind::label).to_string(),
            volumes: spec.volumes.iter().map(volumes::Volume::label).collect(),
            ..ContainerInfo::default()
        });
        record
    }
}

/// Everything the container's first process will do, in order.
fn init_plan(
    spec: &RunSpec,
    image: &image::Image,
    writable: &rootfs::Writable,
    hostname: &str,
    namespaces: &[Namespace],
    as_root: bool,
    join_files: Vec<std::os::fd::RawFd>,
) -> Result<InitPlan> {
    let mut steps = Vec::new();
    if !as_root {
        steps.push(Planned::new(Step::WaitForParent, "waiting for cvm to map the user ids"));
    }
    if !join_files.is_empty() {
        steps.push(Planned::new(Step::JoinCgroup { files: join_files }, "joining the run's cgroup"));
    }
    if namespaces.iter().any(|ns| ns.name == "cgroup") {
        steps.push(Planned::new(Step::EnterCgroupNamespace, "entering a new cgroup namespace"));
    }
    steps.push(Planned::new(Step::NewSession, "starting a session of its own, without a controlling terminal"));
    steps.push(Planned::new(Step::NewSessionKeyring, "joining a new, empty session keyring"));
    let (soft, hard) = open_files_limit(as_root);
    steps.push(Planned::new(
        Step::LimitOpenFiles { soft, hard },
        format!("limiting open files to {soft} (RLIMIT_NOFILE, as runc does)"),
    ));
    steps.push(Planned::new(
        Step::SetHostname(rootfs::cstring(hostname)?),
        format!("setting the host name to {hostname}"),
    ));
    steps.push(Planned::new(Step::LoopbackUp, "bringing up the loopback device lo"));
    let options = rootfs::RootfsOptions {
        image,
        writable,
        user_namespace: !as_root,
        try_overlay: rootfs::want_overlay(),
        volumes: &spec.volumes,
    };
    steps.extend(rootfs::plan(&options)?);
    steps.push(Planned::new(
        Step::DropCapabilities { keep: capabilities::kept_mask(), last_capability: capabilities::last_capability() },
        "dropping all capabilities but CAP_KILL, CAP_NET_BIND_SERVICE and CAP_AUDIT_WRITE",
    ));
    steps.push(Planned::new(Step::NoNewPrivileges, "setting no_new_privs"));
    if spec.seccomp == SeccompProfile::Default {
        steps.push(Planned::new(
            Step::Seccomp { filter: seccomp::default_filter() },
            "installing the system-call filter (seccomp, Docker's default profile)",
        ));
    }
    InitPlan::new(steps, &image.program, &spec.program_args(), &environment(spec, hostname))
}

/// The program's environment: the image's (for `--image`), then what every container gets.
fn environment(spec: &RunSpec, hostname: &str) -> Vec<String> {
    let mut env = match &spec.program {
        Program::Image(image) => image.env.clone(),
        _ => vec!["PATH=/bin".to_string()],
    };
    let has = |env: &[String], key: &str| env.iter().any(|v| v.split('=').next() == Some(key));
    for (key, value) in [("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ("HOME", "/")] {
        if !has(&env, key) {
            env.push(format!("{key}={value}"));
        }
    }
    env.retain(|v| !v.starts_with("HOSTNAME=") && !v.starts_with("container="));
    env.push("container=cvm".into());
    env.push(format!("HOSTNAME={hostname}"));
    env
}

/// runc's RLIMIT_NOFILE (1024 soft and hard); without root the hard limit cannot be raised,
/// so it stays at cvm's own when that is lower.
fn open_files_limit(as_root: bool) -> (u64, u64) {
    const RUNC_NOFILE: u64 = 1024;
    // SAFETY: getrlimit fills the struct we own.
    let current = unsafe {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_max
    };
    let hard = if as_root { RUNC_NOFILE } else { RUNC_NOFILE.min(current) };
    (hard, hard)
}

/// Ties the raw CLOCK_MONOTONIC (what the first process can read without allocating) to the
/// run's clock (`Instant` is CLOCK_MONOTONIC on Linux).
struct ClockAnchor {
    instant: std::time::Instant,
    monotonic_ns: u64,
}

impl ClockAnchor {
    fn now() -> ClockAnchor {
        ClockAnchor { instant: std::time::Instant::now(), monotonic_ns: init::monotonic_ns() }
    }

    /// A raw CLOCK_MONOTONIC reading as ns since the run started.
    fn to_run_clock(&self, clock: &RunClock, monotonic_ns: u64) -> u64 {
        let at_anchor = clock.since(self.instant) as i128;
        (at_anchor + monotonic_ns as i128 - self.monotonic_ns as i128).max(0) as u64
    }
}

/// The container's first process, killed and reaped on drop unless cvm already reaped it.
struct ContainerProcess {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    reaped: bool,
}

impl Drop for ContainerProcess {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let fd = self.pidfd.as_raw_fd();
        // SAFETY: signalling and waiting through our own pidfd: it cannot name a reused pid.
        unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<libc::siginfo_t>(), 0);
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PIDFD, fd as libc::id_t, &mut info, libc::WEXITED);
        }
    }
}

/// Eight random hex digits naming the run's host name and cgroup.
fn run_id() -> String {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom fills at most the buffer we pass.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        bytes = (nanos ^ std::process::id().rotate_left(16)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn setup_error(plan: &InitPlan, step: u16, errno: i32, as_root: bool) -> String {
    let what = plan.describe(step);
    let error = std::io::Error::from_raw_os_error(errno);
    let hint = if !as_root && (errno == libc::EPERM || errno == libc::EACCES) {
        "; this host may restrict what an unprivileged user namespace can mount: try as root (see `cvm doctor`)"
    } else {
        ""
    };
    format!("container set-up failed while {what}: {error}{hint}")
}

/// The program was killed by the kernel's OOM killer in the run's cgroup.
fn was_oom_killed(done: &Supervised, usage: &Usage, limits: Limits) -> bool {
    if done.signal != Some(libc::SIGKILL) || done.timed_out || done.interrupted.is_some() {
        return false;
    }
    match usage.oom_kills {
        Some(kills) => kills > 0,
        // Kernels without an oom_kill counter: a SIGKILL after hitting the limit.
        None => limits.memory_bytes.is_some() && usage.limit_hits.unwrap_or(0) > 0,
    }
}

fn oom_reason(limits: Limits) -> String {
    match limits.memory_bytes {
        Some(bytes) => format!(
            "the kernel's OOM killer ended the program: it needed more than the --memory limit of {}",
            format_bytes(bytes)
        ),
        None => "the kernel's OOM killer ended the program".to_string(),
    }
}

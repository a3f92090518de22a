//! One cgroup per container run, created below the cgroup cvm itself runs in: the kernel's
//! accounting (peak memory, CPU time, OOM kills) and its limits (`--memory`, `--cpus`, `--pids`).
//!
//! Hosts come in three kinds: pure cgroup v2 (one tree, `cgroup.controllers`), hybrid or v1
//! (one tree per controller under `/sys/fs/cgroup/<controller>`), or none usable (for example
//! an unprivileged user without a delegated cgroup); then the run falls back to `wait4`'s
//! rusage and says so in the record's notes.

pub mod devices;
pub mod v1;
pub mod v2;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use devices::Device;

/// What a run asks the cgroup to enforce.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
}

impl Limits {
    pub fn any(&self) -> bool {
        self.memory_bytes.is_some() || self.cpus.is_some() || self.pids.is_some()
    }

    /// Refuses limits the kernel would silently round: a CPU quota below the smallest one
    /// (1 ms per 100 ms period, `--cpus 0.01`) or above the CPUs this host has.
    pub fn validate(&self) -> Result<()> {
        if let Some(cpus) = self.cpus {
            cpu_quota_us(cpus)?;
        }
        Ok(())
    }
}

/// The smallest `--cpus` a container accepts: the kernel's minimum quota of 1 ms per period.
pub const MIN_CPUS: f64 = 0.01;

/// `--cpus` as a CFS quota in µs per [`CPU_PERIOD_US`], or why it is out of range.
pub fn cpu_quota_us(cpus: f64) -> Result<u64> {
    let online = online_cpus();
    if !(cpus.is_finite() && cpus >= MIN_CPUS && cpus <= online as f64) {
        bail!(
            "--cpus {} is out of range: a container takes from {MIN_CPUS} to {online} CPUs on this host",
            crate::units::short_number(cpus)
        );
    }
    Ok((cpus * CPU_PERIOD_US as f64).round() as u64)
}

/// CPUs online on this host.
pub fn online_cpus() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as u64
}

/// What the kernel accounted to the run's cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub peak_bytes: Option<u64>,
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    pub oom_kills: Option<u64>,
    /// v1: how often the memory limit was hit (a hint of an OOM kill on old kernels).
    pub limit_hits: Option<u64>,
}

/// CFS period used for `--cpus` (the quota is `cpus * period`).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup layout of this host, as seen from cvm's own cgroup.
#[derive(Clone, Debug)]
pub enum Hierarchy {
    /// One unified tree; `dir` is cvm's own cgroup directory in it.
    V2(v2::Tree),
    /// One tree per controller; each entry is cvm's own directory in that controller's tree.
    V1(v1::Trees),
    /// No usable cgroup: the reason.
    Unavailable(String),
}

impl Hierarchy {
    pub fn version(&self) -> &'static str {
        match self {
            Hierarchy::V2(_) => "v2",
            Hierarchy::V1(_) => "v1",
            Hierarchy::Unavailable(_) => "none",
        }
    }
}

/// This host's hierarchy, detected once per process. `CVM_CGROUP=v1|v2|none` forces a choice
/// (for labs and tests on hybrid hosts).
pub fn hierarchy() -> &'static Hierarchy {
    static HIERARCHY: OnceLock<Hierarchy> = OnceLock::new();
    HIERARCHY.get_or_init(|| {
        let forced = std::env::var("CVM_CGROUP").ok();
        detect(forced.as_deref())
    })
}

fn detect(forced: Option<&str>) -> Hierarchy {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let v2 = v2::Tree::find(&mountinfo, &own);
    let v1 = v1::Trees::find(&mountinfo, &own);
    match forced {
        Some("none") => return Hierarchy::Unavailable("CVM_CGROUP=none asked for no cgroup".into()),
        Some("v2") => {
            return v2
                .map_or_else(|| Hierarchy::Unavailable("CVM_CGROUP=v2, but no cgroup2 mount".into()), Hierarchy::V2)
        }
        Some("v1") => {
            return v1
                .map_or_else(|| Hierarchy::Unavailable("CVM_CGROUP=v1, but no v1 memory tree".into()), Hierarchy::V1)
        }
        _ => {}
    }
    // Prefer v2 when it carries the memory controller (a pure v2 host); on a hybrid host the
    // controllers live in the v1 trees and the v2 tree is nearly empty.
    match (v2, v1) {
        (Some(tree), _) if tree.has_controller("memory") => Hierarchy::V2(tree),
        (_, Some(trees)) => Hierarchy::V1(trees),
        (Some(tree), None) => Hierarchy::V2(tree),
        (None, None) => Hierarchy::Unavailable("no cgroup v2 or v1 memory hierarchy is mounted".into()),
    }
}

/// How a new process gets into the run's cgroup. Moving a whole process (a pid written to
/// `cgroup.procs`) takes the kernel's global threadgroup lock for writing, which waits for an
/// RCU grace period: 5 to 15 ms on a busy machine. Two ways avoid it:
pub enum Placement {
    /// v2: `clone3` with `CLONE_INTO_CGROUP` starts the process inside this directory.
    CloneInto(OwnedFd),
    /// v1: the new process writes "0" (itself, one thread) to these `tasks` files, which the
    /// kernel does without the global lock (measured: 40 µs instead of 8 to 15 ms). Also the
    /// fallback on v2 kernels older than 5.7 (`cgroup.procs`, the slow path).
    JoinSelf(Vec<OwnedFd>),
}

/// True when the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (major, minor)
}

fn open_for_placement(path: &Path, directory: bool) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    if directory {
        options.read(true).custom_flags(libc::O_DIRECTORY);
    } else {
        options.write(true);
    }
    let file = options.open(path).map_err(|err| anyhow::anyhow!("opening {}: {err}", path.display()))?;
    Ok(OwnedFd::from(file))
}

/// The cgroup of one run. Dropping it removes its directories (after the run's processes are
/// gone), so an early error return cleans up too.
#[derive(Debug)]
pub enum RunCgroup {
    V2(v2::RunCgroup),
    V1(v1::RunCgroup),
}

impl RunCgroup {
    /// Creates `name` below cvm's own cgroup, applies `limits` and allows only `devices`.
    pub fn create(hierarchy: &Hierarchy, name: &str, limits: Limits, devices: &[Device]) -> Result<RunCgroup> {
        match hierarchy {
            Hierarchy::V2(tree) => Ok(RunCgroup::V2(v2::RunCgroup::create(tree, name, limits, devices)?)),
            Hierarchy::V1(trees) => Ok(RunCgroup::V1(v1::RunCgroup::create(trees, name, limits, devices)?)),
            Hierarchy::Unavailable(reason) => bail!("no cgroup: {reason}"),
        }
    }

    /// How the container's first process enters the cgroup without the slow path (see
    /// [`Placement`]).
    pub fn placement(&self) -> Result<Placement> {
        match self {
            RunCgroup::V2(cgroup) if kernel_at_least(5, 7) => {
                Ok(Placement::CloneInto(open_for_placement(cgroup.path(), true)?))
            }
            RunCgroup::V2(cgroup) => {
                Ok(Placement::JoinSelf(vec![open_for_placement(&cgroup.path().join("cgroup.procs"), false)?]))
            }
            RunCgroup::V1(cgroup) => Ok(Placement::JoinSelf(
                cgroup.dirs().map(|dir| open_for_placement(&dir.join("tasks"), false)).collect::<Result<_>>()?,
            )),
        }
    }

    pub fn usage(&self) -> Usage {
        match self {
            RunCgroup::V2(cgroup) => cgroup.usage(),
            RunCgroup::V1(cgroup) => cgroup.usage(),
        }
    }

    /// The directory to show the user (the memory controller's on v1).
    pub fn path(&self) -> &Path {
        match self {
            RunCgroup::V2(cgroup) => cgroup.path(),
            RunCgroup::V1(cgroup) => cgroup.path(),
        }
    }

    /// Caveats about what this cgroup could not do (missing controllers, files).
    pub fn notes(&self) -> &[String] {
        match self {
            RunCgroup::V2(cgroup) => &cgroup.notes,
            RunCgroup::V1(cgroup) => &cgroup.notes,
        }
    }

    /// Removes the directories now, reporting the first failure.
    pub fn remove(self) -> Result<()> {
        match self {
            RunCgroup::V2(cgroup) => cgroup.remove(),
            RunCgroup::V1(cgroup) => cgroup.remove(),
        }
    }
}

/// The `cvm-*` cgroup directories that exist below cvm's own cgroup right now (tests and
/// `cvm doctor` use it to find leftovers).
pub fn run_cgroup_dirs(hierarchy: &Hierarchy) -> Vec<PathBuf> {
    let parents: Vec<PathBuf> = match hierarchy {
        Hierarchy::V2(tree) => vec![tree.dir.clone()],
        Hierarchy::V1(trees) => trees.controllers().filter_map(|c| trees.dir(c)).map(Path::to_path_buf).collect(),
        Hierarchy::Unavailable(_) => Vec::new(),
    };
    let mut found = Vec::new();
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("cvm-") && entry.path().is_dir() {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Removes one cgroup directory. The kernel refuses (EBUSY) while a task is still leaving it,
/// so retry briefly; a directory already gone is fine.
pub fn remove_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => bail!("removing the cgroup {}: {err}", dir.display()),
        }
    }
}

/// Creates a cgroup directory, explaining the usual reasons it fails.
pub fn create_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied || err.raw_os_error() == Some(libc::EROFS) => {
            bail!("cannot create the cgroup {} ({err}); run as root or from a delegated cgroup", dir.display())
        }
        Err(err) => bail!("creating the cgroup {}: {err}", dir.display()),
    }
}

/// Writes a control file, naming it in the error.
pub fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|err| anyhow::anyhow!("writing '{value}' to {}: {err}", path.display()))
}

/// A control file holding one number.
pub fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (cpu.stat, memory.events, memory.oom_control): the value of `key`.
pub fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    keyed_value(&text, key)
}

pub fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Mount points from /proc/self/mountinfo: (mount point, fs type, super options).
pub fn mounts(mountinfo: &str) -> impl Iterator<Item = (PathBuf, &str, &str)> {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let _source = right.next()?;
        let options = right.next().unwrap_or("");
        Some((PathBuf::from(unescape_mount_path(mount_point)), fstype, options))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(value) = text.get(i + 1..i + 4).and_then(|digits| u8::from_str_radix(digits, 8).ok()) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// cvm's own path in a hierarchy from /proc/self/cgroup: the line whose controller list
/// satisfies `matches` (v2: the `0::` line).
pub fn own_path(proc_self_cgroup: &str, matches: impl Fn(&str) -> bool) -> Option<PathBuf> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        matches(controllers).then(|| PathBuf::from(path.trim_start_matches('/')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
25 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "8:pids:/\n4:memory:/sandbox/a1\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn finds_v1_trees_on_a_hybrid_host() {
        let trees = v1::Trees::find(HYBRID_MOUNTINFO, HYBRID_SELF).unwrap();
        assert_eq!(trees.dir("memory").unwrap(), Path::new("/sys/fs/cgroup/memory/sandbox/a1"));
        assert_eq!(trees.dir("cpu").unwrap(), Path::new("/sys/fs/cgroup/cpu"));
        assert!(trees.dir("blkio").is_none());
        let tree = v2::Tree::find(HYBRID_MOUNTINFO, HYBRID_SELF).unwrap();
        assert_eq!(tree.dir, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn finds_the_v2_tree_on_a_pure_v2_host() {
        let mountinfo = "35 25 0:31 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let tree = v2::Tree::find(mountinfo, "0::/user.slice/session-2.scope\n").unwrap();
        assert_eq!(tree.dir, Path::new("/sys/fs/cgroup/user.slice/session-2.scope"));
        assert!(v1::Trees::find(mountinfo, "0::/x\n").is_none());
    }

    #[test]
    fn cpu_quotas_are_never_rounded_up_silently() {
        assert_eq!(cpu_quota_us(0.5).unwrap(), 50_000);
        assert_eq!(cpu_quota_us(0.01).unwrap(), 1_000);
        for bad in [1e-9, 0.0, -1.0, f64::NAN, 1e9] {
            assert!(cpu_quota_us(bad).unwrap_err().to_string().contains("out of range"), "{bad}");
        }
    }

    #[test]
    fn keyed_files() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(3));
        assert_eq!(keyed_value("usage_usec 1500\nuser_usec 1000\n", "user_usec"), Some(1000));
        assert_eq!(keyed_value(text, "missing"), None);
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/a\\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}

//! Facts about the machine a run happened on, recorded with every result.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostInfo {
    /// Host name of the machine (a label for side-by-side reports).
    pub machine: String,
    pub kernel_release: String,
    pub cpu_model: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    /// "vmx", "svm", "pvm" (nested KVM without hardware assist) or "none".
    pub virtualization: String,
    pub cvm_version: String,
}

impl HostInfo {
    /// Detected once per process.
    pub fn current() -> &'static HostInfo {
        static HOST: OnceLock<HostInfo> = OnceLock::new();
        HOST.get_or_init(HostInfo::detect)
    }

    fn detect() -> HostInfo {
        let cpuinfo = read_kernel_file("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "unknown".into());
        let meminfo = read_kernel_file("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        HostInfo {
            machine: read_trimmed("/proc/sys/kernel/hostname"),
            kernel_release: read_trimmed("/proc/sys/kernel/osrelease"),
            cpu_model,
            cpu_count: online_cpus(),
            memory_bytes: memory_kib * 1024,
            virtualization: virtualization_kind(&cpuinfo).to_string(),
            cvm_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The machine's online CPUs (not this process's share of them: std's available_parallelism
/// also reads the cgroup's quota, four more files on every run).
fn online_cpus() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let count = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(count).ok().filter(|&count| count > 0).unwrap_or(1)
}

/// Which kind of KVM this host offers: the loaded module tells, then the CPU flags.
pub fn virtualization_kind(cpuinfo: &str) -> &'static str {
    let module = |name: &str| std::path::Path::new("/sys/module").join(name).exists();
    if module("kvm_pvm") {
        "pvm"
    } else if module("kvm_intel") {
        "vmx"
    } else if module("kvm_amd") {
        "svm"
    } else {
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        if flags.split_whitespace().any(|f| f == "vmx") {
            "vmx"
        } else if flags.split_whitespace().any(|f| f == "svm") {
            "svm"
        } else {
            "none"
        }
    }
}

fn read_trimmed(path: &str) -> String {
    read_kernel_file(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// A /proc or /sys file read whole in a few system calls. Such files report a size of 0, and
/// `read_to_string` then starts with a 32-byte read and doubles: nine reads for /proc/cpuinfo,
/// eight for /proc/self/status, on every `cvm run`.
pub fn read_kernel_file(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(16 << 10);
    std::fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

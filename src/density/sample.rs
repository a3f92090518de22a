//! What the machine says about the instances, read from outside: the system's used memory
//! (/proc/meminfo), each process's memory (/proc/PID/smaps_rollup), the run cgroups' charge and
//! the CPU time of every thread (/proc/PID/task/TID/schedstat, in ns).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::own_usage::kib_field as meminfo_field;

/// The system's used memory, from the kernel's own counters of what processes and the kernel
/// hold: anonymous and shared-memory pages, kernel stacks, page tables (KVM's included),
/// unreclaimable slab, vmalloc and per-CPU allocations. Not MemTotal − MemFree, which this
/// kernel biases: freed pages wait on per-CPU lists for seconds before MemFree counts them, and
/// new allocations are served from those lists first, so MemFree moves by less than what was
/// allocated (measured: 16 micro-VMs took 19 MiB by the counters, MemFree fell by 10 MiB).
/// The page cache, which every instance's files share and the kernel drops at will, is left out.
pub fn used_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    used_from_meminfo(&text)
}

/// The /proc/meminfo counters `used_memory_bytes` adds up.
pub const USED_COUNTERS: [&str; 8] =
    ["AnonPages:", "Shmem:", "KernelStack:", "PageTables:", "SecPageTables:", "SUnreclaim:", "VmallocUsed:", "Percpu:"];

pub fn used_from_meminfo(text: &str) -> Option<u64> {
    // The first two exist on every kernel cvm supports; the others are added when present.
    let anonymous = meminfo_field(text, "AnonPages:")?;
    let slab = meminfo_field(text, "SUnreclaim:")?;
    let rest: u64 = USED_COUNTERS[..]
        .iter()
        .filter(|name| !matches!(**name, "AnonPages:" | "SUnreclaim:"))
        .filter_map(|name| meminfo_field(text, name))
        .sum();
    Some(anonymous + slab + rest)
}

/// MemAvailable: what the kernel could give to new work without swapping.
pub fn available_memory_bytes() -> Option<u64> {
    meminfo_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemAvailable:")
}

pub fn total_memory_bytes() -> Option<u64> {
    meminfo_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// One process's memory from /proc/PID/smaps_rollup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    pub rss: u64,
    /// Proportional set size: shared pages divided among the processes sharing them.
    pub pss: u64,
    /// Unique set size: pages no other process maps (Private_Clean + Private_Dirty).
    pub uss: u64,
}

impl std::ops::AddAssign for ProcessMemory {
    fn add_assign(&mut self, other: ProcessMemory) {
        self.rss += other.rss;
        self.pss += other.pss;
        self.uss += other.uss;
    }
}

pub fn process_memory(pid: libc::pid_t) -> Option<ProcessMemory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    memory_from_rollup(&text)
}

pub fn memory_from_rollup(text: &str) -> Option<ProcessMemory> {
    let field = |name: &str| meminfo_field(text, name);
    Some(ProcessMemory {
        rss: field("Rss:")?,
        pss: field("Pss:")?,
        uss: field("Private_Clean:")? + field("Private_Dirty:")?,
    })
}

/// Every process below each of `roots` (the roots included), from one scan of /proc.
pub fn process_trees(roots: &[libc::pid_t]) -> BTreeSet<libc::pid_t> {
    let mut children: BTreeMap<libc::pid_t, Vec<libc::pid_t>> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<libc::pid_t>().ok()) else {
                continue;
            };
            if let Some(parent) = parent_of(pid) {
                children.entry(parent).or_default().push(pid);
            }
        }
    }
    let mut found = BTreeSet::new();
    let mut pending: Vec<libc::pid_t> = roots.to_vec();
    while let Some(pid) = pending.pop() {
        if found.insert(pid) {
            pending.extend(children.get(&pid).into_iter().flatten());
        }
    }
    found
}

/// The parent pid from /proc/PID/stat (the field after the parenthesised name, which may itself
/// hold spaces and parentheses).
fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parent_from_stat(&stat)
}

pub fn parent_from_stat(stat: &str) -> Option<libc::pid_t> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of every thread of `pid` so far, in ns (schedstat's first field: time on a CPU).
pub fn cpu_ns(pid: libc::pid_t) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The cgroup v2 directory of `pid` (the "0::" line), or its v1 memory controller's.
pub fn memory_cgroup_of(pid: libc::pid_t) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            return Some(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')));
        }
        if controllers.split(',').any(|c| c == "memory") {
            return Some(Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')));
        }
    }
    None
}

/// What a cgroup is charged now: memory.current (v2) or memory.usage_in_bytes (v1).
pub fn cgroup_charge(dir: &Path) -> Option<u64> {
    ["memory.current", "memory.usage_in_bytes"]
        .iter()
        .find_map(|file| std::fs::read_to_string(dir.join(file)).ok())
        .and_then(|text| text.trim().parse().ok())
}

/// Tasks (threads) on the machine now: the fourth field of /proc/loadavg ("running/total").
pub fn task_count() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()
}

/// The fewest tasks the kernel allows: pid_max and threads-max.
pub fn task_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok();
    match (read("/proc/sys/kernel/pid_max"), read("/proc/sys/kernel/threads-max")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_adds_the_counters_and_leaves_out_the_page_cache() {
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nCached:          300 kB\n\
                       AnonPages:       200 kB\nShmem:  10 kB\nKernelStack: 5 kB\nPageTables: 5 kB\n\
                       SReclaimable:     50 kB\nSUnreclaim:  30 kB\nVmallocUsed: 10 kB\n";
        assert_eq!(used_from_meminfo(meminfo), Some(260 * 1024));
        assert_eq!(used_from_meminfo("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn rollup_fields_add_up() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:   6000 kB\nPss:   2500 kB\n\
                      Pss_Anon: 1000 kB\nShared_Clean: 4000 kB\nPrivate_Clean:  200 kB\nPrivate_Dirty:  800 kB\n";
        assert_eq!(
            memory_from_rollup(rollup),
            Some(ProcessMemory { rss: 6000 << 10, pss: 2500 << 10, uss: 1000 << 10 })
        );
    }

    #[test]
    fn a_parent_is_found_after_any_name() {
        assert_eq!(parent_from_stat("42 (a b) c)) S 7 42 42 0"), Some(7));
        assert_eq!(parent_from_stat("42 (cvm) R 1 42"), Some(1));
    }

    #[test]
    fn readings_of_this_machine_are_plausible() {
        let me = std::process::id() as libc::pid_t;
        assert!(used_memory_bytes().unwrap() > 0);
        assert!(available_memory_bytes().unwrap() <= total_memory_bytes().unwrap());
        assert!(process_memory(me).unwrap().rss > 0);
        assert!(process_trees(&[me]).contains(&me));
        assert!(task_count().unwrap() > 0 && task_limit().unwrap() > 0);
        let _ = cpu_ns(me);
    }
}

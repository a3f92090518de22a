//! cgroup v1 (and hybrid hosts): each controller has its own tree under
//! `/sys/fs/cgroup/<controller>`, so one run's cgroup is one directory per controller used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::devices::{self, Device};
use super::{cpu_quota_us, create_dir, read_keyed, read_number, remove_dir, write_file, Limits, Usage, CPU_PERIOD_US};

/// The controllers a run may use, in the order their directories are created.
const CONTROLLERS: [&str; 5] = ["memory", "cpuacct", "cpu", "pids", "devices"];

/// cvm's own directory in each mounted v1 controller tree.
#[derive(Clone, Debug)]
pub struct Trees {
    dirs: BTreeMap<&'static str, PathBuf>,
}

impl Trees {
    /// From /proc/self/mountinfo and /proc/self/cgroup; None without a v1 memory tree.
    pub fn find(mountinfo: &str, proc_self_cgroup: &str) -> Option<Trees> {
        let mut dirs = BTreeMap::new();
        for (mount_point, fstype, options) in super::mounts(mountinfo) {
            if fstype != "cgroup" {
                continue;
            }
            for controller in CONTROLLERS {
                if dirs.contains_key(controller) || !options.split(',').any(|o| o == controller) {
                    continue;
                }
                let own = super::own_path(proc_self_cgroup, |list| list.split(',').any(|c| c == controller));
                if let Some(own) = own {
                    dirs.insert(controller, mount_point.join(own));
                }
            }
        }
        dirs.contains_key("memory").then_some(Trees { dirs })
    }

    /// cvm's own directory in `controller`'s tree.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.get(controller).map(PathBuf::as_path)
    }

    pub fn controllers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.dirs.keys().copied()
    }
}

/// One run's directories, one per controller tree it uses.
#[derive(Debug)]
pub struct RunCgroup {
    /// (controller, directory); co-mounted controllers share a directory, listed once.
    dirs: Vec<(&'static str, PathBuf)>,
    pub notes: Vec<String>,
}

impl RunCgroup {
    pub fn create(trees: &Trees, name: &str, limits: Limits, devices: &[Device]) -> Result<RunCgroup> {
        let mut cgroup = RunCgroup { dirs: Vec::new(), notes: Vec::new() };
        let wanted = |controller: &str| match controller {
            "memory" | "cpuacct" | "devices" => true,
            "cpu" => limits.cpus.is_some(),
            "pids" => limits.pids.is_some(),
            _ => false,
        };
        for controller in CONTROLLERS.into_iter().filter(|c| wanted(c)) {
            let Some(parent) = trees.dir(controller) else {
                match controller {
                    "cpu" => bail!("--cpus needs the cgroup v1 cpu controller, which is not mounted"),
                    "pids" => bail!("--pids needs the cgroup v1 pids controller, which is not mounted"),
                    "devices" => {
                        cgroup.notes.push(
                            "cgroup v1 devices controller not mounted: device access is limited only by the \
                             container's /dev"
                                .into(),
                        );
                        continue;
                    }
                    _ => {
                        cgroup.notes.push(format!("cgroup v1 {controller} controller not mounted"));
                        continue;
                    }
                }
            };
            let dir = parent.join(name);
            if cgroup.dirs.iter().any(|(_, d)| *d == dir) {
                continue;
            }
            create_dir(&dir)?;
            cgroup.dirs.push((controller, dir));
        }
        cgroup.apply(limits)?;
        if let Some(dir) = cgroup.dir("devices") {
            devices::apply_v1(dir, devices)?;
        }
        Ok(cgroup)
    }

    /// The run's directories, one per controller tree.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, d)| d.as_path())
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|(c, _)| *c == controller).map(|(_, d)| d.as_path())
    }

    fn apply(&mut self, limits: Limits) -> Result<()> {
        if let (Some(bytes), Some(dir)) = (limits.memory_bytes, self.dir("memory")) {
            write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // memory+swap equal to memory: the program cannot escape the limit into swap.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &bytes.to_string())?;
            } else {
                self.notes.push("no swap accounting (memory.memsw.*): swap is not limited".into());
            }
        }
        if let (Some(cpus), Some(dir)) = (limits.cpus, self.dir("cpu")) {
            let quota = cpu_quota_us(cpus)?;
            write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let (Some(pids), Some(dir)) = (limits.pids, self.dir("pids")) {
            write_file(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    pub fn usage(&self) -> Usage {
        let memory = self.dir("memory");
        let (user_ns, system_ns) = self.dir("cpuacct").and_then(cpu_split).unzip();
        Usage {
            peak_bytes: memory.and_then(|d| read_number(&d.join("memory.max_usage_in_bytes"))),
            user_ns,
            system_ns,
            oom_kills: memory.and_then(|d| read_keyed(&d.join("memory.oom_control"), "oom_kill")),
            limit_hits: memory.and_then(|d| read_number(&d.join("memory.failcnt"))),
        }
    }

    pub fn path(&self) -> &Path {
        self.dirs.first().map_or(Path::new(""), |(_, d)| d.as_path())
    }

    pub fn remove(mut self) -> Result<()> {
        remove_all(&mut self.dirs)
    }
}

/// (user, system) ns. `cpuacct.usage` is exact, but the kernel splits it into
/// `usage_user`/`usage_sys` by timer ticks, which a millisecond run may never see: scale the
/// exact total by the tick split, and give up (rusage then) when there is no split.
fn cpu_split(dir: &Path) -> Option<(u64, u64)> {
    let total = read_number(&dir.join("cpuacct.usage"))?;
    let user = read_number(&dir.join("cpuacct.usage_user"))?;
    let system = read_number(&dir.join("cpuacct.usage_sys"))?;
    split_by_ticks(total, user, system)
}

fn split_by_ticks(total: u64, user: u64, system: u64) -> Option<(u64, u64)> {
    let ticks = user.checked_add(system).filter(|&t| t > 0)?;
    let user_share = (total as u128 * user as u128 / ticks as u128) as u64;
    Some((user_share, total - user_share.min(total)))
}

fn remove_all(dirs: &mut Vec<(&'static str, PathBuf)>) -> Result<()> {
    let mut first_error = None;
    while let Some((_, dir)) = dirs.pop() {
        if let Err(err) = remove_dir(&dir) {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        let _ = remove_all(&mut self.dirs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_the_exact_total_split_by_ticks() {
        assert_eq!(split_by_ticks(1_000, 300, 100), Some((750, 250)));
        assert_eq!(split_by_ticks(1_000, 0, 0), None);
        assert_eq!(split_by_ticks(0, 4_000_000, 0), Some((0, 0)));
    }
}

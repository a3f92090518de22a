//! cgroup v2: one unified tree. A run's cgroup is one directory; the controllers it needs must
//! be enabled in the parent's `cgroup.subtree_control`, which the kernel refuses while the
//! parent itself holds processes ("no internal processes" rule) unless it is the root.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::devices::{self, Device};
use super::{cpu_quota_us, create_dir, read_keyed, read_number, remove_dir, write_file, Limits, Usage, CPU_PERIOD_US};

/// cvm's own cgroup directory in the unified tree.
#[derive(Clone, Debug)]
pub struct Tree {
    pub dir: PathBuf,
    controllers: Vec<String>,
}

impl Tree {
    pub fn find(mountinfo: &str, proc_self_cgroup: &str) -> Option<Tree> {
        let (mount_point, _, _) = super::mounts(mountinfo).find(|(_, fstype, _)| *fstype == "cgroup2")?;
        let own = super::own_path(proc_self_cgroup, |list| list.is_empty())?;
        let dir = mount_point.join(own);
        let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Some(Tree { dir, controllers })
    }

    /// True when `controller` is available to cvm's cgroup (and so to cgroups below it).
    pub fn has_controller(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }
}

#[derive(Debug)]
pub struct RunCgroup {
    dir: Option<PathBuf>,
    pub notes: Vec<String>,
}

impl RunCgroup {
    pub fn create(tree: &Tree, name: &str, limits: Limits, devices: &[Device]) -> Result<RunCgroup> {
        let mut notes = Vec::new();
        if !tree.has_controller("memory") {
            notes.push(format!(
                "the cgroup v2 tree at {} has no memory controller: peak memory and OOM kills are not measured",
                tree.dir.display()
            ));
        }
        enable_controllers(tree, &mut notes);
        let dir = tree.dir.join(name);
        create_dir(&dir)?;
        let mut cgroup = RunCgroup { dir: Some(dir), notes };
        cgroup.apply(limits)?;
        if let Err(err) = devices::attach_v2(cgroup.dir(), devices) {
            cgroup
                .notes
                .push(format!("{err:#}: device access is limited only by the container's /dev and its capabilities"));
        }
        Ok(cgroup)
    }

    fn dir(&self) -> &Path {
        self.dir.as_deref().unwrap_or(Path::new(""))
    }

    fn apply(&self, limits: Limits) -> Result<()> {
        let dir = self.dir();
        let require = |file: &str, flag: &str| {
            if dir.join(file).exists() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{flag} needs the cgroup v2 controller of {file}, which is not enabled for {}",
                    dir.display()
                ))
            }
        };
        if let Some(bytes) = limits.memory_bytes {
            require("memory.max", "--memory")?;
            write_file(&dir.join("memory.max"), &bytes.to_string())?;
            // v2 counts swap separately: no swap keeps memory+swap equal to the limit.
            if dir.join("memory.swap.max").exists() {
                write_file(&dir.join("memory.swap.max"), "0")?;
            }
        }
        if let Some(cpus) = limits.cpus {
            require("cpu.max", "--cpus")?;
            let quota = cpu_quota_us(cpus)?;
            write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        if let Some(pids) = limits.pids {
            require("pids.max", "--pids")?;
            write_file(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    pub fn usage(&self) -> Usage {
        let dir = self.dir();
        let usec = |key| read_keyed(&dir.join("cpu.stat"), key).map(|us| us * 1000);
        Usage {
            peak_bytes: read_number(&dir.join("memory.peak")),
            user_ns: usec("user_usec"),
            system_ns: usec("system_usec"),
            oom_kills: read_keyed(&dir.join("memory.events"), "oom_kill"),
            limit_hits: read_keyed(&dir.join("memory.events"), "max"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir()
    }

    pub fn remove(mut self) -> Result<()> {
        match self.dir.take() {
            Some(dir) => remove_dir(&dir),
            None => Ok(()),
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = remove_dir(&dir);
        }
    }
}

/// Makes memory, cpu and pids available to the cgroups below cvm's, where the parent allows it.
fn enable_controllers(tree: &Tree, notes: &mut Vec<String>) {
    let control = tree.dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    let missing: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| tree.has_controller(c) && !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return;
    }
    let request: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if let Err(err) = std::fs::write(&control, request.join(" ")) {
        let why = if err.raw_os_error() == Some(libc::EBUSY) {
            "cvm's cgroup holds processes itself (the v2 \"no internal processes\" rule); \
             start cvm in a cgroup of its own, e.g. `systemd-run --scope -p Delegate=yes cvm ...`"
                .to_string()
        } else {
            err.to_string()
        };
        notes.push(format!(
            "could not enable the {} controller(s) in {}: {why}",
            missing.join(", "),
            control.display()
        ));
    }
}

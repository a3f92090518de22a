//! `--explain` for the container runtime: each step of a run in words a student understands.
//! The texts are built only when narration is on.

use super::cgroup::{Hierarchy, Limits, RunCgroup};
use super::image::{Image, Origin};
use super::init::InitPlan;
use super::namespaces::Namespace;
use super::sync::RootfsKind;
use super::{capabilities, rootfs};
use crate::explain::Narrator;
use crate::runtime::supervise::Supervised;
use crate::units::{format_bytes, format_ns};

pub(super) fn image(image: &Image) -> String {
    match &image.origin {
        Origin::Cache { built } => {
            let origin = if *built {
                "was built now and stored in cvm's cache"
            } else {
                "came from cvm's cache (built once per program content, reused by every run)"
            };
            let at: Vec<String> = image.layers.iter().map(|l| l.display().to_string()).collect();
            format!(
                "container: the image is a tiny root file system holding only the program ({}), at {}. It {origin}. \
                 The image itself is never written: each run gets its own writable layer on top.",
                image.program,
                at.join(", ")
            )
        }
        Origin::Store { reference, digest } => format!(
            "container: the image {reference} ({digest}) from cvm's store: {} read-only layers, unpacked once in \
             the store and stacked by overlayfs (plus a layer holding the mount points /proc and /dev). It starts \
             {}. The image itself is never written: the container's writes go to a writable layer on top.",
            image.layers.len().saturating_sub(1),
            image.program
        ),
    }
}

pub(super) fn cgroup(hierarchy: &Hierarchy, cgroup: Option<&RunCgroup>, limits: Limits) -> String {
    let Some(cgroup) = cgroup else {
        return match hierarchy {
            Hierarchy::Unavailable(why) => {
                format!("container: no cgroup for this run ({why}). Memory and CPU time will come from wait4's rusage.")
            }
            _ => "container: no cgroup could be created for this run; memory and CPU time come from rusage.".into(),
        };
    };
    let mut limit_words = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        limit_words.push(format!("memory at most {} (the kernel's OOM killer stops it beyond)", format_bytes(bytes)));
    }
    if let Some(cpus) = limits.cpus {
        limit_words
            .push(format!("{cpus} CPU(s) of time per period ({} µs quota per 100 ms)", (cpus * 100_000.0) as u64));
    }
    if let Some(pids) = limits.pids {
        limit_words.push(format!("at most {pids} processes"));
    }
    let limits_text =
        if limit_words.is_empty() { "no limits, only accounting".to_string() } else { limit_words.join(", ") };
    format!(
        "container: created the cgroup {} (cgroup {}), below the cgroup cvm itself runs in. The kernel counts \
         every page and every CPU nanosecond of the processes inside it: {limits_text}.",
        cgroup.path().display(),
        hierarchy.version()
    )
}

pub(super) fn container(
    narrator: &Narrator,
    plan: &InitPlan,
    namespaces: &[Namespace],
    hostname: &str,
    rootfs: RootfsKind,
    as_root: bool,
    cgroup_version: Option<&str>,
) {
    narrator.step(|| {
        let list: Vec<String> = namespaces.iter().map(|ns| format!("{} ({})", ns.name, ns.isolates)).collect();
        format!(
            "container: one clone3 call started the container's first process in new namespaces: {}.",
            list.join("; ")
        )
    });
    if !as_root {
        narrator.step(|| {
            "container: cvm wrote uid_map and gid_map of the new user namespace: your user is root (uid 0) \
             inside, with powers over the container's namespaces only."
                .into()
        });
    }
    narrator.step(|| {
        let joined = match cgroup_version {
            Some("v2") => "clone3 started the first process inside the run's cgroup (CLONE_INTO_CGROUP)",
            Some(_) => {
                "the first process wrote itself into the tasks file of each of the run's v1 cgroups before \
                 anything else"
            }
            None => "there is no cgroup to join",
        };
        format!(
            "container: {joined}, so its own set-up is accounted too. It then entered a new cgroup namespace, so \
             its cgroup looks like the root of the tree from inside."
        )
    });
    narrator.step(|| {
        format!(
            "container: set the host name to {hostname} (uts namespace) and brought up lo, the only network device."
        )
    });
    narrator.step(|| {
        let how = match rootfs {
            RootfsKind::Overlay => {
                "overlayfs: the read-only image below, a fresh tmpfs above; every write of the program lands in \
                 the tmpfs and disappears with the container"
            }
            RootfsKind::Copy => "a copy of the image in a fresh tmpfs (overlayfs was not available)",
        };
        format!(
            "container: made all mounts private to its mount namespace, then built the root file system with {how}."
        )
    });
    narrator.step(|| {
        "container: mounted /proc of the new pid namespace (it lists only the container's processes) and a tiny \
         /dev holding null, zero, full, random, urandom and tty, bind-mounted from the host."
            .into()
    });
    narrator.step(|| {
        format!(
            "container: masked /proc files that reveal host internals (like /proc/kcore, /proc/keys) and made \
             /proc/sys, /proc/sysrq-trigger, /proc/irq, /proc/bus and /proc/fs read-only, as runc does. \
             In all, {} mount operations.",
            rootfs::mount_count(&plan.steps)
        )
    });
    narrator.step(|| {
        "container: pivot_root made the new tree its root and detached the host's file system, so no host file \
         can be reached by path."
            .into()
    });
    narrator.step(|| {
        format!(
            "container: dropped every capability except {} (bounding, effective, permitted and inheritable sets; \
             ambient cleared) and set no_new_privs, so no setuid program can give them back.",
            capabilities::kept_names().join(", ")
        )
    });
    narrator.step(|| {
        "container: the first process reported ready and called execve: the program runs as pid 1, on the \
         host's kernel."
            .into()
    });
}

/// The slowest steps of the first process: where the set-up time goes.
pub(super) fn step_times(plan: &InitPlan, step_ns: &[u64]) -> String {
    let mut timed: Vec<(u64, &str)> = plan.steps.iter().zip(step_ns).map(|(p, &ns)| (ns, p.what.as_str())).collect();
    let total: u64 = timed.iter().map(|(ns, _)| ns).sum();
    timed.sort_by_key(|t| std::cmp::Reverse(t.0));
    let slowest: Vec<String> =
        timed.iter().take(5).map(|(ns, what)| format!("{what} {}", format_ns(*ns as f64))).collect();
    format!(
        "container: the first process spent {} on its {} set-up steps; the slowest: {}.",
        format_ns(total as f64),
        step_ns.len(),
        slowest.join("; ")
    )
}

pub(super) fn end(done: &Supervised, oom_killed: bool, cgroup_path: Option<&str>) -> String {
    let how = if oom_killed { "OOM-killed by the kernel".to_string() } else { done.describe_end() };
    let cgroup = cgroup_path
        .map_or(String::new(), |p| format!(" cvm read the cgroup's peak memory and CPU time and removed {p}."));
    format!(
        "container: the program ended ({how}). As pid 1 of its pid namespace its end killed everything else in it; \
         its mount namespace and all its mounts went away with it.{cgroup}"
    )
}

//! `cvm doctor`: what this machine can do, check by check, and how to fix what it cannot.
//! Exit status 0 when all three runtimes can run, 1 otherwise.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::DoctorArgs;
use crate::containers::Container;
use crate::image::store::Store;
use crate::image::Image;
use crate::runtime::container::{self, cgroup, namespaces, rootfs};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// How to fix it, when it is not ok.
    pub fix: Option<String>,
    /// The runtimes that cannot run while this check fails.
    pub needed_by: Vec<&'static str>,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check { name, status, detail: detail.into(), fix: None, needed_by: Vec::new() }
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    fn needed_by(mut self, runtimes: &[&'static str]) -> Check {
        self.needed_by = runtimes.to_vec();
        self
    }
}

#[derive(Debug, Serialize)]
pub struct Diagnosis {
    /// True when every runtime can run here.
    pub ok: bool,
    /// Per runtime: can it run here?
    pub runtimes: std::collections::BTreeMap<&'static str, bool>,
    pub checks: Vec<Check>,
    /// The industry's tools cvm can measure beside its own (`--runtimes`, `compare --peers`):
    /// found on PATH with their version, or why not. They never make the diagnosis fail.
    pub peers: Vec<Peer>,
}

#[derive(Debug, Serialize)]
pub struct Peer {
    pub name: &'static str,
    pub found: bool,
    /// Its path and version line, or why it is missing.
    pub detail: String,
}

fn peers() -> Vec<Peer> {
    crate::record::RuntimeKind::PEERS
        .into_iter()
        .map(|kind| match crate::peers::describe(kind) {
            Ok(detail) => Peer { name: kind.name(), found: true, detail },
            Err(why) => Peer { name: kind.name(), found: false, detail: why },
        })
        .collect()
}

pub fn doctor(args: DoctorArgs) -> Result<i32> {
    let diagnosis = diagnose();
    let text = if args.json {
        serde_json::to_string_pretty(&diagnosis).context("serializing the diagnosis")? + "\n"
    } else {
        table(&diagnosis)
    };
    // A closed stdout (`cvm doctor | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(if diagnosis.ok { 0 } else { 1 })
}

pub fn diagnose() -> Diagnosis {
    let checks = vec![
        platform(),
        root(),
        kvm_device(),
        virtualization(),
        user_namespaces(),
        overlayfs(),
        cgroup_hierarchy(),
        per_run_cgroup(),
        store(),
    ];
    let mut runtimes = std::collections::BTreeMap::new();
    for runtime in ["process", "container", "vm"] {
        let blocked = checks.iter().any(|c| c.status == Status::Fail && c.needed_by.contains(&runtime));
        runtimes.insert(runtime, !blocked);
    }
    let ok = runtimes.values().all(|&can| can);
    Diagnosis { ok, runtimes, checks, peers: peers() }
}

fn platform() -> Check {
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    let detail = format!("{os} {arch}, kernel {}", crate::host::HostInfo::current().kernel_release);
    if os == "linux" && arch == "x86_64" {
        Check::new("platform", Status::Ok, detail)
    } else {
        Check::new("platform", Status::Fail, detail).fix("cvm runs on Linux x86-64 only").needed_by(&[
            "process",
            "container",
            "vm",
        ])
    }
}

fn root() -> Check {
    if container::running_as_root() {
        Check::new("root", Status::Ok, "running as root (uid 0)")
    } else {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        Check::new(
            "root",
            Status::Warn,
            format!("running as uid {uid}: containers use a user namespace; cgroup limits may be unavailable"),
        )
        .fix("run with sudo for cgroup limits and accounting")
    }
}

fn kvm_device() -> Check {
    let path = std::path::Path::new("/dev/kvm");
    let fail = |detail: String, fix: &str| Check::new("kvm", Status::Fail, detail).fix(fix).needed_by(&["vm"]);
    if !path.exists() {
        return fail(
            "/dev/kvm does not exist".into(),
            "load KVM (`sudo modprobe kvm_intel` or `kvm_amd`) and enable virtualization in the firmware; \
             in a cloud VM choose an instance type with nested virtualization",
        );
    }
    if let Err(err) = std::fs::OpenOptions::new().read(true).write(true).open(path) {
        return fail(
            format!("/dev/kvm cannot be opened read-write: {err}"),
            "add yourself to the kvm group (`sudo usermod -aG kvm $USER`, then log in again) or run as root",
        );
    }
    match kvm_ioctls::Kvm::new() {
        Ok(kvm) if kvm.get_api_version() == 12 => {
            Check::new("kvm", Status::Ok, "/dev/kvm opened read-write, KVM API version 12")
        }
        Ok(kvm) => {
            fail(format!("unexpected KVM API version {}", kvm.get_api_version()), "use a Linux kernel with KVM API 12")
        }
        Err(err) => fail(format!("KVM does not answer: {err}"), "check `dmesg` for KVM errors"),
    }
}

fn virtualization() -> Check {
    let kind = crate::host::HostInfo::current().virtualization.clone();
    match kind.as_str() {
        "vmx" | "svm" => Check::new("virtualization", Status::Ok, format!("{kind}: hardware-assisted KVM")),
        "pvm" => Check::new(
            "virtualization",
            Status::Warn,
            "pvm: nested KVM without hardware assist (kvm_pvm); guest user code runs natively, guest kernel \
             code is emulated (about 1 µs per instruction)",
        )
        .fix("for realistic VM numbers use bare metal or a host with nested VMX/SVM"),
        _ => Check::new("virtualization", Status::Warn, "none: no vmx/svm CPU flag and no KVM module")
            .fix("enable VT-x/AMD-V in the firmware, or nested virtualization in the cloud"),
    }
}

fn user_namespaces() -> Check {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").map(|s| s.trim().to_string());
    let max = max.unwrap_or_else(|_| "missing".into());
    match (container::running_as_root(), namespaces::user_namespaces_usable()) {
        (_, Ok(())) => Check::new("user namespaces", Status::Ok, format!("available (max_user_namespaces = {max})")),
        (true, Err(err)) => Check::new(
            "user namespaces",
            Status::Warn,
            format!("not usable ({err:#}); not needed while running as root"),
        ),
        (false, Err(err)) => Check::new("user namespaces", Status::Fail, format!("{err:#}"))
            .fix("run as root, or enable unprivileged user namespaces (see the detail)")
            .needed_by(&["container"]),
    }
}

fn overlayfs() -> Check {
    if rootfs::overlay_supported() {
        Check::new("overlayfs", Status::Ok, "listed in /proc/filesystems: the image gets a per-run writable layer")
    } else {
        Check::new("overlayfs", Status::Warn, "not in /proc/filesystems: each run copies the image into a tmpfs")
            .fix("`sudo modprobe overlay`")
    }
}

fn cgroup_hierarchy() -> Check {
    match cgroup::hierarchy() {
        cgroup::Hierarchy::V2(tree) => {
            let detail = format!("v2 at {}, controllers: {}", tree.dir.display(), tree.controllers().join(" "));
            if tree.has_controller("memory") {
                Check::new("cgroups", Status::Ok, detail)
            } else {
                Check::new(
                    "cgroups",
                    Status::Warn,
                    format!("{detail} (no memory controller: no peak memory, no --memory)"),
                )
                .fix("delegate the memory controller to your cgroup (systemd: Delegate=yes)")
            }
        }
        cgroup::Hierarchy::V1(trees) => {
            let list: Vec<&str> = trees.controllers().collect();
            let memory = trees.dir("memory").map_or(String::new(), |d| d.display().to_string());
            Check::new(
                "cgroups",
                Status::Ok,
                format!("v1 (hybrid host): controllers {}; ours: {memory}", list.join(" ")),
            )
        }
        cgroup::Hierarchy::Unavailable(why) => Check::new("cgroups", Status::Warn, format!("none usable: {why}"))
            .fix("mount cgroup2 at /sys/fs/cgroup (most distributions do); without it runs use rusage only"),
    }
}

fn per_run_cgroup() -> Check {
    let hierarchy = cgroup::hierarchy();
    let name = format!("cvm-doctor-{}", std::process::id());
    let check = match cgroup::RunCgroup::create(hierarchy, &name, cgroup::Limits::default(), &[]) {
        Ok(run) => {
            let path = run.path().display().to_string();
            let notes = run.notes().join("; ");
            match run.remove() {
                Ok(()) if notes.is_empty() => {
                    Check::new("per-run cgroup", Status::Ok, format!("created and removed {path}"))
                }
                Ok(()) => Check::new("per-run cgroup", Status::Warn, format!("created {path}, but: {notes}")),
                Err(err) => Check::new("per-run cgroup", Status::Warn, format!("{err:#}")),
            }
        }
        Err(err) => {
            return Check::new("per-run cgroup", Status::Warn, format!("{err:#}; container runs fall back to rusage"))
                .fix(
                    "run as root, or start cvm inside a delegated cgroup \
                     (e.g. `systemd-run --user --scope -p Delegate=yes cvm ...`)",
                )
        }
    };
    // Empty run cgroups of earlier runs: only a cvm killed with SIGKILL leaves them.
    let stale: Vec<String> = cgroup::run_cgroup_dirs(hierarchy)
        .into_iter()
        .filter(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|procs| procs.trim().is_empty()))
        .map(|dir| dir.display().to_string())
        .collect();
    if stale.is_empty() {
        return check;
    }
    Check::new(
        "per-run cgroup",
        Status::Warn,
        format!("{}; {} empty cgroup(s) of earlier runs are left: {}", check.detail, stale.len(), stale.join(" ")),
    )
    .fix(format!("remove them: sudo rmdir {}", stale.join(" ")))
}

/// The image and container store: where it is, what it holds, and what killed commands left.
fn store() -> Check {
    let root = Store::default_root();
    if !root.exists() {
        return Check::new(
            "store",
            Status::Ok,
            format!("{} (not created yet: `cvm image build` makes it)", root.display()),
        );
    }
    let store = match Store::at(&root) {
        Ok(store) => store,
        Err(err) => {
            return Check::new("store", Status::Warn, format!("{err:#}"))
                .fix("set CVM_STORE to a folder you can write, or fix the permissions")
        }
    };
    let images = store.images().and_then(|l| Image::list(&l)).map_or(0, |l| l.len());
    let containers = Container::list(&store).map_or(0, |l| l.len());
    let unneeded = unneeded_blob_bytes(&store);
    let mut detail = format!("{}: {images} image(s), {containers} container(s)", root.display());
    if unneeded > 0 {
        detail.push_str(&format!(
            "; {} of blobs no image or container needs (`cvm image prune` removes them)",
            crate::units::format_bytes(unneeded)
        ));
    }
    let mut leftovers: Vec<String> = store.leftovers().iter().map(|p| p.display().to_string()).collect();
    leftovers.extend(
        crate::image::layout::abandoned_staging(&container::image::images_dir())
            .iter()
            .map(|p| p.display().to_string()),
    );
    if leftovers.is_empty() {
        return Check::new("store", Status::Ok, detail);
    }
    Check::new(
        "store",
        Status::Warn,
        format!("{detail}; a killed command left {}: {}", leftovers.len(), leftovers.join(" ")),
    )
    .fix("the next cvm command that writes the store removes them (for example `cvm image build`), or rm -r them")
}

/// Bytes of the store's blobs that no named image and no container refers to.
fn unneeded_blob_bytes(store: &Store) -> u64 {
    let Ok(layout) = store.images() else { return 0 };
    let Ok(mut needed) = layout.referenced_blobs() else { return 0 };
    for descriptor in crate::containers::images_in_use(store).unwrap_or_default() {
        let placeholder = crate::image::reference::Reference::parse("container-image").expect("a valid name");
        if let Ok(image) = Image::read(&layout, placeholder, descriptor) {
            needed.extend(image.blobs().into_iter().map(|b| b.digest));
        }
    }
    layout
        .blob_digests()
        .into_iter()
        .filter(|digest| !needed.contains(digest))
        .map(|digest| std::fs::metadata(layout.blob_path(&digest)).map_or(0, |m| m.len()))
        .sum()
}

fn table(diagnosis: &Diagnosis) -> String {
    use std::fmt::Write;
    let mut out = String::from("cvm doctor: what this machine can do\n\n");
    let width = diagnosis.checks.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(out, "  {:<width$}  {:<6}  DETAIL", "CHECK", "STATUS");
    for check in &diagnosis.checks {
        let _ = writeln!(out, "  {:<width$}  {:<6}  {}", check.name, check.status.label(), check.detail);
        if let Some(fix) = &check.fix {
            let _ = writeln!(out, "  {:<width$}  {:<6}  fix: {fix}", "", "");
        }
    }
    let runtimes: Vec<String> = diagnosis
        .runtimes
        .iter()
        .map(|(name, &can)| format!("{name} {}", if can { "ready" } else { "NOT READY" }))
        .collect();
    let _ = writeln!(out, "\nruntimes: {}", runtimes.join(", "));
    let _ =
        writeln!(out, "\npeers (measured beside cvm with `cvm compare --peers`; a run checks that each works here):");
    for peer in &diagnosis.peers {
        let _ = writeln!(
            out,
            "  {:<8} {}",
            peer.name,
            if peer.found { peer.detail.clone() } else { format!("missing: {}", peer.detail) }
        );
    }
    if !diagnosis.ok {
        out.push_str("Fix the FAIL lines above, then run `cvm doctor` again.\n");
    }
    out
}

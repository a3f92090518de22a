//! The container's root file system, as a list of steps for its first process: a private
//! mount table, the image with a per-run writable layer on top (overlayfs, or a tmpfs copy
//! where overlayfs is unavailable), `/proc` of the new pid namespace, a minimal `/dev`, the
//! /proc paths runc masks or makes read-only, and finally `pivot_root` into it.
//!
//! Every mount happens inside the container's own mount namespace, so the host never sees one
//! and all of them vanish with the container's last process. The per-run layer lives on a
//! tmpfs mounted (privately) over an empty cache directory: nothing is written to the host.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};

use super::image::Image;
use super::init::{Planned, Step};
use crate::embedded;
use crate::image::tree::{Kind, Tree};

/// Device nodes bind-mounted from the host (a user namespace may not create device nodes).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// /proc entries that reveal host internals: hidden behind /dev/null (files) or an empty
/// read-only tmpfs (directories), as runc does.
pub const MASKED: [&str; 10] = [
    "acpi",
    "asound",
    "interrupts",
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "scsi",
];

/// /proc entries that could change the host kernel: made read-only.
pub const READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

const PROC_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Facts about the host the plan depends on, read once per process.
struct HostFiles {
    devices: Vec<&'static str>,
    masked: Vec<(&'static str, bool)>,
    read_only: Vec<&'static str>,
    overlay: bool,
}

fn host_files() -> &'static HostFiles {
    static FILES: OnceLock<HostFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        let proc = Path::new("/proc");
        HostFiles {
            devices: DEVICES.into_iter().filter(|d| Path::new("/dev").join(d).exists()).collect(),
            masked: MASKED
                .into_iter()
                .filter_map(|m| std::fs::symlink_metadata(proc.join(m)).ok().map(|meta| (m, meta.is_dir())))
                .collect(),
            read_only: READ_ONLY.into_iter().filter(|r| proc.join(r).exists()).collect(),
            overlay: overlay_supported(),
        }
    })
}

/// The device nodes the container's /dev gets on this host.
pub fn device_names() -> Vec<&'static str> {
    host_files().devices.clone()
}

/// True when the kernel lists overlayfs in /proc/filesystems.
pub fn overlay_supported() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|text| text.lines().any(|line| line.split_whitespace().last() == Some("overlay")))
}

/// An empty directory of cvm's cache that each run covers with its own private tmpfs.
pub fn scratch_dir() -> Result<PathBuf> {
    let dir = embedded::cache_dir().join("containers");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(dir)
}

/// How the root file system is made.
pub struct RootfsOptions<'a> {
    pub image: &'a Image,
    pub writable: &'a Writable,
    pub user_namespace: bool,
    /// False forces the tmpfs copy (`CVM_ROOTFS=copy`, or no overlayfs on this host).
    pub try_overlay: bool,
    /// Host folders mounted into the container (`--volume`).
    pub volumes: &'a [super::volumes::Volume],
}

/// Where the container's writes go: overlayfs's upper layer.
#[derive(Clone, Debug)]
pub enum Writable {
    /// A per-run tmpfs mounted (privately) over this empty cache folder, holding the upper
    /// layer, overlayfs's work folder and the new root: gone with the run.
    Throwaway { scratch: PathBuf },
    /// A created container's own layer on the host, kept between its starts until `cvm rm`.
    Kept { upper: PathBuf, work: PathBuf, root: PathBuf },
}

impl Writable {
    fn root(&self) -> PathBuf {
        match self {
            Writable::Throwaway { scratch } => scratch.join("root"),
            Writable::Kept { root, .. } => root.clone(),
        }
    }

    fn upper_and_work(&self) -> (PathBuf, PathBuf) {
        match self {
            Writable::Throwaway { scratch } => (scratch.join("upper"), scratch.join("work")),
            Writable::Kept { upper, work, .. } => (upper.clone(), work.clone()),
        }
    }
}

/// Whether to try overlayfs: the host has it, and `CVM_ROOTFS=copy` does not ask otherwise.
pub fn want_overlay() -> bool {
    host_files().overlay && std::env::var("CVM_ROOTFS").map_or(true, |v| v != "copy")
}

pub fn plan(options: &RootfsOptions) -> Result<Vec<Planned>> {
    let files = host_files();
    let root = options.writable.root();
    let in_root = |path: &str| root.join(path.trim_start_matches('/'));
    let mut steps = Vec::new();

    steps.push(Planned::new(
        mount(None::<&Path>, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?,
        "making every mount private to the container's mount namespace",
    ));
    let fallback = match options.writable {
        Writable::Throwaway { scratch } => {
            steps.push(Planned::new(
                mount(Some("tmpfs"), scratch, Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some("mode=0755"))?,
                format!("mounting a per-run tmpfs at {}", scratch.display()),
            ));
            for dir in ["upper", "work", "root"] {
                let path = scratch.join(dir);
                steps.push(Planned::new(make_dir(&path, 0o755)?, format!("creating {}", path.display())));
            }
            // The copy, planned in advance for the child to fall back on, walks the image's
            // whole tree: only when overlayfs is not tried, or may fail (in a user namespace,
            // Linux before 5.11 has no `userxattr`). As root overlayfs over a fresh tmpfs upper
            // layer works wherever the host lists it; CVM_ROOTFS=copy remains the way around.
            let may_fail = !options.try_overlay || options.user_namespace;
            may_fail.then(|| copy_of_image(options.image, &root)).transpose()?
        }
        // A kept layer only makes sense as overlayfs's upper layer: no copy to fall back to.
        Writable::Kept { .. } => None,
    };
    let (upper, work) = options.writable.upper_and_work();
    let lower: Vec<String> = options.image.layers.iter().map(|l| escape_overlay_path(l)).collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape_overlay_path(&upper),
        escape_overlay_path(&work)
    );
    if options.user_namespace {
        // Inside a user namespace overlayfs keeps its metadata in user.* xattrs (Linux >= 5.11).
        data.push_str(",userxattr");
    }
    let layers = match options.image.layers.len() {
        1 => "the image".to_string(),
        n => format!("the image's {n} layers"),
    };
    steps.push(Planned::new(
        Step::Overlay { target: cstring(&root)?, data: cstring(data)?, attempt: options.try_overlay, fallback },
        format!("mounting {layers} with a writable layer at {}", root.display()),
    ));

    steps.push(Planned::new(
        mount(Some("proc"), in_root("proc"), Some("proc"), PROC_FLAGS, None)?,
        "mounting /proc of the container's pid namespace",
    ));
    steps.push(Planned::new(
        mount(
            Some("tmpfs"),
            in_root("dev"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_STRICTATIME,
            Some("mode=0755,size=64k"),
        )?,
        "mounting a small tmpfs at /dev",
    ));
    for device in &files.devices {
        let host = Path::new("/dev").join(device);
        let target = in_root(&format!("dev/{device}"));
        steps.push(Planned::new(Step::CreateFile { path: cstring(&target)? }, format!("creating /dev/{device}")));
        steps.push(Planned::new(
            mount(Some(&host), &target, None, libc::MS_BIND, None)?,
            format!("bind-mounting the host's {} into the container", host.display()),
        ));
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Planned::new(
            Step::Symlink { target: cstring(target)?, link: cstring(in_root(&format!("dev/{link}")))? },
            format!("linking /dev/{link} to {target}"),
        ));
    }

    for (name, is_dir) in &files.masked {
        let target = in_root(&format!("proc/{name}"));
        let step = if *is_dir {
            mount(Some("tmpfs"), &target, Some("tmpfs"), libc::MS_RDONLY | PROC_FLAGS, None)?
        } else {
            mount(Some("/dev/null"), &target, None, libc::MS_BIND, None)?
        };
        steps.push(Planned::new(step, format!("masking /proc/{name}")));
    }
    for name in &files.read_only {
        let target = in_root(&format!("proc/{name}"));
        steps.push(Planned::new(
            mount(Some(&target), &target, None, libc::MS_BIND | libc::MS_REC, None)?,
            format!("bind-mounting /proc/{name} onto itself"),
        ));
        steps.push(Planned::new(
            mount(None::<&Path>, &target, None, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | PROC_FLAGS, None)?,
            format!("making /proc/{name} read-only"),
        ));
    }

    steps.extend(super::volumes::plan(options.volumes, &root)?);
    steps.push(Planned::new(
        Step::PivotRoot { new_root: cstring(&root)? },
        format!("pivot_root into {}", root.display()),
    ));
    steps.push(Planned::new(Step::DetachOldRoot, "detaching the host's file system tree (the old root)"));
    Ok(steps)
}

/// The fallback without overlayfs: the image's merged tree copied into the per-run tmpfs
/// (which is then bind-mounted onto itself, as pivot_root needs a mount point).
fn copy_of_image(image: &Image, root: &Path) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (path, entry) in (Tree { layers: image.layers.clone() }).merged() {
        let target = root.join(&path);
        match &entry.kind {
            Kind::Directory => steps.push(make_dir(&target, entry.mode)?),
            Kind::File => {
                steps.push(Step::CopyFile { from: cstring(&entry.host)?, to: cstring(&target)?, mode: entry.mode })
            }
            Kind::Symlink(link) => steps.push(Step::Symlink { target: cstring(link)?, link: cstring(&target)? }),
            Kind::Other => {}
        }
    }
    steps.push(mount(Some(root), root, None, libc::MS_BIND, None)?);
    Ok(steps)
}

/// overlayfs splits its options at ',' and layers at ':'; a backslash escapes them.
fn escape_overlay_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn mount(
    source: Option<impl AsRef<Path>>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<Step> {
    Ok(Step::Mount {
        source: source.map(cstring).transpose()?,
        target: cstring(target)?,
        fstype: fstype.map(cstring).transpose()?,
        flags,
        data: data.map(cstring).transpose()?,
    })
}

fn make_dir(path: &Path, mode: libc::mode_t) -> Result<Step> {
    Ok(Step::MakeDir { path: cstring(path)?, mode })
}

pub fn cstring(value: impl AsRef<Path>) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_ref().as_os_str().as_bytes();
    CString::new(bytes).with_context(|| format!("path contains a NUL byte: {}", value.as_ref().display()))
}

/// How many mount system calls a plan makes (for `--explain` and the docs).
pub fn mount_count(steps: &[Planned]) -> usize {
    steps
        .iter()
        .filter(|p| {
            matches!(p.step, Step::Mount { .. } | Step::Overlay { .. } | Step::PivotRoot { .. } | Step::DetachOldRoot)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(escape_overlay_path(Path::new("/a,b:c")), "/a\\,b\\:c");
        assert_eq!(escape_overlay_path(Path::new("/plain/path")), "/plain/path");
    }

    #[test]
    fn plan_ends_with_pivot_root_and_detach() {
        let image = Image {
            layers: vec![PathBuf::from("/cache/images/x/rootfs")],
            program: "/bin/p".into(),
            origin: super::super::image::Origin::Cache { built: false },
        };
        let writable = Writable::Throwaway { scratch: PathBuf::from("/cache/containers") };
        let options =
            RootfsOptions { image: &image, writable: &writable, user_namespace: true, try_overlay: true, volumes: &[] };
        let steps = plan(&options).unwrap();
        assert!(matches!(steps[steps.len() - 2].step, Step::PivotRoot { .. }));
        assert!(matches!(steps.last().unwrap().step, Step::DetachOldRoot));
        let overlay = steps.iter().find_map(|p| match &p.step {
            Step::Overlay { data, .. } => Some(data.to_string_lossy().into_owned()),
            _ => None,
        });
        assert!(overlay.unwrap().ends_with(",userxattr"));
    }
}

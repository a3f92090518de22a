//! `--volume HOST:CONTAINER[:ro]`: a host folder bind-mounted into the container, Docker's
//! bind mount. What the container writes there is the host folder's: it is not part of the
//! container's layer (`cvm diff` and `commit` never see it) and outlives `cvm rm`.
//!
//! The image decides what the container's paths mean, and an image is hostile until proven
//! otherwise: a symbolic link `data -> /etc` in it must not turn "mount at /data" or "create
//! /data/x" into a change of the host's /etc. So the mount point is found and created by the
//! container's first process with `openat2(RESOLVE_IN_ROOT)`, which resolves every component,
//! symbolic links and `..` included, as if the container's root were `/`, and the mount goes
//! onto the descriptor it opened (`/proc/self/fd/N`), never onto a path the host resolves.
//! Each volume is `nosuid` and `nodev`, and read-only with `:ro`; it is not recursive (folders
//! mounted below the host folder are not carried in).

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::init::{Planned, Step};
use super::rootfs::cstring;

/// At most this many volumes per container.
pub const MAX_VOLUMES: usize = 16;

/// Container paths a volume may not cover: the kernel's own file systems and what cvm builds
/// there (the container's /proc, its masks, its /dev).
const RESERVED: [&str; 3] = ["/proc", "/sys", "/dev"];

/// One `--volume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The host folder, absolute and with symbolic links resolved when it was given.
    pub host: PathBuf,
    /// Where the container sees it: an absolute, normal path.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl Volume {
    /// Parses `HOST:CONTAINER` or `HOST:CONTAINER:ro` (or `:rw`). HOST must be an existing
    /// folder (a relative one is taken from the current folder).
    pub fn parse(text: &str) -> Result<Volume> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, target, read_only) = match parts[..] {
            [host, target] => (host, target, false),
            [host, target, "ro"] => (host, target, true),
            [host, target, "rw"] => (host, target, false),
            [_, _, mode] => bail!("--volume {text}: unknown mode {mode:?} (ro or rw)"),
            _ => bail!("--volume {text}: expected HOST:CONTAINER[:ro] (paths with ':' are not supported)"),
        };
        if host.is_empty() {
            bail!("--volume {text}: the host folder is empty");
        }
        let volume = Volume { host: host_folder(Path::new(host))?, target: container_path(target)?, read_only };
        Ok(volume)
    }

    /// `HOST:CONTAINER[:ro]`, as given back in records and `cvm ps`.
    pub fn label(&self) -> String {
        let mode = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{mode}", self.host.display(), self.target)
    }
}

/// Parses every `--volume` of a command, refusing two on the same container path.
pub fn parse_all(texts: &[String]) -> Result<Vec<Volume>> {
    if texts.len() > MAX_VOLUMES {
        bail!("at most {MAX_VOLUMES} --volume options per container ({} given)", texts.len());
    }
    let volumes = texts.iter().map(|t| Volume::parse(t)).collect::<Result<Vec<_>>>()?;
    for (index, volume) in volumes.iter().enumerate() {
        if volumes[..index].iter().any(|other| other.target == volume.target) {
            bail!("two --volume options mount at {}", volume.target);
        }
    }
    Ok(volumes)
}

/// The host folder, checked now (again at every start: it may have gone since `create`).
fn host_folder(path: &Path) -> Result<PathBuf> {
    let resolved = std::fs::canonicalize(path)
        .with_context(|| format!("--volume: the host folder {} does not exist", path.display()))?;
    if !resolved.is_dir() {
        bail!("--volume: {} is not a folder (only folders can be volumes)", path.display());
    }
    Ok(resolved)
}

/// The container path: absolute, no `.`, `..` or empty components, not `/` and not in a
/// reserved tree. Returned without a trailing slash.
fn container_path(text: &str) -> Result<String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        bail!("--volume: the container path {text:?} must be absolute");
    }
    if text.contains('\0') {
        bail!("--volume: the container path contains a NUL byte");
    }
    let mut normal = String::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => {
                normal.push('/');
                normal.push_str(&name.to_string_lossy());
            }
            _ => bail!("--volume: the container path {text:?} may not contain `.` or `..`"),
        }
    }
    if normal.is_empty() {
        bail!("--volume: a volume cannot cover the container's root /");
    }
    if text.split('/').skip(1).any(|part| part == "." || part == "..") {
        bail!("--volume: the container path {text:?} may not contain `.` or `..`");
    }
    if let Some(reserved) = RESERVED.iter().find(|r| normal == **r || normal.starts_with(&format!("{r}/"))) {
        bail!("--volume: {normal} is inside {reserved}, which the container's kernel file systems own");
    }
    Ok(normal)
}

/// The steps that mount `volumes` into the container whose root (not yet pivoted into) is
/// `root`; they run before `pivot_root`, while the host folders can still be named.
pub fn plan(volumes: &[Volume], root: &Path, user_namespace: bool) -> Result<Vec<Planned>> {
    let mut steps = Vec::new();
    for volume in volumes {
        // The folder may have gone since `create`.
        let host = host_folder(&volume.host)?;
        let relative = volume.target.trim_start_matches('/');
        let names: Vec<&str> = relative.split('/').collect();
        let mut create = Vec::new();
        for depth in 0..names.len() {
            let parent = if depth == 0 { ".".to_string() } else { names[..depth].join("/") };
            create.push((CString::new(parent)?, CString::new(names[depth])?));
        }
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
        if volume.read_only {
            flags |= libc::MS_RDONLY;
        }
        if user_namespace {
            // In a user namespace the host mount's own flags are locked: a remount must keep them.
            flags |= locked_flags(&host);
        }
        let mode = if volume.read_only { "read-only" } else { "read-write" };
        steps.push(Planned::new(
            Step::Volume {
                root: cstring(root)?,
                host: cstring(&host)?,
                create,
                target: CString::new(relative)?,
                flags,
            },
            format!("mounting the host folder {} at {} ({mode}, nosuid, nodev)", host.display(), volume.target),
        ));
    }
    Ok(steps)
}

/// The flags of the mount holding `path` that a user namespace may not clear (statvfs).
fn locked_flags(path: &Path) -> libc::c_ulong {
    let Ok(c_path) = cstring(path) else { return 0 };
    // SAFETY: statvfs is plain data; all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into a struct we own; the path is NUL-terminated.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return 0;
    }
    let mut flags = 0;
    for (st, ms) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        // ST_RELATIME (linux/statfs.h), which the libc crate does not export for musl.
        (0x1000, libc::MS_RELATIME),
    ] {
        if stat.f_flag & st != 0 {
            flags |= ms;
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_and_refuse_what_they_must() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().display().to_string();
        let volume = Volume::parse(&format!("{host}:/data/in:ro")).unwrap();
        assert_eq!(volume.target, "/data/in");
        assert!(volume.read_only);
        assert_eq!(volume.host, std::fs::canonicalize(dir.path()).unwrap());
        assert!(!Volume::parse(&format!("{host}:/data/")).unwrap().read_only);
        assert_eq!(Volume::parse(&format!("{host}:/data/")).unwrap().target, "/data");
        for bad in [
            format!("{host}:data"),
            format!("{host}:/"),
            format!("{host}:/a/../etc"),
            format!("{host}:/a/./b"),
            format!("{host}:/proc/sys"),
            format!("{host}:/dev"),
            format!("{host}:/sysfs-is-fine-but:x"),
            format!("{host}:/data:rx"),
            format!("{host}/missing:/data"),
            ":/data".to_string(),
            host.clone(),
        ] {
            assert!(Volume::parse(&bad).is_err(), "{bad} must be refused");
        }
        assert!(Volume::parse(&format!("{host}:/sysfs")).is_ok(), "only /sys itself and below are reserved");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(Volume::parse(&format!("{}:/data", file.display())).is_err(), "only folders");
        let twice = [format!("{host}:/a"), format!("{host}:/a/")];
        assert!(parse_all(&twice).is_err());
    }

    #[test]
    fn the_plan_creates_each_component_below_the_container_root() {
        let dir = tempfile::tempdir().unwrap();
        let volume = Volume { host: dir.path().to_path_buf(), target: "/srv/data".into(), read_only: true };
        let steps = plan(&[volume], Path::new("/cache/root"), false).unwrap();
        let Step::Volume { create, target, flags, .. } = &steps[0].step else { panic!("not a volume step") };
        let pairs: Vec<(String, String)> =
            create.iter().map(|(p, n)| (p.to_string_lossy().into_owned(), n.to_string_lossy().into_owned())).collect();
        assert_eq!(pairs, [(".".to_string(), "srv".to_string()), ("srv".to_string(), "data".to_string())]);
        assert_eq!(target.to_str().unwrap(), "srv/data");
        assert_eq!(*flags & libc::MS_RDONLY, libc::MS_RDONLY);
        assert_eq!(*flags & (libc::MS_NOSUID | libc::MS_NODEV), libc::MS_NOSUID | libc::MS_NODEV);
    }
}

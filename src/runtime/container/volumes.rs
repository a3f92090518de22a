//! `--volume HOST:CONTAINER[:ro]`: a host folder bind-mounted into the container, Docker's
//! bind mount. What the container writes there is the host folder's: it is not part of the
//! container's layer (`cvm diff` and `commit` never see it) and outlives `cvm rm`.
//!
//! Both ends are checked where they are used, not only where they are named:
//! - The host folder is stored with its symbolic links resolved, and the container's first
//!   process opens exactly that path with `RESOLVE_NO_SYMLINKS`: a folder swapped for a link
//!   since (by the container itself through another volume, or by anyone) is refused, never
//!   followed.
//! - The image decides what a container path means, and an image is hostile until proven
//!   otherwise: the mount point is found and created with `openat2(RESOLVE_IN_ROOT)`, which
//!   resolves every component, symbolic links and `..` included, as if the container's root
//!   were `/`, and a point that an image link leads onto the root itself, /proc, /sys or the
//!   container's /dev is refused. The mount goes from the descriptor of the folder onto the
//!   descriptor of the point (`/proc/self/fd/N`), never onto a path resolved again.
//! - The new mount keeps the host mount's own `ro`, `noexec`, `nosuid` and `nodev` (a bind
//!   remount would otherwise clear them), and gets `nosuid` and `nodev` in any case, `ro` with
//!   `:ro`. It is not recursive: folders mounted below the host folder are not carried in.
//! - Volumes are mounted outer first (`/a` before `/a/b`), as Docker orders them.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::init::{Planned, Step};
use super::rootfs::cstring;
use crate::runtime::child::errno;

/// At most this many volumes per container.
pub const MAX_VOLUMES: usize = 16;

/// The longest host or container path a volume takes (Linux's PATH_MAX).
const MAX_PATH: usize = 4096;

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
            [_, _, mode] => {
                bail!("--volume {text}: unknown mode {mode:?} (ro or rw; paths with ':' are not supported)")
            }
            _ => bail!("--volume {text}: expected HOST:CONTAINER[:ro] (paths with ':' are not supported)"),
        };
        if host.is_empty() {
            bail!("--volume {text}: the host folder is empty");
        }
        if host.len() > MAX_PATH || target.len() > MAX_PATH {
            bail!("--volume: a path longer than {MAX_PATH} bytes");
        }
        let volume = Volume { host: host_folder(Path::new(host))?, target: container_path(target)?, read_only };
        Ok(volume)
    }

    /// `HOST:CONTAINER[:ro]`, as given back in run records.
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
    let resolved = std::fs::canonicalize(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("--volume: the host folder {} does not exist", path.display()),
        _ => anyhow::anyhow!("--volume: the host folder {} cannot be used: {err}", path.display()),
    })?;
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
/// `root`, outer ones first; they run before `pivot_root`, while the host folders can still
/// be opened.
pub fn plan(volumes: &[Volume], root: &Path) -> Result<Vec<Planned>> {
    let mut ordered: Vec<&Volume> = volumes.iter().collect();
    ordered.sort_by_key(|volume| volume.target.matches('/').count());
    let mut steps = Vec::new();
    for volume in ordered {
        // The folder may have gone, or been swapped for a symbolic link, since `create`.
        let host = host_folder(&volume.host)?;
        if host != volume.host {
            bail!(
                "--volume: the host folder {} now leads to {} through a symbolic link; refusing to mount it",
                volume.host.display(),
                host.display()
            );
        }
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

// In the container's first process: system calls only, no allocation (see init.rs).

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_IN_ROOT: u64 = 0x10;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
const SYSFS_MAGIC: i64 = 0x6265_6572;

/// The [`Step::Volume`] mount: opens the host folder (no symbolic link on the way), creates
/// the missing folders of the mount point one by one below the root, refuses a point on the
/// root itself, /proc, /sys or /dev, binds the folder onto the point through both
/// descriptors, checks the new mount is that folder, and remounts it with `flags` and the
/// host mount's own restrictions.
pub fn mount_in_first_process(
    root: &CStr,
    host: &CStr,
    create: &[(CString, CString)],
    target: &CStr,
    flags: libc::c_ulong,
) -> Result<(), i32> {
    let root = Fd(open_dir(libc::AT_FDCWD, root, 0)?);
    let source = Fd(open_dir(libc::AT_FDCWD, host, RESOLVE_NO_SYMLINKS)?);
    for (parent, name) in create {
        let parent = Fd(open_dir(root.0, parent, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)?);
        // SAFETY: mkdirat on a descriptor we own with a NUL-terminated name.
        if unsafe { libc::mkdirat(parent.0, name.as_ptr(), 0o755) } != 0 && errno() != libc::EEXIST {
            return Err(errno());
        }
    }
    let point = Fd(open_dir(root.0, target, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)?);
    refuse_reserved(root.0, point.0)?;
    let kept = kept_flags(source.0)?;
    let (from, onto) = (ProcFdPath::new(source.0), ProcFdPath::new(point.0));
    // SAFETY: bind mount between two descriptors' magic links (NUL-terminated buffers).
    let bound = unsafe { libc::mount(from.as_ptr(), onto.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
    if bound != 0 {
        return Err(errno());
    }
    // The remount must name the new mount, not the folder under it: open the point again, and
    // make sure it is the host folder (nothing swapped the path in between).
    let mounted = Fd(open_dir(root.0, target, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)?);
    if identity(mounted.0)? != identity(source.0)? {
        return Err(libc::EBUSY);
    }
    let remount = libc::MS_BIND | libc::MS_REMOUNT | flags | kept;
    let path = ProcFdPath::new(mounted.0);
    // SAFETY: as above.
    let remounted =
        unsafe { libc::mount(std::ptr::null(), path.as_ptr(), std::ptr::null(), remount, std::ptr::null()) };
    if remounted != 0 {
        return Err(errno());
    }
    Ok(())
}

/// EPERM when an image link led the mount point onto the container's root, its /dev, or a
/// proc or sysfs file system.
fn refuse_reserved(root: RawFd, point: RawFd) -> Result<(), i32> {
    let point_id = identity(point)?;
    if point_id == identity(root)? {
        return Err(libc::EPERM);
    }
    if let Ok(dev) = open_dir(root, c"dev", RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) {
        let dev = Fd(dev);
        if identity(dev.0)?.0 == point_id.0 {
            return Err(libc::EPERM);
        }
    }
    // SAFETY: plain data; all zeroes is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs into a struct we own, on a descriptor we own.
    if unsafe { libc::fstatfs(point, &mut fs) } != 0 {
        return Err(errno());
    }
    if matches!(fs.f_type as i64, PROC_SUPER_MAGIC | SYSFS_MAGIC) {
        return Err(libc::EPERM);
    }
    Ok(())
}

/// (device, inode) of a descriptor.
fn identity(fd: RawFd) -> Result<(u64, u64), i32> {
    // SAFETY: plain data; all zeroes is a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into a struct we own, on a descriptor we own.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(errno());
    }
    Ok((stat.st_dev as u64, stat.st_ino as u64))
}

/// The restrictions of the mount holding `fd` that a bind remount must keep.
fn kept_flags(fd: RawFd) -> Result<libc::c_ulong, i32> {
    // SAFETY: plain data; all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs into a struct we own, on a descriptor we own.
    if unsafe { libc::fstatvfs(fd, &mut stat) } != 0 {
        return Err(errno());
    }
    const ST_RELATIME: libc::c_ulong = 0x1000; // linux/statfs.h; not in the libc crate for musl
    let pairs = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs.iter().filter(|(st, _)| stat.f_flag & st != 0).fold(0, |flags, (_, ms)| flags | ms))
}

/// openat2(dirfd, path, O_PATH | O_DIRECTORY, resolve): a folder's descriptor or the errno.
fn open_dir(dirfd: RawFd, path: &CStr, resolve: u64) -> Result<RawFd, i32> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow { flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    // SAFETY: openat2 with a valid open_how of the size given and a NUL-terminated path.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, dirfd, path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd as RawFd)
    }
}

/// A descriptor closed when dropped (a plain int: no allocation).
struct Fd(RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this process opened and owns.
        unsafe { libc::close(self.0) };
    }
}

/// "/proc/self/fd/N" in a buffer on the stack.
struct ProcFdPath {
    bytes: [u8; 32],
}

impl ProcFdPath {
    fn new(fd: RawFd) -> ProcFdPath {
        let mut bytes = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        bytes[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 10];
        let (mut value, mut count) = (fd.max(0) as u32, 0);
        loop {
            digits[count] = b'0' + (value % 10) as u8;
            count += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        for (index, digit) in digits[..count].iter().rev().enumerate() {
            bytes[prefix.len() + index] = *digit;
        }
        ProcFdPath { bytes }
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.bytes.as_ptr().cast()
    }
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
        let steps = plan(&[volume], Path::new("/cache/root")).unwrap();
        let Step::Volume { create, target, flags, .. } = &steps[0].step else { panic!("not a volume step") };
        let pairs: Vec<(String, String)> =
            create.iter().map(|(p, n)| (p.to_string_lossy().into_owned(), n.to_string_lossy().into_owned())).collect();
        assert_eq!(pairs, [(".".to_string(), "srv".to_string()), ("srv".to_string(), "data".to_string())]);
        assert_eq!(target.to_str().unwrap(), "srv/data");
        assert_eq!(*flags & libc::MS_RDONLY, libc::MS_RDONLY);
        assert_eq!(*flags & (libc::MS_NOSUID | libc::MS_NODEV), libc::MS_NOSUID | libc::MS_NODEV);
    }

    #[test]
    fn volumes_are_mounted_outer_first_and_long_paths_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().to_path_buf();
        let inner = Volume { host: host.clone(), target: "/a/b".into(), read_only: false };
        let outer = Volume { host: host.clone(), target: "/a".into(), read_only: false };
        let steps = plan(&[inner, outer], Path::new("/cache/root")).unwrap();
        let targets: Vec<String> = steps
            .iter()
            .map(|p| match &p.step {
                Step::Volume { target, .. } => target.to_string_lossy().into_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(targets, ["a", "a/b"]);
        let long = format!("{}:{}", host.display(), "/a".repeat(3000));
        assert!(Volume::parse(&long).unwrap_err().to_string().contains("longer than"));
    }

    #[test]
    fn a_host_folder_turned_into_a_link_since_create_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let stored = real.join("data");
        std::fs::create_dir(real.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(real.join("elsewhere"), &stored).unwrap();
        let volume = Volume { host: stored, target: "/data".into(), read_only: false };
        let error = plan(&[volume], Path::new("/cache/root")).unwrap_err().to_string();
        assert!(error.contains("through a symbolic link"), "{error}");
    }

    #[test]
    fn a_descriptor_path_is_written_without_allocating() {
        let text = |fd| {
            let path = ProcFdPath::new(fd);
            // SAFETY: the buffer is NUL-terminated (32 bytes, at most 24 used).
            unsafe { CStr::from_ptr(path.as_ptr()) }.to_str().unwrap().to_string()
        };
        assert_eq!(text(0), "/proc/self/fd/0");
        assert_eq!(text(7), "/proc/self/fd/7");
        assert_eq!(text(2147483647), "/proc/self/fd/2147483647");
    }
}

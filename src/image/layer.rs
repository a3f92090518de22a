//! Layers: each is a tar archive of file-system changes, gzip-compressed, named by the digest
//! of the compressed blob; the image config names it again by the digest of the plain tar
//! (its "diff id"). A deletion is an empty file `.wh.<name>`; `.wh..wh..opq` in a directory
//! hides everything the layers below put there.
//!
//! cvm writes layers reproducibly (entries sorted, owner root, the times given), so the same
//! files make the same digest and two images share the layer. It unpacks layers defensively:
//! they may come from anyone. No entry may leave the target directory (no `..`, no absolute
//! path, no write through a symlink, no hard link to outside), device nodes are skipped, and
//! the plain tar must hash to the diff id the config promised.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::digest::{Digest, HashingReader, HashingWriter};
use super::layout::Layout;
use super::oci::{self, Descriptor};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Limits on what one layer may unpack to (a hostile layer can be a gzip bomb).
const MAX_ENTRIES: u64 = 1_000_000;
const MAX_BYTES: u64 = 16 << 30;

/// One entry of a layer to write.
#[derive(Clone, Debug)]
pub struct LayerEntry {
    /// Path inside the image, relative (`bin/hello`); directories end without a slash.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
}

#[derive(Clone, Debug)]
pub enum EntryKind {
    Directory,
    /// A regular file copied from this host path.
    File(PathBuf),
    Symlink(PathBuf),
    /// The path is deleted (written as `.wh.<name>`).
    Whiteout,
    /// The directory hides what lower layers put in it (written as `.wh..wh..opq`).
    Opaque,
    /// A named pipe (kept as one, as Docker keeps it; never opened).
    Fifo,
}

impl LayerEntry {
    /// An entry owned by root with a fixed time: reproducible.
    pub fn new(path: &str, kind: EntryKind, mode: u32) -> LayerEntry {
        LayerEntry { path: path.trim_matches('/').to_string(), kind, mode, uid: 0, gid: 0, mtime: 0 }
    }
}

/// A written layer: the blob's descriptor and the diff id of its plain tar.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub blob: Descriptor,
    pub diff_id: Digest,
    /// False when the layout already had an identical layer (it is shared, not stored twice).
    pub new: bool,
}

/// Writes `entries` as a gzip tar layer into `layout`. Parent directories that are not
/// listed are added (root, 0755).
pub fn write_layer(layout: &Layout, entries: &[LayerEntry]) -> Result<BuiltLayer> {
    let mut all: BTreeMap<String, LayerEntry> = BTreeMap::new();
    for entry in entries {
        let path = clean_path(&entry.path).with_context(|| format!("cannot put {:?} into a layer", entry.path))?;
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let key = dir.to_string_lossy().into_owned();
            all.entry(key.clone()).or_insert_with(|| LayerEntry::new(&key, EntryKind::Directory, 0o755));
            parent = dir.parent();
        }
        all.insert(path.clone(), LayerEntry { path, ..entry.clone() });
    }
    let blob = layout.blob_writer()?;
    let gzip = GzEncoder::new(blob, flate2::Compression::default());
    let mut tar = tar::Builder::new(HashingWriter::new(gzip));
    tar.mode(tar::HeaderMode::Complete);
    for entry in all.values() {
        if let Some(signal) = crate::interrupt::requested() {
            bail!("interrupted by signal {signal}: nothing was stored");
        }
        append(&mut tar, entry).with_context(|| format!("adding /{} to the layer", entry.path))?;
    }
    let hashing = tar.into_inner().context("finishing the layer's tar")?;
    let (gzip, diff_id, _) = hashing.finish();
    let (blob, new) = gzip.finish().context("finishing the layer's gzip stream")?.commit_as(oci::MEDIA_LAYER_GZIP)?;
    Ok(BuiltLayer { blob, diff_id, new })
}

fn append<W: Write>(tar: &mut tar::Builder<W>, entry: &LayerEntry) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mode(entry.mode & 0o7777);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    match &entry.kind {
        EntryKind::Directory => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, format!("{}/", entry.path), std::io::empty())?;
        }
        EntryKind::File(source) => {
            let file = crate::image::layout::open_regular(source)
                .with_context(|| format!("cannot read {} as a regular file", source.display()))?;
            let size = file.metadata()?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            // The header says `size` bytes: exactly that many must follow, or the layer is
            // corrupt. A file whose content does not match its size (a /proc file, a growing
            // log) is refused.
            let mut reader = Interruptible(file.take(size + 1));
            let mut content = ExactSize { inner: &mut reader, left: size };
            tar.append_data(&mut header, &entry.path, &mut content)?;
            let mut extra = [0u8; 1];
            if reader.read(&mut extra)? != 0 {
                bail!("{} grew while it was read: its content is not its size", source.display());
            }
        }
        EntryKind::Fifo => {
            header.set_entry_type(tar::EntryType::Fifo);
            header.set_size(0);
            tar.append_data(&mut header, &entry.path, std::io::empty())?;
        }
        EntryKind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            tar.append_link(&mut header, &entry.path, target)?;
        }
        EntryKind::Whiteout | EntryKind::Opaque => {
            let path = Path::new(&entry.path);
            let marker = match &entry.kind {
                EntryKind::Opaque => path.join(OPAQUE_MARKER),
                _ => {
                    let name = path.file_name().context("a whiteout needs a name")?.to_string_lossy();
                    path.with_file_name(format!("{WHITEOUT_PREFIX}{name}"))
                }
            };
            if matches!(entry.kind, EntryKind::Opaque) {
                let mut dir = header.clone();
                dir.set_entry_type(tar::EntryType::Directory);
                dir.set_size(0);
                tar.append_data(&mut dir, format!("{}/", entry.path), std::io::empty())?;
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0o644);
            tar.append_data(&mut header, marker, std::io::empty())?;
        }
    }
    Ok(())
}

/// A reader that fails when cvm is asked to stop, so a long copy ends promptly on Ctrl-C.
pub struct Interruptible<R>(pub R);

impl<R: Read> Read for Interruptible<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if let Some(signal) = crate::interrupt::requested() {
            return Err(std::io::Error::other(format!("interrupted by signal {signal}")));
        }
        self.0.read(buffer)
    }
}

/// Exactly `left` bytes of `inner`: fewer is an error (the file shrank while it was read).
struct ExactSize<'a, R> {
    inner: &'a mut R,
    left: u64,
}

impl<R: Read> Read for ExactSize<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buffer.len().min(self.left as usize);
        let n = self.inner.read(&mut buffer[..want])?;
        if n == 0 {
            return Err(std::io::Error::other("the file shrank while it was read: its content is not its size"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// How deletions in a layer are carried out when it is unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// As overlayfs markers (a 0/0 character device, an `opaque` xattr) in a directory that
    /// becomes one lower layer of an overlay mount. Needs root.
    Overlay,
    /// Carried out: the path is deleted from a directory holding all layers below (a
    /// flattened root file system, as a runtime bundle needs).
    Apply,
}

/// What unpacking found.
#[derive(Clone, Debug, Default)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes and FIFOs left out.
    pub skipped_special: u64,
}

/// Unpacks the layer `blob` of `layout` into `dir`, checking it against `diff_id`.
pub fn unpack(
    layout: &Layout,
    blob: &Descriptor,
    diff_id: &Digest,
    dir: &Path,
    whiteouts: Whiteouts,
) -> Result<Unpacked> {
    let file = HashingReader::new(layout.open_blob(blob)?);
    let plain: Box<dyn Read> = match blob.media_type.as_str() {
        oci::MEDIA_LAYER_TAR => Box::new(file),
        _ => Box::new(GzDecoder::new(file)),
    };
    let mut plain = HashingReader::new(plain);
    let report =
        unpack_tar(&mut plain, dir, whiteouts).with_context(|| format!("unpacking the layer {}", blob.digest))?;
    std::io::copy(&mut plain, &mut std::io::sink())?;
    let (plain_digest, _) = plain.finish();
    if &plain_digest != diff_id {
        bail!("the layer {} unpacks to {plain_digest}, not the diff id {diff_id} its image config names", blob.digest);
    }
    Ok(report)
}

fn unpack_tar(input: &mut dyn Read, dir: &Path, whiteouts: Whiteouts) -> Result<Unpacked> {
    let mut report = Unpacked::default();
    let mut archive = tar::Archive::new(input);
    let root = checked_root(dir)?;
    for entry in archive.entries().context("reading the tar stream")? {
        let mut entry = entry.context("reading a tar entry")?;
        report.entries += 1;
        if report.entries > MAX_ENTRIES {
            bail!("more than {MAX_ENTRIES} entries in one layer");
        }
        let raw = entry.path().context("an entry with an unreadable path")?.into_owned();
        let Some(relative) = clean_path(&raw.to_string_lossy()) else { continue };
        let relative = PathBuf::from(relative);
        let name = relative.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parent = relative.parent().unwrap_or(Path::new(""));
        let header = entry.header().clone();
        if name == OPAQUE_MARKER {
            let target = make_parents(&root, &relative)?;
            let directory = target.parent().context("opaque marker without a folder")?.to_path_buf();
            match whiteouts {
                Whiteouts::Overlay => set_opaque(&directory)?,
                Whiteouts::Apply => clear_directory(&directory)?,
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            // `.wh.`, `.wh..` and `.wh...` would name the folder itself or its parent.
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                bail!("the layer has a whiteout {name:?}, which names no file");
            }
            let target = make_parents(&root, &parent.join(hidden))?;
            remove_any(&target)?;
            if whiteouts == Whiteouts::Overlay {
                make_whiteout(&target)?;
            }
            continue;
        }
        let target = make_parents(&root, &relative)?;
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        match header.entry_type() {
            tar::EntryType::Directory => {
                match std::fs::symlink_metadata(&target) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        remove_any(&target)?;
                        std::fs::create_dir(&target)?;
                    }
                    Err(_) => std::fs::create_dir(&target)?,
                }
                set_owner(&target, &header);
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Fifo => {
                remove_any(&target)?;
                let c_path = crate::runtime::container::rootfs::cstring(&target)?;
                // SAFETY: mkfifo with a NUL-terminated path.
                if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("creating {}", target.display()));
                }
                set_owner(&target, &header);
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&target)?;
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .with_context(|| format!("creating {}", target.display()))?;
                let copied = std::io::copy(&mut (&mut entry).take(MAX_BYTES - report.bytes + 1), &mut out)?;
                report.bytes += copied;
                if report.bytes > MAX_BYTES {
                    bail!("the layer unpacks to more than {} GiB", MAX_BYTES >> 30);
                }
                // Owner first: chown clears set-user-id and set-group-id bits, chmod sets them.
                set_owner(&target, &header);
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name()?.context("a symlink without a target")?.into_owned();
                remove_any(&target)?;
                std::os::unix::fs::symlink(&link, &target)?;
                set_owner(&target, &header);
            }
            tar::EntryType::Link => {
                let link = entry.link_name()?.context("a hard link without a target")?.into_owned();
                let Some(source) = clean_path(&link.to_string_lossy()) else {
                    bail!("a hard link to {} leaves the layer", link.display());
                };
                let source = existing_file_inside(&root, Path::new(&source))
                    .with_context(|| format!("a hard link to {}", link.display()))?;
                remove_any(&target)?;
                std::fs::hard_link(&source, &target)?;
            }
            _ => {
                report.skipped_special += 1;
                continue;
            }
        }
        set_time(&target, &header);
    }
    Ok(report)
}

/// The target directory, which must exist and be a real directory.
fn checked_root(dir: &Path) -> Result<PathBuf> {
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("{} does not exist", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    Ok(dir.to_path_buf())
}

/// A tar path made relative and plain: `./a/b/` → `a/b`; None for the root itself; an
/// error-free None as well for anything with `..` (skipped, never followed).
pub fn clean_path(text: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in Path::new(text).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Creates the parents of `relative` below `root` as real directories and returns the full
/// path. A parent that is a symlink (or a file) is refused: writing through it could land
/// anywhere on the host.
fn make_parents(root: &Path, relative: &Path) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    let components: Vec<_> = relative.components().collect();
    for (index, component) in components.iter().enumerate() {
        path.push(component);
        if index + 1 == components.len() {
            break;
        }
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!(
                "{} goes through /{}, which is not a folder",
                relative.display(),
                path.strip_prefix(root)?.display()
            ),
            Err(_) => {
                std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
        }
    }
    Ok(path)
}

/// `relative` below `root` when every parent is a real directory and it is a regular file:
/// a hard link may not reach, through a symlink, a file outside the layer.
fn existing_file_inside(root: &Path, relative: &Path) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for component in relative.components() {
        if std::fs::symlink_metadata(&path).map(|m| m.is_dir()).ok() != Some(true) {
            bail!("/{} is not a folder of the layer", path.strip_prefix(root)?.display());
        }
        path.push(component);
    }
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        _ => bail!("/{} is not a regular file of the layer", relative.display()),
    }
}

/// Removes whatever is at `path` (nothing there is fine), never following a symlink.
pub fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => std::fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
        Err(_) => Ok(()),
    }
}

fn clear_directory(dir: &Path) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(dir)?.flatten() {
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

/// overlayfs's whiteout: a character device 0/0.
fn make_whiteout(path: &Path) -> Result<()> {
    let c_path = crate::runtime::container::rootfs::cstring(path)?;
    // SAFETY: mknod with a NUL-terminated path; device 0/0 is overlayfs's whiteout.
    if unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("creating the whiteout {} (deleting files in a layer needs root)", path.display())
        });
    }
    Ok(())
}

/// overlayfs's opaque directory: the `trusted.overlay.opaque` xattr.
fn set_opaque(dir: &Path) -> Result<()> {
    let c_path = crate::runtime::container::rootfs::cstring(dir)?;
    // SAFETY: setxattr with NUL-terminated name and path and a one-byte value we own.
    let result =
        unsafe { libc::lsetxattr(c_path.as_ptr(), c"trusted.overlay.opaque".as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if result != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("marking {} opaque (needs root)", dir.display()));
    }
    Ok(())
}

/// True for overlayfs's whiteout (a 0/0 character device).
pub fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// True when overlayfs marked the directory opaque (trusted or user namespace).
pub fn is_opaque(dir: &Path) -> bool {
    let Ok(c_path) = crate::runtime::container::rootfs::cstring(dir) else { return false };
    [c"trusted.overlay.opaque", c"user.overlay.opaque"].iter().any(|name| {
        let mut value = [0u8; 4];
        // SAFETY: lgetxattr writes at most `value.len()` bytes into our buffer.
        let n = unsafe { libc::lgetxattr(c_path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        n == 1 && value[0] == b'y'
    })
}

/// The owner from the tar header (as root only; a failure is harmless).
fn set_owner(path: &Path, header: &tar::Header) {
    let Ok(c_path) = crate::runtime::container::rootfs::cstring(path) else { return };
    let (uid, gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
    // SAFETY: geteuid has no preconditions; lchown takes a NUL-terminated path.
    unsafe {
        if libc::geteuid() == 0 {
            libc::lchown(c_path.as_ptr(), uid as libc::uid_t, gid as libc::gid_t);
        }
    }
}

/// The modification time from the tar header (a failure is harmless).
fn set_time(path: &Path, header: &tar::Header) {
    let Ok(c_path) = crate::runtime::container::rootfs::cstring(path) else { return };
    let mtime = header.mtime().unwrap_or(0) as _;
    let times = [libc::timespec { tv_sec: mtime, tv_nsec: 0 }, libc::timespec { tv_sec: mtime, tv_nsec: 0 }];
    // SAFETY: utimensat with a NUL-terminated path and a two-element array.
    unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_plain_and_never_leave() {
        assert_eq!(clean_path("./bin/hello").as_deref(), Some("bin/hello"));
        assert_eq!(clean_path("/etc/").as_deref(), Some("etc"));
        assert_eq!(clean_path("./"), None);
        assert_eq!(clean_path("../etc/passwd"), None);
        assert_eq!(clean_path("a/../../b"), None);
    }

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        build(&mut tar);
        tar.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o644);
        header
    }

    #[test]
    fn a_symlink_cannot_carry_a_write_out_of_the_layer() {
        let outside = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        let bytes = tar_of(|tar| {
            tar.append_link(&mut header(tar::EntryType::Symlink, 0), "escape", outside.path()).unwrap();
            tar.append_data(&mut header(tar::EntryType::Regular, 3), "escape/owned", &b"bad"[..]).unwrap();
        });
        let err = unpack_tar(&mut &bytes[..], target.path(), Whiteouts::Apply).unwrap_err();
        assert!(format!("{err:#}").contains("not a folder"), "{err:#}");
        assert!(!outside.path().join("owned").exists());
    }

    #[test]
    fn a_hard_link_cannot_reach_a_host_file_through_a_symlink() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        let target = tempfile::tempdir().unwrap();
        let bytes = tar_of(|tar| {
            tar.append_link(&mut header(tar::EntryType::Symlink, 0), "door", outside.path()).unwrap();
            tar.append_link(&mut header(tar::EntryType::Link, 0), "copy", "door/secret").unwrap();
        });
        assert!(unpack_tar(&mut &bytes[..], target.path(), Whiteouts::Apply).is_err());
        assert!(!target.path().join("copy").exists());
    }

    #[test]
    fn whiteouts_are_applied_when_flattening() {
        let target = tempfile::tempdir().unwrap();
        std::fs::create_dir(target.path().join("etc")).unwrap();
        std::fs::write(target.path().join("etc/old"), "x").unwrap();
        std::fs::write(target.path().join("etc/keep"), "x").unwrap();
        std::fs::create_dir(target.path().join("opt")).unwrap();
        std::fs::write(target.path().join("opt/a"), "x").unwrap();
        let bytes = tar_of(|tar| {
            tar.append_data(&mut header(tar::EntryType::Regular, 0), "etc/.wh.old", &b""[..]).unwrap();
            tar.append_data(&mut header(tar::EntryType::Regular, 0), "opt/.wh..wh..opq", &b""[..]).unwrap();
            tar.append_data(&mut header(tar::EntryType::Regular, 2), "opt/b", &b"hi"[..]).unwrap();
            // The tar crate refuses to write `..`; a hostile archive has it anyway.
            let mut evil = header(tar::EntryType::Regular, 2);
            evil.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"../outside");
            evil.set_cksum();
            tar.append(&evil, &b"no"[..]).unwrap();
        });
        unpack_tar(&mut &bytes[..], target.path(), Whiteouts::Apply).unwrap();
        assert!(!target.path().join("etc/old").exists());
        assert!(target.path().join("etc/keep").exists());
        assert!(!target.path().join("opt/a").exists());
        assert_eq!(std::fs::read(target.path().join("opt/b")).unwrap(), b"hi");
        assert!(!target.path().parent().unwrap().join("outside").exists());
    }

    #[test]
    fn written_layers_are_reproducible_and_unpack_to_their_files() {
        let store = tempfile::tempdir().unwrap();
        let layout = Layout::create(store.path()).unwrap();
        let file = store.path().join("program");
        std::fs::write(&file, b"\x7fELF...").unwrap();
        let entries = [
            LayerEntry::new("bin/program", EntryKind::File(file.clone()), 0o755),
            LayerEntry::new("bin/sh", EntryKind::Symlink("program".into()), 0o777),
        ];
        let first = write_layer(&layout, &entries).unwrap();
        let second = write_layer(&layout, &entries).unwrap();
        assert_eq!(first.blob.digest, second.blob.digest, "same files, same layer");
        let target = tempfile::tempdir().unwrap();
        unpack(&layout, &first.blob, &first.diff_id, target.path(), Whiteouts::Apply).unwrap();
        assert_eq!(std::fs::read(target.path().join("bin/program")).unwrap(), b"\x7fELF...");
        let meta = std::fs::metadata(target.path().join("bin/program")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read_link(target.path().join("bin/sh")).unwrap(), Path::new("program"));
        let wrong = Digest::of(b"something else");
        assert!(unpack(&layout, &first.blob, &wrong, tempfile::tempdir().unwrap().path(), Whiteouts::Apply).is_err());
    }
}

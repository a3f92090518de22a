//! An OCI image layout: a directory with `oci-layout`, `index.json` and `blobs/sha256/<hex>`.
//! cvm's store keeps its images in one, a registry directory is one, and `image save` writes
//! one into a tar. Every blob enters through a temporary file that is verified and then
//! renamed into place, so a reader never sees half a blob and a killed command leaves only a
//! `.staging-*` file that the next command removes.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::digest::{Digest, HashingReader, HashingWriter};
use super::oci::{self, Descriptor, ImageConfig, Index, LayoutMarker, Manifest};
use super::reference::Reference;

/// The largest JSON document (index, manifest, config) cvm reads.
const MAX_DOCUMENT: u64 = 4 << 20;
/// Prefix of every temporary file or directory cvm makes inside a layout or the store.
pub const STAGING_PREFIX: &str = ".staging-";

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// An existing layout; a directory that is not one (or only half of one) is an error.
    pub fn open(root: &Path) -> Result<Layout> {
        if !std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
            bail!("{} does not exist or is not a folder", root.display());
        }
        let marker_path = root.join("oci-layout");
        let marker = read_small_file(&marker_path).map_err(|err| {
            anyhow::anyhow!("{} is not an OCI image layout (no readable oci-layout file: {err:#})", root.display())
        })?;
        let marker: LayoutMarker =
            serde_json::from_slice(&marker).with_context(|| format!("{} is corrupt", marker_path.display()))?;
        if marker.image_layout_version != oci::LAYOUT_VERSION {
            bail!(
                "{} is an OCI image layout of version {}; cvm reads {}",
                root.display(),
                marker.image_layout_version,
                oci::LAYOUT_VERSION
            );
        }
        let layout = Layout { root: root.to_path_buf() };
        layout.index()?;
        Ok(layout)
    }

    /// The layout at `root`, created when it does not exist yet (or is an empty folder). A
    /// folder that holds something else is refused: a push never scatters files among yours.
    pub fn create(root: &Path) -> Result<Layout> {
        if root.join("oci-layout").exists() {
            return Layout::open_created(root);
        }
        // Only cvm's own files may be there already: a creation that was interrupted, or one
        // another cvm command is making right now (its oci-layout may appear meanwhile).
        let foreign = |name: &str| {
            !["blobs", "index.json", ".cvm.lock", "oci-layout"].contains(&name) && !name.starts_with(STAGING_PREFIX)
        };
        let has_foreign = std::fs::read_dir(root)
            .is_ok_and(|entries| entries.flatten().any(|e| foreign(&e.file_name().to_string_lossy())));
        if has_foreign {
            bail!(
                "{} is a folder with other files in it, not an OCI image layout: give an empty or new folder",
                root.display()
            );
        }
        std::fs::create_dir_all(root).with_context(|| format!("cannot create the image layout {}", root.display()))?;
        let layout = Layout { root: root.to_path_buf() };
        // Two commands creating one layout at once (six parallel first builds in a new store):
        // one writes it under the lock; the other then finds it made, and must not write an
        // empty index over images already added to it.
        let _lock = layout.lock()?;
        if root.join("oci-layout").exists() {
            return Layout::open_created(root);
        }
        layout.ensure_blob_folder()?;
        layout.write_index(&Index::default())?;
        let marker = LayoutMarker { image_layout_version: oci::LAYOUT_VERSION.into() };
        layout.write_file_atomically(&root.join("oci-layout"), &serde_json::to_vec(&marker)?)?;
        Ok(layout)
    }

    /// A layout that exists: opened, its blob folder made sure of.
    fn open_created(root: &Path) -> Result<Layout> {
        let layout = Layout::open(root)?;
        layout.ensure_blob_folder()?;
        Ok(layout)
    }

    /// `blobs/sha256` as a real folder (not a symlink to somewhere else), created if missing.
    /// Another cvm command may create it at the same moment: then it exists when this one tries,
    /// and what stands there is checked like any folder found.
    fn ensure_blob_folder(&self) -> Result<()> {
        for dir in [self.root.join("blobs"), self.blobs()] {
            if std::fs::symlink_metadata(&dir).is_err() {
                match std::fs::create_dir(&dir) {
                    Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(error).with_context(|| format!("cannot create {}", dir.display()));
                    }
                    _ => {}
                }
            }
            let meta = std::fs::symlink_metadata(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
            if !meta.is_dir() {
                bail!("{} is not a folder (a symlink?): refused", dir.display());
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }

    pub fn has_blob(&self, descriptor: &Descriptor) -> bool {
        std::fs::metadata(self.blob_path(&descriptor.digest)).is_ok_and(|m| m.is_file() && m.len() == descriptor.size)
    }

    /// A blob's bytes, verified against its descriptor (small documents only).
    pub fn read_blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        if descriptor.size > MAX_DOCUMENT {
            bail!("{} is {} bytes, too large for a JSON document", descriptor.digest, descriptor.size);
        }
        let mut bytes = Vec::new();
        self.open_blob(descriptor)?.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes)?;
        let digest = Digest::of(&bytes);
        if digest != descriptor.digest || bytes.len() as u64 != descriptor.size {
            bail!(
                "corrupt blob in {}: {} has digest {digest} and {} bytes (expected {} bytes)",
                self.root.display(),
                descriptor.digest,
                bytes.len(),
                descriptor.size
            );
        }
        Ok(bytes)
    }

    /// A blob for reading: a regular file of the layout, never a symlink or a FIFO (which a
    /// hostile registry folder could plant to read host files or to hang cvm).
    pub fn open_blob(&self, descriptor: &Descriptor) -> Result<File> {
        let path = self.blob_path(&descriptor.digest);
        open_regular(&path).with_context(|| {
            format!("the blob {} is missing from {} or not a regular file", descriptor.digest, self.root.display())
        })
    }

    /// Re-reads a blob and checks its digest and size; Err says what is wrong.
    pub fn verify_blob(&self, descriptor: &Descriptor) -> Result<()> {
        let mut reader = HashingReader::new(self.open_blob(descriptor)?);
        std::io::copy(&mut reader, &mut std::io::sink())?;
        let (digest, size) = reader.finish();
        if digest != descriptor.digest || size != descriptor.size {
            bail!("{} is corrupt: its content hashes to {digest} ({size} bytes)", descriptor.digest);
        }
        Ok(())
    }

    /// Stores `bytes` as a blob; returns its descriptor.
    pub fn write_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
        let descriptor = Descriptor::new(media_type, Digest::of(bytes), bytes.len() as u64);
        if !self.has_blob(&descriptor) {
            self.write_file_atomically(&self.blob_path(&descriptor.digest), bytes)?;
        }
        Ok(descriptor)
    }

    /// A temporary blob file to stream into; [`BlobWriter::commit`] names it by its digest.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let path = self.staging_path("blob");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(BlobWriter { writer: Some(HashingWriter::new(file)), path, layout: self.clone() })
    }

    /// Copies the blob of `descriptor` from `source`, verifying it on the way; false when it
    /// was already here (nothing copied).
    pub fn copy_blob_from(&self, source: &Layout, descriptor: &Descriptor) -> Result<bool> {
        if self.has_blob(descriptor) {
            return Ok(false);
        }
        let mut input = source.open_blob(descriptor)?;
        self.receive_blob(&mut input, descriptor)?;
        Ok(true)
    }

    /// Stores a blob read from `input`, which must match `descriptor` (digest and size).
    pub fn receive_blob(&self, input: &mut dyn Read, descriptor: &Descriptor) -> Result<()> {
        let mut writer = self.blob_writer()?;
        let mut input = super::layer::Interruptible(input.take(descriptor.size + 1));
        std::io::copy(&mut input, &mut writer).with_context(|| format!("copying {}", descriptor.digest))?;
        let (digest, size) = writer.finish_writing();
        if digest != descriptor.digest || size != descriptor.size {
            bail!(
                "digest mismatch: the blob named {} ({} bytes) has content {digest} ({size} bytes); refused",
                descriptor.digest,
                descriptor.size
            );
        }
        writer.place(&digest)
    }

    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let text =
            read_small_file(&path).with_context(|| format!("{} has no readable index.json", self.root.display()))?;
        let index: Index = serde_json::from_slice(&text).with_context(|| format!("{} is corrupt", path.display()))?;
        if index.schema_version != 2 {
            bail!("{} has schema version {}; cvm reads 2", path.display(), index.schema_version);
        }
        Ok(index)
    }

    pub fn write_index(&self, index: &Index) -> Result<()> {
        let text = serde_json::to_vec_pretty(index).context("serializing index.json")?;
        self.write_file_atomically(&self.root.join("index.json"), &text)
    }

    /// The manifest descriptor named `reference`, if the index has one: by `NAME:TAG`, by
    /// `NAME` alone for the tag latest (skopeo's `oci:DIR:NAME`), or by containerd's full name
    /// annotation (`docker.io/library/NAME:TAG`, which `docker save` writes).
    pub fn find(&self, reference: &Reference) -> Result<Option<Descriptor>> {
        let name = reference.to_string();
        let manifests = self.index()?.manifests;
        let by_name = manifests.iter().find(|m| m.ref_name() == Some(name.as_str()));
        let untagged = (reference.tag == super::reference::DEFAULT_TAG)
            .then(|| manifests.iter().find(|m| m.ref_name() == Some(reference.name.as_str())))
            .flatten();
        let containerd = manifests.iter().find(|m| {
            m.annotations
                .get("io.containerd.image.name")
                .is_some_and(|full| full == &name || full.ends_with(&format!("/{name}")))
        });
        Ok(by_name.or(untagged).or(containerd).cloned())
    }

    /// The names the index lists (for an error that says what is there).
    pub fn names(&self) -> Vec<String> {
        self.index()
            .map(|i| i.manifests.iter().filter_map(|m| m.ref_name().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Names `manifest` `reference` in the index (replacing an earlier image of that name).
    pub fn tag(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        let name = reference.to_string();
        let mut index = self.index()?;
        index.manifests.retain(|m| m.ref_name() != Some(name.as_str()));
        let mut entry = manifest.clone();
        entry.annotations.insert(oci::ANNOTATION_REF_NAME.into(), name);
        index.manifests.push(entry);
        index.manifests.sort_by(|a, b| a.ref_name().cmp(&b.ref_name()));
        self.write_index(&index)
    }

    /// Removes the name `reference` from the index; false when it was not there.
    pub fn untag(&self, reference: &Reference) -> Result<bool> {
        let name = reference.to_string();
        let mut index = self.index()?;
        let before = index.manifests.len();
        index.manifests.retain(|m| m.ref_name() != Some(name.as_str()));
        if index.manifests.len() == before {
            return Ok(false);
        }
        self.write_index(&index)?;
        Ok(true)
    }

    pub fn manifest(&self, descriptor: &Descriptor) -> Result<Manifest> {
        if descriptor.media_type != oci::MEDIA_MANIFEST {
            bail!(
                "{} is a {}, not an OCI image manifest (multi-platform indexes and Docker v2 manifests are not supported)",
                descriptor.digest,
                descriptor.media_type
            );
        }
        let bytes = self.read_blob(descriptor)?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).with_context(|| format!("the manifest {} is corrupt", descriptor.digest))?;
        if manifest.schema_version != 2 {
            bail!("the manifest {} has schema version {}", descriptor.digest, manifest.schema_version);
        }
        if let Some(bad) = manifest.layers.iter().find(|l| !oci::is_layer(&l.media_type)) {
            bail!("the image has a layer of type {}, which cvm cannot unpack", bad.media_type);
        }
        Ok(manifest)
    }

    pub fn config(&self, manifest: &Manifest) -> Result<ImageConfig> {
        let bytes = self.read_blob(&manifest.config)?;
        let config: ImageConfig = serde_json::from_slice(&bytes)
            .with_context(|| format!("the image config {} is corrupt", manifest.config.digest))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            bail!(
                "the image config {} lists {} layers but its manifest has {}",
                manifest.config.digest,
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            );
        }
        Ok(config)
    }

    /// Every blob the images of this layout need: manifests, configs and layers.
    pub fn referenced_blobs(&self) -> Result<Vec<Digest>> {
        let mut digests = Vec::new();
        for entry in self.index()?.manifests {
            digests.push(entry.digest.clone());
            if let Ok(manifest) = self.manifest(&entry) {
                digests.push(manifest.config.digest.clone());
                digests.extend(manifest.layers.iter().map(|l| l.digest.clone()));
            }
        }
        digests.sort();
        digests.dedup();
        Ok(digests)
    }

    /// The blobs on disk.
    pub fn blob_digests(&self) -> Vec<Digest> {
        let Ok(entries) = std::fs::read_dir(self.blobs()) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())).ok())
            .collect()
    }

    /// Deletes the blobs no image of this layout refers to, except those in `keep`; returns
    /// how many bytes went.
    pub fn collect_garbage(&self, keep: &[Digest]) -> Result<u64> {
        let used = self.referenced_blobs()?;
        let mut freed = 0;
        for digest in self.blob_digests() {
            if used.binary_search(&digest).is_err() && !keep.contains(&digest) {
                let path = self.blob_path(&digest);
                freed += std::fs::metadata(&path).map_or(0, |m| m.len());
                std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(freed)
    }

    /// Takes the layout's lock (exclusive, released on drop): two cvm commands never write
    /// the same layout at once.
    pub fn lock(&self) -> Result<LockFile> {
        LockFile::acquire(&self.root.join(".cvm.lock"))
    }

    /// A unique temporary path inside the blobs folder (same file system as its final place).
    fn staging_path(&self, what: &str) -> PathBuf {
        staging_path(&self.blobs(), what)
    }

    fn write_file_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        write_atomically(path, bytes)
    }
}

/// A blob being written: hashed as it goes, renamed to its digest by [`BlobWriter::commit_as`],
/// deleted if dropped before that.
pub struct BlobWriter {
    writer: Option<HashingWriter<File>>,
    path: PathBuf,
    layout: Layout,
}

impl BlobWriter {
    /// Stops writing: the digest and size of what was written.
    fn finish_writing(&mut self) -> (Digest, u64) {
        let writer = self.writer.take().expect("a blob writer finishes once");
        let (file, digest, size) = writer.finish();
        drop(file);
        (digest, size)
    }

    /// Names the blob by its content and returns its descriptor, and whether the layout did
    /// not have it before (false: an identical blob was already there, nothing was added).
    pub fn commit_as(mut self, media_type: &str) -> Result<(Descriptor, bool)> {
        let (digest, size) = self.finish_writing();
        let descriptor = Descriptor::new(media_type, digest, size);
        let new = !self.layout.has_blob(&descriptor);
        self.place(&descriptor.digest)?;
        Ok((descriptor, new))
    }

    /// Moves the finished file to `blobs/sha256/<digest>`.
    fn place(&mut self, digest: &Digest) -> Result<()> {
        let target = self.layout.blob_path(digest);
        std::fs::rename(&self.path, &target).with_context(|| format!("storing {digest}"))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.writer.as_mut().expect("not finished").write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.as_mut().expect("not finished").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Opens a regular file for reading without following a symlink at its name and without
/// blocking on a FIFO, and checks what it opened.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// A small JSON document of a layout: a regular file, at most [`MAX_DOCUMENT`] bytes.
fn read_small_file(path: &Path) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        bail!("{} is larger than {} MiB", path.display(), MAX_DOCUMENT >> 20);
    }
    Ok(bytes)
}

/// Removes the staging files of killed commands from the layout (call with its lock held).
pub fn remove_abandoned(layout: &Layout) {
    for leftover in abandoned_staging(&layout.blobs()).into_iter().chain(abandoned_staging(&layout.root)) {
        let _ = std::fs::remove_file(&leftover).or_else(|_| std::fs::remove_dir_all(&leftover));
    }
}

/// `<dir>/.staging-<pid>-<what>-<counter>`: the pid lets a later command see that its owner
/// is gone and remove it.
pub fn staging_path(dir: &Path, what: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    dir.join(format!("{STAGING_PREFIX}{}-{what}-{nanos}-{n}", std::process::id()))
}

/// Writes `bytes` to a staging file beside `path`, then renames it into place.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file without a folder")?;
    let staging = staging_path(dir, "file");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staging)
        .and_then(|mut file| file.write_all(bytes))
        .with_context(|| format!("cannot write {}", staging.display()))?;
    std::fs::rename(&staging, path).with_context(|| {
        let _ = std::fs::remove_file(&staging);
        format!("cannot write {}", path.display())
    })
}

/// Staging files and folders below `dir` (one level) whose owning process is gone.
pub fn abandoned_staging(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid: u32 = name.strip_prefix(STAGING_PREFIX)?.split('-').next()?.parse().ok()?;
            let alive = Path::new("/proc").join(pid.to_string()).exists();
            (!alive).then(|| entry.path())
        })
        .collect()
}

/// An exclusive `flock` on a file, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

impl LockFile {
    /// Waits for the exclusive lock.
    pub fn acquire(path: &Path) -> Result<LockFile> {
        Self::flock(path, libc::LOCK_EX).map(|lock| lock.expect("a blocking flock returns the lock"))
    }

    /// A shared lock: many holders at once, none while an exclusive one is held.
    pub fn acquire_shared(path: &Path) -> Result<LockFile> {
        Self::flock(path, libc::LOCK_SH).map(|lock| lock.expect("a blocking flock returns the lock"))
    }

    /// The exclusive lock, or None right away when another process holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<LockFile>> {
        Self::flock(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn flock(path: &Path, operation: libc::c_int) -> Result<Option<LockFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("cannot open the lock {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
            let err = std::io::Error::last_os_error();
            if operation & libc::LOCK_NB != 0 && err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        Ok(Some(LockFile { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commands racing to create one layout: each finds it made or makes it, none refuses the
    /// folder or writes an empty index over what another added.
    #[test]
    fn racing_creators_all_get_the_one_layout() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("layout");
            let creators: Vec<_> = (0..6)
                .map(|_| {
                    let root = root.clone();
                    std::thread::spawn(move || Layout::create(&root).map(|_| ()).map_err(|e| format!("{e:#}")))
                })
                .collect();
            for creator in creators {
                creator.join().unwrap().unwrap();
            }
            assert!(Layout::open(&root).is_ok());
        }
    }
}

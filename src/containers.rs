//! Containers that keep their state: `cvm create` makes one from an image, `cvm start` runs it
//! (attached, like `docker start -a`), its writable layer stays between starts, `cvm diff`
//! lists what it changed, `cvm commit` turns that into a new image layer, and `cvm rm` removes
//! it, leaving the image exactly as it was.
//!
//! Each container is a folder of the store: `state.json` (what to run, how it last ended),
//! `upper/` and `work/` (overlayfs's writable layer and work folder), `root/` (the mount point)
//! and `running.lock`, held by the `cvm start` in progress (so the container counts as running
//! exactly while a start of it runs, and a crashed start releases it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::image::layer::{self, is_opaque, is_whiteout, EntryKind, LayerEntry};
use crate::image::layout::{self, LockFile};
use crate::image::oci::{self, Descriptor, History, Manifest};
use crate::image::reference::Reference;
use crate::image::store::Store;
use crate::image::tree::Tree;
use crate::image::{now_rfc3339, Image};
use crate::runtime::SeccompProfile;

/// The limits and options a container was created with, applied at every start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    pub timeout_s: f64,
    pub seccomp: SeccompProfile,
    /// Host folders mounted at every start (`--volume`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::runtime::container::volumes::Volume>,
}

/// `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerState {
    pub name: String,
    /// The image name as given at `create`.
    pub image: String,
    /// The image's manifest: the container keeps using these exact layers even if the name
    /// is later given to another image.
    pub image_manifest: Descriptor,
    pub args: Vec<String>,
    pub options: RunOptions,
    pub created: String,
    #[serde(default)]
    pub starts: u64,
    #[serde(default)]
    pub last_exit_code: Option<i32>,
    #[serde(default)]
    pub last_outcome: Option<String>,
    #[serde(default)]
    pub last_finished: Option<String>,
}

/// What `cvm ps` says of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Exited(Option<i32>),
}

impl Status {
    pub fn describe(&self) -> String {
        match self {
            Status::Created => "created".into(),
            Status::Running => "running".into(),
            Status::Exited(Some(code)) => format!("exited ({code})"),
            Status::Exited(None) => "exited".into(),
        }
    }
}

/// A container's folder in the store.
#[derive(Clone, Debug)]
pub struct Container {
    pub dir: PathBuf,
    pub state: ContainerState,
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("invalid container name '{name}': use letters, digits and _ . - (up to 64, starting with a letter or digit)");
    }
    Ok(())
}

/// How long `status` and `begin_start` look again at a lock someone holds for a moment.
const LOCK_PROBE_PATIENCE: Duration = Duration::from_millis(250);
const LOCK_PROBE_PAUSE: Duration = Duration::from_millis(5);

impl Container {
    /// `cvm create`: a container of `reference` that will run `args` with `options`.
    pub fn create(
        store: &Store,
        name: &str,
        reference: &Reference,
        args: &[String],
        options: RunOptions,
    ) -> Result<Container> {
        check_name(name)?;
        // The image must be runnable now (program there, loader there), not at the first start.
        crate::program::ImageProgram::prepare(store, reference, args)?;
        let _lock = store.lock()?;
        let dir = store.containers_dir().join(name);
        if dir.exists() {
            bail!("a container named {name} already exists (`cvm rm {name}` removes it, `cvm ps -a` lists them)");
        }
        let image = Image::find(&store.images()?, reference)?;
        let state = ContainerState {
            name: name.to_string(),
            image: reference.to_string(),
            image_manifest: image.descriptor.clone(),
            args: args.to_vec(),
            options,
            created: now_rfc3339(),
            starts: 0,
            last_exit_code: None,
            last_outcome: None,
            last_finished: None,
        };
        let staging = layout::staging_path(&store.containers_dir(), "container");
        let made = (|| -> Result<()> {
            for sub in ["upper", "work", "root"] {
                std::fs::create_dir_all(staging.join(sub))?;
            }
            std::fs::write(staging.join("state.json"), serde_json::to_vec_pretty(&state)?)?;
            std::fs::rename(&staging, &dir).with_context(|| format!("creating {}", dir.display()))
        })();
        if made.is_err() {
            let _ = layer::remove_any(&staging);
        }
        made?;
        Ok(Container { dir, state })
    }

    pub fn open(store: &Store, name: &str) -> Result<Container> {
        check_name(name)?;
        let dir = store.containers_dir().join(name);
        let text = std::fs::read(dir.join("state.json"))
            .map_err(|_| anyhow::anyhow!("no container named {name} (`cvm ps -a` lists them)"))?;
        let state = serde_json::from_slice(&text)
            .with_context(|| format!("{} is corrupt", dir.join("state.json").display()))?;
        Ok(Container { dir, state })
    }

    /// Every container of the store, by name.
    pub fn list(store: &Store) -> Result<Vec<Container>> {
        let mut containers = Vec::new();
        let Ok(entries) = std::fs::read_dir(store.containers_dir()) else { return Ok(containers) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(layout::STAGING_PREFIX) {
                continue;
            }
            if let Ok(container) = Container::open(store, &name) {
                containers.push(container);
            }
        }
        containers.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        Ok(containers)
    }

    /// The image the container was made from (by manifest digest).
    pub fn image(&self, store: &Store) -> Result<Image> {
        let reference = Reference::parse(&self.state.image)?;
        Image::read(&store.images()?, reference, self.state.image_manifest.clone())
            .with_context(|| format!("the image of container {} is gone from the store", self.state.name))
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("running.lock")
    }

    /// Running while a `cvm start` holds the lock. Asking takes the lock for a moment, so a
    /// busy lock without the start's pid file may be another `ps` asking at the same time (or a
    /// start between its lock and its pid file): look again for a little while.
    pub fn status(&self) -> Status {
        let until = Instant::now() + LOCK_PROBE_PATIENCE;
        loop {
            match LockFile::try_acquire(&self.lock_path()) {
                Ok(None) if self.dir.join("running.pid").exists() => return Status::Running,
                Ok(None) if Instant::now() < until => std::thread::sleep(LOCK_PROBE_PAUSE),
                _ if self.state.starts == 0 => return Status::Created,
                _ => return Status::Exited(self.state.last_exit_code),
            }
        }
    }

    /// Marks the container running for as long as the returned lock lives; an error if a
    /// start of it is already in progress. A lock busy for only a moment is a `ps` asking
    /// (see [`Container::status`]): the start tries again for a little while.
    pub fn begin_start(&self) -> Result<LockFile> {
        let until = Instant::now() + LOCK_PROBE_PATIENCE;
        let lock = loop {
            match LockFile::try_acquire(&self.lock_path())? {
                Some(lock) => break lock,
                None if Instant::now() < until => std::thread::sleep(LOCK_PROBE_PAUSE),
                None => bail!("container {} is already running (a `cvm start` of it is in progress)", self.state.name),
            }
        };
        std::fs::write(self.dir.join("running.pid"), std::process::id().to_string())?;
        Ok(lock)
    }

    /// The writable layer for the container runtime.
    pub fn writable(&self) -> crate::runtime::container::rootfs::Writable {
        crate::runtime::container::rootfs::Writable::Kept {
            upper: self.dir.join("upper"),
            work: self.dir.join("work"),
            root: self.dir.join("root"),
        }
    }

    /// Records how a start ended.
    pub fn finish_start(&mut self, exit_code: i32, outcome: &str) -> Result<()> {
        self.state.starts += 1;
        self.state.last_exit_code = Some(exit_code);
        self.state.last_outcome = Some(outcome.to_string());
        self.state.last_finished = Some(now_rfc3339());
        let _ = std::fs::remove_file(self.dir.join("running.pid"));
        layout::write_atomically(&self.dir.join("state.json"), &serde_json::to_vec_pretty(&self.state)?)
    }

    /// `cvm rm`: refused while running unless `force`, which stops the start in progress first.
    pub fn remove(self, store: &Store, force: bool) -> Result<()> {
        if self.status() == Status::Running {
            if !force {
                bail!(
                    "container {} is running; wait for it to end or use `cvm rm --force {}`",
                    self.state.name,
                    self.state.name
                );
            }
            self.stop()?;
        }
        let _lock = store.lock()?;
        remove_tree(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }

    /// Asks the `cvm start` in progress to stop (SIGTERM: it kills the container and cleans
    /// up), then waits for it to let go of the container.
    fn stop(&self) -> Result<()> {
        let pid: Option<libc::pid_t> =
            std::fs::read_to_string(self.dir.join("running.pid")).ok().and_then(|t| t.trim().parse().ok());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut signal = libc::SIGTERM;
        loop {
            if let Some(pid) = pid {
                // SAFETY: kill has no memory-safety preconditions; the pid is the start's.
                unsafe { libc::kill(pid, signal) };
            }
            std::thread::sleep(Duration::from_millis(20));
            if self.status() != Status::Running {
                return Ok(());
            }
            if Instant::now() > deadline {
                if signal == libc::SIGKILL {
                    bail!("container {} did not stop", self.state.name);
                }
                signal = libc::SIGKILL;
            }
        }
    }

    /// `cvm diff`: what the container changed against its image, as `docker diff` lists it
    /// (A added, C changed, D deleted).
    pub fn diff(&self, store: &Store) -> Result<Vec<(char, String)>> {
        let image = self.image(store)?;
        let tree = Tree { layers: image.layer_dirs(store)? };
        let mut changes = Vec::new();
        walk_upper(&self.dir.join("upper"), Path::new(""), &mut |relative, meta, host| {
            let shown = format!("/{}", relative.display());
            let below = tree.lookup(relative);
            if is_whiteout(meta) {
                changes.push(('D', shown));
            } else if below.is_some() {
                changes.push(('C', shown));
            } else {
                changes.push(('A', shown));
            }
            let _ = host;
        })?;
        changes.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(changes)
    }

    /// `cvm commit`: the container's changes as a new layer on top of its image's, named
    /// `reference`.
    pub fn commit(&self, store: &Store, reference: &Reference) -> Result<Image> {
        if self.status() == Status::Running {
            bail!("container {} is running: commit it after it ended", self.state.name);
        }
        let base = self.image(store)?;
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        walk_upper(&self.dir.join("upper"), Path::new(""), &mut |relative, meta, host| match layer_entry(
            relative, meta, host,
        ) {
            Some(entry) => entries.push(entry),
            None => skipped.push(format!("/{}", relative.display())),
        })?;
        let _lock = store.lock()?;
        let images = store.images()?;
        let built = layer::write_layer(&images, &entries)?;
        let mut config = base.config.clone();
        let created = now_rfc3339();
        config.rootfs.diff_ids.push(built.diff_id);
        // The container's command becomes the image's, as `docker commit` keeps it.
        if !self.state.args.is_empty() {
            config.config.cmd = Some(self.state.args.clone());
        }
        let mut comment = format!("{} changes of container {}", entries.len(), self.state.name);
        if !skipped.is_empty() {
            comment.push_str(&format!("; sockets and device nodes left out: {}", skipped.join(" ")));
        }
        config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(format!("cvm commit {} {reference}", self.state.name)),
            comment: Some(comment),
            empty_layer: false,
        });
        config.created = Some(created);
        let config_blob = images.write_blob(oci::MEDIA_CONFIG, &serde_json::to_vec(&config)?)?;
        let mut layers = base.manifest.layers.clone();
        layers.push(built.blob);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_MANIFEST.into()),
            config: config_blob,
            layers,
            annotations: BTreeMap::new(),
            extra: Default::default(),
        };
        let manifest_blob = images.write_blob(oci::MEDIA_MANIFEST, &serde_json::to_vec(&manifest)?)?;
        images.tag(reference, &manifest_blob)?;
        Image::read(&images, reference.clone(), manifest_blob)
    }
}

/// Visits every entry of an overlayfs upper folder, parents before children.
fn walk_upper(upper: &Path, relative: &Path, visit: &mut dyn FnMut(&Path, &std::fs::Metadata, &Path)) -> Result<()> {
    let dir = upper.join(relative);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let path = relative.join(&name);
        let host = upper.join(&path);
        let meta = std::fs::symlink_metadata(&host)?;
        visit(&path, &meta, &host);
        if meta.is_dir() {
            walk_upper(upper, &path, visit)?;
        }
    }
    Ok(())
}

/// One entry of the upper folder as a layer entry (whiteouts and opaque folders in the
/// image format's spelling), with its real owner, mode and time; None for what a layer does
/// not carry here (sockets, device nodes).
fn layer_entry(relative: &Path, meta: &std::fs::Metadata, host: &Path) -> Option<LayerEntry> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let kind = if is_whiteout(meta) {
        EntryKind::Whiteout
    } else if meta.is_dir() && is_opaque(host) {
        EntryKind::Opaque
    } else if meta.is_dir() {
        EntryKind::Directory
    } else if meta.file_type().is_symlink() {
        EntryKind::Symlink(std::fs::read_link(host).unwrap_or_default())
    } else if meta.file_type().is_fifo() {
        EntryKind::Fifo
    } else if meta.is_file() {
        EntryKind::File(host.to_path_buf())
    } else {
        return None;
    };
    Some(LayerEntry {
        path: relative.to_string_lossy().into_owned(),
        kind,
        mode: meta.permissions().mode() & 0o7777,
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
        mtime: meta.mtime().max(0) as u64,
    })
}

/// Removes a container folder; overlayfs's work folder can hold a mode-000 directory, which
/// an unprivileged owner must open up first.
fn remove_tree(dir: &Path) -> Result<()> {
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    fn open_up(path: &Path) {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.is_dir() {
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
                if let Ok(entries) = std::fs::read_dir(path) {
                    for entry in entries.flatten() {
                        open_up(&entry.path());
                    }
                }
            }
        }
    }
    open_up(dir);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

/// The image digests (manifests) the store's containers use: kept when images are removed.
pub fn images_in_use(store: &Store) -> Result<Vec<Descriptor>> {
    Ok(Container::list(store)?.into_iter().map(|c| c.state.image_manifest).collect())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn container_names() {
        for good in ["web", "lab-2", "a.b_c"] {
            check_name(good).unwrap();
        }
        for bad in ["", "-x", "a/b", "a b", ".."] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}

//! cvm's store: the user's images and containers, kept until removed (user data, not cache).
//!
//! ```text
//! $CVM_STORE, else $XDG_DATA_HOME/cvm, else ~/.local/share/cvm
//!   images/       an OCI image layout: oci-layout, index.json (one entry per NAME:TAG), blobs/sha256/
//!   layers/<id>/  each layer unpacked once, by diff id: the read-only lower layers of overlayfs
//!   containers/<name>/  one per `cvm create`: state.json, upper/ and work/ (its writable layer)
//!   init/         mount points every container needs (/proc, /dev), above the image's layers
//!   lock          held while a command changes the store
//! ```
//!
//! Every command that changes the store takes `lock`, writes through `.staging-<pid>-*` files
//! and folders renamed into place, and first removes the staging left by a killed command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::digest::Digest;
use super::layer::{self, Whiteouts};
use super::layout::{self, Layout, LockFile};
use super::oci::Descriptor;

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Where the store is: `CVM_STORE`, else `$XDG_DATA_HOME/cvm`, else `~/.local/share/cvm`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("CVM_STORE").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("cvm");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(home).join(".local").join("share").join("cvm");
        }
        // SAFETY: getuid has no preconditions.
        PathBuf::from(format!("/var/tmp/cvm-store-{}", unsafe { libc::getuid() }))
    }

    /// The store at its default place, created when missing.
    pub fn open() -> Result<Store> {
        Store::at(&Store::default_root())
    }

    pub fn at(root: &Path) -> Result<Store> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let store = Store { root: root.to_path_buf() };
        // Only its owner may enter the store: a container's writable layer can hold a program
        // that is set-user-id root inside the container, and on the host it must stay out of
        // every other user's reach (Docker keeps /var/lib/docker at 0710 for the same reason).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("cannot create the store {}", root.display()))?;
        let mode = std::fs::metadata(root)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make the store {} private", root.display()))?;
        }
        for dir in [store.layers_dir(), store.containers_dir(), store.init_layer()] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the store folder {}", dir.display()))?;
        }
        for mount_point in ["proc", "dev"] {
            std::fs::create_dir_all(store.init_layer().join(mount_point))?;
        }
        Layout::create(&store.images_dir())?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The store's images: an OCI image layout.
    pub fn images(&self) -> Result<Layout> {
        Layout::open(&self.images_dir())
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The mount points a container needs, as an extra read-only layer above the image's
    /// (Docker's "init layer"): an image need not have /proc or /dev, and a container's own
    /// writable layer should not show them as its changes.
    pub fn init_layer(&self) -> PathBuf {
        self.root.join("init")
    }

    /// Takes the store's lock and removes what killed commands left behind.
    pub fn lock(&self) -> Result<LockFile> {
        let path = self.root.join("lock");
        let lock = match LockFile::try_acquire(&path)? {
            Some(lock) => lock,
            None => {
                eprintln!("cvm: waiting for another cvm command to finish with the store {}", self.root.display());
                LockFile::acquire(&path)?
            }
        };
        for leftover in self.leftovers() {
            let _ = layer::remove_any(&leftover);
        }
        Ok(lock)
    }

    /// `.staging-*` files and folders whose command is gone (for `cvm doctor` and cleanup).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in [
            self.images_dir().join("blobs").join("sha256"),
            self.images_dir(),
            self.layers_dir(),
            self.containers_dir(),
        ] {
            found.extend(layout::abandoned_staging(&dir));
        }
        found
    }

    /// The layer `blob` unpacked (once) under `layers/<diff id>`, for overlayfs.
    pub fn unpacked_layer(&self, blob: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
        let dir = self.layers_dir().join(diff_id.hex());
        if dir.is_dir() {
            return Ok(dir);
        }
        let staging = layout::staging_path(&self.layers_dir(), "layer");
        std::fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
        let result = layer::unpack(&self.images()?, blob, diff_id, &staging, Whiteouts::Overlay).and_then(|_| {
            match std::fs::rename(&staging, &dir) {
                Ok(()) => Ok(()),
                // Another command unpacked the same layer meanwhile: use theirs.
                Err(_) if dir.is_dir() => Ok(()),
                Err(err) => Err(err).with_context(|| format!("moving the layer into {}", dir.display())),
            }
        });
        let _ = layer::remove_any(&staging);
        result.map(|()| dir)
    }

    /// Held (shared) by every container run that mounts unpacked layers, for as long as the
    /// run lasts: `image rm` removes unpacked layers only when no run holds it.
    pub fn use_layers(&self) -> Result<LockFile> {
        LockFile::acquire_shared(&self.root.join("layers.lock"))
    }

    /// Unpacked layers no image of the store uses any more. While a container runs (any run
    /// holding [`Store::use_layers`]) they stay; a later `image rm` removes them. True when
    /// they were removed.
    pub fn remove_unused_layers(&self, used: &[Digest]) -> Result<bool> {
        let Some(_no_runs) = LockFile::try_acquire(&self.root.join("layers.lock"))? else { return Ok(false) };
        let Ok(entries) = std::fs::read_dir(self.layers_dir()) else { return Ok(true) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else { continue };
            if !used.contains(&digest) {
                layer::remove_any(&entry.path())?;
            }
        }
        Ok(true)
    }
}

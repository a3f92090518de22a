//! Images on open standards: OCI images (gzip tar layers, a config, a manifest, all named by
//! sha256 digest) kept in an OCI image layout, pushed to and pulled from registry folders that
//! are OCI image layouts too, saved as tar files, and turned into OCI runtime bundles for runc.
//! What a student builds with cvm opens in skopeo and runs in runc. See docs/images.md.
//!
//! Layers of the module, bottom up: [`digest`] and [`reference`] (names), [`oci`] (the JSON
//! documents), [`layout`] (a directory of blobs and an index), [`layer`] (writing and
//! unpacking tar layers), [`store`] (cvm's own images and containers), [`tree`] (the merged
//! view of a stack of layers), and the operations: [`build`], [`transfer`] (push, pull, save,
//! load), [`bundle`].

pub mod build;
pub mod bundle;
pub mod digest;
pub mod layer;
pub mod layout;
pub mod oci;
pub mod reference;
pub mod store;
pub mod transfer;
pub mod tree;

use std::path::PathBuf;

use anyhow::{bail, Result};

use digest::Digest;
use layout::Layout;
use oci::{Descriptor, ImageConfig, Manifest};
use reference::Reference;
use store::Store;

/// An image of a layout, read and checked: its name, manifest and config.
#[derive(Clone, Debug)]
pub struct Image {
    pub reference: Reference,
    /// The manifest's descriptor: its digest is the image's digest.
    pub descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

impl Image {
    /// The image `reference` of `layout`, or an error that says how to see what is there.
    pub fn find(layout: &Layout, reference: &Reference) -> Result<Image> {
        match layout.find(reference)? {
            Some(descriptor) => Image::read(layout, reference.clone(), descriptor),
            None => bail!(
                "no image {reference} in {} (`cvm image ls` lists the images; `cvm image build` makes one)",
                layout.root().display()
            ),
        }
    }

    pub fn read(layout: &Layout, reference: Reference, descriptor: Descriptor) -> Result<Image> {
        let manifest = layout.manifest(&descriptor)?;
        let config = layout.config(&manifest)?;
        Ok(Image { reference, descriptor, manifest, config })
    }

    /// Every image of `layout` by name (unreadable entries are left out).
    pub fn list(layout: &Layout) -> Result<Vec<Image>> {
        let mut images = Vec::new();
        for entry in layout.index()?.manifests {
            let Some(reference) = entry.ref_name().and_then(|name| Reference::parse(name).ok()) else { continue };
            if let Ok(image) = Image::read(layout, reference, entry) {
                images.push(image);
            }
        }
        Ok(images)
    }

    pub fn digest(&self) -> &Digest {
        &self.descriptor.digest
    }

    /// Bytes of all its blobs as stored (compressed layers, config, manifest): what a push
    /// copies when the registry has none of them.
    pub fn stored_size(&self) -> u64 {
        self.descriptor.size + self.manifest.config.size + self.manifest.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Its layers unpacked in the store, top first (overlayfs's `lowerdir` order).
    pub fn layer_dirs(&self, store: &Store) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for (blob, diff_id) in self.manifest.layers.iter().zip(&self.config.rootfs.diff_ids) {
            dirs.push(store.unpacked_layer(blob, diff_id)?);
        }
        dirs.reverse();
        Ok(dirs)
    }

    /// Every blob of the image: manifest, config, layers.
    pub fn blobs(&self) -> Vec<Descriptor> {
        let mut blobs = vec![self.descriptor.clone(), self.manifest.config.clone()];
        blobs.extend(self.manifest.layers.iter().cloned());
        blobs
    }
}

/// Now as RFC 3339 UTC, as image configs write times.
pub fn now_rfc3339() -> String {
    let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    crate::results::utc_date_time(seconds)
}

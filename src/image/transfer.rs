//! Moving images between the store and the outside, always by content digest and always
//! verified on arrival: `push` to and `pull` from a registry folder (an OCI image layout, as
//! `skopeo copy oci:DIR:NAME` reads and writes), `save` to and `load` from one tar file
//! holding such a layout. Blobs go first and the name last, so an interrupted transfer leaves
//! at most unnamed blobs behind, never half an image.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::digest::{Digest, HashingReader};
use super::layout::{self, Layout};
use super::oci::{self, Descriptor, Index, LayoutMarker};
use super::reference::Reference;
use super::store::Store;
use super::Image;

/// What a transfer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Blobs copied.
    pub copied: usize,
    /// Blobs the destination already had (shared layers): not copied again.
    pub already_there: usize,
    pub bytes: u64,
}

/// Copies the blobs of `image` from `from` to `to` (layers first, the manifest last).
fn copy_image(from: &Layout, to: &Layout, image: &Image) -> Result<Transferred> {
    let mut done = Transferred::default();
    let mut blobs = image.blobs();
    blobs.rotate_left(1); // manifest last
    for blob in &blobs {
        if to.copy_blob_from(from, blob)? {
            done.copied += 1;
            done.bytes += blob.size;
        } else {
            done.already_there += 1;
        }
    }
    Ok(done)
}

/// `cvm image push NAME DIR`: DIR becomes (or already is) an OCI image layout holding the image.
pub fn push(store: &Store, reference: &Reference, registry: &Path) -> Result<(Image, Transferred)> {
    let images = store.images()?;
    let image = Image::find(&images, reference)?;
    let destination = Layout::create(registry)?;
    let _lock = destination.lock()?;
    layout::remove_abandoned(&destination);
    let done = copy_image(&images, &destination, &image)?;
    destination.tag(reference, &image.descriptor)?;
    Ok((image, done))
}

/// `cvm image pull DIR NAME`: the image named NAME in the registry folder DIR, into the store.
pub fn pull(store: &Store, registry: &Path, reference: &Reference) -> Result<(Image, Transferred)> {
    let source = Layout::open(registry).context("cannot pull")?;
    let image = match source.find(reference)? {
        Some(descriptor) => Image::read(&source, reference.clone(), descriptor)?,
        None => bail!(
            "the registry {} has no image {reference} (it lists: {})",
            registry.display(),
            match source.names() {
                names if names.is_empty() => "nothing".to_string(),
                names => names.join(", "),
            }
        ),
    };
    let _lock = store.lock()?;
    let images = store.images()?;
    let done = copy_image(&source, &images, &image)?;
    images.tag(reference, &image.descriptor)?;
    Ok((image, done))
}

/// `cvm image save NAME -o FILE`: one tar holding an OCI image layout with the image.
pub fn save(store: &Store, reference: &Reference, file: &Path) -> Result<Image> {
    let images = store.images()?;
    let image = Image::find(&images, reference)?;
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!("-o {}: the folder {} does not exist", file.display(), dir.display());
    }
    // A save killed earlier left its staging file here: gone now.
    for leftover in layout::abandoned_staging(dir) {
        if leftover.file_name().is_some_and(|n| n.to_string_lossy().contains("-save-")) {
            let _ = std::fs::remove_file(leftover);
        }
    }
    let staging = layout::staging_path(dir, "save");
    let result = write_archive(&images, &image, &staging)
        .and_then(|()| std::fs::rename(&staging, file).with_context(|| format!("cannot write {}", file.display())));
    if result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result.map(|()| image)
}

fn write_archive(images: &Layout, image: &Image, path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut entry = image.descriptor.clone();
    entry.annotations.insert(oci::ANNOTATION_REF_NAME.into(), image.reference.to_string());
    let index = Index { manifests: vec![entry], ..Index::default() };
    let marker = LayoutMarker { image_layout_version: oci::LAYOUT_VERSION.into() };
    append_bytes(&mut tar, "oci-layout", &serde_json::to_vec(&marker)?)?;
    append_bytes(&mut tar, "index.json", &serde_json::to_vec_pretty(&index)?)?;
    append_bytes(&mut tar, "blobs/", &[])?;
    append_bytes(&mut tar, "blobs/sha256/", &[])?;
    for blob in image.blobs() {
        let mut header = header_for(blob.size, false);
        let mut input = HashingReader::new(images.open_blob(&blob)?.take(blob.size));
        tar.append_data(&mut header, format!("blobs/sha256/{}", blob.digest.hex()), &mut input)?;
        if input.finish() != (blob.digest.clone(), blob.size) {
            bail!("the store's blob {} is corrupt (`cvm image verify` shows it): not saved", blob.digest);
        }
    }
    tar.into_inner()?.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

fn header_for(size: u64, directory: bool) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(if directory { 0o755 } else { 0o644 });
    header.set_mtime(0);
    header.set_entry_type(if directory { tar::EntryType::Directory } else { tar::EntryType::Regular });
    header
}

fn append_bytes<W: std::io::Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut header = header_for(bytes.len() as u64, path.ends_with('/'));
    tar.append_data(&mut header, path, bytes)?;
    Ok(())
}

/// `cvm image load -i FILE`: every named image of the tar's OCI layout, into the store. Each
/// blob is checked against the digest that names it; a missing or corrupt blob refuses the
/// whole file.
pub fn load(store: &Store, file: &Path) -> Result<Vec<Image>> {
    let input = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let _lock = store.lock()?;
    let images = store.images()?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(input));
    let mut index: Option<Index> = None;
    let mut marker = false;
    // Blobs arrive in any order: each is verified against the digest that names it and stored
    // as it comes; what an image needs is checked once the index is known.
    for entry in archive.entries().with_context(|| format!("{} is not a tar file", file.display()))? {
        let mut entry = entry.with_context(|| format!("{} is not a readable tar file", file.display()))?;
        let path = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
        match path.as_str() {
            "oci-layout" => marker = true,
            "index.json" => {
                let mut text = Vec::new();
                entry.by_ref().take(4 << 20).read_to_end(&mut text)?;
                index = Some(serde_json::from_slice(&text).context("the archive's index.json is corrupt")?);
            }
            _ => {
                if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                    let digest = Digest::parse(&format!("sha256:{hex}"))
                        .with_context(|| format!("{path} in the archive is not named by a digest"))?;
                    let size = entry.header().size()?;
                    let descriptor = Descriptor::new("", digest.clone(), size);
                    if !images.has_blob(&descriptor) {
                        images
                            .receive_blob(&mut entry, &descriptor)
                            .with_context(|| format!("{path} in the archive"))?;
                    }
                }
            }
        }
    }
    if !marker {
        bail!("{} is not an OCI image archive (no oci-layout; `cvm image save` writes one)", file.display());
    }
    let index = index.with_context(|| format!("{} has no index.json", file.display()))?;
    // Every image is checked before any is named: a file with one broken image loads nothing.
    let mut loaded = Vec::new();
    for entry in index.manifests {
        let Some(name) = entry.ref_name() else { continue };
        let reference = Reference::parse(name).with_context(|| format!("the archive names an image {name:?}"))?;
        let image = Image::read(&images, reference.clone(), entry.clone())
            .with_context(|| format!("the archive's image {reference} is incomplete (a truncated file?)"))?;
        for blob in image.blobs() {
            if !images.has_blob(&blob) {
                bail!("the archive's image {reference} lacks the blob {} (a truncated file?)", blob.digest);
            }
        }
        loaded.push(image);
    }
    if loaded.is_empty() {
        bail!("{} holds no named image", file.display());
    }
    for image in &loaded {
        images.tag(&image.reference, &image.descriptor)?;
    }
    Ok(loaded)
}

//! The container's image: the read-only layers its root file system is stacked from, top
//! first. For a workload or `--binary` it is a one-layer image built once per program content
//! and kept in cvm's cache (`<cache>/images/<hash>-<name>/rootfs`); for `--image` it is an image
//! of the store (`crate::image`), whose layers are unpacked there once. Every run mounts the
//! layers as the lower, never-written part of its root file system.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::embedded;
use crate::program::Program;

/// Directories every built-in image has: mount points (dev, proc), a writable scratch place
/// (tmp), and the conventional homes of programs and configuration.
pub const DIRECTORIES: [&str; 5] = ["bin", "dev", "etc", "proc", "tmp"];

#[derive(Clone, Debug)]
pub struct Image {
    /// Read-only layers, top first (overlayfs's `lowerdir` order).
    pub layers: Vec<PathBuf>,
    /// The program's path inside the image, e.g. `/bin/cvm-workload`.
    pub program: String,
    pub origin: Origin,
}

/// Where the image came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// cvm's cache; `built` when this run built it.
    Cache { built: bool },
    /// The store: `NAME:TAG` and the manifest digest.
    Store { reference: String, digest: String },
}

/// Where the cached one-layer images live.
pub fn images_dir() -> PathBuf {
    embedded::cache_dir().join("images")
}

/// The image of `program`: from the store for `--image`, else from the cache or built now.
pub fn prepare(program: &Program) -> Result<Image> {
    if let Program::Image(image) = program {
        return Ok(Image {
            layers: image.layers.clone(),
            program: image.argv[0].clone(),
            origin: Origin::Store { reference: image.reference.clone(), digest: image.digest.clone() },
        });
    }
    let name = file_name(program);
    let program_path = format!("/bin/{name}");
    // The image of this content exists already: nothing to read (the program's digest is
    // known from its check, program_check.rs).
    let rootfs = images_dir().join(format!("{}-{name}", program.content_id()?)).join("rootfs");
    if rootfs.join("bin").join(&name).is_file() {
        return Ok(Image { layers: vec![rootfs], program: program_path, origin: Origin::Cache { built: false } });
    }
    // One read of the program: checked, hashed and copied into the image from the same bytes,
    // so a file swapped meanwhile cannot end up cached under another content's name.
    let bytes = program.bytes()?;
    crate::program::check_static_elf(&bytes).with_context(|| format!("cannot run {}", program.label()))?;
    let dir = images_dir().join(format!("{}-{name}", content_id(program, &bytes)));
    let rootfs = dir.join("rootfs");
    if !rootfs.join("bin").join(&name).is_file() {
        for leftover in crate::image::layout::abandoned_staging(&images_dir()) {
            let _ = std::fs::remove_dir_all(leftover);
        }
        build(&bytes, &dir, &name).with_context(|| format!("building the container image {}", dir.display()))?;
    }
    Ok(Image { layers: vec![rootfs], program: program_path, origin: Origin::Cache { built: true } })
}

/// The identity of the program's content: the build's hash for the workload, sha256 else.
fn content_id(program: &Program, bytes: &[u8]) -> String {
    match program {
        Program::Workload { .. } => embedded::WORKLOAD_HASH.trim().to_string(),
        _ => crate::image::digest::Digest::of(bytes).short(),
    }
}

/// The program's file name inside the image: what it would be called on the host.
fn file_name(program: &Program) -> String {
    let raw = match program {
        Program::Workload { .. } => "cvm-workload".to_string(),
        Program::Binary { .. } | Program::Image(_) => program.label(),
    };
    let clean: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    match clean.trim_start_matches('.') {
        "" => "program".to_string(),
        _ => clean,
    }
}

/// Builds the image in a temporary directory and renames it into place, so a concurrent run
/// never sees half an image (the first rename wins; the loser's copy is removed).
fn build(program: &[u8], dir: &Path, name: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = dir.parent().context("image directory has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = TempDir(parent.join(format!(".staging-{}-{}", std::process::id(), unique())));
    let rootfs = staging.0.join("rootfs");
    for directory in DIRECTORIES {
        std::fs::create_dir_all(rootfs.join(directory))?;
    }
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    let program_path = rootfs.join("bin").join(name);
    std::fs::write(&program_path, program)?;
    // Read-only and executable: the image is never written, only layered over.
    std::fs::set_permissions(&program_path, std::fs::Permissions::from_mode(0o555))?;
    std::fs::write(
        staging.0.join("README"),
        "A cvm container image: the root file system a container run starts from.\n\
         rootfs/ is the read-only lower layer; each run adds its own writable layer on top.\n",
    )?;
    match std::fs::rename(&staging.0, dir) {
        Ok(()) => {
            std::mem::forget(staging);
            Ok(())
        }
        // Another run built the same image meanwhile: use theirs.
        Err(_) if dir.join("rootfs").join("bin").join(name).is_file() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("moving the image into {}", dir.display())),
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A directory removed on drop (the staging copy of an image that was not moved into place).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        let workload = Program::workload("hello").unwrap();
        assert_eq!(file_name(&workload), "cvm-workload");
        let digest = crate::image::digest::Digest::of(b"");
        let odd = Program::Binary { path: PathBuf::from("/tmp/my prog!"), digest: digest.clone() };
        assert_eq!(file_name(&odd), "my_prog_");
        let dots = Program::Binary { path: PathBuf::from("/tmp/..."), digest };
        assert_eq!(file_name(&dots), "program");
    }
}

//! The container image: a tiny read-only root file system holding just the program, built once
//! per program content and kept in cvm's cache (`<cache>/images/<hash>-<name>/rootfs`).
//! Every run mounts it as the lower, never-written layer of its root file system.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::embedded;
use crate::program::Program;

/// Directories every image has: mount points (dev, proc), a writable scratch place (tmp),
/// and the conventional homes of programs and configuration.
pub const DIRECTORIES: [&str; 5] = ["bin", "dev", "etc", "proc", "tmp"];

#[derive(Clone, Debug)]
pub struct Image {
    /// The image's root directory on the host.
    pub rootfs: PathBuf,
    /// The program's path inside the image, e.g. `/bin/cvm-workload`.
    pub program: String,
    /// True when this run built the image; false when it came from the cache.
    pub built: bool,
}

impl Image {
    pub fn program_in_rootfs(&self) -> PathBuf {
        self.rootfs.join(self.program.trim_start_matches('/'))
    }
}

/// Where the images live.
pub fn images_dir() -> PathBuf {
    embedded::cache_dir().join("images")
}

/// The image of `program`, from the cache or built now.
pub fn prepare(program: &Program) -> Result<Image> {
    let name = file_name(program);
    let key = format!("{}-{name}", program.content_id()?);
    let dir = images_dir().join(&key);
    let mut image = Image { rootfs: dir.join("rootfs"), program: format!("/bin/{name}"), built: false };
    if image.program_in_rootfs().is_file() {
        return Ok(image);
    }
    build(program, &dir, &name).with_context(|| format!("building the container image {}", dir.display()))?;
    image.built = true;
    Ok(image)
}

/// The program's file name inside the image: what it would be called on the host.
fn file_name(program: &Program) -> String {
    let raw = match program {
        Program::Workload { .. } => "cvm-workload".to_string(),
        Program::Binary { .. } => program.label(),
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
fn build(program: &Program, dir: &Path, name: &str) -> Result<()> {
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
    std::fs::write(&program_path, program.bytes()?)?;
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
        let odd = Program::Binary { path: PathBuf::from("/tmp/my prog!") };
        assert_eq!(file_name(&odd), "my_prog_");
        let dots = Program::Binary { path: PathBuf::from("/tmp/...") };
        assert_eq!(file_name(&dots), "program");
    }
}

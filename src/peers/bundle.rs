//! The OCI bundle runc and crun run: made from the same one-layer image cvm's container runs
//! (`runtime/container/image.rs`), with the config the image bundle writes
//! (`image/bundle.rs`). Kept in cvm's cache and made once per program content (checked at
//! each use: made again when damaged); one config folder per program and arguments, so a
//! run's measured command is `runc run` alone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::image::bundle::{runtime_config, BundleRoot};
use crate::image::digest::Digest;
use crate::image::layout::staging_path;
use crate::runtime::container::image as container_image;
use crate::runtime::RunSpec;

/// Directories of the bundle's root file system: the image's and the mount points runc needs.
const DIRECTORIES: [&str; 6] = ["bin", "dev", "etc", "proc", "sys", "tmp"];

/// The bundle folder (config.json in it) for `spec`'s program and arguments.
pub fn prepare(spec: &RunSpec) -> Result<PathBuf> {
    let image = container_image::prepare(&spec.program)?;
    let layer = image.layers.first().context("the program's image has no layer")?;
    let id = layer.parent().and_then(Path::file_name).context("the program's image has no name")?;
    let base = crate::embedded::cache_dir().join("peer-bundles").join(id);
    let rootfs = base.join("rootfs");
    let program = rootfs.join(image.program.trim_start_matches('/'));
    let intact = std::fs::metadata(&program)
        .ok()
        .zip(std::fs::metadata(layer.join(image.program.trim_start_matches('/'))).ok())
        .is_some_and(|(ours, image)| ours.is_file() && ours.len() == image.len());
    if !intact {
        // Missing or damaged: made again from the image.
        let _ = std::fs::remove_dir_all(&rootfs);
        build_rootfs(&base, layer, &image.program)?;
    }
    let mut argv = vec![image.program.clone()];
    argv.extend(spec.program_args());
    let root = BundleRoot { path: rootfs.display().to_string(), readonly: true, hostname: "cvm-peer".into() };
    let env = [crate::image::build::DEFAULT_PATH.to_string()];
    let annotations = serde_json::json!({ "org.cvm.program": spec.program.label() });
    let config = serde_json::to_vec_pretty(&runtime_config(&argv, &env, "/", &root, annotations))?;
    let dir = base.join("configs").join(Digest::of(&config).short());
    // The folder is named by its config's digest: a config that is not that one is made again.
    if std::fs::read(dir.join("config.json")).ok().as_deref() != Some(config.as_slice()) {
        let _ = std::fs::remove_dir_all(&dir);
        let staging = staging_path(dir.parent().context("a config folder has a parent")?, "config");
        std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
        std::fs::write(staging.join("config.json"), &config)?;
        if std::fs::rename(&staging, &dir).is_err() {
            // Another cvm made the same config meanwhile.
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    Ok(dir)
}

/// The root file system: the image's program linked (or copied) beside empty mount points,
/// made in a staging folder and renamed into place.
fn build_rootfs(base: &Path, layer: &Path, program: &str) -> Result<()> {
    let staging = staging_path(base, "rootfs");
    for dir in DIRECTORIES {
        std::fs::create_dir_all(staging.join(dir)).with_context(|| format!("cannot create {}", staging.display()))?;
    }
    let relative = program.trim_start_matches('/');
    let (from, to) = (layer.join(relative), staging.join(relative));
    // A copy, not a link: the bundle's file is runc's to use, the image's stays cvm's own.
    std::fs::copy(&from, &to).with_context(|| format!("cannot copy {} into the bundle", from.display()))?;
    if let Err(error) = std::fs::rename(&staging, base.join("rootfs")) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another cvm made it meanwhile: fine; otherwise say why.
        if !base.join("rootfs").join(relative).is_file() {
            return Err(error)
                .with_context(|| format!("cannot put the bundle's root file system in {}", base.display()));
        }
    }
    Ok(())
}

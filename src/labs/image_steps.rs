//! What the image labs (7, 8) run: cvm's own image and container commands against a store of
//! the student's (in the workspace) or of the checker's (a scratch store it removes).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// `cvm ARGS` with `CVM_STORE=store`: its standard output and error, or an error with the last
/// line of what it said.
pub fn cvm_said(store: &Path, args: &[&str]) -> Result<(String, String)> {
    let out = super::measure::cvm_command(args)?
        .env("CVM_STORE", store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("running cvm {}", args.join(" ")))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("`cvm {}` failed: {}", args.join(" "), stderr.trim().lines().last().unwrap_or("no message"));
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
}

/// `cvm ARGS` with `CVM_STORE=store`: its standard output.
pub fn cvm_in(store: &Path, args: &[&str]) -> Result<String> {
    Ok(cvm_said(store, args)?.0)
}

/// `cvm image inspect IMAGE` in `store`, as JSON.
pub fn inspect_in(store: &Path, image: &str) -> Result<serde_json::Value> {
    serde_json::from_str(&cvm_in(store, &["image", "inspect", image])?).context("`cvm image inspect` printed no JSON")
}

/// The image's digest (its manifest's) in `store`.
pub fn digest_in(store: &Path, image: &str) -> Result<String> {
    inspect_in(store, image)?["digest"].as_str().map(str::to_string).context("`cvm image inspect` shows no digest")
}

/// How many layers the image has in `store`.
pub fn layers_in(store: &Path, image: &str) -> Result<usize> {
    Ok(inspect_in(store, image)?["layers"].as_array().map_or(0, Vec::len))
}

/// Ships `image` from the store `from` to the store `to` through the registry folder
/// `registry`: a push, then a pull.
pub fn ship(from: &Path, registry: &Path, to: &Path, image: &str) -> Result<()> {
    let registry = registry.to_str().context("a registry path that is not UTF-8")?;
    cvm_in(from, &["image", "push", image, registry])?;
    cvm_in(to, &["image", "pull", registry, image]).map(drop)
}

/// A folder of the checker's own in cvm's cache (a store, a registry), removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Result<Scratch> {
        let path = crate::embedded::cache_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sha256:` and the first 12 hex digits.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

//! Exports of results, one file per format: JSON (everything, re-readable by `cvm report`),
//! Markdown (summary tables) and CSV (one row per run).

pub mod csv;
pub mod json;
pub mod markdown;

use std::path::Path;

use anyhow::{bail, Result};

/// Refuses an export destination before any run starts (a benchmark can take minutes): its
/// folder must exist (cvm does not create folders for exports) and it must not be a folder.
pub fn check_destination(option: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("{option} {}: that is a folder; give a file name", path.display());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("{option} {}: the folder {} does not exist; create it first", path.display(), parent.display());
    }
    Ok(())
}

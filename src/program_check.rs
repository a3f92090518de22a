//! What cvm remembers about a `--binary` file it checked before, so that running an unchanged
//! program again costs a `stat`, not a read, a parse and a hash of the whole file.
//!
//! A file is known by its device, inode, size, modification time and change time. The change
//! time cannot be set by anyone (every write and every `utimensat` moves it), so a file whose
//! content changed never matches an old entry. An entry is a file under cvm's cache directory
//! named after that identity, holding the content's sha256: it says "this exact file is a
//! static x86-64 program and this is its digest". A miss reads the file once, checks it,
//! hashes it, and writes the entry only if the file did not change while it was read.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::image::digest::Digest;

/// A checked program file: its content's digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub digest: Digest,
}

fn entries_dir() -> PathBuf {
    crate::embedded::cache_dir().join("checked-programs")
}

/// The identity of a file as `meta` describes it.
fn identity(meta: &std::fs::Metadata) -> String {
    format!(
        "{:x}-{:x}-{}-{}.{}-{}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// Checks `path` (a static x86-64 program of at most `max` bytes), from the cache when this
/// exact file was checked before. `read` reads and checks the whole file on a miss.
pub fn check(path: &Path, max: u64, read: impl FnOnce() -> Result<Vec<u8>>) -> Result<Checked> {
    check_in(&entries_dir(), path, max, read)
}

fn check_in(entries: &Path, path: &Path, max: u64, read: impl FnOnce() -> Result<Vec<u8>>) -> Result<Checked> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read program {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > max {
        bail!("{} is {} MiB; files larger than {} MiB are refused", path.display(), meta.len() >> 20, max >> 20);
    }
    let before = identity(&meta);
    let entry = entries.join(&before);
    if let Some(digest) = std::fs::read_to_string(&entry).ok().and_then(|text| Digest::parse(text.trim()).ok()) {
        return Ok(Checked { digest });
    }
    let bytes = read()?;
    let digest = Digest::of(&bytes);
    // Remember it only if the file is still the one that was read.
    if std::fs::metadata(path).is_ok_and(|now| identity(&now) == before) {
        remember(&entry, &digest);
    }
    Ok(Checked { digest })
}

/// Writes the entry atomically; a cache that cannot be written only costs the next run a read.
fn remember(entry: &Path, digest: &Digest) {
    let Some(dir) = entry.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let partial = dir.join(format!(".partial-{}", std::process::id()));
    if std::fs::write(&partial, digest.to_string()).is_ok() && std::fs::rename(&partial, entry).is_err() {
        let _ = std::fs::remove_file(&partial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn an_unchanged_file_is_read_once_and_a_changed_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let entries = dir.path().join("cache");
        let check = |path: &Path, max, read| check_in(&entries, path, max, read);
        let file = dir.path().join("program");
        std::fs::write(&file, b"first").unwrap();
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok(std::fs::read(&file)?)
        };
        let first = check(&file, 1 << 20, read).unwrap();
        assert_eq!(first.digest, Digest::of(b"first"));
        let again = check(&file, 1 << 20, read).unwrap();
        assert_eq!((again, reads.get()), (first, 1), "the second check is a stat");
        // Same size, same modification time set back: the change time still tells.
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, b"other").unwrap();
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(mtime).unwrap();
        let changed = check(&file, 1 << 20, read).unwrap();
        assert_eq!((changed.digest, reads.get()), (Digest::of(b"other"), 2));
        assert!(check(dir.path(), 1 << 20, read).is_err(), "a directory");
        assert!(check(&file, 2, read).is_err(), "too large");
    }
}

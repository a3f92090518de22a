//! The file tree an image shows a container: its unpacked layers stacked the way overlayfs
//! stacks them (an upper layer's file hides a lower one's; a whiteout deletes; an opaque
//! directory hides everything below it). Used to find the program before a run, to list what
//! a container changed (`cvm diff`), and to copy an image where overlayfs is missing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use super::layer::{is_opaque, is_whiteout};

/// Layers, top first (overlayfs's `lowerdir` order).
#[derive(Clone, Debug)]
pub struct Tree {
    pub layers: Vec<PathBuf>,
}

/// One path of the merged tree and the layer file that provides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub host: PathBuf,
    pub kind: Kind,
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    Symlink(PathBuf),
    Other,
}

impl Tree {
    /// What `path` (absolute, inside the image) is, following symlinks inside the image; None
    /// when the image does not have it.
    pub fn resolve(&self, path: &str) -> Option<Entry> {
        let mut pending: Vec<String> = components(path);
        pending.reverse();
        let mut current = PathBuf::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                current.pop();
                continue;
            }
            let candidate = current.join(&part);
            let entry = self.lookup(&candidate)?;
            if let Kind::Symlink(target) = &entry.kind {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let mut target_parts = components(&target.to_string_lossy());
                target_parts.reverse();
                if target.is_absolute() {
                    current = PathBuf::new();
                }
                pending.extend(target_parts);
                continue;
            }
            if !pending.is_empty() && entry.kind != Kind::Directory {
                return None;
            }
            current = candidate;
        }
        if current.as_os_str().is_empty() {
            return self.layers.first().map(|top| Entry { host: top.clone(), kind: Kind::Directory, mode: 0o755 });
        }
        self.lookup(&current)
    }

    /// The entry at `relative` (no symlink followed), as overlayfs would show it: component
    /// by component, only through layers where every parent is a real directory of that layer
    /// (a symlink in a layer is never followed on the host, where it could lead anywhere), and
    /// a directory merges with the ones below it unless it is opaque or something that is not
    /// a directory hides them.
    pub fn lookup(&self, relative: &Path) -> Option<Entry> {
        // The layers whose version of the current directory takes part in the merge, top first.
        let mut layers: Vec<&PathBuf> = self.layers.iter().collect();
        let mut path = PathBuf::new();
        let parts: Vec<_> = relative.components().collect();
        for (index, part) in parts.iter().enumerate() {
            path.push(part);
            let last = index + 1 == parts.len();
            let mut next = Vec::new();
            for layer in layers {
                let host = layer.join(&path);
                let Ok(meta) = std::fs::symlink_metadata(&host) else { continue };
                if is_whiteout(&meta) {
                    break;
                }
                if last && next.is_empty() {
                    return Some(entry(host, &meta));
                }
                if !meta.is_dir() {
                    // Hides every layer below; a directory above it is still merged.
                    break;
                }
                next.push(layer);
                if is_opaque(&host) {
                    break;
                }
            }
            if next.is_empty() {
                return None;
            }
            if last {
                let top = next[0].join(&path);
                let meta = std::fs::symlink_metadata(&top).ok()?;
                return Some(entry(top, &meta));
            }
            layers = next;
        }
        None
    }

    /// Every path of the merged tree, relative (`bin/hello`), in sorted order.
    pub fn merged(&self) -> BTreeMap<PathBuf, Entry> {
        let mut merged = BTreeMap::new();
        for layer in self.layers.iter().rev() {
            merge_layer(layer, Path::new(""), &mut merged);
        }
        merged
    }
}

fn merge_layer(layer: &Path, relative: &Path, merged: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(entries) = std::fs::read_dir(layer.join(relative)) else { return };
    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let path = relative.join(&name);
        let host = layer.join(&path);
        let Ok(meta) = std::fs::symlink_metadata(&host) else { continue };
        if is_whiteout(&meta) {
            remove_subtree(merged, &path);
            merged.remove(&path);
            continue;
        }
        if meta.is_dir() {
            if is_opaque(&host) || merged.get(&path).is_some_and(|e| e.kind != Kind::Directory) {
                remove_subtree(merged, &path);
            }
            merged.insert(path.clone(), entry(host, &meta));
            merge_layer(layer, &path, merged);
        } else {
            remove_subtree(merged, &path);
            merged.insert(path, entry(host, &meta));
        }
    }
}

fn remove_subtree(merged: &mut BTreeMap<PathBuf, Entry>, path: &Path) {
    let below: Vec<PathBuf> = merged
        .range(path.to_path_buf()..)
        .map(|(k, _)| k.clone())
        .take_while(|k| k.starts_with(path))
        .filter(|k| k != path)
        .collect();
    for key in below {
        merged.remove(&key);
    }
}

fn entry(host: PathBuf, meta: &std::fs::Metadata) -> Entry {
    let kind = if meta.is_dir() {
        Kind::Directory
    } else if meta.is_file() {
        Kind::File
    } else if meta.file_type().is_symlink() {
        Kind::Symlink(std::fs::read_link(&host).unwrap_or_default())
    } else {
        Kind::Other
    };
    Entry { host, kind, mode: meta.permissions().mode() & 0o7777 }
}

/// `/a/./b/` → ["a", "b"]; `..` is kept for `resolve` to apply.
fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            if let Some(target) = content.strip_prefix("->") {
                std::os::unix::fs::symlink(target, &full).unwrap();
            } else {
                std::fs::write(&full, content).unwrap();
            }
        }
        dir
    }

    #[test]
    fn upper_layers_win_and_symlinks_resolve_inside_the_image() {
        let lower = layer(&[("usr/lib/ld.so", "lower"), ("etc/conf", "old"), ("lib", "->usr/lib")]);
        let upper = layer(&[("etc/conf", "new"), ("bin/app", "app")]);
        let tree = Tree { layers: vec![upper.path().into(), lower.path().into()] };
        assert_eq!(std::fs::read_to_string(tree.resolve("/etc/conf").unwrap().host).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(tree.resolve("/lib/ld.so").unwrap().host).unwrap(), "lower");
        assert!(tree.resolve("/lib/missing").is_none());
        assert!(tree.resolve("/etc/conf/x").is_none());
        let merged = tree.merged();
        let paths: Vec<String> = merged.keys().map(|p| p.display().to_string()).collect();
        assert_eq!(paths, ["bin", "bin/app", "etc", "etc/conf", "lib", "usr", "usr/lib", "usr/lib/ld.so"]);
    }

    #[test]
    fn a_symlink_in_a_lower_layer_is_never_followed_on_the_host() {
        // The lower layer's /bin is a symlink to the host's /usr/bin; the upper layer's /bin is
        // a folder. overlayfs shows the upper folder only: /bin/ls is not in the image.
        let lower = layer(&[("bin", "->/usr/bin")]);
        let upper = layer(&[("bin/busybox", "bb")]);
        let tree = Tree { layers: vec![upper.path().into(), lower.path().into()] };
        assert!(tree.resolve("/bin/busybox").is_some());
        assert!(tree.lookup(Path::new("bin/ls")).is_none());
        assert!(tree.resolve("/bin/ls").is_none());
    }

    #[test]
    fn symlink_loops_end() {
        let only = layer(&[("a", "->b"), ("b", "->a")]);
        let tree = Tree { layers: vec![only.path().into()] };
        assert!(tree.resolve("/a").is_none());
    }
}

//! Hostile input for the image commands, each from a review that tried it: layers and registry
//! folders crafted to delete, read or write outside the store, hang cvm, or corrupt an image.
//! Every case must end in one clear line, touch nothing outside, and leave the store working.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{busybox, cvm, require_root};
use cvm::image::digest::Digest;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn cvm_in(store: &Path, args: &[&str]) -> Output {
    cvm().env("CVM_STORE", store).args(args).stdin(Stdio::null()).output().expect("running cvm")
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = cvm_in(store, args);
    assert!(out.status.success(), "cvm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(store: &Path, args: &[&str], words: &str) -> String {
    let started = Instant::now();
    let out = cvm_in(store, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "cvm {args:?} should fail");
    assert!(stderr.contains(words), "cvm {args:?}: expected {words:?} in: {stderr}");
    assert!(stderr.trim().lines().last().is_some_and(|l| l.starts_with("cvm: error:")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "cvm {args:?} took {:?}", started.elapsed());
    stderr
}

/// A tar entry of a hostile layer: its raw name (any bytes the tar crate would refuse to
/// write), its kind and content.
struct Raw {
    name: &'static str,
    kind: tar::EntryType,
    content: Vec<u8>,
    link: Option<&'static str>,
}

fn file(name: &'static str, content: &[u8]) -> Raw {
    Raw { name, kind: tar::EntryType::Regular, content: content.to_vec(), link: None }
}

/// A registry folder holding `evil:x`: busybox at /bin/busybox (entrypoint), then `extra`.
fn hostile_registry(dir: &Path, extra: Vec<Raw>) -> PathBuf {
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut entries = vec![file("bin/busybox", &busybox)];
    entries.extend(extra);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry.kind);
        header.set_size(entry.content.len() as u64);
        header.set_mode(0o755);
        let name = header.as_gnu_mut().unwrap();
        name.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        if let Some(link) = entry.link {
            header.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        tar.append(&header, &entry.content[..]).unwrap();
    }
    let plain = tar.into_inner().unwrap();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&plain).unwrap();
    let layer = gzip.finish().unwrap();
    let registry = dir.join("registry");
    std::fs::create_dir_all(registry.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| -> Digest {
        let digest = Digest::of(bytes);
        std::fs::write(registry.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
        digest
    };
    let layer_digest = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox"], "Cmd": ["true"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&plain).to_string()]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest.to_string(), "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest.to_string(),
                       "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "evil:x"}}],
    });
    std::fs::write(registry.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(registry.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    registry
}

/// A store with a working image `good`, to check nothing else broke.
fn store_with_good_image(dir: &Path, busybox: &str) -> PathBuf {
    let store = dir.join("store");
    ok(&store, &["image", "build", "-t", "good", "--binary", busybox, "--cmd", "echo", "--cmd", "still fine"]);
    store
}

fn still_fine(store: &Path) {
    let out = ok(store, &["run", "--json", "--image", "good"]);
    assert!(out.contains("still fine"), "{out}");
}

#[test]
fn whiteouts_that_name_a_folder_itself_are_refused_and_delete_nothing_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    for name in [".wh..", ".wh.", ".wh...", "bin/.wh.."] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_good_image(dir.path(), busybox);
        ok(&store, &["run", "--image", "good"]); // its layer is unpacked now
        let registry = hostile_registry(dir.path(), vec![file(name, b"")]);
        ok(&store, &["image", "pull", registry.to_str().unwrap(), "evil:x"]);
        refused(&store, &["run", "--image", "evil:x"], "whiteout");
        still_fine(&store);
        let bundle = dir.path().join("bundle");
        refused(&store, &["image", "bundle", "evil:x", bundle.to_str().unwrap()], "whiteout");
    }
}

#[test]
fn a_lower_symlink_never_leads_the_image_check_to_host_files_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let link = dir.path().join("link");
    std::fs::create_dir(&link).unwrap();
    std::os::unix::fs::symlink("/usr/bin", link.join("bin")).unwrap();
    ok(&store, &["image", "build", "-t", "base", "--add", &format!("{}:/", link.display())]);
    ok(&store, &["image", "build", "-t", "top", "--from", "base", "--binary", busybox, "--entrypoint", "/bin/ls"]);
    refused(&store, &["run", "--image", "top"], "has no /bin/ls");
}

#[test]
fn special_files_in_a_registry_folder_are_refused_without_hanging_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_good_image(dir.path(), busybox);
    let registry = dir.path().join("reg");
    ok(&store, &["image", "push", "good", registry.to_str().unwrap()]);
    // The largest blob (the layer) replaced by a FIFO: opening it would block for ever.
    let mut blobs: Vec<PathBuf> =
        std::fs::read_dir(registry.join("blobs/sha256")).unwrap().flatten().map(|e| e.path()).collect();
    blobs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    std::fs::remove_file(&blobs[0]).unwrap();
    let c_path = std::ffi::CString::new(blobs[0].to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let other = dir.path().join("other");
    refused(&other, &["image", "pull", registry.to_str().unwrap(), "good"], "not a regular file");
    // A blob that is a symlink to a host file is refused, and its content is never read.
    std::fs::remove_file(&blobs[0]).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &blobs[0]).unwrap();
    let stderr = refused(&other, &["image", "pull", registry.to_str().unwrap(), "good"], "not a regular file");
    assert!(!stderr.contains("has content"), "{stderr}");
    // index.json a symlink to /dev/zero: no endless read.
    std::fs::remove_file(registry.join("index.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", registry.join("index.json")).unwrap();
    refused(&other, &["image", "pull", registry.to_str().unwrap(), "good"], "index.json");
}

#[test]
fn push_never_writes_through_symlinks_or_into_a_foreign_folder_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_good_image(dir.path(), busybox);
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // A lock file planted as a symlink.
    let registry = dir.path().join("reg");
    ok(&store, &["image", "push", "good", registry.to_str().unwrap()]);
    std::fs::remove_file(registry.join(".cvm.lock")).unwrap();
    std::os::unix::fs::symlink(outside.join("created"), registry.join(".cvm.lock")).unwrap();
    let _ = cvm_in(&store, &["image", "push", "good", registry.to_str().unwrap()]);
    assert!(!outside.join("created").exists(), "the lock followed a symlink");
    // blobs/sha256 planted as a symlink to another folder.
    let second = dir.path().join("reg2");
    ok(&store, &["image", "push", "good", second.to_str().unwrap()]);
    std::fs::remove_dir_all(second.join("blobs/sha256")).unwrap();
    std::os::unix::fs::symlink(&outside, second.join("blobs/sha256")).unwrap();
    refused(&store, &["image", "push", "good", second.to_str().unwrap()], "not a folder");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "blobs were written outside");
    // A folder of the user's own is not turned into a layout.
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("notes.txt"), "mine").unwrap();
    refused(&store, &["image", "push", "good", project.to_str().unwrap()], "other files");
    assert_eq!(std::fs::read_dir(&project).unwrap().count(), 1, "nothing was added to the folder");
}

#[test]
fn the_store_is_private_and_keeps_set_user_id_bits_inside_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let tool = dir.path().join("tool");
    std::fs::copy(busybox, &tool).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o4755)).unwrap();
    ok(&store, &["image", "build", "-t", "suid", "--binary", busybox, "--add", &format!("{}:/tool", tool.display())]);
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the store must be private to its owner");
    let out = ok(&store, &["run", "--json", "--image", "suid", "stat", "-c", "%a", "/tool"]);
    assert!(out.contains("4755"), "the set-user-id bit survives a layer: {out}");
}

#[test]
fn a_file_whose_content_is_not_its_size_is_refused() {
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    refused(
        &store,
        &["image", "build", "-t", "p", "--binary", busybox, "--add", "/proc/cpuinfo:/cpuinfo"],
        "grew while",
    );
    assert!(!ok(&store, &["image", "ls"]).contains("p "), "no image was named");
}

#[test]
fn a_container_with_a_fifo_commits_without_hanging_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_good_image(dir.path(), busybox);
    ok(&store, &["create", "--name", "piper", "--image", "good", "mkfifo", "/pipe"]);
    ok(&store, &["start", "piper"]);
    let started = Instant::now();
    ok(&store, &["commit", "piper", "piped"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let listed = ok(&store, &["run", "--json", "--image", "piped", "ls", "-l", "/pipe"]);
    assert!(listed.contains("prw"), "the FIFO is kept as one: {listed}");
}

#[test]
fn a_build_stops_on_ctrl_c_and_names_no_image() {
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let big = dir.path().join("big");
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut out = std::fs::File::create(&big).unwrap();
    std::io::copy(&mut std::io::Read::take(&mut random, 128 << 20), &mut out).unwrap();
    let child = cvm()
        .env("CVM_STORE", &store)
        .args(["image", "build", "-t", "big", "--binary", busybox, "--add", &format!("{}:/big", big.display())])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // SAFETY: sending SIGINT to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "the build went on for {:?} after Ctrl-C", started.elapsed());
    assert_ne!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!ok(&store, &["image", "ls"]).contains("big"));
}

#[test]
fn names_outside_the_docker_grammar_and_half_broken_archives_are_refused() {
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_good_image(dir.path(), busybox);
    for bad in ["a/../b:1", "a..b", "x/.wh.y"] {
        refused(&store, &["image", "build", "-t", bad, "--binary", busybox], "invalid image name");
    }
}

/// `--volume` into a hostile image: symbolic links in the image that point at host paths
/// (absolute, and `..` past the root) must not lead the mount point's creation or the mount
/// onto the host; the container path resolves inside the container's root.
#[test]
fn a_volume_never_follows_an_image_symlink_onto_the_host_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (outside, escape, links, volume) =
        (dir.path().join("outside"), dir.path().join("escape"), dir.path().join("links"), dir.path().join("volume"));
    for folder in [&outside, &escape, &links, &volume] {
        std::fs::create_dir(folder).unwrap();
    }
    std::os::unix::fs::symlink(&outside, links.join("abs")).unwrap();
    let up = format!("../../../../../../../../..{}", escape.display());
    std::os::unix::fs::symlink(&up, links.join("rel")).unwrap();
    std::os::unix::fs::symlink("/bin", links.join("inside")).unwrap();
    ok(&store, &["image", "build", "-t", "links", "--binary", busybox, "--add", &format!("{}:/", links.display())]);
    let host = volume.display().to_string();
    for target in ["/abs/sub", "/rel/sub", "/abs", "/rel"] {
        let out = cvm_in(&store, &["run", "--image", "links", "-v", &format!("{host}:{target}"), "true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{target}: created on the host");
        assert_eq!(std::fs::read_dir(&escape).unwrap().count(), 0, "{target}: created on the host");
    }
    // A link that stays inside the container is followed there: the volume lands in its /bin.
    let seen = ok(&store, &["run", "--image", "links", "-v", &format!("{host}:/inside/vol"), "ls", "/bin/vol"]);
    assert_eq!(seen.trim(), "", "the empty volume at /bin/vol: {seen}");
    assert_eq!(std::fs::read_dir(&volume).unwrap().count(), 0);
    still_fine_after_links(&store);
}

fn still_fine_after_links(store: &Path) {
    let out = ok(store, &["run", "--image", "links", "echo", "still fine"]);
    assert!(out.contains("still fine"), "{out}");
}

/// From a review: image links that lead a volume's mount point onto the container's root,
/// /proc or /dev are refused (the text of the path passed the rules); a host folder swapped
/// for a link between two starts (here by the container itself, through an outer volume) is
/// refused, not followed; and the host mount's own read-only flag survives the bind.
#[test]
fn a_volume_keeps_to_its_folder_and_its_mount_flags_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let links = dir.path().join("links");
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&links).unwrap();
    std::fs::create_dir_all(&volume).unwrap();
    for (name, to) in [("p", "/proc"), ("ps", "/proc/sys"), ("d", "/dev"), ("top", "/"), ("dot", ".")] {
        std::os::unix::fs::symlink(to, links.join(name)).unwrap();
    }
    ok(&store, &["image", "build", "-t", "links", "--binary", busybox, "--add", &format!("{}:/", links.display())]);
    for target in ["/p", "/ps", "/d", "/top", "/dot"] {
        let args = ["run", "--image", "links", "-v", &format!("{}:{target}", volume.display()), "true"];
        refused(&store, &args, "Operation not permitted");
    }

    // The container turns the inner volume's folder into a link to / between two starts.
    let outer = dir.path().join("outer");
    std::fs::create_dir_all(outer.join("sub")).unwrap();
    let script = "if [ -L /a/sub ]; then echo again; else rmdir /a/sub && ln -s / /a/sub && echo planted; fi";
    let (a, b) = (format!("{}:/a", outer.display()), format!("{}:/b:ro", outer.join("sub").display()));
    ok(&store, &["create", "--name", "swap", "-v", &a, "-v", &b, "--image", "links", "sh", "-c", script]);
    assert!(ok(&store, &["start", "swap"]).contains("planted"));
    refused(&store, &["start", "swap"], "through a symbolic link");
    ok(&store, &["rm", "swap"]);

    // A host folder on a read-only mount stays read-only in the container.
    let (source, read_only) = (dir.path().join("source"), dir.path().join("ro"));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::create_dir_all(&read_only).unwrap();
    let mount = |args: &[&str]| assert!(std::process::Command::new("mount").args(args).status().unwrap().success());
    mount(&["--bind", source.to_str().unwrap(), read_only.to_str().unwrap()]);
    mount(&["-o", "remount,bind,ro", read_only.to_str().unwrap()]);
    let out = cvm_in(
        &store,
        &["run", "--image", "links", "-v", &format!("{}:/data", read_only.display()), "sh", "-c", "echo x > /data/f"],
    );
    let _ = std::process::Command::new("umount").arg(&read_only).status();
    assert!(!out.status.success(), "the write went through");
    assert!(!source.join("f").exists(), "a read-only host mount was written through a volume");
}

//! Images, registries and containers that keep their state, through the real binary with a
//! store of the test's own (`CVM_STORE`): build → push → pull into a second store → run; create →
//! start → start → diff → commit → rm with the image unchanged; skopeo and runc reading what cvm
//! wrote; corrupted and half-written input refused; concurrent commands; a killed build.
//! Running containers needs root; CI provides it, busybox-static, skopeo and runc.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{busybox, command_runs, cvm, debian_package, require_root};

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `cvm ARGS` with the store at `store`.
fn cvm_in(store: &Path, args: &[&str]) -> Output {
    cvm().env("CVM_STORE", store).args(args).output().expect("running cvm")
}

/// `cvm ARGS` that must succeed; its stdout.
fn ok(store: &Path, args: &[&str]) -> String {
    let out = cvm_in(store, args);
    assert!(
        out.status.success(),
        "cvm {args:?} failed ({:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cvm ARGS` that must fail with one clear line containing `words`.
fn refused(store: &Path, args: &[&str], words: &str) {
    let out = cvm_in(store, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "cvm {args:?} should fail");
    assert_eq!(stderr.trim().lines().count(), 1, "cvm {args:?}: one line expected:\n{stderr}");
    assert!(stderr.contains(words), "cvm {args:?}: expected {words:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn record(store: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["run", "--json"];
    full.extend_from_slice(args);
    serde_json::from_str(ok(store, &full).trim()).expect("one JSON record")
}

fn digest_of(store: &Path, image: &str) -> String {
    let shown: serde_json::Value = serde_json::from_str(&ok(store, &["image", "inspect", image])).unwrap();
    shown["digest"].as_str().unwrap().to_string()
}

/// An image `hello:1.0`: busybox that echoes a greeting unless given other arguments.
fn build_hello(store: &Path, busybox: &str) -> String {
    let out = ok(
        store,
        &["image", "build", "-t", "hello:1.0", "--binary", busybox, "--cmd", "echo", "--cmd", "hello from an image"],
    );
    out.trim().to_string()
}

#[test]
fn build_push_pull_run_gives_the_same_output_on_a_second_store_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let (a, b, registry) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let registry = registry.path().join("registry");
    let digest = build_hello(a.path(), busybox);
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    let here = record(a.path(), &["--image", "hello:1.0"]);
    assert_eq!(here["stdout"], "hello from an image\n");

    let push = cvm_in(a.path(), &["image", "push", "hello:1.0", registry.to_str().unwrap()]);
    assert!(push.status.success());
    assert!(String::from_utf8_lossy(&push.stderr).contains("3 blobs copied"));
    // A second push copies nothing: every blob is already there.
    let again = cvm_in(a.path(), &["image", "push", "hello:1.0", registry.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 blobs copied"), "{:?}", again);
    for file in ["oci-layout", "index.json"] {
        assert!(registry.join(file).is_file(), "{file}");
    }

    assert_eq!(ok(b.path(), &["image", "pull", registry.to_str().unwrap(), "hello:1.0"]).trim(), digest);
    let there = record(b.path(), &["--image", "hello:1.0"]);
    assert_eq!(there["stdout"], here["stdout"]);
    let args = record(b.path(), &["--image", "hello:1.0", "echo", "arguments follow the entrypoint"]);
    assert_eq!(args["stdout"], "arguments follow the entrypoint\n");
    assert_eq!(digest_of(b.path(), "hello:1.0"), digest);

    // Another image from the same program shares its layer: nothing new is stored.
    let out = cvm_in(a.path(), &["image", "build", "-t", "other", "--binary", busybox]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 new, 1 shared"), "{out:?}");
}

#[test]
fn a_container_keeps_its_writes_until_rm_and_the_image_never_changes_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let store = tempfile::tempdir().unwrap();
    let store = store.path();
    ok(store, &["image", "build", "-t", "base", "--binary", busybox, "--add", &format!("{busybox}:/etc/old-tool")]);
    let digest = digest_of(store, "base");
    let script = "echo visit >> /data.log; wc -l < /data.log; rm -f /etc/old-tool";
    ok(store, &["create", "--name", "keeper", "--image", "base", "sh", "-c", script]);
    refused(store, &["create", "--name", "keeper", "--image", "base"], "already exists");
    assert!(ok(store, &["ps", "-a"]).contains("created"));
    assert_eq!(ok(store, &["start", "keeper"]).trim(), "1");
    assert_eq!(ok(store, &["start", "keeper"]).trim(), "2", "the write of the first start is kept");
    let ps = ok(store, &["ps", "-a"]);
    assert!(ps.contains("keeper") && ps.contains("exited"), "{ps}");
    assert!(!ok(store, &["ps"]).contains("keeper"), "ps without -a lists running containers only");

    let diff = ok(store, &["diff", "keeper"]);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(lines, ["A /data.log", "C /etc", "D /etc/old-tool"], "{diff}");
    // A fresh container of the same image starts from the image, not from keeper's layer.
    let fresh = record(store, &["--image", "base", "sh", "-c", "cat /data.log 2>&1; ls /etc"]);
    assert!(fresh["stdout"].as_str().unwrap().contains("No such file"), "{fresh}");
    assert!(fresh["stdout"].as_str().unwrap().contains("old-tool"), "{fresh}");

    ok(store, &["commit", "keeper", "base:committed"]);
    let committed = record(store, &["--image", "base:committed", "sh", "-c", "cat /data.log; ls /etc"]);
    assert_eq!(committed["stdout"], "visit\nvisit\n", "the commit has the write and the deletion");

    ok(store, &["rm", "keeper"]);
    refused(store, &["start", "keeper"], "no container named keeper");
    assert_eq!(digest_of(store, "base"), digest, "removing the container left the image as it was");
    ok(store, &["image", "verify", "base"]);
}

#[test]
fn a_running_container_is_removed_only_with_force_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let store = tempfile::tempdir().unwrap();
    let store = store.path();
    ok(store, &["image", "build", "-t", "sleeper", "--binary", busybox]);
    ok(store, &["create", "--name", "long", "--image", "sleeper", "sleep", "30"]);
    let mut start = cvm()
        .env("CVM_STORE", store)
        .args(["start", "long"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ok(store, &["ps"]).contains("running") {
        if started.elapsed() > Duration::from_secs(30) || start.try_wait().unwrap().is_some() {
            let _ = start.kill();
            let output = start.wait_with_output().unwrap();
            panic!(
                "the container never showed as running; `cvm start` ended {:?}: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                ok(store, &["ps", "-a"])
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    refused(store, &["start", "long"], "already running");
    refused(store, &["rm", "long"], "is running");
    ok(store, &["rm", "--force", "long"]);
    let status = start.wait().unwrap();
    assert_ne!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!ok(store, &["ps", "-a"]).contains("long"));
}

#[test]
fn skopeo_reads_what_cvm_pushes_and_cvm_pulls_what_skopeo_writes_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    if !debian_package("skopeo", || command_runs("skopeo", "--version")) {
        return;
    }
    let _serial = one_at_a_time();
    let (store, other, dirs) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let digest = build_hello(store.path(), busybox);
    let ours = dirs.path().join("ours");
    let theirs = dirs.path().join("theirs");
    ok(store.path(), &["image", "push", "hello:1.0", ours.to_str().unwrap()]);
    let copy = Command::new("skopeo")
        .args(["copy", &format!("oci:{}:hello:1.0", ours.display()), &format!("oci:{}:hello:1.0", theirs.display())])
        .output()
        .unwrap();
    assert!(copy.status.success(), "skopeo refused cvm's layout: {}", String::from_utf8_lossy(&copy.stderr));
    assert_eq!(ok(other.path(), &["image", "pull", theirs.to_str().unwrap(), "hello:1.0"]).trim(), digest);
    assert_eq!(record(other.path(), &["--image", "hello:1.0"])["stdout"], "hello from an image\n");
}

#[test]
fn runc_runs_the_bundle_with_the_same_output_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    if !debian_package("runc", || command_runs("runc", "--version")) {
        return;
    }
    let _serial = one_at_a_time();
    let (store, dirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    build_hello(store.path(), busybox);
    let bundle = dirs.path().join("bundle");
    ok(store.path(), &["image", "bundle", "hello:1.0", bundle.to_str().unwrap()]);
    let id = format!("cvm-test-{}", std::process::id());
    let runc =
        Command::new("runc").args(["run", "-b", bundle.to_str().unwrap(), &id]).stdin(Stdio::null()).output().unwrap();
    let _ = Command::new("runc").args(["delete", "--force", &id]).output();
    assert!(runc.status.success(), "runc: {}", String::from_utf8_lossy(&runc.stderr));
    let ours = record(store.path(), &["--image", "hello:1.0"]);
    assert_eq!(String::from_utf8_lossy(&runc.stdout), ours["stdout"].as_str().unwrap());
}

/// The blob files of a layout, largest first (the layer).
fn blobs(layout: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(layout.join("blobs/sha256")).unwrap().flatten().map(|e| e.path()).collect();
    files.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    files
}

fn corrupt(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn corrupted_and_half_written_input_is_refused_with_one_line() {
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let (store, other, dirs) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, other) = (store.path(), other.path());
    build_hello(store, busybox);
    let registry = dirs.path().join("registry");
    let registry_arg = registry.to_str().unwrap();
    ok(store, &["image", "push", "hello:1.0", registry_arg]);
    let archive = dirs.path().join("hello.tar");
    ok(store, &["image", "save", "hello:1.0", "-o", archive.to_str().unwrap()]);

    refused(store, &["image", "inspect", "nope:1"], "no image nope:1");
    refused(store, &["image", "build", "-t", "x", "--add", "/no/such/file:/etc/x"], "does not exist");
    refused(store, &["image", "build", "-t", "Bad Name", "--binary", busybox], "invalid image name");
    refused(store, &["image", "build", "-t", "x", "--binary", "/etc/hostname"], "not an x86-64 program");
    refused(store, &["image", "pull", dirs.path().to_str().unwrap(), "hello:1.0"], "not an OCI image layout");
    refused(store, &["image", "pull", "/no/such/registry", "hello:1.0"], "does not exist");
    refused(store, &["run", "--runtime", "vm", "--image", "hello:1.0"], "container runtime only");
    refused(store, &["run", "--runtime", "process", "--image", "hello:1.0"], "container runtime only");

    // A layer corrupted in the registry: the pull verifies every blob and refuses it.
    corrupt(&blobs(&registry)[0]);
    refused(other, &["image", "pull", registry_arg, "hello:1.0"], "digest mismatch");
    assert!(ok(other, &["image", "ls"]).lines().count() <= 2, "no half image in the store");
    // A blob missing from a half-written registry.
    std::fs::remove_file(&blobs(&registry)[0]).unwrap();
    refused(other, &["image", "pull", registry_arg, "hello:1.0"], "missing");
    // A corrupted blob in the store is found by verify.
    corrupt(&blobs(&store.join("images"))[0]);
    let verify = cvm_in(store, &["image", "verify", "hello:1.0"]);
    assert_ne!(verify.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("CORRUPT"));
    // The saved archive still loads into another store and runs there; corrupted, it is refused.
    let loaded = ok(other, &["image", "load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.starts_with("hello:1.0 sha256:"), "{loaded}");
    let bytes = std::fs::read(&archive).unwrap();
    let mut broken = bytes.clone();
    let at = bytes.len() / 2;
    broken[at] ^= 0xff;
    let broken_path = dirs.path().join("broken.tar");
    std::fs::write(&broken_path, broken).unwrap();
    let third = tempfile::tempdir().unwrap();
    let out = cvm_in(third.path(), &["image", "load", "-i", broken_path.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[test]
fn a_dynamic_program_needs_its_loader_and_libraries_in_the_image_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let store = tempfile::tempdir().unwrap();
    let store = store.path();
    ok(store, &["image", "build", "-t", "true-only", "--binary", "/bin/true"]);
    refused(store, &["run", "--image", "true-only"], "needs its loader /lib64/ld-linux-x86-64.so.2");
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    ok(
        store,
        &[
            "image",
            "build",
            "-t",
            "true-with-libs",
            "--from",
            "true-only",
            "--add",
            "/lib64/ld-linux-x86-64.so.2:/lib64/ld-linux-x86-64.so.2",
            "--add",
            &format!("{}:/lib/x86_64-linux-gnu/libc.so.6", libc.display()),
        ],
    );
    let ran = record(store, &["--image", "true-with-libs"]);
    assert_eq!(ran["exit_code"], 0, "{ran}");
}

#[test]
fn concurrent_commands_never_corrupt_the_store_or_a_registry() {
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let (store, dirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = store.path();
    let registry = dirs.path().join("registry");
    let mut children = Vec::new();
    for i in 0..6 {
        let name = format!("parallel{i}");
        let add = format!("{busybox}:/opt/copy{i}");
        children.push(
            cvm()
                .env("CVM_STORE", store)
                .args(["image", "build", "-t", &name, "--binary", busybox, "--add", &add])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut pushes = Vec::new();
    for i in 0..6 {
        pushes.push(
            cvm()
                .env("CVM_STORE", store)
                .args(["image", "push", &format!("parallel{i}"), registry.to_str().unwrap()])
                .output(),
        );
    }
    for push in pushes {
        assert!(push.unwrap().status.success());
    }
    for i in 0..6 {
        ok(store, &["image", "verify", &format!("parallel{i}")]);
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 6);
}

#[test]
fn a_killed_build_leaves_no_half_image_and_the_next_command_cleans_up() {
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let (store, dirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = store.path();
    // A large file of random bytes makes the build slow enough to be killed in the middle.
    let big = dirs.path().join("big");
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut file = std::fs::File::create(&big).unwrap();
    std::io::copy(&mut std::io::Read::take(&mut random, 96 << 20), &mut file).unwrap();
    ok(store, &["image", "build", "-t", "first", "--binary", busybox]);
    let mut build = cvm()
        .env("CVM_STORE", store)
        .args(["image", "build", "-t", "killed", "--add", &format!("{}:/big", big.display())])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = |store: &Path| -> usize {
        let blobs = store.join("images/blobs/sha256");
        std::fs::read_dir(blobs)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
            .count()
    };
    let started = Instant::now();
    while staging(store) == 0 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    build.kill().unwrap();
    build.wait().unwrap();
    assert!(!ok(store, &["image", "ls"]).contains("killed"), "no half image");
    let doctor = String::from_utf8_lossy(&cvm_in(store, &["doctor"]).stdout).into_owned();
    if staging(store) > 0 {
        assert!(doctor.contains("a killed command left"), "{doctor}");
    }
    ok(store, &["image", "build", "-t", "second", "--binary", busybox]);
    assert_eq!(staging(store), 0, "the next command that writes the store removed the leftovers");
}

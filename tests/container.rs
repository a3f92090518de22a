//! The `container` runtime through the real binary: isolation as the program sees it, the
//! memory limit, bad programs, and that nothing is left behind. These tests need root (CI has
//! it); they run one at a time because each checks the host for leftovers.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{cvm, require_root, run_json, run_json_in};
use cvm::runtime::container::cgroup;

/// Every test that may start a container holds this: the leftover checks compare the host's
/// cgroups and mounts before and after, and another test's run in between would look like a leak.
static SERIAL: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn container_probe_sees_an_isolated_system_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let record = run_json_in("container", &["probe"]);
    let process = run_json(&["--runtime", "process", "probe"]);
    assert_eq!(record["runtime"], "container");
    assert_eq!(record["kernel"], "host");
    assert_eq!(record["exit_code"], 0, "{record}");
    let seen = &record["result"];
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(seen["kernel_release"], host_release.trim(), "a container shares the host's kernel");
    assert_eq!(seen["pid"], 1, "the program is pid 1 of its pid namespace");
    assert_ne!(seen["hostname"], host_name.trim(), "the container has its own host name");
    assert_eq!(seen["hostname"], record["container"]["hostname"]);
    let visible = seen["visible_processes"].as_u64().unwrap();
    assert!(visible <= 2, "the container sees only its own processes, saw {visible}");
    assert_eq!(seen["network_interfaces"], serde_json::json!(["lo"]));
    let caps = seen["cap_eff_count"].as_u64().unwrap();
    let host_caps = process["result"]["cap_eff_count"].as_u64().unwrap();
    assert_eq!(caps, 3, "runc's default set: CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE");
    assert!(caps < host_caps, "fewer capabilities than the host process ({caps} vs {host_caps})");

    let info = &record["container"];
    for ns in ["pid", "mount", "uts", "ipc", "net", "cgroup"] {
        assert!(info["namespaces"].as_array().unwrap().iter().any(|n| n == ns), "namespace {ns} missing: {info}");
    }
    assert!(["overlayfs", "tmpfs-copy"].contains(&info["rootfs"].as_str().unwrap()));
    assert!(["v1", "v2", "none"].contains(&info["cgroup_version"].as_str().unwrap()));
    let phases = &record["phases_ns"];
    let order = ["setup", "first_output", "exit", "teardown", "total"].map(|k| phases[k].as_u64().unwrap());
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "phases out of order: {phases}");
    assert_eq!(phases["boot"], phases["setup"]);
}

#[test]
fn memory_limit_below_the_need_is_an_oom_kill_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let record = run_json_in("container", &["--memory", "16M", "mem", "64"]);
    if record["container"]["cgroup_version"] == "none" {
        panic!("a --memory run must have a cgroup: {record}");
    }
    assert_eq!(record["outcome"], "oom_killed", "{record}");
    assert_eq!(record["exit_code"], 137);
    assert!(record["reason"].as_str().unwrap().contains("memory"), "{record}");
    assert_eq!(record["container"]["memory_limit_bytes"], 16 << 20);
    assert!(record["container"]["oom_kills"].as_u64().unwrap_or(1) >= 1);
    // Within the limit the same workload runs fine.
    let fine = run_json_in("container", &["--memory", "128M", "mem", "16"]);
    assert_eq!(fine["outcome"], "exited", "{fine}");
    assert!(fine["memory"]["cgroup_peak_bytes"].as_u64().unwrap() >= 16 << 20, "{fine}");
}

#[test]
fn bad_programs_get_one_clear_line_in_a_container() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    for (path, expected) in common::bad_programs(dir.path()) {
        common::assert_refused_with_one_line("container", &path, expected);
    }
}

#[test]
fn a_static_binary_runs_from_its_own_image_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let program = cvm::embedded::workload_path().unwrap();
    let record = run_json_in("container", &["--binary", program.to_str().unwrap(), "hello"]);
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["result"]["pid"], 1);
}

#[test]
fn copy_fallback_and_limits_are_recorded_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let out = cvm()
        .args(["run", "--json", "--runtime", "container", "--cpus", "0.5", "--pids", "16", "probe"])
        .env("CVM_ROOTFS", "copy")
        .output()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["container"]["rootfs"], "tmpfs-copy");
    assert!(record["notes"].to_string().contains("tmpfs"), "{record}");
    assert_eq!(record["container"]["cpu_limit"], 0.5);
    assert_eq!(record["container"]["pids_limit"], 16);

    let out =
        cvm().args(["run", "--json", "--runtime", "container", "hello"]).env("CVM_CGROUP", "none").output().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["container"]["cgroup_version"], "none");
    assert!(record["notes"].to_string().contains("rusage"), "{record}");
}

/// What a container run could leave on the host.
#[derive(Debug, PartialEq, Eq)]
struct HostTraces {
    mounts: BTreeSet<String>,
    cgroups: Vec<PathBuf>,
    scratch_entries: Vec<String>,
    staging_images: Vec<String>,
    container_processes: Vec<String>,
}

fn host_traces() -> HostTraces {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // Mount point and file system type: ids change when something is remounted.
    let mounts = mountinfo
        .lines()
        .filter_map(|line| {
            let point = line.split(' ').nth(4)?;
            let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
            Some(format!("{point} {fstype}"))
        })
        .collect();
    let cache = cvm::embedded::cache_dir();
    let list = |dir: PathBuf, prefix: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default()
    };
    HostTraces {
        mounts,
        cgroups: cgroup::run_cgroup_dirs(cgroup::hierarchy()),
        scratch_entries: list(cache.join("containers"), ""),
        staging_images: list(cache.join("images"), ".staging"),
        container_processes: container_processes(),
    }
}

/// Workload processes in a pid namespace other than ours: only containers make those.
fn container_processes() -> Vec<String> {
    let own_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else { continue };
        if comm.trim() != "cvm-workload" {
            continue;
        }
        if std::fs::read_link(path.join("ns/pid")).is_ok_and(|ns| ns != own_ns) {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

#[test]
fn fifty_runs_leave_nothing_behind_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    // Build the image first: the cache is meant to stay.
    run_json_in("container", &["hello"]);
    let before = host_traces();
    for run in 0..50 {
        let (args, outcome): (&[&str], &str) = match run % 5 {
            // 190 TiB: more than any x86-64 address space, so the allocation fails and the
            // program aborts (a crash); the memory limit keeps the host safe regardless.
            3 => (&["--memory", "256M", "mem", "200000000"], "signaled"),
            4 => (&["--timeout", "0.3", "cpu", "100000000000"], "timed_out"),
            _ => (&["hello"], "exited"),
        };
        let record = run_json_in("container", args);
        assert_eq!(record["outcome"], outcome, "run {run} {args:?}: {record}");
    }
    let after = host_traces();
    assert_eq!(before, after, "container runs left something behind");
    assert!(after.scratch_entries.is_empty(), "nothing may be written to the scratch directory: {after:?}");
}

#[test]
fn sigint_mid_run_leaves_nothing_behind_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    run_json_in("container", &["hello"]);
    let before = host_traces();
    let mut child = cvm()
        .args(["run", "--json", "--runtime", "container", "cpu", "10000000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while container_processes().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert_ne!(status.code(), Some(0), "an interrupted run must end non-zero");
    let after = host_traces();
    assert_eq!(before, after, "an interrupted run left something behind");
}

fn wait_with_deadline(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("cvm did not stop within {limit:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The user-namespace path: run cvm as `nobody` (uid 65534) through setpriv(1).
#[test]
fn an_unprivileged_user_gets_a_user_namespace_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_cvm")]).args(args);
        command
    };
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|v| v.trim() != "0");
    // setpriv must exist, and nobody must be able to run the test's cvm binary.
    let runnable = as_nobody(&["--version"]).output().is_ok_and(|o| o.status.success());
    if !userns || !runnable {
        eprintln!("skipped: needs user namespaces, setpriv(1) and a cvm binary that uid 65534 may run");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let path = std::ffi::CString::new(home.path().to_str().unwrap()).unwrap();
    // SAFETY: chown of a directory we created (a valid C string), to the nobody user.
    assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
    let out = as_nobody(&["run", "--json", "--runtime", "container", "probe"])
        .env("HOME", home.path())
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let record: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON record ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["result"]["uid"], 0, "the caller is root inside its user namespace");
    assert_eq!(record["result"]["pid"], 1);
    assert_eq!(record["result"]["cap_eff_count"], 3);
    assert!(record["container"]["namespaces"].as_array().unwrap().iter().any(|n| n == "user"), "{record}");
    if record["container"]["cgroup_version"] == "none" {
        assert!(record["notes"].to_string().contains("rusage"), "a missing cgroup is noted: {record}");
    }
}

#[test]
fn check_available_names_the_fix() {
    // As root this passes; otherwise the reason must be one line with a fix when it fails.
    let _serial = one_at_a_time();
    let out =
        Command::new(env!("CARGO_BIN_EXE_cvm")).args(["run", "--runtime", "container", "hello"]).output().unwrap();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `--volume`: the host folder is the container's, read-write or read-only, nosuid and nodev;
/// what a created container writes there stays after `cvm rm`, and `cvm diff` never lists it.
#[test]
fn a_volume_carries_writes_to_the_host_and_outlives_the_container_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = common::busybox() else { return };
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let volume = dir.path().join("shared");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("from-host"), "hello from the host\n").unwrap();
    let cvm_in = |args: &[&str]| {
        let out = cvm().env("CVM_STORE", &store).args(args).stdin(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let host = volume.display().to_string();
    let (code, out, err) = cvm_in(&[
        "run",
        "--runtime",
        "container",
        "-v",
        &format!("{host}:/data"),
        "--binary",
        busybox,
        "sh",
        "-c",
        "cat /data/from-host; echo written inside > /data/from-container; grep ' /data ' /proc/mounts",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("hello from the host"), "{out}");
    assert!(out.contains("nosuid") && out.contains("nodev") && out.contains("rw,"), "{out}");
    assert_eq!(std::fs::read_to_string(volume.join("from-container")).unwrap(), "written inside\n");

    let (code, out, _) = cvm_in(&[
        "run",
        "--runtime",
        "container",
        "-v",
        &format!("{host}:/data:ro"),
        "--binary",
        busybox,
        "sh",
        "-c",
        "echo no > /data/refused 2>&1; echo status $?",
    ]);
    assert_eq!(code, Some(0));
    assert!(out.contains("status 1") || out.contains("status 2"), "{out}");
    assert!(!volume.join("refused").exists(), "a read-only volume was written");

    let (code, _, err) = cvm_in(&["image", "build", "-t", "sh", "--binary", busybox]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cvm_in(&[
        "create",
        "--name",
        "keeper",
        "-v",
        &format!("{host}:/keep"),
        "--image",
        "sh",
        "sh",
        "-c",
        "date > /keep/kept",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cvm_in(&["start", "keeper"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, diff, _) = cvm_in(&["diff", "keeper"]);
    assert!(!diff.contains("kept"), "the volume's file is not the container's change: {diff}");
    let (code, _, err) = cvm_in(&["rm", "keeper"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(volume.join("kept").exists(), "the volume's file went with the container");
    assert!(volume.join("from-host").exists());

    // The host folder is checked again at start: gone since create, the start fails clearly.
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let (code, _, err) =
        cvm_in(&["create", "--name", "orphan", "-v", &format!("{}:/x", gone.display()), "--image", "sh", "true"]);
    assert_eq!(code, Some(0), "{err}");
    std::fs::remove_dir(&gone).unwrap();
    let (code, _, err) = cvm_in(&["start", "orphan"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("does not exist") && !err.contains("panicked"), "{err}");
    cvm_in(&["rm", "orphan"]);
}

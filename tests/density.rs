//! `cvm density` end to end: it measures every runtime at every count, writes its report, and
//! leaves nothing behind (no `cvm run` instance, no cgroup), also after Ctrl-C. Needs root and
//! /dev/kvm (CI has both); bad input needs neither.

mod common;

use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{cvm, require_kvm, require_root, run_cvm};
use cvm::density::DensityFile;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `cvm run ... idle` instances still alive (started by density, whose argv ends "idle S").
fn instances_alive() -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.iter().any(|a| *a == b"run")
            && args.iter().any(|a| *a == b"idle")
            && args.iter().any(|a| *a == b"--timeout")
        {
            count += 1;
        }
    }
    count
}

/// Run cgroups cvm created (named cvm-*), in every hierarchy.
fn cvm_cgroups() -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) || path.components().count() > 8 {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with("cvm-") {
                found.push(path.display().to_string());
            }
            pending.push(path);
        }
    }
    found.sort();
    found
}

fn wait_until(limit: Duration, what: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    what()
}

#[test]
fn density_measures_every_runtime_and_leaves_nothing_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let _serial = one_at_a_time();
    let cgroups_before = cvm_cgroups();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("density");
    let output = run_cvm(&["density", "--instances", "1,3", "--repeat", "1", "--json", "--out", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let file: DensityFile = serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    let density = &file.density;
    assert_eq!(density.steps.len(), 6, "3 runtimes × 2 counts");
    assert_eq!(density.rows.len(), 6);
    assert!(density.stopped.is_none() && density.unavailable.is_empty());
    for step in &density.steps {
        assert_eq!(step.start_latency_ns.len(), step.instances, "{step:?}");
        assert!(step.processes >= step.instances, "every instance's processes are measured: {step:?}");
        assert!(step.uss_bytes > 0 && step.used_with_bytes > 0 && step.window_ns > 0, "{step:?}");
        // Idle means idle: well under a core each (the VM's sleep does not spin).
        assert!(step.cpu_percent_per_instance() < 25.0, "{step:?}");
        if step.runtime == cvm::record::RuntimeKind::Container {
            assert!(step.cgroup_bytes.is_some(), "a container's cgroup charge is read: {step:?}");
        }
    }
    for file in ["report.md", "report.html", "density.json", "charts/density-memory.svg", "charts/density-memory.png"] {
        assert!(out.join(file).is_file(), "{file} is written");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("per GiB") && report.contains("lecture"), "{report}");
    assert!(wait_until(Duration::from_secs(5), || instances_alive() == 0), "an instance outlived density");
    assert_eq!(cvm_cgroups(), cgroups_before, "a run cgroup was left behind");
}

#[test]
fn ctrl_c_stops_density_and_every_instance_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let _serial = one_at_a_time();
    let cgroups_before = cvm_cgroups();
    let dir = tempfile::tempdir().unwrap();
    let mut child = cvm()
        .args(["density", "--instances", "8", "--repeat", "3", "--runtimes", "container,vm"])
        .arg("--out")
        .arg(dir.path().join("density"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(60), || instances_alive() >= 8), "the instances never ran");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "density did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert!(wait_until(Duration::from_secs(5), || instances_alive() == 0), "an instance outlived Ctrl-C");
    assert_eq!(cvm_cgroups(), cgroups_before, "a run cgroup was left behind");
}

#[test]
fn bad_input_is_one_line_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_folder = dir.path().join("file");
    std::fs::write(&not_a_folder, "x").unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--instances", "0"],
        vec!["--instances", "5000"],
        vec!["--instances", "eight"],
        vec!["--repeat", "0"],
        vec!["--workload", "hello"],
        vec!["--out", not_a_folder.to_str().unwrap()],
    ];
    for case in cases {
        let mut args = vec!["density"];
        args.extend(case.iter().copied());
        let output = run_cvm(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{case:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{case:?}: one line, got {stderr}");
        assert!(output.stdout.is_empty(), "{case:?}");
    }
}

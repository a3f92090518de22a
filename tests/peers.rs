//! The peers (runc, crun, unshare, QEMU) in cvm's harness: each runs the same program as one
//! whole command and gives a run record; a peer that is missing or refuses this host says why
//! in one line; in a bench beside peers cvm's own runtimes are whole commands too.
//! Needs root (unshare and runc make namespaces) and /dev/kvm (QEMU with KVM).

mod common;

use common::{cvm, require_kvm, require_root, run_json_in};

/// The tests that make cgroups (runc's, cvm's containers) run one at a time: the clean-up
/// test counts every new `cvm-*` cgroup on the machine, and another test's live runc
/// container is one (CI once failed on `cvm-peer-*` cgroups of the runc test beside it).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runc_available() -> bool {
    common::debian_package("runc", || common::command_runs("runc", "--version"))
}

#[test]
fn unshare_runs_the_workload_as_one_whole_command() {
    if !require_root() {
        return;
    }
    let record = run_json_in("unshare", &["probe"]);
    assert_eq!(record["runtime"], "unshare", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    // Its own pid namespace: the program is pid 1 there, and sees the host's kernel.
    assert_eq!(record["result"]["pid"], 1, "{record}");
    let wall = record["command"]["wall_ns"].as_u64().unwrap();
    assert!(wall > 0 && wall == record["phases_ns"]["total"].as_u64().unwrap(), "{record}");
    assert!(record["command"]["argv"][0].as_str().unwrap().ends_with("unshare"), "{record}");
    assert!(record["command"]["peak_rss_bytes"].as_u64().unwrap() > 0, "{record}");
}

#[test]
fn runc_runs_the_same_image_from_a_bundle() {
    if !require_root() || !runc_available() {
        return;
    }
    let _serial = one_at_a_time();
    let record = run_json_in("runc", &["hello", "from", "runc"]);
    assert_eq!(record["exit_code"], 0, "{record}");
    assert!(record["stdout"].as_str().unwrap().contains("Hello from the cvm workload!"), "{record}");
    // No container is left behind.
    let list = std::process::Command::new("runc").arg("list").output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("cvm-peer-"), "{list:?}");
}

/// crun either runs it or refuses this host (hybrid cgroups here) in one line, never a number.
#[test]
fn crun_runs_or_says_in_one_line_why_not() {
    if !require_root() || !common::debian_package("crun", || common::command_runs("crun", "--version")) {
        return;
    }
    let _serial = one_at_a_time();
    let out = cvm().args(["run", "--runtime", "crun", "--json", "hello"]).output().unwrap();
    if out.status.success() {
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["runtime"], "crun");
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("crun refuses to run here"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn qemu_boots_cvms_guest_kernel_with_the_same_program_with_kvm() {
    if !require_kvm()
        || !common::debian_package("qemu-system-x86", || common::command_runs("qemu-system-x86_64", "-version"))
    {
        return;
    }
    let record = run_json_in("qemu", &["probe"]);
    assert_eq!(record["runtime"], "qemu", "{record}");
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["result"]["kernel_name"], "cvm-guest", "{record}");
    assert!(record["command"]["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{record}");
    // The isa-debug-exit status is decoded back to the guest's value.
    let Some(busybox) = common::busybox() else { return };
    let failing = run_json_in("qemu", &["--binary", busybox, "false"]);
    assert_eq!(failing["exit_code"], 1, "{failing}");
}

#[test]
fn a_missing_peer_is_one_line_not_a_number() {
    let out = cvm().args(["run", "--runtime", "runc", "hello"]).env("PATH", "/nonexistent").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("runc is not installed (not on PATH)"), "{stderr}");
}

#[test]
fn beside_a_peer_every_runtime_is_a_whole_command_and_the_report_has_the_peer_view() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("report");
    let only_unshare = dir.path().join("path");
    std::fs::create_dir(&only_unshare).unwrap();
    let unshare = cvm::peers::whole_command::find_on_path("unshare").expect("unshare (util-linux) on PATH");
    std::os::unix::fs::symlink(unshare, only_unshare.join("unshare")).unwrap();
    let out = cvm()
        .args(["compare", "hello", "--runtimes", "process,container,unshare,runc", "--runs", "3", "--warmup", "0"])
        .arg("--no-density")
        .arg("--out")
        .arg(&out_dir)
        .env("PATH", &only_unshare) // runc is not on this PATH: it must say so
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Where the industry's tools stand"), "{stdout}");
    assert!(stdout.contains("runc was not measured: runc is not installed"), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap()).unwrap();
    let cells = results["files"][0]["cells"].as_array().or_else(|| results["cells"].as_array()).unwrap().clone();
    let whole: Vec<&serde_json::Value> = cells.iter().filter(|c| c["whole_command"] == true).collect();
    assert_eq!(whole.len(), 4, "process, container, unshare and runc as whole commands");
    for cell in whole.iter().filter(|c| c["unavailable"].is_null()) {
        for record in cell["records"].as_array().unwrap() {
            assert!(record["command"]["wall_ns"].as_u64().unwrap() > 0, "{record}");
        }
    }
    let own = whole.iter().find(|c| c["runtime"] == "container").unwrap();
    let argv = &own["records"][0]["command"]["argv"];
    assert_eq!(argv[1], "run", "cvm's container measured as `cvm run`: {argv}");
    // The in-process cells stay apart from the peer view.
    assert!(cells.iter().any(|c| c["runtime"] == "container" && c["whole_command"].is_null()));
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("## Where the industry's tools stand"), "{report}");
    assert!(out_dir.join("charts/peers.svg").is_file());
}

/// QEMU's own failures are errors (never a program's exit 0), and what the kernel command
/// line cannot carry is refused in one line.
#[test]
fn qemu_refuses_what_it_cannot_run_in_one_line_with_kvm() {
    if !require_kvm()
        || !common::debian_package("qemu-system-x86", || common::command_runs("qemu-system-x86_64", "-version"))
    {
        return;
    }
    for (args, expected) in [
        (vec!["--memory", "1K", "hello"], "too small for a VM"),
        (vec!["hello", "cvm.argv0=x"], "option of cvm's guest kernel"),
        (vec!["hello", "two words"], "cannot be one word there"),
    ] {
        let out = cvm().args(["run", "--runtime", "qemu"]).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// The cgroup directories cvm's container runs leave, if any (`cvm-*` below the v1
/// hierarchies and the v2 tree).
fn cvm_cgroups() -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            if entry.file_name().to_string_lossy().starts_with("cvm-") {
                found.push(entry.path());
            } else if dir.components().count() < 7 {
                pending.push(entry.path());
            }
        }
    }
    found
}

/// In the peer view cvm's own runs are `cvm run` commands: at their timeout they are asked to
/// stop and clean up (cgroups included), not killed outright.
#[test]
fn a_whole_command_cvm_run_cleans_up_after_its_timeout_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let before = cvm_cgroups();
    let out = cvm()
        .args(["bench", "--runtimes", "container,unshare", "--workloads", "idle:10", "--runs", "1", "--warmup", "0"])
        .args(["--timeout", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the runs timed out");
    let left: Vec<_> = cvm_cgroups().into_iter().filter(|d| !before.contains(d)).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

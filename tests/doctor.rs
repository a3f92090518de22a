//! `cvm doctor`: the checks as JSON and as a table, and an exit status that matches them.

mod common;

use common::run_cvm;

const CHECKS: [&str; 8] =
    ["platform", "root", "kvm", "virtualization", "user namespaces", "overlayfs", "cgroups", "per-run cgroup"];

#[test]
fn doctor_json_has_every_check() {
    let out = run_cvm(&["doctor", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    let checks = report["checks"].as_array().expect("a checks array");
    for name in CHECKS {
        let check = checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("check {name} missing"));
        assert!(["ok", "warn", "fail"].contains(&check["status"].as_str().unwrap()), "{check}");
        assert!(!check["detail"].as_str().unwrap().is_empty(), "{check}");
        if check["status"] == "fail" {
            assert!(check["fix"].is_string(), "a failing check says how to fix it: {check}");
        }
    }
    let ok = report["ok"].as_bool().unwrap();
    assert_eq!(out.status.code(), Some(if ok { 0 } else { 1 }), "exit status must match \"ok\"");
    for runtime in ["process", "container", "vm"] {
        assert!(report["runtimes"][runtime].is_boolean(), "{report}");
    }
    assert_eq!(report["runtimes"]["process"], true);
}

#[test]
fn doctor_prints_a_table() {
    let out = run_cvm(&["doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CHECK") && stdout.contains("STATUS"), "{stdout}");
    for name in CHECKS {
        assert!(stdout.contains(name), "{name} missing from:\n{stdout}");
    }
    assert!(matches!(out.status.code(), Some(0) | Some(1)));
}

//! The classroom labs: every lab can be listed, read and checked on this machine.
//! Checks need root (container) and /dev/kvm (vm).

mod common;

use common::{require_kvm, require_root, run_cvm};

#[test]
fn labs_are_listed_and_readable() {
    let list = String::from_utf8(run_cvm(&["lab", "list"]).stdout).unwrap();
    for number in 1..=6 {
        assert!(list.contains(&format!("{number:>2}  ")), "lab {number} missing from:\n{list}");
        let out = run_cvm(&["lab", "show", &number.to_string()]);
        let text = String::from_utf8(out.stdout).unwrap();
        for section in ["## Goal", "## Steps", "## What to observe", "## Questions", "## Check"] {
            assert!(text.contains(section), "lab {number} has no '{section}'");
        }
    }
    let missing = run_cvm(&["lab", "show", "99"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&missing.stderr).trim().lines().count(), 1);
}

fn check(number: u32) -> (Option<i32>, String) {
    let out = run_cvm(&["lab", "check", &number.to_string()]);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Labs whose observation holds on any machine that can run the runtimes.
#[test]
fn stable_observations_pass_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    for number in [1, 3, 5, 6] {
        let (status, stdout) = check(number);
        assert_eq!(status, Some(0), "lab {number}:\n{stdout}");
        assert!(stdout.contains("PASSED"), "lab {number}:\n{stdout}");
    }
}

/// Timing labs depend on the machine's load: they must run and give a verdict with numbers.
#[test]
fn timing_labs_give_a_verdict_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    for number in [2, 4] {
        let (status, stdout) = check(number);
        assert!(matches!(status, Some(0) | Some(1)), "lab {number}:\n{stdout}");
        assert!(stdout.contains("observed:"), "lab {number}:\n{stdout}");
        assert!(!stdout.contains("could not run"), "lab {number}:\n{stdout}");
    }
}

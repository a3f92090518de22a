//! The `process` runtime and the command-line contract, through the real binary.

mod common;

use common::{run_cvm, run_json};

#[test]
fn process_hello_returns_a_complete_record() {
    let record = run_json(&["--runtime", "process", "hello"]);
    assert_eq!(record["schema"], 1);
    assert_eq!(record["runtime"], "process");
    assert_eq!(record["kernel"], "host");
    assert_eq!(record["exit_code"], 0);
    assert_eq!(record["result"]["workload"], "hello");
    assert!(record["stdout"].as_str().unwrap().contains("Hello"));
    let phases = &record["phases_ns"];
    let (setup, exit, total) =
        (phases["setup"].as_u64().unwrap(), phases["exit"].as_u64().unwrap(), phases["total"].as_u64().unwrap());
    assert!(setup <= exit && exit <= total, "phases out of order: {phases}");
    // As root, the kernel's taskstats exit record gives hello's own peak; otherwise it stays
    // below cvm's own high-water mark, which vfork hides it under: no figure, a note.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let peak = record["memory"]["peak_rss_bytes"].as_u64().expect("taskstats gives a figure as root");
        assert!((100 << 10..4 << 20).contains(&peak), "{record}");
    } else {
        assert!(record["memory"]["peak_rss_bytes"].is_null(), "{record}");
        assert!(record["notes"][0].as_str().unwrap().contains("peak RSS not measured"), "{record}");
    }
}

#[test]
fn process_peak_rss_is_the_programs_own() {
    let record = run_json(&["--runtime", "process", "mem", "16"]);
    let peak = record["memory"]["peak_rss_bytes"].as_u64().expect("mem 16 outgrows cvm");
    assert!((16 << 20..24 << 20).contains(&peak), "{record}");
}

#[test]
fn exit_status_of_the_program_is_cvms() {
    let out = run_cvm(&["run", "--runtime", "process", "mem", "notanumber"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_programs_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    for (path, expected) in common::bad_programs(dir.path()) {
        common::assert_refused_with_one_line("process", &path, expected);
    }
}

#[test]
fn timeout_kills_the_program() {
    let record = run_json(&["--runtime", "process", "--timeout", "0.2", "cpu", "100000000000"]);
    assert_eq!(record["outcome"], "timed_out");
    assert!(record["phases_ns"]["total"].as_u64().unwrap() < 5_000_000_000);
}

#[test]
fn cpu_workload_computes_real_sha256() {
    use sha2::{Digest, Sha256};
    let record = run_json(&["--runtime", "process", "cpu", "3"]);
    // The workload hashes a 64-byte block, feeding each digest and the round number back in.
    let mut block = [0u8; 64];
    for round in 0u64..3 {
        let digest = Sha256::digest(block);
        block[..32].copy_from_slice(&digest);
        block[32..40].copy_from_slice(&round.to_le_bytes());
    }
    let expected: String = block[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(record["result"]["checksum"], expected.as_str());
    assert_eq!(record["result"]["iterations"], 3);
}

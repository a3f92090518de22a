//! Builds the two guest-side artifacts that `cvm` embeds, with the same cargo that builds cvm:
//! the static workload (x86_64-unknown-linux-musl) and the builtin guest kernel
//! (x86_64-unknown-none). Missing Rust targets are installed with rustup, so a fresh clone
//! needs nothing but `cargo`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Artifact {
    crate_dir: &'static str,
    target: &'static str,
    binary: &'static str,
}

const ARTIFACTS: [Artifact; 2] = [
    Artifact { crate_dir: "workload", target: "x86_64-unknown-linux-musl", binary: "cvm-workload" },
    Artifact { crate_dir: "guest/kernel", target: "x86_64-unknown-none", binary: "cvm-guest-kernel" },
];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in [
        "workload/src",
        "workload/Cargo.toml",
        "guest/kernel/src",
        "guest/kernel/Cargo.toml",
        "guest/kernel/build.rs",
        "guest/kernel/linker.ld",
        "guest/abi/src",
    ] {
        println!("cargo:rerun-if-changed={watched}");
    }
    for artifact in &ARTIFACTS {
        ensure_target(artifact.target);
        let built = build(&root, &out_dir, artifact);
        let dest = out_dir.join(artifact.binary);
        let bytes = std::fs::read(&built).unwrap_or_else(|e| panic!("reading {}: {e}", built.display()));
        std::fs::write(&dest, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", dest.display()));
        // A content hash, so the runtimes can cache what they derive from the artifact
        // (the workload file, the container image) without hashing it on every run.
        let hash = format!("{:016x}", fnv1a64(&bytes));
        std::fs::write(out_dir.join(format!("{}.hash", artifact.binary)), hash).expect("writing hash");
    }
}

/// Installs a Rust target with rustup when its standard library is not there yet.
fn ensure_target(target: &str) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if libdir.as_deref().is_some_and(has_core_library) {
        return;
    }
    let status = Command::new("rustup").args(["target", "add", target]).status();
    if !matches!(status, Ok(s) if s.success()) {
        panic!(
            "the Rust target {target} is missing and `rustup target add {target}` failed; install it and build again"
        );
    }
}

fn has_core_library(libdir: &Path) -> bool {
    std::fs::read_dir(libdir)
        .map(|entries| entries.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        .unwrap_or(false)
}

fn build(root: &Path, out_dir: &Path, artifact: &Artifact) -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out_dir.join("artifacts");
    let manifest = root.join(artifact.crate_dir).join("Cargo.toml");
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--quiet", "--target", artifact.target, "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy, coverage) are for the host crate only.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    let status = command.status().unwrap_or_else(|e| panic!("running cargo for {}: {e}", artifact.crate_dir));
    if !status.success() {
        panic!("building {} for {} failed", artifact.crate_dir, artifact.target);
    }
    target_dir.join(artifact.target).join("release").join(artifact.binary)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

//! Shared by the integration tests: running the real `cvm` binary, and requirements.
//!
//! A test that needs root or /dev/kvm calls `require_root()` / `require_kvm()`. Under
//! `CI=true` a missing requirement fails the test loudly; on a developer machine the test
//! says why it did not run and returns.
#![allow(dead_code)]

use std::process::{Command, Output};

pub fn cvm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cvm"))
}

/// Runs `cvm ARGS` and returns its output.
pub fn run_cvm(args: &[&str]) -> Output {
    cvm().args(args).output().expect("running the cvm binary")
}

/// Runs `cvm run --json ARGS`, asserts one JSON object on stdout, and returns it.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let mut full = vec!["run", "--json"];
    full.extend_from_slice(args);
    let out = run_cvm(&full);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "cvm {full:?}: stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `cvm run --json --runtime RUNTIME ARGS`, as [`run_json`].
pub fn run_json_in(runtime: &str, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--runtime", runtime];
    full.extend_from_slice(args);
    run_json(&full)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when the test may go on; false (with a message) when it should return early.
/// Under `CI=true` a missing requirement is a failure, never a silent skip.
pub fn require(met: bool, what: &str) -> bool {
    if met {
        return true;
    }
    if in_ci() {
        panic!("this test needs {what}, which CI must provide (CI=true)");
    }
    eprintln!("skipped: this test needs {what}");
    false
}

pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    require(unsafe { libc::geteuid() } == 0, "root")
}

pub fn require_kvm() -> bool {
    let usable = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok();
    require(usable, "a readable and writable /dev/kvm")
}

/// Files that are not runnable static programs, each with words cvm's refusal must contain.
pub fn bad_programs(dir: &std::path::Path) -> Vec<(String, &'static str)> {
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let truncated = dir.join("truncated");
    std::fs::write(&truncated, &cvm::embedded::WORKLOAD_ELF[..200]).unwrap();
    vec![
        (script.display().to_string(), "not an ELF"),
        (truncated.display().to_string(), "truncated"),
        ("/bin/sh".to_string(), "dynamically linked"),
        ("/nonexistent/program".to_string(), "cannot read program"),
    ]
}

/// `cvm run --runtime RUNTIME --binary PATH` fails with one line naming the problem, no panic
/// and nothing on stdout.
pub fn assert_refused_with_one_line(runtime: &str, path: &str, expected: &str) {
    let out = run_cvm(&["run", "--runtime", runtime, "--binary", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{runtime} {path}");
    assert_eq!(stderr.trim().lines().count(), 1, "{runtime} {path}: expected one line, got:\n{stderr}");
    assert!(stderr.contains(expected), "{runtime} {path}: {stderr}");
    assert!(!stderr.contains("panicked"), "{runtime} {path}: {stderr}");
    assert!(out.stdout.is_empty(), "{runtime} {path}: nothing on stdout");
}

/// A minimal static ELF (ET_EXEC at 0x400000, one RX segment) running `code`.
pub fn tiny_program(code: &[u8]) -> tempfile::TempPath {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let total = HEADERS + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R X
    for word in [0, BASE, BASE, total, total, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &elf).unwrap();
    file.into_temp_path()
}

/// A Debian package a test uses. When `present` says it is missing and this is root on a
/// Debian-like host, it is installed here, so the README's one test command needs nothing
/// installed by hand; otherwise [`require`] decides (a failure under CI, a skip elsewhere).
pub fn debian_package(package: &str, present: impl Fn() -> bool) -> bool {
    if present() {
        return true;
    }
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !present() && root && std::path::Path::new("/usr/bin/apt-get").exists() {
        eprintln!("installing the Debian package {package} for the tests");
        let apt = "apt-get -o DPkg::Lock::Timeout=300 -y -qq";
        let script = format!("{apt} install {package} || ({apt} update && {apt} install {package})");
        let _ = Command::new("sh")
            .args(["-c", &script])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status();
    }
    require(present(), &format!("the Debian package {package} (apt-get install {package})"))
}

/// Debian's busybox-static: a real static program nobody wrote for cvm.
pub fn busybox() -> Option<&'static str> {
    const PATH: &str = "/bin/busybox";
    let is_static = || std::fs::read(PATH).is_ok_and(|bytes| cvm::program::check_static_elf(&bytes).is_ok());
    debian_package("busybox-static", is_static).then_some(PATH)
}

/// True when `program --version` (or `-version`) runs.
pub fn command_runs(program: &str, version_flag: &str) -> bool {
    Command::new(program).arg(version_flag).output().is_ok_and(|o| o.status.success())
}

/// A test program from `tests/programs/NAME.c`, built static with musl-gcc (Debian package
/// musl-tools) once per source version into the target directory.
pub fn c_program(name: &str) -> Option<std::path::PathBuf> {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs").join(format!("{name}.c"));
    let text = std::fs::read(&source).unwrap_or_else(|e| panic!("reading {}: {e}", source.display()));
    let hash = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_build_at_a_time = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-programs");
    let out = dir.join(format!("{name}-{hash:016x}"));
    if out.exists() {
        return Some(out);
    }
    if !debian_package("musl-tools", || command_runs("musl-gcc", "--version")) {
        return None;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let partial = dir.join(format!("{name}-{hash:016x}.{}", std::process::id()));
    let built = Command::new("musl-gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&partial)
        .arg(&source)
        .output()
        .expect("running musl-gcc");
    assert!(built.status.success(), "musl-gcc {}: {}", source.display(), String::from_utf8_lossy(&built.stderr));
    std::fs::rename(&partial, &out).unwrap();
    Some(out)
}

/// The Go test program in `tests/programs/go`, built static (CGO_ENABLED=0) with Debian's Go
/// (package golang-go) once per source version into the target directory.
pub fn go_program() -> Option<std::path::PathBuf> {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/go");
    let mut text = std::fs::read(source.join("main.go")).expect("reading tests/programs/go/main.go");
    text.extend(std::fs::read(source.join("go.mod")).expect("reading tests/programs/go/go.mod"));
    let hash = text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_build_at_a_time = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-programs");
    let out = dir.join(format!("go-{hash:016x}"));
    if out.exists() {
        return Some(out);
    }
    if !debian_package("golang-go", || command_runs("go", "version")) {
        return None;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let partial = dir.join(format!("go-{hash:016x}.{}", std::process::id()));
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(&source)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("go-path"))
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("running go build");
    assert!(built.status.success(), "go build: {}", String::from_utf8_lossy(&built.stderr));
    std::fs::rename(&partial, &out).unwrap();
    Some(out)
}

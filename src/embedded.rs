//! The artifacts built into the `cvm` binary: the static workload and the builtin guest kernel.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// The static x86-64 workload program (hello, cpu, mem, syscall, probe).
pub static WORKLOAD_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cvm-workload"));
/// Content hash of [`WORKLOAD_ELF`], computed at build time.
pub const WORKLOAD_HASH: &str = include_str!(concat!(env!("OUT_DIR"), "/cvm-workload.hash"));

/// The builtin guest kernel (ELF, x86_64-unknown-none).
pub static GUEST_KERNEL_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cvm-guest-kernel"));
pub const GUEST_KERNEL_HASH: &str = include_str!(concat!(env!("OUT_DIR"), "/cvm-guest-kernel.hash"));

/// The workloads the embedded program offers.
pub const WORKLOADS: [&str; 7] = ["hello", "cpu", "mem", "syscall", "idle", "probe", "threads"];

/// cvm's cache directory: `$XDG_CACHE_HOME/cvm`, else `~/.cache/cvm`, else `/tmp/cvm-cache-UID`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("cvm");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("cvm");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/cvm-cache-{uid}"))
}

/// The embedded workload as an executable file in the cache, written once per content hash.
pub fn workload_path() -> Result<PathBuf> {
    cached_file("cvm-workload", WORKLOAD_HASH, WORKLOAD_ELF)
}

/// The builtin guest kernel as a file in the cache (what QEMU boots in the peer view).
pub fn guest_kernel_path() -> Result<PathBuf> {
    cached_file("cvm-guest-kernel", GUEST_KERNEL_HASH, GUEST_KERNEL_ELF)
}

fn cached_file(name: &str, hash: &str, bytes: &[u8]) -> Result<PathBuf> {
    let dir = cache_dir().join("bin");
    let path = dir.join(format!("{name}-{}", hash.trim()));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating the cache directory {}", dir.display()))?;
    write_executable_atomically(&path, bytes)?;
    Ok(path)
}

/// Writes `bytes` to a temporary file beside `path`, marks it executable and renames it into
/// place, so a concurrent run never sees a half-written program.
pub fn write_executable_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("moving {} into place", path.display()))?;
    Ok(())
}

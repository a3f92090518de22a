//! The device rule of a run's cgroup: the container may open only the device nodes its own
//! /dev holds (null, zero, full, random, urandom, tty), whatever path or descriptor it reaches
//! a device through. runc applies the same rule. v1 has a `devices` controller with
//! allow/deny lists; v2 has no controller for it, only a small BPF program attached to the
//! cgroup that the kernel asks before every device open.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::write_file;

/// A character device the container may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub major: u32,
    pub minor: u32,
}

/// The character devices behind the container's /dev nodes, read from the host's nodes.
pub fn allowed_devices(names: &[&str]) -> Vec<Device> {
    names
        .iter()
        .filter_map(|name| std::fs::metadata(Path::new("/dev").join(name)).ok())
        .filter(|meta| meta.file_type().is_char_device())
        .map(|meta| Device { major: libc::major(meta.rdev()), minor: libc::minor(meta.rdev()) })
        .collect()
}

/// v1: deny everything, then allow each device (read, write, mknod).
pub fn apply_v1(dir: &Path, devices: &[Device]) -> Result<()> {
    write_file(&dir.join("devices.deny"), "a")?;
    for device in devices {
        write_file(&dir.join("devices.allow"), &format!("c {}:{} rwm", device.major, device.minor))?;
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInstruction {
    code: u8,
    /// dst register in the low 4 bits, src in the high 4.
    registers: u8,
    offset: i16,
    immediate: i32,
}

const BPF_LDX_W: u8 = 0x61;
const BPF_AND64_K: u8 = 0x57;
const BPF_JNE_K: u8 = 0x55;
const BPF_MOV64_K: u8 = 0xb7;
const BPF_EXIT: u8 = 0x95;
/// `BPF_DEVCG_DEV_CHAR` in the low 16 bits of `bpf_cgroup_dev_ctx.access_type`.
const DEVICE_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, offset: i16, immediate: i32) -> BpfInstruction {
    BpfInstruction { code, registers: dst | (src << 4), offset, immediate }
}

/// The v2 program: 1 (allow) for the listed character devices, 0 for everything else.
/// Its input is `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` in r1.
pub fn program(devices: &[Device]) -> Vec<BpfInstruction> {
    let mut program = vec![
        insn(BPF_LDX_W, 2, 1, 0, 0),        // r2 = access_type
        insn(BPF_AND64_K, 2, 0, 0, 0xffff), // r2 = device type
        insn(BPF_LDX_W, 3, 1, 4, 0),        // r3 = major
        insn(BPF_LDX_W, 4, 1, 8, 0),        // r4 = minor
    ];
    for device in devices {
        program.extend([
            insn(BPF_JNE_K, 2, 0, 4, DEVICE_CHAR),
            insn(BPF_JNE_K, 3, 0, 3, device.major as i32),
            insn(BPF_JNE_K, 4, 0, 2, device.minor as i32),
            insn(BPF_MOV64_K, 0, 0, 0, 1),
            insn(BPF_EXIT, 0, 0, 0, 0),
        ]);
    }
    program.extend([insn(BPF_MOV64_K, 0, 0, 0, 0), insn(BPF_EXIT, 0, 0, 0, 0)]);
    program
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD; the kernel takes a shorter attr.
#[repr(C)]
#[derive(Default)]
struct ProgramLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The fields of `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgramAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(command: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a fully initialised repr(C) prefix of `union bpf_attr`; the kernel
    // reads `size_of::<T>()` bytes of it (and copies the verifier log into the buffer the attr
    // names, which the caller keeps alive).
    let result = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *const T, std::mem::size_of::<T>()) };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// v2: loads [`program`] and attaches it to the cgroup directory `cgroup`.
pub fn attach_v2(cgroup: &Path, devices: &[Device]) -> Result<()> {
    let instructions = program(devices);
    let mut log = vec![0u8; 4096];
    let load = ProgramLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: instructions.len() as u32,
        insns: instructions.as_ptr() as u64,
        license: c"GPL".as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgramLoad::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &load) {
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that nobody else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
        Err(err) => {
            let verifier = String::from_utf8_lossy(&log);
            let first = verifier.trim_matches(char::from(0)).lines().last().unwrap_or("").to_string();
            bail!("loading the device filter (BPF) failed: {err} {first}");
        }
    };
    let dir = std::fs::File::open(cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
    let attach = ProgramAttach {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &attach)
        .with_context(|| format!("attaching the device filter (BPF) to {}", cgroup.display()))?;
    // The cgroup holds the program now; our descriptor can go.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_devices_of_the_container_are_found() {
        let devices = allowed_devices(&["null", "zero", "no-such-device"]);
        assert_eq!(devices, vec![Device { major: 1, minor: 3 }, Device { major: 1, minor: 5 }]);
    }

    #[test]
    fn each_rule_jumps_to_the_next_rule_or_allows() {
        let program = program(&[Device { major: 1, minor: 3 }, Device { major: 5, minor: 0 }]);
        assert_eq!(program.len(), 4 + 2 * 5 + 2);
        for rule in 0..2 {
            let start = 4 + 5 * rule;
            for (at, insn) in program[start..start + 3].iter().enumerate() {
                assert_eq!(start + at + 1 + insn.offset as usize, start + 5, "rule {rule} jump {at}");
            }
        }
        assert_eq!(program.last().unwrap().code, BPF_EXIT);
    }
}

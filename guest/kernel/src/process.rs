//! The one process: its identity, limits, signal bookkeeping, thread pointer, randomness and
//! exit.

use crate::clock;
use crate::cpu::{self, out32};
use crate::errno::{Errno, SysResult, EAGAIN, EINVAL, EPERM, ESRCH};
use crate::global::Global;
use crate::user;
use cvm_guest_abi::{port, KERNEL_NAME, KERNEL_RELEASE, KERNEL_VERSION, USER_STACK_SIZE};

/// The program is process 1, as an init process in a fresh PID namespace would be.
pub const PID: u64 = 1;

struct Process {
    hostname: [u8; 65],
    fs_base: u64,
    have_fsgsbase: bool,
    have_rdrand: bool,
    random_state: u64,
    signal_mask: u64,
    /// `struct sigaction` (handler, flags, restorer, mask) per signal 1..=64, as installed.
    actions: [[u64; 4]; 64],
    /// `stack_t` (sp, flags, size) of sigaltstack.
    alt_stack: [u64; 3],
}

static PROCESS: Global<Process> = Global::new(Process {
    hostname: [0; 65],
    fs_base: 0,
    have_fsgsbase: false,
    have_rdrand: false,
    random_state: 0,
    signal_mask: 0,
    actions: [[0; 4]; 64],
    alt_stack: [0, SS_DISABLE, 0],
});

pub fn init(hostname: &[u8; 65], have_fsgsbase: bool) {
    PROCESS.with(|process| {
        process.hostname = *hostname;
        process.hostname[64] = 0;
        process.have_fsgsbase = have_fsgsbase;
        process.have_rdrand = cpu::has_rdrand();
    });
}

/// `struct utsname`: six 65-byte fields. The kernel names itself, not the host.
pub fn uname(buf: u64) -> SysResult {
    let fields = user::bytes_mut(buf, 6 * 65)?;
    fields.fill(0);
    let hostname = PROCESS.with(|process| process.hostname);
    let host_len = hostname.iter().position(|&b| b == 0).unwrap_or(64);
    let values: [&[u8]; 6] = [
        KERNEL_NAME.as_bytes(),
        &hostname[..host_len],
        KERNEL_RELEASE.as_bytes(),
        KERNEL_VERSION.as_bytes(),
        b"x86_64",
        b"(none)",
    ];
    for (field, value) in fields.chunks_exact_mut(65).zip(values) {
        let len = value.len().min(64);
        field[..len].copy_from_slice(&value[..len]);
    }
    Ok(0)
}

const RLIM_INFINITY: u64 = u64::MAX;
const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;

fn limit(resource: u64) -> Result<[u64; 2], Errno> {
    match resource {
        RLIMIT_STACK => Ok([USER_STACK_SIZE, USER_STACK_SIZE]),
        RLIMIT_NOFILE => Ok([3, 3]),
        0..=15 => Ok([RLIM_INFINITY, RLIM_INFINITY]),
        _ => Err(EINVAL),
    }
}

pub fn getrlimit(resource: u64, old: u64) -> SysResult {
    user::write(old, limit(resource)?)?;
    Ok(0)
}

/// Reports the limits the VM really has; new limits are accepted and not enforced.
pub fn prlimit64(pid: u64, resource: u64, new: u64, old: u64) -> SysResult {
    if pid != 0 && pid != PID {
        return Err(ESRCH);
    }
    let current = limit(resource)?;
    if new != 0 {
        user::read::<[u64; 2]>(new)?;
    }
    user::write_optional(old, current)?;
    Ok(0)
}

/// `struct rusage` with the user time filled in (all time is the program's).
pub fn getrusage(usage: u64) -> SysResult {
    let buf = user::bytes_mut(usage, 144)?;
    buf.fill(0);
    let ns = clock::monotonic_ns();
    buf[0..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    buf[8..16].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
    Ok(0)
}

/// `struct sysinfo`: uptime, RAM and one process.
pub fn sysinfo(info: u64) -> SysResult {
    let buf = user::bytes_mut(info, 112)?;
    buf.fill(0);
    let ram = user::end();
    buf[0..8].copy_from_slice(&(clock::monotonic_ns() / 1_000_000_000).to_le_bytes()); // uptime
    buf[32..40].copy_from_slice(&ram.to_le_bytes()); // totalram
    buf[80..82].copy_from_slice(&1u16.to_le_bytes()); // procs
    buf[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    Ok(0)
}

/// One CPU: mask with bit 0 set. Returns the mask size in bytes, as Linux does.
pub fn sched_getaffinity(len: u64, mask: u64) -> SysResult {
    if len < 8 || !len.is_multiple_of(8) {
        return Err(EINVAL);
    }
    user::write(mask, 1u64)?;
    Ok(8)
}

const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;

pub fn prctl(option: u64) -> SysResult {
    match option {
        PR_SET_NAME | PR_GET_NAME => Ok(0),
        _ => Err(EINVAL),
    }
}

/// RDRAND, 8 bytes at a time; when the CPU has none (or keeps failing), a xorshift generator
/// seeded from the TSC. Not cryptographic then, but the program runs.
pub fn getrandom(buf: u64, len: u64) -> SysResult {
    let out = user::bytes_mut(buf, len)?;
    PROCESS.with(|process| {
        for chunk in out.chunks_mut(8) {
            let hardware = if process.have_rdrand { (0..10).find_map(|_| cpu::rdrand()) } else { None };
            let value = hardware.unwrap_or_else(|| {
                if process.random_state == 0 {
                    process.random_state = cpu::rdtsc() | 1;
                }
                let mut x = process.random_state;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                process.random_state = x;
                x
            });
            chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
        }
    });
    Ok(len)
}

const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
/// Highest canonical user address + 1.
const USER_ADDRESS_LIMIT: u64 = 1 << 47;

/// The thread pointer (FS base) is all a static program needs; GS is not supported.
pub fn arch_prctl(code: u64, addr: u64) -> SysResult {
    match code {
        ARCH_SET_FS => {
            if addr >= USER_ADDRESS_LIMIT {
                return Err(EPERM);
            }
            let have_fsgsbase = PROCESS.with(|process| {
                process.fs_base = addr;
                process.have_fsgsbase
            });
            cpu::set_fs_base(addr, have_fsgsbase);
            Ok(0)
        }
        ARCH_GET_FS => {
            user::write(addr, PROCESS.with(|process| process.fs_base))?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

const FUTEX_CMD_MASK: u64 = 0x7f;
const FUTEX_WAKE: u64 = 1;

/// One thread: a wake finds nobody, a wait would wait for ever, so it fails as if the value
/// had already changed and the caller re-checks.
pub fn futex(op: u64) -> SysResult {
    if op & FUTEX_CMD_MASK == FUTEX_WAKE {
        Ok(0)
    } else {
        Err(EAGAIN)
    }
}

pub fn exit(status: u64) -> ! {
    out32(port::EXIT, status as u32 & 0xff);
    // The VMM ends the run on that write; `hlt` is not allowed in the syscall path.
    cpu::spin_forever()
}

const SS_DISABLE: u64 = 2;
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
const SIGKILL: u64 = 9;
const SIGSTOP: u64 = 19;
const SIGCHLD: u64 = 17;
const SIGURG: u64 = 23;
const SIGWINCH: u64 = 28;
const SIGCONT: u64 = 18;

/// Installs or reads a handler. Handlers are remembered and reported back, never called.
pub fn rt_sigaction(signal: u64, new: u64, old: u64, mask_size: u64) -> SysResult {
    if !(1..=64).contains(&signal) || mask_size != 8 {
        return Err(EINVAL);
    }
    if new != 0 && (signal == SIGKILL || signal == SIGSTOP) {
        return Err(EINVAL);
    }
    let new_action = if new != 0 { Some(user::read::<[u64; 4]>(new)?) } else { None };
    let slot = (signal - 1) as usize;
    let previous = PROCESS.with(|process| process.actions[slot]);
    user::write_optional(old, previous)?;
    if let Some(action) = new_action {
        PROCESS.with(|process| process.actions[slot] = action);
    }
    Ok(0)
}

const SIG_BLOCK: u64 = 0;
const SIG_UNBLOCK: u64 = 1;
const SIG_SETMASK: u64 = 2;

pub fn rt_sigprocmask(how: u64, new: u64, old: u64, mask_size: u64) -> SysResult {
    if mask_size != 8 {
        return Err(EINVAL);
    }
    let requested = if new != 0 { Some(user::read::<u64>(new)?) } else { None };
    let previous = PROCESS.with(|process| process.signal_mask);
    let unblockable = 1 << (SIGKILL - 1) | 1 << (SIGSTOP - 1);
    if let Some(set) = requested {
        let mask = match how {
            SIG_BLOCK => previous | set,
            SIG_UNBLOCK => previous & !set,
            SIG_SETMASK => set,
            _ => return Err(EINVAL),
        };
        PROCESS.with(|process| process.signal_mask = mask & !unblockable);
    }
    user::write_optional(old, previous)?;
    Ok(0)
}

pub fn sigaltstack(new: u64, old: u64) -> SysResult {
    let requested = if new != 0 { Some(user::read::<[u64; 3]>(new)?) } else { None };
    let previous = PROCESS.with(|process| process.alt_stack);
    user::write_optional(old, previous)?;
    if let Some(stack) = requested {
        PROCESS.with(|process| process.alt_stack = stack);
    }
    Ok(0)
}

/// `kill`/`tkill`/`tgkill` aimed at ourselves (the only process): signal 0 probes; a signal
/// that is ignored, blocked or harmless by default does nothing; any other ends the run as
/// that signal would (exit status 128 + signal), since handlers are never called.
pub fn kill(target: u64, signal: u64) -> SysResult {
    let target = target as i64;
    if target != PID as i64 && target != 0 && target != -1 {
        return Err(ESRCH);
    }
    if signal > 64 {
        return Err(EINVAL);
    }
    if signal == 0 {
        return Ok(0);
    }
    let (handler, blocked) = PROCESS
        .with(|process| (process.actions[(signal - 1) as usize][0], process.signal_mask & 1 << (signal - 1) != 0));
    let harmless_by_default = matches!(signal, SIGCHLD | SIGURG | SIGWINCH | SIGCONT);
    if signal != SIGKILL && (handler == SIG_IGN || blocked || (handler == SIG_DFL && harmless_by_default)) {
        return Ok(0);
    }
    exit(128 + signal)
}

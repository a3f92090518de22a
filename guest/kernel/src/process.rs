//! The one process: its identity, limits, randomness, its threads' thread
//! pointers, creating threads (`clone`) and ending them (`exit`, `exit_group`).

use crate::clock;
use crate::cpu::{self, out32, FpuState};
use crate::entry::UserFrame;
use crate::errno::{Errno, SysResult, EAGAIN, EINVAL, ENOSYS, EPERM, ESRCH};
use crate::sched::{self, Wakeups, SCHED};
use crate::sync::SpinLock;
use crate::{futex, percpu, user};
use cvm_guest_abi::{port, KERNEL_NAME, KERNEL_RELEASE, KERNEL_VERSION, USER_STACK_SIZE};

/// The program is process 1, as an init process in a fresh PID namespace would be.
pub const PID: u64 = 1;

struct Process {
    hostname: [u8; 65],
    have_fsgsbase: bool,
    have_rdrand: bool,
    random_state: u64,
}

#[link_section = ".data.hot"]
static PROCESS: SpinLock<Process> =
    SpinLock::new(Process { hostname: [0; 65], have_fsgsbase: false, have_rdrand: false, random_state: 0 });

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

/// Every vCPU: one bit each. Returns the mask size in bytes, as Linux does.
pub fn sched_getaffinity(len: u64, mask: u64) -> SysResult {
    if len < 8 || !len.is_multiple_of(8) {
        return Err(EINVAL);
    }
    user::write(mask, (1u64 << percpu::count()) - 1)?;
    Ok(8)
}

/// `getcpu(cpu, node, cache)`: the vCPU this thread runs on, node 0.
pub fn getcpu(cpu_out: u64, node_out: u64) -> SysResult {
    user::write_optional(cpu_out, percpu::current_cpu() as u32)?;
    user::write_optional(node_out, 0u32)?;
    Ok(0)
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

/// The thread pointer (FS base) of the calling thread is all a static program needs; GS is
/// not supported.
pub fn arch_prctl(code: u64, addr: u64) -> SysResult {
    let cpu = percpu::current_cpu();
    match code {
        ARCH_SET_FS => {
            if addr >= USER_ADDRESS_LIMIT {
                return Err(EPERM);
            }
            let have_fsgsbase = PROCESS.with(|process| process.have_fsgsbase);
            SCHED.with(|sched| {
                let thread = sched.current(cpu);
                sched.threads[thread].fs_base = addr;
            });
            cpu::set_fs_base(cpu, addr, have_fsgsbase);
            Ok(0)
        }
        ARCH_GET_FS => {
            let have_fsgsbase = PROCESS.with(|process| process.have_fsgsbase);
            let remembered = SCHED.with(|sched| sched.threads[sched.current(cpu)].fs_base);
            user::write(addr, cpu::read_fs_base(have_fsgsbase, remembered))?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x1_0000;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;

/// `clone(flags, stack, parent_tid, child_tid, tls)` for a new thread of this process (what
/// pthread_create, Go's runtime and Rust's std ask for). A new process (no CLONE_VM, or
/// vfork) answers -ENOSYS: there is one address space and no second program.
pub fn clone(frame: &UserFrame, [flags, stack, parent_tid, child_tid, tls, _]: [u64; 6]) -> SysResult {
    if flags & (CLONE_VM | CLONE_THREAD) != (CLONE_VM | CLONE_THREAD) || flags & CLONE_VFORK != 0 {
        return Err(ENOSYS);
    }
    if flags & CLONE_SETTLS != 0 && tls >= USER_ADDRESS_LIMIT {
        return Err(EPERM);
    }
    let cpu = percpu::current_cpu();
    let mut child_frame = *frame;
    child_frame.rax = 0;
    if stack != 0 {
        child_frame.rsp = stack;
    }
    let mut fpu = FpuState::initial();
    fpu.save(); // the parent's SSE state, as it is at the clone: the child starts with it
    let have_fsgsbase = PROCESS.with(|process| process.have_fsgsbase);
    let mut wakeups = Wakeups::default();
    let tid = SCHED.with(|sched| {
        let parent = sched.current(cpu);
        let parent_fs = cpu::read_fs_base(have_fsgsbase, sched.threads[parent].fs_base);
        let fs_base = if flags & CLONE_SETTLS != 0 { tls } else { parent_fs };
        let mask = sched.threads[parent].signal_mask;
        let child = sched.create(child_frame, fpu, fs_base, mask).ok_or(EAGAIN)?;
        crate::signal::thread_created(child);
        let tid = sched.threads[child].tid;
        if flags & CLONE_CHILD_CLEARTID != 0 {
            sched.threads[child].clear_child_tid = child_tid;
        }
        // As Linux: a tid that cannot be written is not an error of the clone.
        if flags & CLONE_PARENT_SETTID != 0 {
            let _ = user::write(parent_tid, tid);
        }
        if flags & CLONE_CHILD_SETTID != 0 {
            let _ = user::write(child_tid, tid);
        }
        sched.make_runnable(child, 0, &mut wakeups);
        Ok::<u32, Errno>(tid)
    })?;
    wakeups.send();
    Ok(u64::from(tid))
}

/// `set_tid_address`: where to clear and futex-wake when this thread exits; answers its tid.
pub fn set_tid_address(address: u64) -> SysResult {
    let cpu = percpu::current_cpu();
    SCHED.with(|sched| {
        let thread = sched.current(cpu);
        sched.threads[thread].clear_child_tid = address;
        Ok(u64::from(sched.threads[thread].tid))
    })
}

pub fn gettid() -> SysResult {
    let cpu = percpu::current_cpu();
    Ok(u64::from(SCHED.with(|sched| sched.current_tid(cpu))))
}

/// `exit`: the calling thread ends (its `clear_child_tid` word is zeroed and woken, which is
/// how pthread_join learns of it); the last thread's exit ends the program.
pub fn exit_thread(frame: &mut UserFrame, status: u64) {
    let cpu = percpu::current_cpu();
    let mut sched = SCHED.lock();
    if sched.live() <= 1 {
        drop(sched);
        exit(status);
    }
    let thread = sched.current(cpu);
    let clear = sched.threads[thread].clear_child_tid;
    sched.free_current(cpu);
    drop(sched);
    if clear != 0 && user::write(clear, 0u32).is_ok() {
        let _ = futex::wake(clear, 1, u32::MAX);
    }
    sched::run_next(SCHED.lock(), cpu, frame);
}

/// `exit_group`: the program ends with `status`; the VMM stops every vCPU.
pub fn exit(status: u64) -> ! {
    out32(port::EXIT, crate::exit_port_value(status as u32 & 0xff));
    // The VMM ends the run on that write; `hlt` is not allowed in the syscall path.
    cpu::spin_forever()
}

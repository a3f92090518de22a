//! THE system-call table: every Linux x86-64 system call this kernel answers, in one place.
//!
//! `entry.rs` saves the registers into a [`SyscallFrame`] and calls [`dispatch`]; the match
//! below maps the number in RAX to its handler. A number not listed answers `-ENOSYS` and is
//! counted as unsupported; all others are counted as served (SyscallCounts, read by the VMM
//! after the run). See README.md for each call's semantics and why.

use crate::errno::{Errno, SysResult, ECHILD, ENOENT, ENOSYS};
use crate::global::Global;
use crate::{clock, files, memory, process};
use cvm_guest_abi::{SyscallCounts, SYSCALL_SLOTS};

/// The program's RSP while it is in a system call (entry.rs stores it: no swapgs, no per-CPU
/// area, one CPU).
#[no_mangle]
pub static USER_RSP: Global<u64> = Global::new(0);

/// Where the counters live (BootInfo.syscall_counts_addr); null counts nothing.
static COUNTS: Global<*mut SyscallCounts> = Global::new(core::ptr::null_mut());

pub fn init(counts_addr: u64) {
    COUNTS.set(counts_addr as *mut SyscallCounts);
}

/// Registers as entry.rs pushed them: the six arguments in ABI order, the number, then the
/// iretq frame back to the program.
#[repr(C)]
pub struct SyscallFrame {
    pub args: [u64; 6],
    pub number: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Called from `syscall_entry`; the return value goes to the program's RAX.
pub extern "C" fn dispatch(frame: &mut SyscallFrame) -> u64 {
    let number = frame.number;
    // Counted before answering: exit and exit_group never come back.
    count(number, Served);
    let result = answer(number, frame.args);
    if result == Err(ENOSYS) {
        count(number, Unsupported);
    }
    match result {
        Ok(value) => value,
        Err(Errno(errno)) => (-i64::from(errno)) as u64,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tally {
    Served,
    /// Moves the call from `calls` to `unsupported`.
    Unsupported,
}
use Tally::{Served, Unsupported};

fn count(number: u64, tally: Tally) {
    let counts = COUNTS.get();
    if counts.is_null() {
        return;
    }
    let slot = (number as usize).min(SYSCALL_SLOTS - 1);
    // SAFETY: the VMM reserved the table at this kernel-only address for us (BootInfo).
    let counts = unsafe { &mut *counts };
    match tally {
        Served => counts.calls[slot] = counts.calls[slot].wrapping_add(1),
        Unsupported => {
            counts.calls[slot] = counts.calls[slot].wrapping_sub(1);
            counts.unsupported[slot] = counts.unsupported[slot].wrapping_add(1);
        }
    }
}

fn answer(number: u64, [a0, a1, a2, a3, a4, a5]: [u64; 6]) -> SysResult {
    match number {
        // Files: only the console exists (fds 0, 1, 2).
        0 => files::read(a0, a1, a2),
        1 => files::write(a0, a1, a2),
        2 => files::open(a0),
        3 => files::close(a0),
        4 | 6 => Err(ENOENT), // stat, lstat: no file system
        5 => files::fstat(a0, a1),
        7 => files::poll(a0, a1),
        8 => files::lseek(a0),
        16 => files::ioctl(a0),
        17 => files::read(a0, a1, a2), // pread64: no file is seekable
        19 => files::readv(a0, a1, a2),
        20 => files::writev(a0, a1, a2),
        21 => Err(ENOENT), // access
        72 => files::fcntl(a0, a1),
        79 => files::getcwd(a0, a1),
        89 => Err(ENOENT), // readlink (/proc/self/exe does not exist)
        217 => files::getdents64(a0),
        257 => files::open(a1), // openat
        262 => files::newfstatat(a0, a1, a2, a3),
        267 => Err(ENOENT), // readlinkat
        269 => Err(ENOENT), // faccessat
        332 => files::statx(a0, a1, a2, a4),
        439 => Err(ENOENT), // faccessat2

        // Memory.
        9 => memory::mmap(a0, a1, a2, a3, a4, a5),
        10 => memory::mprotect(a0, a1, a2),
        11 => memory::munmap(a0, a1),
        12 => memory::brk(a0),
        28 => memory::madvise(a0, a1, a2),

        // Signals: recorded, never delivered (a fault ends the run instead).
        13 => process::rt_sigaction(a0, a1, a2, a3),
        14 => process::rt_sigprocmask(a0, a1, a2, a3),
        131 => process::sigaltstack(a0, a1),
        62 => process::kill(a0, a1),
        200 => process::kill(a0, a1), // tkill
        234 => process::kill(a1, a2), // tgkill

        // Time.
        35 => clock::nanosleep(a0, a1),
        96 => clock::gettimeofday(a0, a1),
        201 => clock::time(a0),
        228 => clock::clock_gettime(a0, a1),
        229 => clock::clock_getres(a0, a1),
        230 => clock::clock_nanosleep(a0, a1, a2, a3),

        // Who am I: the only process, run by root, in its own little machine.
        39 => Ok(process::PID),         // getpid
        110 => Ok(0),                   // getppid: no parent inside the VM
        186 => Ok(process::PID),        // gettid
        102 | 104 | 107 | 108 => Ok(0), // getuid, getgid, geteuid, getegid
        63 => process::uname(a0),
        97 => process::getrlimit(a0, a1),
        302 => process::prlimit64(a0, a1, a2, a3),
        98 => process::getrusage(a1),
        99 => process::sysinfo(a0),
        204 => process::sched_getaffinity(a1, a2),
        24 => Ok(0), // sched_yield: nothing else to run
        157 => process::prctl(a0),
        318 => process::getrandom(a0, a1),

        // Threads and process start-up.
        158 => process::arch_prctl(a0, a1),
        218 => Ok(process::PID), // set_tid_address: the tid
        273 => Ok(0),            // set_robust_list: no other thread cares
        334 => Err(ENOSYS),      // rseq: honest "not here"; libcs cope
        202 => process::futex(a1),
        61 | 247 => Err(ECHILD),                    // wait4, waitid: no children
        105 | 106 | 113 | 114 | 117 | 119 => Ok(0), // setuid & co.: root may; nothing changes
        60 | 231 => process::exit(a0),              // exit, exit_group

        _ => Err(ENOSYS),
    }
}

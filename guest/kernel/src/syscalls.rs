//! THE system-call table: every Linux x86-64 system call this kernel answers, in one place.
//!
//! `entry.rs` saves the registers into a [`UserFrame`] and calls [`dispatch`]; the matches
//! below map the number in RAX to its handler. A number not listed answers `-ENOSYS` and is
//! counted as unsupported; all others are counted as served (SyscallCounts, read by the VMM
//! after the run). See README.md for each call's semantics and why.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::entry::UserFrame;
use crate::errno::{Errno, SysResult, ECHILD, EINVAL, ENOENT, ENOSYS, ESRCH};
use crate::global::Global;
use crate::{clock, epoll, files, futex, memory, percpu, pipe, process, sched, signal};
use cvm_guest_abi::{SyscallCounts, SYSCALL_SLOTS};

/// Where the counters live (BootInfo.syscall_counts_addr); null counts nothing.
#[link_section = ".data.hot"]
static COUNTS: Global<*mut SyscallCounts> = Global::new(core::ptr::null_mut());

pub fn init(counts_addr: u64) {
    COUNTS.set(counts_addr as *mut SyscallCounts);
}

/// Called from `syscall_common` with the caller's registers: number in RAX, arguments in RDI,
/// RSI, RDX, R10, R8, R9. The result goes to the frame's RAX; a call that waits (futex, sleep,
/// yield, a thread's exit) may instead leave another thread's registers in the frame. On the
/// way back, a pending signal of whichever thread is in the frame now is delivered.
pub extern "C" fn dispatch(frame: &mut UserFrame) {
    if frame.rax == cvm_guest_abi::BOOT_SYSCALL {
        crate::boot_call();
    }
    serve(frame);
    let cpu = percpu::current_cpu();
    sched::ensure_slice(frame, cpu);
    signal::deliver_pending(frame, cpu);
}

fn serve(frame: &mut UserFrame) {
    let number = frame.rax;
    let args = [frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9];
    // Counted before answering: exit and exit_group never come back.
    count(number, Served);
    let result = match number {
        // The calls that may switch threads write RAX themselves (or leave another thread's).
        24 => return sched::yield_now(frame, percpu::current_cpu()),
        35 => match clock::nanosleep_deadline(args[0]) {
            Ok(deadline) => return sched::sleep_until(frame, percpu::current_cpu(), deadline, args[1]),
            Err(errno) => Err(errno),
        },
        // An absolute sleep has nothing left to report when interrupted.
        230 => match clock::clock_nanosleep_deadline(args[0], args[1], args[2]) {
            Ok(deadline) => {
                let remaining = if args[1] & 1 == 0 { args[3] } else { 0 };
                return sched::sleep_until(frame, percpu::current_cpu(), deadline, remaining);
            }
            Err(errno) => Err(errno),
        },
        34 => return sched::pause(frame, percpu::current_cpu()),
        232 | 281 => match epoll::wait(frame, percpu::current_cpu(), args) {
            Some(result) => result,
            None => return,
        },
        130 => return signal::rt_sigsuspend(frame, percpu::current_cpu(), args[0], args[1]),
        202 => match futex::futex(frame, percpu::current_cpu(), args) {
            Some(result) => result,
            None => return,
        },
        56 => process::clone(frame, args),
        15 => return signal::rt_sigreturn(frame, percpu::current_cpu()),
        131 => signal::sigaltstack(frame, args[0], args[1]),
        60 => return process::exit_thread(frame, args[0]),
        _ => answer(number, args),
    };
    if result == Err(ENOSYS) {
        count(number, Unsupported);
    }
    frame.rax = match result {
        Ok(value) => value,
        Err(Errno(errno)) => (-i64::from(errno)) as u64,
    };
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
    // SAFETY: the VMM reserved the table at this kernel-only address for us (BootInfo); every
    // vCPU updates it, so each counter is used as an atomic.
    let (calls, unsupported) = unsafe {
        (AtomicU32::from_ptr(&mut (*counts).calls[slot]), AtomicU32::from_ptr(&mut (*counts).unsupported[slot]))
    };
    match tally {
        Served => {
            calls.fetch_add(1, Ordering::Relaxed);
        }
        Unsupported => {
            calls.fetch_sub(1, Ordering::Relaxed);
            unsupported.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn answer(number: u64, [a0, a1, a2, a3, a4, a5]: [u64; 6]) -> SysResult {
    match number {
        // Files: only the console exists (fds 0, 1, 2).
        0 | 17 if a0 >= pipe::FIRST_FD => pipe::read(a0, a1, a2),
        1 if a0 >= pipe::FIRST_FD => pipe::write(a0, a1, a2),
        3 if a0 >= pipe::FIRST_FD => pipe::close(a0),
        72 if a0 >= pipe::FIRST_FD => pipe::fcntl(a0, a1, a2),
        22 => pipe::pipe2(a0, 0),
        293 => pipe::pipe2(a0, a1),
        213 if (a0 as i32) <= 0 => Err(EINVAL), // epoll_create(size): size must be positive
        213 => epoll::create1(0),
        291 => epoll::create1(a0),
        233 => epoll::ctl(a0, a1, a2, a3),
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
        13 => signal::rt_sigaction(a0, a1, a2, a3),
        14 => signal::rt_sigprocmask(a0, a1, a2, a3),
        127 => signal::rt_sigpending(a0, a1),
        62 => signal::kill(a0, a1, false),
        200 => signal::kill(a0, a1, true),       // tkill
        234 if a0 != process::PID => Err(ESRCH), // tgkill to another process
        234 => signal::kill(a1, a2, true),

        // Time (the sleeps are in `dispatch`: they block).
        96 => clock::gettimeofday(a0, a1),
        201 => clock::time(a0),
        228 => clock::clock_gettime(a0, a1),
        229 => clock::clock_getres(a0, a1),

        // Who am I: the only process, run by root, in its own little machine.
        39 => Ok(process::PID), // getpid
        110 => Ok(0),           // getppid: no parent inside the VM
        186 => process::gettid(),
        102 | 104 | 107 | 108 => Ok(0), // getuid, getgid, geteuid, getegid
        63 => process::uname(a0),
        97 => process::getrlimit(a0, a1),
        302 => process::prlimit64(a0, a1, a2, a3),
        98 => process::getrusage(a1),
        99 => process::sysinfo(a0),
        204 => process::sched_getaffinity(a1, a2),
        203 => Ok(0), // sched_setaffinity: accepted; any vCPU may run any thread
        309 => process::getcpu(a0, a1),
        157 => process::prctl(a0),
        318 => process::getrandom(a0, a1),

        // Threads and process start-up (clone, futex, exit and the sleeps are in `dispatch`).
        158 => process::arch_prctl(a0, a1),
        218 => process::set_tid_address(a0),
        273 => Ok(0),            // set_robust_list: a dying thread's robust futexes are not cleaned up
        334 => Err(ENOSYS),      // rseq: honest "not here"; libcs cope
        435 => Err(ENOSYS),      // clone3: libcs fall back to clone
        61 | 247 => Err(ECHILD), // wait4, waitid: no children
        105 | 106 | 113 | 114 | 117 | 119 => Ok(0), // setuid & co.: root may; nothing changes
        231 => process::exit(a0), // exit_group

        _ => Err(ENOSYS),
    }
}

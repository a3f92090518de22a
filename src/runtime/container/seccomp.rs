//! The container's system-call filter (seccomp), modelled on Docker's default profile: an
//! allowlist of about 300 system calls, everything else answered with EPERM. What a container
//! is refused here is the host kernel's attack surface it does not need: loading kernel modules,
//! `mount`, `bpf`, `perf_event_open`, the keyring calls, `unshare`/`setns` and namespace flags on
//! `clone`, and so on. (The micro-VM's guest kernel simply does not implement most of these:
//! ENOSYS, a different answer to the same question.)
//!
//! The filter is a classic BPF program the kernel runs on every system call of the program:
//! check the architecture, answer a few calls by their arguments, then a binary search over the
//! sorted allowlist (about 10 comparisons per call, not 300).
//!
//! Differences from Docker's profile: only the native x86-64 ABI is allowed (32-bit `int 0x80`
//! and x32 calls get EPERM; Docker allows both), and the calls Docker grants only with
//! capabilities the container does not keep (CAP_SYS_ADMIN, CAP_SYS_PTRACE, ...) are refused.
//! As in Docker's profile since late 2023, io_uring is refused: its operations bypass the
//! filter (an `IORING_OP_SOCKET` opens the AF_VSOCK socket `socket` may not). System calls newer
//! than this list (numbers above [`NEWEST_KNOWN`]) get ENOSYS, as runc answers them, so C
//! libraries fall back to the older call they replace.

/// One BPF instruction (`struct sock_filter`).
pub type Instruction = libc::sock_filter;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGE_K: u16 = 0x35;
const BPF_JGT_K: u16 = 0x25;
const BPF_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;

/// The namespace flags `clone` may not carry (Docker's mask 0x7E020000).
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;
const AF_VSOCK: u32 = 40;
/// `personality` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query.
const PERSONALITIES: [u32; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The newest x86-64 system call this profile was written for (set_mempolicy_home_node).
pub const NEWEST_KNOWN: u32 = 450;

/// `io_pgetevents` (x86-64 number 333), which the libc crate does not name.
const IO_PGETEVENTS: libc::c_long = 333;

/// System calls allowed whatever their arguments (the x86-64 ones of Docker's default profile
/// that need no capability the container lacks).
pub const ALLOWED: &[libc::c_long] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_access,
    libc::SYS_adjtimex,
    libc::SYS_alarm,
    libc::SYS_arch_prctl,
    libc::SYS_bind,
    libc::SYS_brk,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_creat,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_ctl_old,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_wait_old,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fanotify_mark,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fork,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_futimesat,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents,
    libc::SYS_getdents64,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpgrp,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_getrlimit,
    libc::SYS_get_robust_list,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_get_thread_area,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_ioctl,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    IO_PGETEVENTS,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lchown,
    libc::SYS_lgetxattr,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lseek,
    libc::SYS_lsetxattr,
    libc::SYS_lstat,
    libc::SYS_madvise,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_mincore,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mmap,
    libc::SYS_modify_ldt,
    libc::SYS_mprotect,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_munmap,
    libc::SYS_name_to_handle_at,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_pause,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_process_mrelease,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pselect6,
    libc::SYS_ptrace,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readahead,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rmdir,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_select,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_setrlimit,
    libc::SYS_set_robust_list,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_set_thread_area,
    libc::SYS_set_tid_address,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_stat,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_time,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_utime,
    libc::SYS_utimensat,
    libc::SYS_utimes,
    libc::SYS_vfork,
    libc::SYS_vmsplice,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_write,
    libc::SYS_writev,
];

fn statement(code: u16, k: u32) -> Instruction {
    Instruction { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Instruction {
    Instruction { code, jt, jf, k }
}

fn allow() -> Instruction {
    statement(BPF_RET_K, SECCOMP_RET_ALLOW)
}

fn errno(value: i32) -> Instruction {
    statement(BPF_RET_K, SECCOMP_RET_ERRNO | (value as u32 & 0xffff))
}

/// The default profile as a BPF program.
pub fn default_filter() -> Vec<Instruction> {
    let mut program = vec![
        statement(BPF_LD_W_ABS, ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        errno(libc::EPERM),
        statement(BPF_LD_W_ABS, NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        errno(libc::EPERM),
    ];
    // Newer than the profile: "no such call", so a C library falls back (runc does the same).
    program.push(jump(BPF_JGT_K, NEWEST_KNOWN, 0, 1));
    program.push(errno(libc::ENOSYS));
    // clone3 carries its flags in memory a filter cannot read: ENOSYS makes C libraries fall
    // back to clone, whose flags it can (Docker does the same).
    program.push(jump(BPF_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    program.push(errno(libc::ENOSYS));
    // clone without namespace flags; socket, except AF_VSOCK (the host's hypervisor sockets).
    refuse_by_first_argument(&mut program, libc::SYS_clone, BPF_JSET_K, NAMESPACE_FLAGS);
    refuse_by_first_argument(&mut program, libc::SYS_socket, BPF_JEQ_K, AF_VSOCK);
    // personality, only to the values Docker allows.
    let count = PERSONALITIES.len() as u8;
    program.push(jump(BPF_JEQ_K, libc::SYS_personality as u32, 0, count + 3));
    program.push(statement(BPF_LD_W_ABS, ARG0_LOW));
    for (index, value) in PERSONALITIES.iter().enumerate() {
        // Match: jump over the remaining comparisons and the errno to the allow.
        program.push(jump(BPF_JEQ_K, *value, count - index as u8, 0));
    }
    program.push(errno(libc::EPERM));
    program.push(allow());
    // Everything else: search the allowlist's runs of consecutive numbers (the accumulator
    // still holds the number on every path that reaches here).
    search(&allowed_ranges(), &mut program);
    program
}

/// System call `nr` is refused (EPERM) when its first argument passes `test` against `value`
/// (`BPF_JEQ_K`: equals it; `BPF_JSET_K`: shares a bit with it), and allowed otherwise.
fn refuse_by_first_argument(program: &mut Vec<Instruction>, nr: libc::c_long, test: u16, value: u32) {
    program.extend([
        jump(BPF_JEQ_K, nr as u32, 0, 4),
        statement(BPF_LD_W_ABS, ARG0_LOW),
        jump(test, value, 0, 1),
        errno(libc::EPERM),
        allow(),
    ]);
}

/// The allowlist as sorted runs of consecutive numbers (inclusive): about 40 instead of 300
/// entries. The kernel checks and compiles the filter when it is installed, at a cost that
/// grows with its length, so a short filter is a faster container start.
fn allowed_ranges() -> Vec<(u32, u32)> {
    let mut numbers: Vec<u32> = ALLOWED.iter().map(|&nr| nr as u32).collect();
    numbers.sort_unstable();
    numbers.dedup();
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for nr in numbers {
        match ranges.last_mut() {
            Some((_, high)) if *high + 1 == nr => *high = nr,
            _ => ranges.push((nr, nr)),
        }
    }
    ranges
}

/// A binary search over sorted, disjoint `ranges`: every leaf ends in its own `ret`, so no
/// conditional jump reaches further than its 8-bit offset allows; the `ja`s have 32 bits.
fn search(ranges: &[(u32, u32)], program: &mut Vec<Instruction>) {
    const LEAF: usize = 4;
    if ranges.len() <= LEAF {
        for &(low, high) in ranges {
            // nr < low: on to the next range; nr > high: too; otherwise allowed.
            program.push(jump(BPF_JGE_K, low, 0, 2));
            program.push(jump(BPF_JGT_K, high, 1, 0));
            program.push(allow());
        }
        program.push(errno(libc::EPERM));
        return;
    }
    let middle = ranges.len() / 2;
    // nr >= the middle range's start: take the `ja` to the right half; else skip into the left.
    program.push(jump(BPF_JGE_K, ranges[middle].0, 0, 1));
    let ja = program.len();
    program.push(statement(BPF_JMP_JA, 0));
    search(&ranges[..middle], program);
    program[ja].k = (program.len() - ja - 1) as u32;
    search(&ranges[middle..], program);
}

/// Installs `filter` on the calling thread (no_new_privs must be set). Child side: one system
/// call, no allocation. Returns the errno of a failure.
pub fn install(filter: &[Instruction]) -> Result<(), i32> {
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut Instruction };
    // SAFETY: seccomp(SET_MODE_FILTER) reads the program we pass; it lives in the plan.
    let result = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &program as *const libc::sock_fprog)
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's classic-BPF semantics for the instructions the filter uses.
    fn run(program: &[Instruction], arch: u32, nr: u32, arg0: u64) -> u32 {
        let data = |offset: u32| match offset {
            NR => nr,
            ARCH => arch,
            ARG0_LOW => arg0 as u32,
            other => panic!("unexpected load at {other}"),
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        for _ in 0..program.len() + 1 {
            let insn = program[pc];
            let branch = |taken: bool| if taken { insn.jt as usize } else { insn.jf as usize };
            pc += 1 + match insn.code {
                BPF_LD_W_ABS => {
                    acc = data(insn.k);
                    0
                }
                BPF_JMP_JA => insn.k as usize,
                BPF_JEQ_K => branch(acc == insn.k),
                BPF_JGE_K => branch(acc >= insn.k),
                BPF_JGT_K => branch(acc > insn.k),
                BPF_JSET_K => branch(acc & insn.k != 0),
                BPF_RET_K => return insn.k,
                other => panic!("unexpected opcode {other:#x}"),
            };
        }
        panic!("the program did not return");
    }

    const EPERM: u32 = SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn allows_exactly_the_allowlist() {
        let filter = default_filter();
        assert!(filter.len() < 250, "{} instructions", filter.len());
        let special = [libc::SYS_clone, libc::SYS_clone3, libc::SYS_socket, libc::SYS_personality];
        for nr in 0..600u32 {
            if special.contains(&(nr as libc::c_long)) {
                continue;
            }
            let expected = if nr > NEWEST_KNOWN {
                SECCOMP_RET_ERRNO | libc::ENOSYS as u32
            } else if ALLOWED.contains(&(nr as libc::c_long)) {
                SECCOMP_RET_ALLOW
            } else {
                EPERM
            };
            assert_eq!(run(&filter, AUDIT_ARCH_X86_64, nr, 0), expected, "system call {nr}");
        }
    }

    #[test]
    fn refuses_what_docker_refuses() {
        let filter = default_filter();
        for nr in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_init_module,
            libc::SYS_kexec_load,
            libc::SYS_reboot,
            libc::SYS_userfaultfd,
            libc::SYS_open_by_handle_at,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
        ] {
            assert_eq!(run(&filter, AUDIT_ARCH_X86_64, nr as u32, 0), EPERM, "system call {nr}");
        }
    }

    #[test]
    fn arguments_decide_clone_socket_and_personality() {
        let filter = default_filter();
        let x86 = AUDIT_ARCH_X86_64;
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(run(&filter, x86, libc::SYS_clone as u32, thread), SECCOMP_RET_ALLOW);
        assert_eq!(run(&filter, x86, libc::SYS_clone as u32, libc::CLONE_NEWUSER as u64), EPERM);
        assert_eq!(run(&filter, x86, libc::SYS_clone3 as u32, 0), SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(run(&filter, x86, libc::SYS_socket as u32, libc::AF_INET as u64), SECCOMP_RET_ALLOW);
        assert_eq!(run(&filter, x86, libc::SYS_socket as u32, 40), EPERM);
        for value in PERSONALITIES {
            assert_eq!(run(&filter, x86, libc::SYS_personality as u32, value as u64), SECCOMP_RET_ALLOW);
        }
        assert_eq!(run(&filter, x86, libc::SYS_personality as u32, 0x0040_0000), EPERM);
    }

    #[test]
    fn other_abis_are_refused() {
        let filter = default_filter();
        assert_eq!(run(&filter, 0x4000_0003, libc::SYS_write as u32, 0), EPERM, "i386");
        assert_eq!(run(&filter, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | libc::SYS_write as u32, 0), EPERM, "x32");
    }
}

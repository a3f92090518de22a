//! The container's first process, between `clone3` and `execve`: it waits for cvm to finish
//! the host-side set-up (user id maps, cgroup), then works through the [`InitPlan`] cvm built
//! for it (host name, loopback, mounts, `pivot_root`, capabilities), reports "ready" and
//! becomes the program.
//!
//! This code runs in a copy of cvm that may have been multi-threaded, so it only makes system
//! calls: no allocation, no locks, no formatting. Everything it needs was prepared beforehand.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use super::capabilities;
use super::namespaces;
use super::sync::{self, RootfsKind};
use crate::runtime::child::{self, errno};

/// One thing the first process does, with its arguments ready as C strings.
#[derive(Debug)]
pub enum Step {
    /// Wait until cvm says the next host-side part is done (ids mapped, cgroup joined). EOF
    /// means cvm gave up: the process ends quietly.
    WaitForParent,
    /// Join the run's cgroup by writing "0" (this process) to each file cvm opened for it
    /// (v1 `tasks` files; `cgroup.procs` on v2 kernels without CLONE_INTO_CGROUP).
    JoinCgroup {
        files: Vec<RawFd>,
    },
    /// Enter a new cgroup namespace: the cgroup cvm just moved us into becomes our root.
    EnterCgroupNamespace,
    /// A session of our own, without a controlling terminal: the program cannot open the
    /// caller's terminal (`/dev/tty`) to read it or type into it (TIOCSTI), and the terminal's
    /// Ctrl-C reaches cvm, not the program (cvm then stops the container).
    NewSession,
    /// A new, empty session keyring instead of the caller's (the kernel keyring is not
    /// namespaced: sharing it would share the caller's keys).
    NewSessionKeyring,
    /// `RLIMIT_NOFILE` as runc sets it.
    LimitOpenFiles {
        soft: u64,
        hard: u64,
    },
    /// The system-call filter (last step: everything after it must be allowed by it).
    Seccomp {
        filter: Vec<libc::sock_filter>,
    },
    SetHostname(CString),
    LoopbackUp,
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// Mount overlayfs (when `attempt`); if that fails, run `fallback` (a copy) instead, or
    /// fail when there is none (a kept writable layer needs overlayfs).
    Overlay {
        target: CString,
        data: CString,
        attempt: bool,
        fallback: Option<Vec<Step>>,
    },
    MakeDir {
        path: CString,
        mode: libc::mode_t,
    },
    /// An empty file to bind-mount a device onto (device nodes cannot be created in a user
    /// namespace, and need not be: binding the host's node is enough).
    CreateFile {
        path: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    CopyFile {
        from: CString,
        to: CString,
        mode: libc::mode_t,
    },
    /// A `--volume`: below `root`, create each missing folder of `create` ((parent, name),
    /// parents relative to `root`), then bind-mount `host` onto `target` and remount it with
    /// `flags`. Every path below `root` is resolved with `RESOLVE_IN_ROOT`, as if `root` were
    /// `/`, so no symbolic link of the image can lead the folder or the mount onto the host.
    Volume {
        root: CString,
        host: CString,
        create: Vec<(CString, CString)>,
        target: CString,
        flags: libc::c_ulong,
    },
    /// Make `new_root` the root directory; the old root ends up stacked on top of it.
    PivotRoot {
        new_root: CString,
    },
    /// Unmount (lazily, with everything below it) the old root left by [`Step::PivotRoot`]:
    /// after this no host file can be reached.
    DetachOldRoot,
    DropCapabilities {
        keep: u64,
        last_capability: u32,
    },
    NoNewPrivileges,
}

/// A step and what it does, in words (for error messages and `--explain`).
#[derive(Debug)]
pub struct Planned {
    pub step: Step,
    pub what: String,
}

impl Planned {
    pub fn new(step: Step, what: impl Into<String>) -> Planned {
        Planned { step, what: what.into() }
    }
}

/// Everything the first process does, and the program it becomes.
#[derive(Debug)]
pub struct InitPlan {
    pub steps: Vec<Planned>,
    program: CString,
    /// Owned strings behind `argv`/`envp`: the pointers below point into them.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl InitPlan {
    pub fn new(steps: Vec<Planned>, program: &str, args: &[String], env: &[String]) -> anyhow::Result<InitPlan> {
        let cstring = |s: &str| CString::new(s).map_err(|_| anyhow::anyhow!("argument contains a NUL byte: {s:?}"));
        let program_c = cstring(program)?;
        let mut strings = Vec::new();
        let mut argv = Vec::new();
        let mut envp = Vec::new();
        for arg in std::iter::once(program).chain(args.iter().map(String::as_str)) {
            let c = cstring(arg)?;
            argv.push(c.as_ptr());
            strings.push(c);
        }
        for var in env {
            let c = cstring(var)?;
            envp.push(c.as_ptr());
            strings.push(c);
        }
        argv.push(std::ptr::null());
        envp.push(std::ptr::null());
        // Moving a CString moves only its pointer; the bytes argv/envp point to stay put.
        Ok(InitPlan { steps, program: program_c, _strings: strings, argv, envp })
    }

    /// The description of step `index` as reported by the child ([`EXEC_STEP`] for execve).
    pub fn describe(&self, index: u16) -> String {
        if index == sync::EXEC_STEP {
            format!("starting the program {}", self.program.to_string_lossy())
        } else if index == sync::STDIO_STEP {
            "connecting the program's stdin, stdout and stderr".to_string()
        } else if index == sync::DESCRIPTORS_STEP {
            "closing the descriptors the program must not inherit".to_string()
        } else {
            self.steps.get(index as usize).map_or_else(|| format!("step {index}"), |p| p.what.clone())
        }
    }
}

/// The descriptors the first process uses.
#[derive(Clone, Copy, Debug)]
pub struct InitFds {
    /// cvm writes one byte here for each [`Step::WaitForParent`] (EOF: cvm gave up).
    pub go: RawFd,
    /// cvm's end of the go pipe, closed here so that cvm's death reads as a hang-up.
    pub go_other_end: RawFd,
    /// Where "ready" or a failure is reported; closed by a successful execve.
    pub report: RawFd,
    pub report_other_end: RawFd,
    /// The program's stdin (/dev/null), stdout and stderr (the output pipes).
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// cvm's ends of the output pipes.
    pub stdout_other_end: RawFd,
    pub stderr_other_end: RawFd,
}

/// Runs in the cloned child; never returns.
pub fn run(plan: &InitPlan, fds: InitFds) -> ! {
    // SAFETY: plain system calls on descriptors prepared by the parent before clone; nothing
    // here allocates or takes a lock.
    unsafe {
        // If cvm dies, so does the container (and with pid 1, everything in it).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        libc::close(fds.go_other_end);
        libc::close(fds.report_other_end);
        libc::close(fds.stdout_other_end);
        libc::close(fds.stderr_other_end);
        // cvm keeps its end of the go pipe open for the whole run: a hang-up here means cvm
        // died before PR_SET_PDEATHSIG was in place.
        let mut go = libc::pollfd { fd: fds.go, events: libc::POLLIN, revents: 0 };
        if libc::poll(&mut go, 1, 0) == 1 && go.revents & libc::POLLHUP != 0 && go.revents & libc::POLLIN == 0 {
            libc::_exit(1);
        }
    }
    let mut rootfs = RootfsKind::Overlay;
    // How long each step took: on the stack, as nothing may be allocated here.
    let mut step_ns = [0u64; sync::MAX_TIMED_STEPS];
    for (index, planned) in plan.steps.iter().enumerate() {
        let started = monotonic_ns();
        if matches!(planned.step, Step::WaitForParent) {
            if !wait_for_go(fds.go) {
                // SAFETY: ending the process without cvm's destructors.
                unsafe { libc::_exit(1) };
            }
        } else if let Err(errno) = perform(&planned.step, &mut rootfs) {
            fail(fds.report, index as u16, errno);
        }
        if let Some(slot) = step_ns.get_mut(index) {
            *slot = monotonic_ns().saturating_sub(started);
        }
    }
    let timed = plan.steps.len().min(sync::MAX_TIMED_STEPS);
    // SAFETY: dup2 onto the standard descriptors from descriptors cvm prepared.
    let stdio =
        unsafe { libc::dup2(fds.stdin, 0) >= 0 && libc::dup2(fds.stdout, 1) >= 0 && libc::dup2(fds.stderr, 2) >= 0 };
    if !stdio {
        fail(fds.report, sync::STDIO_STEP, errno());
    }
    // Nothing but 0, 1 and 2 survives execve (the report pipe is already close-on-exec).
    if let Err(errno) = child::close_inherited_descriptors() {
        fail(fds.report, sync::DESCRIPTORS_STEP, errno);
    }
    // Rust ignores SIGPIPE in cvm; the program gets default actions and no blocked signals.
    child::reset_signals();
    sync::send_ready(fds.report, rootfs, monotonic_ns(), &step_ns[..timed]);
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings in the plan.
    unsafe { libc::execve(plan.program.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
    fail(fds.report, sync::EXEC_STEP, errno())
}

fn wait_for_go(fd: RawFd) -> bool {
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            return true;
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return false;
    }
}

fn fail(report: RawFd, step: u16, errno: i32) -> ! {
    sync::send_failed(report, step, errno);
    // SAFETY: _exit ends the process without running cvm's destructors (they belong to cvm).
    unsafe { libc::_exit(127) }
}

fn perform(step: &Step, rootfs: &mut RootfsKind) -> Result<(), i32> {
    // SAFETY: each arm is one system call with C strings that live in the plan.
    unsafe {
        match step {
            Step::WaitForParent => Ok(()),
            Step::JoinCgroup { files } => {
                for fd in files {
                    if libc::write(*fd, c"0".as_ptr().cast(), 1) != 1 {
                        return Err(errno());
                    }
                }
                Ok(())
            }
            Step::EnterCgroupNamespace => check(libc::unshare(libc::CLONE_NEWCGROUP)),
            Step::NewSession => check(libc::setsid()),
            Step::NewSessionKeyring => {
                const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
                let serial =
                    libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, std::ptr::null::<libc::c_char>());
                if serial < 0 {
                    Err(errno())
                } else {
                    Ok(())
                }
            }
            Step::LimitOpenFiles { soft, hard } => {
                let limit = libc::rlimit { rlim_cur: *soft, rlim_max: *hard };
                check(libc::setrlimit(libc::RLIMIT_NOFILE, &limit))
            }
            Step::Seccomp { filter } => super::seccomp::install(filter),
            Step::SetHostname(name) => check(libc::sethostname(name.as_ptr(), name.as_bytes().len())),
            Step::LoopbackUp => namespaces::loopback_up(),
            Step::Mount { source, target, fstype, flags, data } => check(libc::mount(
                opt_ptr(source),
                target.as_ptr(),
                opt_ptr(fstype),
                *flags,
                data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
            )),
            Step::Overlay { target, data, attempt, fallback } => {
                let mounted = *attempt
                    && libc::mount(c"overlay".as_ptr(), target.as_ptr(), c"overlay".as_ptr(), 0, data.as_ptr().cast())
                        == 0;
                if mounted {
                    *rootfs = RootfsKind::Overlay;
                    return Ok(());
                }
                let Some(fallback) = fallback else {
                    return Err(if *attempt { errno() } else { libc::ENOTSUP });
                };
                *rootfs = RootfsKind::Copy;
                for step in fallback {
                    perform(step, rootfs)?;
                }
                Ok(())
            }
            Step::MakeDir { path, mode } => match libc::mkdir(path.as_ptr(), *mode) {
                0 => Ok(()),
                _ if errno() == libc::EEXIST => Ok(()),
                _ => Err(errno()),
            },
            Step::CreateFile { path } => {
                let fd = libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                if fd < 0 {
                    return Err(errno());
                }
                libc::close(fd);
                Ok(())
            }
            Step::Symlink { target, link } => check(libc::symlink(target.as_ptr(), link.as_ptr())),
            Step::CopyFile { from, to, mode } => copy_file(from, to, *mode),
            Step::Volume { root, host, create, target, flags } => {
                super::volumes::mount_in_first_process(root, host, create, target, *flags)
            }
            Step::PivotRoot { new_root } => pivot_root(new_root),
            Step::DetachOldRoot => {
                check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
                check(libc::chdir(c"/".as_ptr()))
            }
            Step::DropCapabilities { keep, last_capability } => capabilities::reduce_to(*keep, *last_capability),
            Step::NoNewPrivileges => check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
        }
    }
}

/// pivot_root(".", ".") stacks the old root on top of the new one (no directory for it is
/// needed); [`Step::DetachOldRoot`] then unmounts it.
fn pivot_root(new_root: &CStr) -> Result<(), i32> {
    // SAFETY: chdir and pivot_root with NUL-terminated paths.
    unsafe {
        check(libc::chdir(new_root.as_ptr()))?;
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)
    }
}

fn copy_file(from: &CStr, to: &CStr, mode: libc::mode_t) -> Result<(), i32> {
    // SAFETY: open with a NUL-terminated path.
    let source = unsafe { libc::open(from.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if source < 0 {
        return Err(errno());
    }
    let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC;
    // SAFETY: as above.
    let target = unsafe { libc::open(to.as_ptr(), flags, mode) };
    let mut result = if target < 0 { Err(errno()) } else { Ok(()) };
    while result.is_ok() {
        // SAFETY: sendfile between two descriptors opened here, no user buffer.
        let n = unsafe { libc::sendfile(target, source, std::ptr::null_mut(), 1 << 30) };
        if n == 0 {
            break;
        }
        if n < 0 && errno() != libc::EINTR {
            result = Err(errno());
        }
    }
    // SAFETY: closing the descriptors opened here (a failed open's -1 only gives EBADF).
    unsafe {
        libc::close(source);
        libc::close(target);
    }
    result
}

/// CLOCK_MONOTONIC in ns (a vDSO call: no allocation, no lock).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn opt_ptr(value: &Option<CString>) -> *const libc::c_char {
    value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr())
}

fn check(result: libc::c_int) -> Result<(), i32> {
    if result < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

//! Starting the process runtime's program the way `posix_spawn` does (a `clone` that shares
//! cvm's memory and suspends cvm until `execve`, so nothing is copied), plus what posix_spawn
//! cannot do: a parent-death signal, so the program does not outlive a killed cvm, and every
//! inherited descriptor above 2 closed.
//!
//! The child runs on a stack of its own inside cvm's address space: until `execve` it may only
//! make system calls, and it reports a failed `execve` through memory it shares with cvm.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{bail, Context, Result};

use super::child;

/// The three standard descriptors the program starts with.
#[derive(Clone, Copy, Debug)]
pub struct Stdio {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
}

/// A started program: its pid (also its process group) and a pidfd.
#[derive(Debug)]
pub struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

/// Everything the child reads, prepared before `clone` (it may not allocate).
struct ChildArgs {
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdio: Stdio,
    parent: libc::pid_t,
    death_signal: libc::c_int,
    /// The step that failed, 0 when `execve` succeeded (written by the child).
    failed_step: AtomicI32,
    errno: AtomicI32,
}

const STEP_GROUP: i32 = 1;
const STEP_PARENT: i32 = 2;
const STEP_STDIO: i32 = 3;
const STEP_DESCRIPTORS: i32 = 4;
const STEP_EXEC: i32 = 5;

/// Stack for the child until `execve`: it only makes system calls.
const CHILD_STACK_BYTES: usize = 64 << 10;

/// Starts `program` with `args` (argv[1..]) and cvm's environment, in a process group of its
/// own, with `stdio` as its descriptors 0-2 and nothing else open; it is killed if cvm dies.
pub fn spawn(program: &Path, args: &[String], stdio: Stdio) -> Result<Spawned> {
    spawn_with_death_signal(program, args, stdio, libc::SIGKILL)
}

/// Like [`spawn`], but the program gets `death_signal` when cvm dies: SIGTERM lets another
/// cvm (a density instance) tear down what it started.
pub fn spawn_with_death_signal(
    program: &Path,
    args: &[String],
    stdio: Stdio,
    death_signal: libc::c_int,
) -> Result<Spawned> {
    let cstring =
        |bytes: &[u8]| CString::new(bytes).with_context(|| format!("argument contains a NUL byte: {bytes:?}"));
    let program_c = cstring(program.as_os_str().as_bytes())?;
    let mut strings = vec![program_c.clone()];
    for arg in args {
        strings.push(cstring(arg.as_bytes())?);
    }
    let argc = strings.len();
    for (key, value) in std::env::vars_os() {
        let mut pair = key.as_bytes().to_vec();
        pair.push(b'=');
        pair.extend_from_slice(value.as_bytes());
        strings.push(cstring(&pair)?);
    }
    let pointers =
        |list: &[CString]| list.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let args = ChildArgs {
        program: program_c,
        argv: pointers(&strings[..argc]),
        envp: pointers(&strings[argc..]),
        stdio,
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        death_signal,
        failed_step: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    let (pid, pidfd) = clone_vfork(&args, &mut stack)?;
    drop(stack);
    let step = args.failed_step.load(Ordering::SeqCst);
    if step != 0 {
        let _ = super::supervise::reap(pid);
        let err = std::io::Error::from_raw_os_error(args.errno.load(Ordering::SeqCst));
        let what = match step {
            STEP_GROUP => "giving it a process group of its own",
            STEP_PARENT => "tying its life to cvm's",
            STEP_STDIO => "setting up its stdin, stdout and stderr",
            STEP_DESCRIPTORS => "closing the descriptors it must not inherit",
            _ => "executing it",
        };
        bail!("starting {} failed while {what}: {err}", program.display());
    }
    drop(strings);
    Ok(Spawned { pid, pidfd })
}

/// `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`: returns once the child has called `execve`
/// (or exited). Signals are blocked around the call so no handler of cvm's runs in the child.
fn clone_vfork(args: &ChildArgs, stack: &mut [u8]) -> Result<(libc::pid_t, OwnedFd)> {
    // SAFETY: sigfillset/sigprocmask on sets we own.
    let saved = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut saved: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
        saved
    };
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let mut pidfd: libc::c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: the child runs `child_main` on `stack` (ours, alive until clone returns, which
    // CLONE_VFORK delays until the child has exec'd or exited); `args` outlives the call too.
    // With CLONE_PIDFD the kernel stores the pidfd through the parent_tid pointer.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            flags,
            args as *const ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    let clone_error = std::io::Error::last_os_error();
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(clone_error).context("starting the program (clone)");
    }
    // SAFETY: CLONE_PIDFD stored a new descriptor that nobody else owns.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The child, until `execve`: system calls only.
extern "C" fn child_main(raw: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `raw` is the `ChildArgs` the parent passed; it stays alive and unchanged until
    // this child has exec'd or exited (CLONE_VFORK).
    let args = unsafe { &*(raw as *const ChildArgs) };
    let fail = |step: i32| -> libc::c_int {
        args.errno.store(child::errno(), Ordering::SeqCst);
        args.failed_step.store(step, Ordering::SeqCst);
        // SAFETY: _exit ends the child without running anything of cvm's.
        unsafe { libc::_exit(127) }
    };
    child::reset_signals();
    // SAFETY: setpgid on ourselves.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return fail(STEP_GROUP);
    }
    if !child::die_with_parent(args.parent, args.death_signal) {
        return fail(STEP_PARENT);
    }
    let Stdio { stdin, stdout, stderr } = args.stdio;
    // SAFETY: dup2 onto the standard descriptors; the sources are open in cvm.
    if unsafe { libc::dup2(stdin, 0) < 0 || libc::dup2(stdout, 1) < 0 || libc::dup2(stderr, 2) < 0 } {
        return fail(STEP_STDIO);
    }
    if child::close_inherited_descriptors().is_err() {
        return fail(STEP_DESCRIPTORS);
    }
    // SAFETY: NULL-terminated arrays of C strings that live in `args`.
    unsafe { libc::execve(args.program.as_ptr(), args.argv.as_ptr(), args.envp.as_ptr()) };
    fail(STEP_EXEC)
}

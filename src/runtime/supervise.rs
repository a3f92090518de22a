//! Watching a started program until it ends: its output (timestamped at the first byte,
//! optionally echoed), its exit status and resource usage (`wait4`), the `--timeout` deadline
//! and cvm's own interruption. Shared by the process and container runtimes.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::interrupt;
use crate::own_usage::timeval_ns;
use crate::record::Outcome;

/// How a supervised child ended.
#[derive(Debug)]
pub struct Supervised {
    /// Exit status when it exited.
    pub exit_status: Option<i32>,
    /// Signal when it was killed by one.
    pub signal: Option<i32>,
    pub rusage: libc::rusage,
    pub first_output: Option<Instant>,
    pub exited_at: Instant,
    pub output: Vec<u8>,
    pub timed_out: bool,
    /// Set when cvm was asked to stop (the signal number).
    pub interrupted: Option<i32>,
}

impl Supervised {
    /// 128 + signal for a killed child, like a shell reports it.
    pub fn exit_code(&self) -> i32 {
        match (self.exit_status, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => -1,
        }
    }

    pub fn user_ns(&self) -> u64 {
        timeval_ns(&self.rusage.ru_utime)
    }

    pub fn system_ns(&self) -> u64 {
        timeval_ns(&self.rusage.ru_stime)
    }

    /// Peak resident set size of the child (ru_maxrss is in KiB).
    pub fn peak_rss_bytes(&self) -> u64 {
        (self.rusage.ru_maxrss.max(0) as u64) * 1024
    }

    /// The record outcome (the container runtime puts an OOM kill above it).
    pub fn outcome(&self) -> Outcome {
        if self.interrupted.is_some() {
            Outcome::Interrupted
        } else if self.timed_out {
            Outcome::TimedOut
        } else if self.signal.is_some() {
            Outcome::Signaled
        } else {
            Outcome::Exited
        }
    }

    /// Why the run did not end normally, in words; None when the program exited.
    pub fn reason(&self, timeout: Duration) -> Option<String> {
        if let Some(signal) = self.interrupted {
            Some(format!("cvm was interrupted by signal {signal} and stopped the program"))
        } else if self.timed_out {
            Some(format!("the program was still running after the {} s timeout and was killed", timeout.as_secs_f64()))
        } else {
            self.signal.map(|signal| format!("the program was killed by signal {signal} ({})", signal_name(signal)))
        }
    }

    /// "exit status 0", "killed by SIGSEGV".
    pub fn describe_end(&self) -> String {
        match (self.exit_status, self.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by {}", signal_name(signal)),
            _ => "unknown status".into(),
        }
    }
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        _ => "signal",
    }
}

/// A close-on-exec pipe: (read end, write end). For the program's stdout cvm keeps the read end.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a pipe");
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pidfd for `pid`, readable once the process has exited.
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits for child `pid` (a direct child of cvm), collecting `output` until it ends.
/// Kills it (SIGKILL) at `deadline` or when cvm is interrupted; always reaps it.
pub fn supervise(pid: libc::pid_t, output: OwnedFd, deadline: Instant, echo: bool) -> Result<Supervised> {
    let pidfd = pidfd_open(pid)?;
    set_nonblocking(&output)?;
    let mut output = Some(output);
    let mut collected = Vec::new();
    let mut first_output = None;
    let mut timed_out = false;
    let mut interrupted = None;
    let mut buffer = [0u8; 16 * 1024];
    let mut stdout = std::io::stdout();

    loop {
        if let Some(signal) = interrupt::requested() {
            interrupted = Some(signal);
            kill(pid);
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            kill(pid);
            break;
        }
        // Wake at least every 100 ms: a signal between the check above and poll is not lost.
        let wait = (deadline - now).min(Duration::from_millis(100));
        let mut fds = vec![libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        if let Some(out) = &output {
            fds.push(libc::pollfd { fd: out.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait.as_millis() as i32) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            kill(pid);
            reap(pid)?;
            return Err(err).context("waiting for the program");
        }
        if fds.len() > 1 && fds[1].revents != 0 {
            let open = drain(
                output.as_ref().expect("polled"),
                &mut buffer,
                &mut collected,
                &mut first_output,
                echo.then_some(&mut stdout),
            )?;
            if !open {
                output = None;
            }
        }
        if fds[0].revents != 0 {
            break;
        }
    }
    let (status, rusage) = reap(pid)?;
    let exited_at = Instant::now();
    // What the program wrote just before it ended is still in the pipe. Descendants that
    // survive it do not hold us: read only what is there now.
    if let Some(out) = &output {
        drain(out, &mut buffer, &mut collected, &mut first_output, echo.then_some(&mut stdout))?;
    }
    if echo {
        let _ = stdout.flush();
    }
    let (exit_status, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Ok(Supervised { exit_status, signal, rusage, first_output, exited_at, output: collected, timed_out, interrupted })
}

/// Reads everything available now; false once the write end is closed.
fn drain(
    fd: &OwnedFd,
    buffer: &mut [u8],
    collected: &mut Vec<u8>,
    first_output: &mut Option<Instant>,
    mut echo: Option<&mut std::io::Stdout>,
) -> Result<bool> {
    loop {
        // SAFETY: reading into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd.as_fd().as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
        match n {
            0 => return Ok(false),
            n if n > 0 => {
                if first_output.is_none() {
                    *first_output = Some(Instant::now());
                }
                let chunk = &buffer[..n as usize];
                collected.extend_from_slice(chunk);
                if let Some(out) = echo.as_deref_mut() {
                    let _ = out.write_all(chunk);
                    let _ = out.flush();
                }
            }
            _ => {
                let err = std::io::Error::last_os_error();
                match err.kind() {
                    std::io::ErrorKind::WouldBlock => return Ok(true),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => return Err(err).context("reading the program's output"),
                }
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error()).context("making the output pipe non-blocking");
    }
    Ok(())
}

fn kill(pid: libc::pid_t) {
    // SAFETY: kill has no memory-safety preconditions; the child is ours and not yet reaped,
    // so the pid cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// wait4 for `pid`, retrying on EINTR: (status, rusage).
pub fn reap(pid: libc::pid_t) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to our locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r == pid {
            return Ok((status, rusage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("waiting for process {pid}: {err}");
        }
    }
}

//! Watching a started program until it ends: its output (timestamped at the first byte,
//! optionally echoed), its exit status and resource usage (`wait4`), the `--timeout` deadline
//! and cvm's own interruption. Shared by the process and container runtimes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::capture::{BoundedCapture, Captured};
use super::relay::{self, Relay};
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
    pub stdout: Captured,
    pub stderr: Captured,
    pub timed_out: bool,
    /// Set when cvm was asked to stop (the signal number).
    pub interrupted: Option<i32>,
}

impl Supervised {
    /// 128 + signal for a killed child, like a shell reports it; when cvm was interrupted,
    /// 128 + the signal that interrupted it, in every runtime.
    pub fn exit_code(&self) -> i32 {
        if let Some(signal) = self.interrupted {
            return crate::interrupt::exit_status(signal);
        }
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
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGALRM => "SIGALRM",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
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

/// Who is killed when the run is stopped (timeout, Ctrl-C) and when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillScope {
    /// The program's whole process group (the process runtime): a shell's background children
    /// go with it. Descendants that left the group (a new session) can survive; see
    /// docs/architecture.md.
    ProcessGroup,
    /// Only the direct child: pid 1 of a pid namespace, whose death ends everything inside.
    Process,
    /// A child that cleans up after itself (another cvm, which has cgroups and mounts to
    /// remove): SIGTERM first, then the whole process group SIGKILLed after `grace`.
    Politely { grace: Duration },
}

/// The most output read between two looks at the deadline.
const READ_SLICE: usize = 1 << 20;
/// The most output read per stream after the program ended (what is still in the pipe).
const LAST_READ: usize = 1 << 20;

/// A started child to watch: a direct child of cvm, with its output pipes.
pub struct Watched<'a> {
    pub pid: libc::pid_t,
    pub pidfd: &'a OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub kill: KillScope,
    pub deadline: Instant,
    /// Copy the output to cvm's stdout and stderr as it arrives.
    pub echo: bool,
}

/// One output pipe being read.
struct Stream {
    fd: Option<OwnedFd>,
    capture: BoundedCapture,
    relay: &'static Relay,
}

impl Stream {
    fn new(fd: OwnedFd, relay: &'static Relay) -> Result<Stream> {
        set_nonblocking(&fd)?;
        Ok(Stream { fd: Some(fd), capture: BoundedCapture::new(), relay })
    }

    /// How much may be read now: with echo, no more than the relay can take, so a stalled
    /// reader of cvm's output slows the program down instead of growing cvm; and never more
    /// than [`READ_SLICE`] at once, so writers that keep the pipe full cannot keep cvm from
    /// looking at the clock.
    fn budget(&self, echo: bool) -> usize {
        if echo {
            self.relay.room().min(READ_SLICE)
        } else {
            READ_SLICE
        }
    }
}

/// Waits for the child until it ends, collecting its output (bounded, see [`BoundedCapture`]).
/// Kills it (SIGKILL, see [`KillScope`]) at the deadline or when cvm is interrupted, and
/// always reaps it. A `PTRACE_TRACEME` by the program makes cvm its tracer: each time it
/// stops for its tracer, cvm lets it go again, so the run cannot hang on that.
pub fn supervise(child: Watched) -> Result<Supervised> {
    let Watched { pid, pidfd, stdout, stderr, kill, deadline, echo } = child;
    let mut streams = [Stream::new(stdout, relay::stdout())?, Stream::new(stderr, relay::stderr())?];
    let mut first_output = None;
    let mut timed_out = false;
    let mut interrupted = None;
    let mut buffer = super::lazy_buffer::LazyBuffer::new(64 * 1024)?;
    crate::own_usage::release_setup_memory();

    loop {
        if let Some(signal) = interrupt::requested() {
            interrupted = Some(signal);
            stop(pid, pidfd, kill);
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            stop(pid, pidfd, kill);
            break;
        }
        release_if_traced(pid);
        let mut fds = vec![libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        let mut polled = Vec::new();
        let mut paused = false;
        for (index, stream) in streams.iter().enumerate() {
            if let Some(fd) = &stream.fd {
                if stream.budget(echo) == 0 {
                    paused = true;
                    continue;
                }
                fds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                polled.push(index);
            }
        }
        // A stopping signal interrupts poll (EINTR), so it is seen at once; waking every second
        // anyway bounds the rare case of one landing between the checks above and poll. An
        // idle program's supervisor then costs the host nearly nothing (10 ms while a stream
        // waits for its relay).
        let cap = if paused { Duration::from_millis(10) } else { Duration::from_secs(1) };
        let wait = (deadline - now).min(cap).as_millis().max(1) as i32;
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            stop(pid, pidfd, kill);
            reap(pid)?;
            return Err(err).context("waiting for the program");
        }
        for (slot, &index) in polled.iter().enumerate() {
            if fds[slot + 1].revents != 0 {
                let stream = &mut streams[index];
                let budget = stream.budget(echo);
                if !drain(stream, &mut buffer, budget, &mut first_output, index == 0, echo)? {
                    stream.fd = None;
                }
            }
        }
        if fds[0].revents != 0 {
            break;
        }
    }
    if kill == KillScope::ProcessGroup {
        // Background children of the program die with the run, before anything more is read
        // (they could keep the pipes full for ever). The leader is not reaped yet, so its pid,
        // and with it the group's id, cannot belong to anyone else.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let (status, rusage) = reap(pid)?;
    let exited_at = Instant::now();
    // What the program wrote just before it ended is still in the pipes: read what is there
    // now, bounded (a descendant that left the group could still be writing).
    for (index, stream) in streams.iter_mut().enumerate() {
        if stream.fd.is_some() {
            drain(stream, &mut buffer, LAST_READ, &mut first_output, index == 0, echo)?;
        }
    }
    let (exit_status, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    let [out, err] = streams;
    Ok(Supervised {
        exit_status,
        signal,
        rusage,
        first_output,
        exited_at,
        stdout: out.capture.finish(),
        stderr: err.capture.finish(),
        timed_out,
        interrupted,
    })
}

/// Reads what is available now, at most `budget` bytes; false once the write end is closed.
/// Only stdout's first byte is the run's first output.
fn drain(
    stream: &mut Stream,
    buffer: &mut [u8],
    mut budget: usize,
    first_output: &mut Option<Instant>,
    is_stdout: bool,
    echo: bool,
) -> Result<bool> {
    let fd = stream.fd.as_ref().expect("an open stream").as_raw_fd();
    while budget > 0 {
        let want = buffer.len().min(budget);
        // SAFETY: reading into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), want) };
        match n {
            0 => return Ok(false),
            n if n > 0 => {
                let chunk = &buffer[..n as usize];
                if is_stdout && first_output.is_none() {
                    *first_output = Some(Instant::now());
                }
                stream.capture.push(chunk);
                if echo {
                    stream.relay.push(chunk);
                }
                budget -= chunk.len();
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
    Ok(true)
}

/// SIGKILL to the child (and its process group).
fn stop(pid: libc::pid_t, pidfd: &OwnedFd, kill: KillScope) {
    if let KillScope::Politely { grace } = kill {
        let mut ready = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: signalling through our own pidfd; poll on one pollfd we own.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                libc::SIGTERM,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && ready.revents == 0 {
                let wait = (deadline - Instant::now()).as_millis().max(1) as i32;
                if libc::poll(&mut ready, 1, wait) < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                {
                    break;
                }
            }
        }
    }
    // SAFETY: signalling through our own pidfd cannot reach a reused pid; the group kill is
    // safe while the leader is unreaped (its pid, and so the group id, cannot be reused).
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
        if matches!(kill, KillScope::ProcessGroup | KillScope::Politely { .. }) {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// A program that called `PTRACE_TRACEME` stops whenever it gets a signal or execs, waiting
/// for its tracer, which is cvm. cvm is no debugger: it detaches, passing the signal on,
/// except the SIGTRAP of an exec (it only exists for debuggers) and stop signals (a traced
/// pid 1 would otherwise stop, which an untraced one cannot).
fn release_if_traced(pid: libc::pid_t) {
    // SAFETY: waitid fills the siginfo we own; WNOWAIT leaves the child's state as it is.
    let info = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        if libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT) != 0
        {
            return;
        }
        info
    };
    // SAFETY: si_pid and si_status are valid for the CLD_* codes waitid reports.
    let (reported, status) = unsafe { (info.si_pid(), info.si_status()) };
    if reported != pid || info.si_code != libc::CLD_TRAPPED {
        return;
    }
    let pass_on = match status {
        libc::SIGTRAP | libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => 0,
        other => other,
    };
    // SAFETY: detaching our own tracee; no memory is passed.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, std::ptr::null_mut::<libc::c_void>(), pass_on as usize) };
}

pub fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error()).context("making the output pipe non-blocking");
    }
    Ok(())
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

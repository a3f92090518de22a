//! The instances: each one `cvm run --runtime R idle SECONDS` process, what a user would start.
//! A [`Fleet`] launches N of them at once, watches their output for the workload's "ready" line
//! and their pidfds for an early end, and stops them all (SIGTERM, so each tears down its own
//! container or VM; SIGKILL after a grace period), also when it is dropped on an error path.
//! They get SIGTERM too if this cvm dies (parent-death signal).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::record::RuntimeKind;
use crate::runtime::spawn::{spawn_with_death_signal, Stdio};
use crate::runtime::supervise::{pipe, reap, set_nonblocking};

/// What the idle workload prints once it is running.
const READY: &[u8] = b"idle: ready";
/// The most of an instance's stderr kept, to explain a failure.
const STDERR_KEPT: usize = 2048;
/// How long stopped instances get to tear down before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// One `cvm run` process.
struct Instance {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    launched: Instant,
    /// The tail of stdout not yet matched against the ready line.
    pending: Vec<u8>,
    stderr_tail: Vec<u8>,
    ready: Option<Instant>,
    /// The wait status, once it ended and was reaped.
    ended: Option<i32>,
    /// This fleet asked it to stop.
    stopping: bool,
}

impl Instance {
    fn launch(exe: &Path, runtime: RuntimeKind, hold_s: u64) -> Result<Instance> {
        let (stdout, stdout_for_child) = pipe()?;
        let (stderr, stderr_for_child) = pipe()?;
        set_nonblocking(&stdout)?;
        set_nonblocking(&stderr)?;
        let stdin = std::fs::File::open("/dev/null").context("opening /dev/null")?;
        let args: Vec<String> =
            ["run", "--runtime", runtime.name(), "--timeout", &(hold_s + 60).to_string(), "idle", &hold_s.to_string()]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let stdio = Stdio {
            stdin: stdin.as_raw_fd(),
            stdout: stdout_for_child.as_raw_fd(),
            stderr: stderr_for_child.as_raw_fd(),
        };
        let launched = Instant::now();
        let child = spawn_with_death_signal(exe, &args, stdio, libc::SIGTERM)?;
        Ok(Instance {
            pid: child.pid,
            pidfd: child.pidfd,
            stdout: Some(stdout),
            stderr: Some(stderr),
            launched,
            pending: Vec::new(),
            stderr_tail: Vec::new(),
            ready: None,
            ended: None,
            stopping: false,
        })
    }

    /// Reads what is in the pipes now; notes the ready line's arrival.
    fn read_output(&mut self, now: Instant) {
        let mut buffer = [0u8; 4096];
        if let Some(fd) = &self.stdout {
            match read_some(fd, &mut buffer) {
                Some(0) => self.stdout = None,
                Some(n) if self.ready.is_none() => {
                    self.pending.extend_from_slice(&buffer[..n]);
                    if self.pending.windows(READY.len()).any(|w| w == READY) {
                        self.ready = Some(now);
                        self.pending = Vec::new();
                    } else {
                        // Keep only what could be the start of the ready line.
                        let keep = self.pending.len().saturating_sub(READY.len());
                        self.pending.drain(..keep);
                    }
                }
                _ => {}
            }
        }
        if let Some(fd) = &self.stderr {
            match read_some(fd, &mut buffer) {
                Some(0) => self.stderr = None,
                Some(n) => {
                    self.stderr_tail.extend_from_slice(&buffer[..n]);
                    let excess = self.stderr_tail.len().saturating_sub(STDERR_KEPT);
                    self.stderr_tail.drain(..excess);
                }
                None => {}
            }
        }
    }

    /// The last line the instance wrote on stderr (cvm's one-line error), if any.
    fn last_error_line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.stderr_tail);
        text.lines().rev().find(|line| !line.trim().is_empty()).map(|line| line.trim().to_string())
    }

    fn running(&self) -> bool {
        self.ended.is_none()
    }
}

/// Bytes read (0 at end of file), or None when nothing is there now.
fn read_some(fd: &OwnedFd, buffer: &mut [u8]) -> Option<usize> {
    // SAFETY: reading into a buffer we own, at most its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
    (n >= 0).then_some(n as usize)
}

/// N instances of one runtime, started together.
pub struct Fleet {
    instances: Vec<Instance>,
}

impl Fleet {
    /// Launches `count` instances as fast as they can be spawned. On a failure the ones already
    /// started are stopped (by `Drop`) and the error says which one failed.
    pub fn launch(exe: &Path, runtime: RuntimeKind, count: usize, hold_s: u64) -> Result<Fleet> {
        let mut fleet = Fleet { instances: Vec::with_capacity(count) };
        for index in 0..count {
            let instance = Instance::launch(exe, runtime, hold_s)
                .with_context(|| format!("starting instance {} of {count}", index + 1))?;
            fleet.instances.push(instance);
        }
        Ok(fleet)
    }

    /// Waits up to `timeout` for output or ends, reading and reaping what is there. Returns early
    /// once every instance is ready (when `until_ready`) or one has ended.
    pub fn pump(&mut self, timeout: Duration, until_ready: bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut fds = Vec::new();
            let mut owners = Vec::new();
            for (index, instance) in self.instances.iter().enumerate() {
                if !instance.running() {
                    continue;
                }
                for fd in
                    [instance.stdout.as_ref(), instance.stderr.as_ref(), Some(&instance.pidfd)].into_iter().flatten()
                {
                    fds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                    owners.push(index);
                }
            }
            let now = Instant::now();
            if fds.is_empty() || now >= deadline {
                return Ok(());
            }
            let wait_ms = (deadline - now).as_millis().clamp(1, 100) as libc::c_int;
            // SAFETY: `fds` is a valid array of pollfd of the length given.
            let polled = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
            if polled < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err).context("waiting for the instances (poll)");
                }
            }
            let now = Instant::now();
            let mut touched: Vec<usize> =
                fds.iter().zip(&owners).filter(|(fd, _)| fd.revents != 0).map(|(_, &i)| i).collect();
            touched.dedup();
            for index in touched {
                let instance = &mut self.instances[index];
                instance.read_output(now);
                if poll_says_ended(&instance.pidfd) {
                    // Whatever it wrote last is in the pipes now.
                    instance.read_output(now);
                    let (status, _) = reap(instance.pid)?;
                    instance.ended = Some(status);
                }
            }
            if crate::interrupt::requested().is_some()
                || self.instances.iter().any(|i| i.ended.is_some() && !i.stopping)
            {
                return Ok(());
            }
            if until_ready && self.instances.iter().all(|i| i.ready.is_some()) {
                return Ok(());
            }
        }
    }

    /// Keeps reading their output for `duration` (so no pipe fills) and says whether any ended.
    pub fn hold(&mut self, duration: Duration) -> Result<()> {
        self.pump(duration, false)
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    pub fn ready_count(&self) -> usize {
        self.instances.iter().filter(|i| i.ready.is_some()).count()
    }

    /// Launch to ready line, per instance that became ready, in ns.
    pub fn start_latencies_ns(&self) -> Vec<u64> {
        self.instances.iter().filter_map(|i| i.ready.map(|r| (r - i.launched).as_nanos() as u64)).collect()
    }

    /// From the first launch to the last ready line, when all are ready.
    pub fn all_ready_after(&self) -> Option<Duration> {
        let first = self.instances.iter().map(|i| i.launched).min()?;
        let last = self.instances.iter().map(|i| i.ready).collect::<Option<Vec<_>>>()?.into_iter().max()?;
        Some(last - first)
    }

    /// The first instance that ended without being asked to, described with its last error line.
    pub fn failure(&self) -> Option<String> {
        let (index, instance) = self.instances.iter().enumerate().find(|(_, i)| i.ended.is_some() && !i.stopping)?;
        let status = instance.ended.unwrap_or(0);
        let how = if libc::WIFSIGNALED(status) {
            format!("was killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("ended with exit status {}", libc::WEXITSTATUS(status))
        };
        let said = instance.last_error_line().map_or_else(String::new, |line| format!(": {line}"));
        let when = if instance.ready.is_some() { "while idle" } else { "before it was ready" };
        Some(format!("instance {} of {} {how} {when}{said}", index + 1, self.instances.len()))
    }

    /// The pids of the `cvm run` processes still running.
    pub fn pids(&self) -> Vec<libc::pid_t> {
        self.instances.iter().filter(|i| i.running()).map(|i| i.pid).collect()
    }

    /// Stops every instance: SIGTERM (each tears down its own container or VM), then SIGKILL
    /// after the grace period. Returns how many had to be killed.
    pub fn stop(&mut self) -> usize {
        for instance in self.instances.iter_mut().filter(|i| i.running()) {
            instance.stopping = true;
            // SAFETY: signalling our own unreaped child (its pid cannot have been reused).
            unsafe { libc::kill(instance.pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.instances.iter().any(Instance::running) && Instant::now() < deadline {
            if self.pump(Duration::from_millis(100), false).is_err() {
                break;
            }
        }
        let mut killed = 0;
        for instance in self.instances.iter_mut().filter(|i| i.running()) {
            killed += 1;
            // SAFETY: as above; SIGKILL cannot be caught.
            unsafe { libc::kill(instance.pid, libc::SIGKILL) };
            instance.ended = reap(instance.pid).ok().map(|(status, _)| status).or(Some(0));
        }
        killed
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.instances.iter().any(Instance::running) {
            self.stop();
        }
    }
}

/// True when the process behind `pidfd` has ended (its pidfd polls readable).
fn poll_says_ended(pidfd: &OwnedFd) -> bool {
    let mut fd = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut fd, 1, 0) == 1 && fd.revents & libc::POLLIN != 0 }
}

//! The two pipes between cvm and the container's first process. "go" (cvm → child): the host
//! side is ready (id maps written, cgroup joined). "report" (child → cvm): ready to exec, or
//! which step failed with which errno. The report pipe is close-on-exec, so end-of-file right
//! after "ready" means the program is running.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::interrupt;

/// The step number reported when `execve` itself failed.
pub const EXEC_STEP: u16 = u16::MAX;
/// The step numbers of the fixed work after the plan: stdio, then closing descriptors.
pub const STDIO_STEP: u16 = u16::MAX - 2;
pub const DESCRIPTORS_STEP: u16 = u16::MAX - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootfsKind {
    /// overlayfs: the image as the read-only lower layer, a per-run tmpfs as the upper layer.
    Overlay,
    /// Fallback: the image copied into a per-run tmpfs.
    Copy,
}

impl RootfsKind {
    pub fn label(self) -> &'static str {
        match self {
            RootfsKind::Overlay => "overlayfs",
            RootfsKind::Copy => "tmpfs-copy",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Ready to exec at `ready_ns` (CLOCK_MONOTONIC); `step_ns` is how long each step took.
    Ready {
        rootfs: RootfsKind,
        ready_ns: u64,
        step_ns: Vec<u64>,
    },
    Failed {
        step: u16,
        errno: i32,
    },
}

/// Every message starts with a header of this size; "ready" is followed by its timestamp and
/// its step times, 8 bytes each.
const MESSAGE_LEN: usize = 7;

/// The most step times a "ready" message carries (it must stay below PIPE_BUF to be atomic).
pub const MAX_TIMED_STEPS: usize = 256;

impl Report {
    /// The header of a message; for "ready", the number of step times that follow.
    fn decode_header(header: &[u8; MESSAGE_LEN]) -> Option<(Report, usize)> {
        match header {
            [b'R', kind, a, b, ..] => {
                let rootfs = if *kind == b'o' { RootfsKind::Overlay } else { RootfsKind::Copy };
                let count = u16::from_le_bytes([*a, *b]) as usize;
                (count <= MAX_TIMED_STEPS)
                    .then_some((Report::Ready { rootfs, ready_ns: 0, step_ns: Vec::new() }, count))
            }
            [b'E', a, b, c, d, e, f] => Some((
                Report::Failed { step: u16::from_le_bytes([*a, *b]), errno: i32::from_le_bytes([*c, *d, *e, *f]) },
                0,
            )),
            _ => None,
        }
    }
}

/// Child side: "failed at `step` with `errno`", in one write, without allocating.
pub fn send_failed(fd: RawFd, step: u16, errno: i32) {
    let mut message = [0u8; MESSAGE_LEN];
    message[0] = b'E';
    message[1..3].copy_from_slice(&step.to_le_bytes());
    message[3..7].copy_from_slice(&errno.to_le_bytes());
    write_all(fd, &message);
}

/// Child side: "ready", the root file system kind and each step's duration, in one write
/// (below PIPE_BUF, so atomic), without allocating.
pub fn send_ready(fd: RawFd, rootfs: RootfsKind, ready_ns: u64, step_ns: &[u64]) {
    let mut message = [0u8; MESSAGE_LEN + 8 + 8 * MAX_TIMED_STEPS];
    let count = step_ns.len().min(MAX_TIMED_STEPS);
    message[0] = b'R';
    message[1] = if rootfs == RootfsKind::Overlay { b'o' } else { b'c' };
    message[2..4].copy_from_slice(&(count as u16).to_le_bytes());
    let values = std::iter::once(&ready_ns).chain(&step_ns[..count]);
    for (slot, value) in message[MESSAGE_LEN..].chunks_exact_mut(8).zip(values) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
    write_all(fd, &message[..MESSAGE_LEN + 8 + 8 * count]);
}

fn write_all(fd: RawFd, bytes: &[u8]) {
    // SAFETY: writing a buffer we own.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

/// cvm side: lets the child pass its next [`super::init::Step::WaitForParent`].
pub fn go(fd: &OwnedFd) -> Result<()> {
    // SAFETY: writing one byte from a local.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"g".as_ptr().cast(), 1) };
    if n != 1 {
        return Err(std::io::Error::last_os_error()).context("telling the container's first process to go on");
    }
    Ok(())
}

/// cvm side: the next report, or None at end of file. With a deadline it gives up then, or
/// when cvm is interrupted (the caller's guards kill the child and clean up); without one it
/// blocks, which is right only once the child is gone.
pub fn next_report(fd: &OwnedFd, deadline: Option<Instant>) -> Result<Option<Report>> {
    let mut header = [0u8; MESSAGE_LEN];
    if !read_exact(fd, &mut header, deadline)? {
        return Ok(None);
    }
    let (mut report, count) =
        Report::decode_header(&header).context("garbled report from the container's first process")?;
    if let Report::Ready { ready_ns, step_ns, .. } = &mut report {
        let mut payload = vec![0u8; 8 + 8 * count];
        if !read_exact(fd, &mut payload, deadline)? {
            bail!("the container's first process ended in the middle of its report");
        }
        let mut values = payload.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
        *ready_ns = values.next().unwrap_or(0);
        step_ns.extend(values);
    }
    Ok(Some(report))
}

/// Fills `buffer`; false at end of file before the first byte.
fn read_exact(fd: &OwnedFd, buffer: &mut [u8], deadline: Option<Instant>) -> Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        let mut wait = -1;
        if let Some(deadline) = deadline {
            if let Some(signal) = interrupt::requested() {
                bail!("interrupted by signal {signal} while the container was being set up");
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("the container was not ready before the timeout");
            }
            wait = (deadline - now).as_millis().clamp(1, 100) as i32;
        }
        let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pollfd, 1, wait) } <= 0 {
            continue;
        }
        let rest = &mut buffer[filled..];
        // SAFETY: reading into the unfilled part of a buffer we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
        match n {
            0 if filled == 0 => return Ok(false),
            0 => bail!("the container's first process ended in the middle of its report"),
            n if n > 0 => filled += n as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(std::io::Error::last_os_error()).context("reading the container's report"),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pipe() -> (OwnedFd, OwnedFd) {
        crate::runtime::supervise::pipe().unwrap()
    }

    #[test]
    fn reports_travel_through_a_pipe() {
        let (read, write) = pipe();
        let deadline = Some(Instant::now() + Duration::from_secs(5));
        send_ready(write.as_raw_fd(), RootfsKind::Overlay, 42, &[5, 7, 1_000_000]);
        send_failed(write.as_raw_fd(), EXEC_STEP, libc::ENOEXEC);
        send_ready(write.as_raw_fd(), RootfsKind::Copy, 43, &[]);
        drop(write);
        assert_eq!(
            next_report(&read, deadline).unwrap(),
            Some(Report::Ready { rootfs: RootfsKind::Overlay, ready_ns: 42, step_ns: vec![5, 7, 1_000_000] })
        );
        assert_eq!(
            next_report(&read, deadline).unwrap(),
            Some(Report::Failed { step: EXEC_STEP, errno: libc::ENOEXEC })
        );
        assert_eq!(
            next_report(&read, None).unwrap(),
            Some(Report::Ready { rootfs: RootfsKind::Copy, ready_ns: 43, step_ns: vec![] })
        );
        assert_eq!(next_report(&read, None).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error() {
        let (read, write) = pipe();
        write_all(write.as_raw_fd(), b"garbage");
        drop(write);
        assert!(next_report(&read, None).is_err());
    }
}

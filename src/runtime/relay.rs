//! Live copies of the program's output on cvm's own stdout and stderr.
//!
//! A reader can stall (`cvm run ... | sleep 100`, a paused terminal), and a write to a full pipe
//! blocks. If the thread that enforces `--timeout` made that write, the deadline would be gone.
//! So each stream has a writer thread of its own, fed through a queue of at most
//! [`MAX_QUEUED`] bytes: the run only ever hands bytes over, and when the queue is full it stops
//! reading the program (whose own writes then block, as they would on a slow terminal) while
//! it keeps watching the clock. Nothing here holds more than a fixed amount of output.
//!
//! The thread starts only when it is needed: while nothing is queued, bytes are first written
//! on the caller's thread with `RWF_NOWAIT`, which a pipe (Linux 6.4+) and /dev/null honour,
//! so that write either completes at once or reports that it would wait. Only what would wait
//! goes to the writer thread. A run whose reader keeps up never starts one (two thread starts
//! were 0.2-0.4 ms of every run).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::interrupt;

/// The most bytes waiting for a slow reader, per stream.
pub const MAX_QUEUED: usize = 1 << 20;

/// One destination (fd 1 or 2 of cvm) and its writer thread.
pub struct Relay {
    fd: RawFd,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    /// The writer holds a chunk it has not finished writing.
    writing: bool,
    /// The reader went away (EPIPE or another write error): output is dropped from now on.
    broken: bool,
    started: bool,
}

/// The relay to cvm's stdout.
pub fn stdout() -> &'static Relay {
    static STDOUT: OnceLock<Relay> = OnceLock::new();
    STDOUT.get_or_init(|| Relay::new(libc::STDOUT_FILENO))
}

/// The relay to cvm's stderr.
pub fn stderr() -> &'static Relay {
    static STDERR: OnceLock<Relay> = OnceLock::new();
    STDERR.get_or_init(|| Relay::new(libc::STDERR_FILENO))
}

/// Why bytes could not be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stalled {
    /// The deadline passed while the reader was not reading.
    Deadline,
    /// cvm was asked to stop (the signal).
    Interrupted(i32),
}

impl Relay {
    fn new(fd: RawFd) -> Relay {
        Relay { fd, state: Mutex::new(State::default()), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent: use it anyway.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many bytes can be handed over now without waiting.
    pub fn room(&self) -> usize {
        let state = self.lock();
        if state.broken {
            MAX_QUEUED
        } else {
            MAX_QUEUED - state.queued.min(MAX_QUEUED)
        }
    }

    /// Queues `bytes` (the caller keeps within [`Relay::room`]; a little more is tolerated).
    pub fn push(&'static self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut state = self.lock();
        if state.broken {
            return;
        }
        let mut bytes = bytes;
        if state.queue.is_empty() && !state.writing {
            // Nothing ahead of these bytes: writing them here keeps the order.
            match write_without_waiting(self.fd, bytes) {
                Direct::Written(n) if n == bytes.len() => return,
                Direct::Written(n) => bytes = &bytes[n..],
                Direct::Failed => {
                    state.broken = true;
                    return;
                }
            }
        }
        if !state.started {
            state.started = true;
            let spawned = std::thread::Builder::new().name("cvm-relay".into()).spawn(move || self.write_loop());
            if spawned.is_err() {
                // No thread: drop live output rather than write it on the deadline's thread.
                state.broken = true;
                return;
            }
        }
        state.queued += bytes.len();
        state.queue.push_back(bytes.to_vec());
        self.changed.notify_all();
    }

    /// Hands over all of `bytes`, waiting for room as the reader reads, until `deadline` or an
    /// interruption.
    pub fn send(&'static self, mut bytes: &[u8], deadline: Instant) -> Result<(), Stalled> {
        while !bytes.is_empty() {
            let room = self.wait_for_room(deadline)?;
            let take = room.min(bytes.len());
            self.push(&bytes[..take]);
            bytes = &bytes[take..];
        }
        Ok(())
    }

    fn wait_for_room(&self, deadline: Instant) -> Result<usize, Stalled> {
        let mut state = self.lock();
        loop {
            if state.broken {
                return Ok(MAX_QUEUED);
            }
            if state.queued < MAX_QUEUED {
                return Ok(MAX_QUEUED - state.queued);
            }
            state = self.wait(state, deadline, true)?;
        }
    }

    /// Waits until everything handed over was written, or until `deadline` (after a run, when
    /// an interruption has already been dealt with: only the deadline bounds it).
    pub fn drain(&self, deadline: Instant) -> Result<(), Stalled> {
        let mut state = self.lock();
        while !state.broken && (state.queued > 0 || state.writing) {
            state = self.wait(state, deadline, false)?;
        }
        Ok(())
    }

    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        deadline: Instant,
        stop_on_interrupt: bool,
    ) -> Result<MutexGuard<'a, State>, Stalled> {
        if let Some(signal) = interrupt::requested().filter(|_| stop_on_interrupt) {
            return Err(Stalled::Interrupted(signal));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Stalled::Deadline);
        }
        // Wake at least every 50 ms to notice an interruption.
        let wait = (deadline - now).min(Duration::from_millis(50));
        let (state, _) = self.changed.wait_timeout(state, wait).unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(state)
    }

    fn write_loop(&self) {
        loop {
            let chunk = {
                let mut state = self.lock();
                while state.queue.is_empty() {
                    state.writing = false;
                    self.changed.notify_all();
                    state = self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                state.writing = true;
                state.queue.pop_front().expect("not empty")
            };
            let ok = write_all(self.fd, &chunk);
            let mut state = self.lock();
            state.queued -= chunk.len();
            if !ok {
                state.broken = true;
                state.queued = 0;
                state.queue.clear();
            }
            self.changed.notify_all();
        }
    }
}

/// What [`write_without_waiting`] did.
#[derive(Debug, PartialEq, Eq)]
enum Direct {
    /// This many bytes went out (the rest would have had to wait, or the destination cannot
    /// say whether it would).
    Written(usize),
    /// The destination failed (the reader went away): as in the writer thread.
    Failed,
}

/// Writes as much of `bytes` as goes without waiting (`pwritev2` with `RWF_NOWAIT`, at the
/// descriptor's own position). A destination that cannot promise that (a terminal, a regular
/// file, a kernel before 6.4 for pipes) takes nothing here.
fn write_without_waiting(fd: RawFd, mut bytes: &[u8]) -> Direct {
    let mut written = 0;
    while !bytes.is_empty() {
        let iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        // SAFETY: one iovec over a buffer we own, for the length of the call; offset -1 means
        // the descriptor's current position, as write() uses.
        let n = unsafe { libc::pwritev2(fd, &iov, 1, -1, libc::RWF_NOWAIT) };
        if n > 0 {
            written += n as usize;
            bytes = &bytes[n as usize..];
            continue;
        }
        if n == 0 {
            break;
        }
        match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
            libc::EINTR => continue,
            libc::EAGAIN | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS => break,
            _ => return Direct::Failed,
        }
    }
    Direct::Written(written)
}

/// Blocking write of everything, retrying on EINTR; false when the destination failed.
fn write_all(fd: RawFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: writing from a buffer we own to a descriptor cvm was started with; a raw
        // write (not std's locked stdout) so cvm's own messages never wait for this thread.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        } else {
            return false;
        }
    }
    true
}

/// Stderr lines of cvm's own (the run summary) that must not block when the reader of
/// stderr has stalled: queued behind the program's stderr, in order.
pub fn eprint(text: &str) {
    stderr().push(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_to_pipe() -> (&'static Relay, std::os::fd::OwnedFd) {
        use std::os::fd::AsRawFd;
        let (read, write) = crate::runtime::supervise::pipe().unwrap();
        let relay: &'static Relay = Box::leak(Box::new(Relay::new(write.as_raw_fd())));
        std::mem::forget(write);
        (relay, read)
    }

    #[test]
    fn a_reader_that_never_reads_cannot_hold_the_sender_past_its_deadline() {
        let (relay, _never_read) = relay_to_pipe();
        let chunk = vec![b'y'; 64 << 10];
        let deadline = Instant::now() + Duration::from_millis(300);
        let started = Instant::now();
        let mut result = Ok(());
        for _ in 0..100 {
            result = relay.send(&chunk, deadline);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Stalled::Deadline));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(relay.drain(Instant::now() + Duration::from_millis(50)).is_err());
    }

    #[test]
    fn a_pipe_with_room_is_written_without_a_thread_and_a_full_one_is_not() {
        use std::io::Read;
        let (read, write) = crate::runtime::supervise::pipe().unwrap();
        use std::os::fd::AsRawFd;
        match write_without_waiting(write.as_raw_fd(), b"hello") {
            Direct::Written(0) => {
                eprintln!("this kernel's pipes do not honour RWF_NOWAIT (Linux 6.4+): the writer thread does it all");
                return;
            }
            direct => assert_eq!(direct, Direct::Written(5)),
        }
        let mut got = [0u8; 5];
        std::fs::File::from(read.try_clone().unwrap()).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        // A full pipe takes what fits and says so instead of blocking.
        let big = vec![b'z'; 1 << 20];
        let started = Instant::now();
        let Direct::Written(n) = write_without_waiting(write.as_raw_fd(), &big) else { panic!("not written") };
        assert!(n < big.len() && started.elapsed() < Duration::from_secs(1), "{n}");
        drop(read);
        assert_eq!(write_without_waiting(write.as_raw_fd(), b"x"), Direct::Failed, "no reader: EPIPE");
    }

    #[test]
    fn everything_reaches_a_reader_in_order() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (relay, read) = relay_to_pipe();
        let reader = std::thread::spawn(move || {
            let mut file = std::fs::File::from(read);
            let mut all = Vec::new();
            let mut buffer = [0u8; 4096];
            while all.len() < 3_000_000 {
                let n = file.read(&mut buffer).unwrap();
                all.extend_from_slice(&buffer[..n]);
            }
            let _ = file.as_raw_fd();
            all
        });
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        for piece in data.chunks(70_000) {
            relay.send(piece, deadline).unwrap();
        }
        relay.drain(deadline).unwrap();
        assert_eq!(reader.join().unwrap(), data);
    }
}

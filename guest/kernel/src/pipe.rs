//! Pipes, and the table of the descriptors above the console's 0, 1 and 2: pipe ends and epoll
//! instances (epoll.rs). Runtimes need them even in a world without files: Go's scheduler wakes
//! a thread waiting in `epoll_pwait` by writing a byte into a pipe.
//!
//! A pipe is a 4 KiB ring in kernel memory. Reads and writes do not block: an empty pipe
//! answers -EAGAIN (0 once every writer is closed), a full one -EAGAIN; that is what Go asks
//! for (O_NONBLOCK), and a blocking pipe answers the same instead of waiting (not yet
//! modelled). A write wakes threads waiting in epoll for it to become readable.

use crate::errno::{Errno, SysResult, EAGAIN, EBADF, EINVAL, EMFILE, ENFILE, EPIPE};
use crate::sync::SpinLock;
use crate::user;

pub const FIRST_FD: u64 = 3;
const MAX_FDS: usize = 64;
const MAX_PIPES: usize = 16;
const PIPE_SIZE: usize = 4096;

const O_NONBLOCK: u64 = 0o4000;
const O_CLOEXEC: u64 = 0o2000000;
const O_RDONLY: u64 = 0;
const O_WRONLY: u64 = 1;

/// What a descriptor above 2 refers to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Open {
    Closed,
    PipeRead(usize),
    PipeWrite(usize),
    Epoll(usize),
}

#[derive(Clone, Copy)]
struct Pipe {
    buffer: [u8; PIPE_SIZE],
    head: usize,
    len: usize,
    readers: u32,
    writers: u32,
}

impl Pipe {
    const EMPTY: Pipe = Pipe { buffer: [0; PIPE_SIZE], head: 0, len: 0, readers: 0, writers: 0 };

    fn in_use(&self) -> bool {
        self.readers + self.writers > 0
    }
}

struct Table {
    fds: [Open; MAX_FDS],
    /// O_NONBLOCK as set by fcntl (reported only: nothing blocks).
    nonblocking: [bool; MAX_FDS],
    /// FD_CLOEXEC (reported only: nothing is ever executed).
    cloexec: [bool; MAX_FDS],
    pipes: [Pipe; MAX_PIPES],
}

static TABLE: SpinLock<Table> = SpinLock::new(Table {
    fds: [Open::Closed; MAX_FDS],
    nonblocking: [false; MAX_FDS],
    cloexec: [false; MAX_FDS],
    pipes: [Pipe::EMPTY; MAX_PIPES],
});

/// What `fd` is (Closed for the console's and for anything never opened).
pub fn lookup(fd: u64) -> Open {
    TABLE.with(|table| table.fds.get(fd as usize).copied().unwrap_or(Open::Closed))
}

/// The lowest free descriptor for `open`, with FD_CLOEXEC as asked (epoll_create1).
pub fn allocate_cloexec(open: Open, cloexec: bool) -> Result<u64, Errno> {
    TABLE.with(|table| table.allocate(open, false, cloexec))
}

impl Table {
    fn allocate(&mut self, open: Open, nonblocking: bool, cloexec: bool) -> Result<u64, Errno> {
        let fd = (FIRST_FD as usize..MAX_FDS).find(|&fd| self.fds[fd] == Open::Closed).ok_or(EMFILE)?;
        self.fds[fd] = open;
        self.nonblocking[fd] = nonblocking;
        self.cloexec[fd] = cloexec;
        Ok(fd as u64)
    }
}

/// `pipe2(fds, flags)` (and `pipe`: flags 0).
pub fn pipe2(fds: u64, flags: u64) -> SysResult {
    if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    user::writable(fds, 8)?;
    let nonblocking = flags & O_NONBLOCK != 0;
    let cloexec = flags & O_CLOEXEC != 0;
    let pair = TABLE.with(|table| {
        let pipe = table.pipes.iter().position(|p| !p.in_use()).ok_or(ENFILE)?;
        let read = table.allocate(Open::PipeRead(pipe), nonblocking, cloexec)?;
        let write = match table.allocate(Open::PipeWrite(pipe), nonblocking, cloexec) {
            Ok(fd) => fd,
            Err(errno) => {
                table.fds[read as usize] = Open::Closed;
                return Err(errno);
            }
        };
        table.pipes[pipe] = Pipe { readers: 1, writers: 1, ..Pipe::EMPTY };
        Ok([read as u32, write as u32])
    })?;
    user::write(fds, pair)?;
    Ok(0)
}

pub fn read(fd: u64, buf: u64, len: u64) -> SysResult {
    let Open::PipeRead(pipe) = lookup(fd) else { return Err(EBADF) };
    let out = user::bytes_mut(buf, len)?;
    TABLE.with(|table| {
        let p = &mut table.pipes[pipe];
        if p.len == 0 {
            return if p.writers == 0 { Ok(0) } else { Err(EAGAIN) };
        }
        let count = out.len().min(p.len);
        for byte in out.iter_mut().take(count) {
            *byte = p.buffer[p.head];
            p.head = (p.head + 1) % PIPE_SIZE;
        }
        p.len -= count;
        Ok(count as u64)
    })
}

pub fn write(fd: u64, buf: u64, len: u64) -> SysResult {
    let Open::PipeWrite(pipe) = lookup(fd) else { return Err(EBADF) };
    let data = user::bytes(buf, len)?;
    let written = TABLE.with(|table| {
        let p = &mut table.pipes[pipe];
        if p.readers == 0 {
            return Err(EPIPE);
        }
        let room = PIPE_SIZE - p.len;
        if room == 0 && !data.is_empty() {
            return Err(EAGAIN);
        }
        let count = data.len().min(room);
        for &byte in &data[..count] {
            p.buffer[(p.head + p.len) % PIPE_SIZE] = byte;
            p.len += 1;
        }
        Ok(count as u64)
    });
    if written == Err(EPIPE) {
        // As Linux: a write to a pipe nobody can read also sends the writer SIGPIPE.
        if let Ok(tid) = crate::process::gettid() {
            let _ = crate::signal::kill(tid, SIGPIPE, true);
        }
    }
    let written = written?;
    crate::epoll::notify();
    Ok(written)
}

pub fn close(fd: u64) -> SysResult {
    let open = lookup(fd);
    match open {
        Open::Closed => return Err(EBADF),
        Open::Epoll(instance) => crate::epoll::release(instance),
        _ => {}
    }
    TABLE.with(|table| {
        match open {
            Open::PipeRead(pipe) => table.pipes[pipe].readers -= 1,
            Open::PipeWrite(pipe) => table.pipes[pipe].writers -= 1,
            _ => {}
        }
        table.fds[fd as usize] = Open::Closed;
    });
    // A reader may now see the end of the pipe.
    crate::epoll::notify();
    Ok(0)
}

const FD_CLOEXEC: u64 = 1;
const SIGPIPE: u64 = 13;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;

pub fn fcntl(fd: u64, command: u64, arg: u64) -> SysResult {
    let open = lookup(fd);
    if open == Open::Closed {
        return Err(EBADF);
    }
    TABLE.with(|table| match command {
        F_GETFD => Ok(u64::from(table.cloexec[fd as usize])),
        F_SETFD => {
            table.cloexec[fd as usize] = arg & FD_CLOEXEC != 0;
            Ok(0)
        }
        F_GETFL => {
            let mode = if matches!(open, Open::PipeWrite(_)) { O_WRONLY } else { O_RDONLY };
            Ok(mode | if table.nonblocking[fd as usize] { O_NONBLOCK } else { 0 })
        }
        F_SETFL => {
            table.nonblocking[fd as usize] = arg & O_NONBLOCK != 0;
            Ok(0)
        }
        _ => Err(EINVAL),
    })
}

/// EPOLLIN, EPOLLOUT, EPOLLERR and EPOLLHUP bits for `fd` now.
pub fn readiness(fd: u64) -> u32 {
    const EPOLLIN: u32 = 0x1;
    const EPOLLOUT: u32 = 0x4;
    const EPOLLERR: u32 = 0x8;
    const EPOLLHUP: u32 = 0x10;
    match fd {
        0 => EPOLLIN, // at end of file: a read returns at once
        1 | 2 => EPOLLOUT,
        _ => TABLE.with(|table| match table.fds.get(fd as usize).copied().unwrap_or(Open::Closed) {
            Open::PipeRead(pipe) => {
                let p = &table.pipes[pipe];
                (if p.len > 0 { EPOLLIN } else { 0 }) | if p.writers == 0 { EPOLLHUP } else { 0 }
            }
            Open::PipeWrite(pipe) => {
                let p = &table.pipes[pipe];
                (if p.len < PIPE_SIZE { EPOLLOUT } else { 0 }) | if p.readers == 0 { EPOLLERR } else { 0 }
            }
            _ => 0,
        }),
    }
}

//! File-descriptor system calls. There is no file system: the only open files are the console
//! on fds 0 (stdin: always at end of file), 1 (stdout) and 2 (stderr). Opening anything else
//! answers `-ENOENT`, which is what the program would see for a path that does not exist;
//! that is how `probe` learns that /proc is "not visible" here.

use crate::console;
use crate::errno::{Errno, SysResult, EBADF, EINVAL, ENOENT, ENOTTY, ERANGE, ESPIPE};
use crate::user;

const STDIN: u64 = 0;
const STDOUT: u64 = 1;
const STDERR: u64 = 2;

fn is_console(fd: u64) -> bool {
    fd <= STDERR
}

fn is_output(fd: u64) -> bool {
    fd == STDOUT || fd == STDERR
}

pub fn read(fd: u64, buf: u64, len: u64) -> SysResult {
    if fd != STDIN {
        return Err(EBADF);
    }
    user::writable(buf, len)?;
    Ok(0) // end of file: the VM has no input
}

pub fn write(fd: u64, buf: u64, len: u64) -> SysResult {
    if !is_output(fd) {
        return Err(EBADF);
    }
    console::write(fd as u32, user::bytes(buf, len)?);
    Ok(len)
}

const IOV_MAX: u64 = 1024;

/// Entry `index` of the program's `struct iovec` array: (base, len).
fn iovec(iov: u64, index: u64) -> Result<(u64, u64), Errno> {
    let [base, len]: [u64; 2] = user::read(iov + index * 16)?;
    Ok((base, len))
}

/// Checks the array and every buffer it names, so that a bad pointer fails the whole call
/// before anything is written.
fn check_iovecs(iov: u64, count: u64) -> Result<(), Errno> {
    if count > IOV_MAX {
        return Err(EINVAL);
    }
    user::readable(iov, count * 16)?;
    for index in 0..count {
        let (base, len) = iovec(iov, index)?;
        user::readable(base, len)?;
    }
    Ok(())
}

pub fn readv(fd: u64, iov: u64, count: u64) -> SysResult {
    if fd != STDIN {
        return Err(EBADF);
    }
    check_iovecs(iov, count)?;
    Ok(0)
}

/// Gathers the pieces into one buffer so a whole `writev` usually costs one console exit
/// (pieces larger than the buffer go out on their own).
pub fn writev(fd: u64, iov: u64, count: u64) -> SysResult {
    if !is_output(fd) {
        return Err(EBADF);
    }
    check_iovecs(iov, count)?;
    let mut buffer = [0u8; 2048];
    let mut used = 0;
    let mut total: u64 = 0;
    for index in 0..count {
        let (base, len) = iovec(iov, index)?;
        let bytes = user::bytes(base, len)?;
        if used + bytes.len() > buffer.len() {
            console::write(fd as u32, &buffer[..used]);
            used = 0;
        }
        if bytes.len() > buffer.len() {
            console::write(fd as u32, bytes);
        } else {
            buffer[used..used + bytes.len()].copy_from_slice(bytes);
            used += bytes.len();
        }
        total += len;
    }
    console::write(fd as u32, &buffer[..used]);
    Ok(total)
}

/// `open`/`openat`: nothing exists (a bad path pointer is still -EFAULT, as on Linux).
pub fn open(path: u64) -> SysResult {
    user::readable(path, 1)?;
    Err(ENOENT)
}

pub fn close(fd: u64) -> SysResult {
    if is_console(fd) {
        Ok(0)
    } else {
        Err(EBADF)
    }
}

/// Never called with a valid directory: none can be opened.
pub fn getdents64(_fd: u64) -> SysResult {
    Err(EBADF)
}

const S_IFCHR: u32 = 0o020000;
const CONSOLE_MODE: u32 = S_IFCHR | 0o620;

/// `struct stat` of a console: a character device, nothing more.
pub fn fstat(fd: u64, statbuf: u64) -> SysResult {
    if !is_console(fd) {
        return Err(EBADF);
    }
    let stat = user::bytes_mut(statbuf, 144)?;
    stat.fill(0);
    stat[16..24].copy_from_slice(&1u64.to_le_bytes()); // st_nlink
    stat[24..28].copy_from_slice(&CONSOLE_MODE.to_le_bytes()); // st_mode
    stat[56..64].copy_from_slice(&4096u64.to_le_bytes()); // st_blksize
    Ok(0)
}

const AT_EMPTY_PATH: u64 = 0x1000;

fn is_empty_path(path: u64) -> Result<bool, Errno> {
    Ok(user::read::<u8>(path)? == 0)
}

pub fn newfstatat(dirfd: u64, path: u64, statbuf: u64, flags: u64) -> SysResult {
    if flags & AT_EMPTY_PATH != 0 && is_empty_path(path)? {
        return fstat(dirfd, statbuf);
    }
    Err(ENOENT)
}

pub fn statx(dirfd: u64, path: u64, flags: u64, statxbuf: u64) -> SysResult {
    if !(flags & AT_EMPTY_PATH != 0 && is_empty_path(path)?) {
        return Err(ENOENT);
    }
    if !is_console(dirfd) {
        return Err(EBADF);
    }
    const STATX_TYPE_MODE_NLINK: u32 = 0x7;
    let stat = user::bytes_mut(statxbuf, 256)?;
    stat.fill(0);
    stat[0..4].copy_from_slice(&STATX_TYPE_MODE_NLINK.to_le_bytes()); // stx_mask
    stat[4..8].copy_from_slice(&4096u32.to_le_bytes()); // stx_blksize
    stat[16..20].copy_from_slice(&1u32.to_le_bytes()); // stx_nlink
    stat[28..30].copy_from_slice(&(CONSOLE_MODE as u16).to_le_bytes()); // stx_mode
    Ok(0)
}

const POLLNVAL: u16 = 0x20;

/// Answers at once (the timeout is not needed: nothing ever becomes ready). fds 0-2 are open
/// and have nothing to report, which is what Rust's runtime checks at start-up; other fds are
/// POLLNVAL.
pub fn poll(fds: u64, count: u64) -> SysResult {
    if count > 1024 {
        return Err(EINVAL);
    }
    let entries = user::bytes_mut(fds, count * 8)?;
    let mut ready = 0;
    for entry in entries.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let revents = if fd < 0 || is_console(fd as u64) { 0 } else { POLLNVAL };
        entry[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    Ok(ready)
}

pub fn lseek(fd: u64) -> SysResult {
    if is_console(fd) {
        Err(ESPIPE)
    } else {
        Err(EBADF)
    }
}

/// The console is not a terminal (TCGETS, TIOCGWINSZ ... answer -ENOTTY, so isatty is false).
pub fn ioctl(fd: u64) -> SysResult {
    if is_console(fd) {
        Err(ENOTTY)
    } else {
        Err(EBADF)
    }
}

const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const O_WRONLY: u64 = 1;

pub fn fcntl(fd: u64, command: u64) -> SysResult {
    if !is_console(fd) {
        return Err(EBADF);
    }
    match command {
        F_GETFD | F_SETFD | F_SETFL => Ok(0),
        F_GETFL => Ok(if fd == STDIN { 0 } else { O_WRONLY }),
        _ => Err(EINVAL),
    }
}

/// Everything happens in "/".
pub fn getcwd(buf: u64, size: u64) -> SysResult {
    if size < 2 {
        return Err(ERANGE);
    }
    user::bytes_mut(buf, 2)?.copy_from_slice(b"/\0");
    Ok(2)
}

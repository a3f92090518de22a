//! What every program cvm starts gets done to it between `clone` and `execve`, in the child:
//! only system calls, no allocation and no locks (the child is a copy of a process that may
//! have had other threads, or even shares cvm's memory).

use std::os::fd::RawFd;

/// Signals cvm handles itself (besides [`crate::interrupt::STOPPING`]); the program starts with
/// default actions for all of them.
const ALSO_HANDLED: [libc::c_int; 2] = [libc::SIGCHLD, libc::SIGPIPE];

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Marks every descriptor from 3 up close-on-exec, so the program receives only 0, 1 and 2:
/// whatever the caller of cvm left open (a directory of the host, a socket, /dev/kvm) never
/// reaches it. runc does the same since CVE-2024-21626. Marking instead of closing keeps the
/// child's own pipes to cvm working until `execve`. Returns the errno of a failure.
pub fn close_inherited_descriptors() -> Result<(), i32> {
    // SAFETY: close_range with constant arguments only changes descriptor flags.
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if done == 0 {
        return Ok(());
    }
    // Linux < 5.11: walk /proc/self/fd with getdents64 into a stack buffer.
    mark_listed_descriptors_cloexec()
}

fn mark_listed_descriptors_cloexec() -> Result<(), i32> {
    // SAFETY: open with a constant C string; the descriptor is closed below.
    let dir = unsafe { libc::open(c"/proc/self/fd".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if dir < 0 {
        return Err(errno());
    }
    let mut buffer = [0u8; 4096];
    let result = loop {
        // SAFETY: getdents64 fills at most `buffer.len()` bytes of our stack buffer.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buffer.as_mut_ptr(), buffer.len()) };
        if n < 0 {
            break Err(errno());
        }
        if n == 0 {
            break Ok(());
        }
        let mut at = 0usize;
        while at + 19 < n as usize {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, then the name.
            let reclen = u16::from_ne_bytes([buffer[at + 16], buffer[at + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let fd = parse_fd(&buffer[at + 19..(at + reclen).min(n as usize)]);
            if let Some(fd) = fd.filter(|&fd| fd > 2 && fd != dir) {
                // SAFETY: fcntl on a descriptor number; an unused number only fails with EBADF.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
            at += reclen;
        }
    };
    // SAFETY: closing the directory opened above.
    unsafe { libc::close(dir) };
    result
}

/// A NUL-terminated decimal name ("17\0...") → 17.
fn parse_fd(name: &[u8]) -> Option<RawFd> {
    let mut value: RawFd = 0;
    let mut digits = 0;
    for &byte in name.iter().take_while(|&&b| b != 0) {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(RawFd::from(byte - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(value)
}

/// Default actions for the signals cvm handles, and nothing blocked.
pub fn reset_signals() {
    for signal in crate::interrupt::STOPPING.into_iter().chain(ALSO_HANDLED) {
        // SAFETY: resetting a disposition to SIG_DFL has no memory-safety preconditions.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    // SAFETY: an empty set, filled by sigemptyset, then installed as the mask.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// The child gets `signal` when the thread that started it ends (SIGKILL: it dies with cvm).
/// Returns false when cvm was already gone before the request took effect (the caller then
/// exits).
pub fn die_with_parent(parent: libc::pid_t, signal: libc::c_int) -> bool {
    // SAFETY: prctl with plain integer arguments; getppid has no preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0);
        libc::getppid() == parent
    }
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_names_parse() {
        assert_eq!(parse_fd(b"17\0\0\0"), Some(17));
        assert_eq!(parse_fd(b".\0"), None);
        assert_eq!(parse_fd(b"..\0"), None);
        assert_eq!(parse_fd(b"\0"), None);
        assert_eq!(parse_fd(b"99999999999999\0"), None);
    }
}

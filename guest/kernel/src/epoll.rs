//! epoll: waiting for any of several descriptors to be ready, with a timeout. Enough for Go's
//! network poller, which the runtime starts with its first timer: one epoll instance, one pipe
//! registered in it, `epoll_pwait` with a timeout until the next timer, and a byte written into
//! the pipe to wake the waiter early.
//!
//! A waiter that finds nothing ready blocks until its timeout (then 0 events). A pipe write or
//! close wakes every waiter to *run its `epoll_pwait` again* (the scheduler restarts the system
//! call: its RIP goes back to the `syscall` instruction), so readiness is always computed by the
//! waiter itself, under no one else's lock.

use crate::entry::UserFrame;
use crate::errno::{Errno, SysResult, EBADF, EEXIST, EINTR, EINVAL, ENOENT, ENOMEM};
use crate::pipe::{self, Open};
use crate::sched::{self, State, Wakeups, RESTART_SYSCALL, SCHED};
use crate::sync::SpinLock;
use crate::user;

const MAX_INSTANCES: usize = 8;
const MAX_INTERESTS: usize = 16;
const EPOLL_CTL_ADD: u64 = 1;
const EPOLL_CTL_DEL: u64 = 2;
const EPOLL_CTL_MOD: u64 = 3;
const EPOLL_CLOEXEC: u64 = 0o2000000;
/// Always reported, whether asked for or not.
const EPOLLERR_HUP: u32 = 0x8 | 0x10;

#[derive(Clone, Copy)]
struct Interest {
    fd: u64,
    events: u32,
    data: u64,
}

#[derive(Clone, Copy)]
struct Instance {
    used: bool,
    interests: [Interest; MAX_INTERESTS],
    len: usize,
}

static INSTANCES: SpinLock<[Instance; MAX_INSTANCES]> = SpinLock::new(
    [Instance { used: false, interests: [Interest { fd: 0, events: 0, data: 0 }; MAX_INTERESTS], len: 0 };
        MAX_INSTANCES],
);

/// What blocked waiters wait on (a kernel address: no program futex can name it).
static WAITERS: u8 = 0;

fn waiters_key() -> u64 {
    &WAITERS as *const u8 as u64
}

/// `epoll_create1(flags)`; `epoll_create(size)` is the same with flags 0.
pub fn create1(flags: u64) -> SysResult {
    if flags & !EPOLL_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    let instance = INSTANCES.with(|all| {
        let free = all.iter().position(|i| !i.used).ok_or(ENOMEM)?;
        all[free].used = true;
        all[free].len = 0;
        Ok::<usize, Errno>(free)
    })?;
    pipe::allocate_cloexec(Open::Epoll(instance), flags & EPOLL_CLOEXEC != 0).inspect_err(|_| release(instance))
}

/// Called when its descriptor is closed.
pub fn release(instance: usize) {
    INSTANCES.with(|all| all[instance].used = false);
}

fn instance_of(epfd: u64) -> Result<usize, Errno> {
    match pipe::lookup(epfd) {
        Open::Epoll(instance) => Ok(instance),
        _ => Err(EBADF),
    }
}

pub fn ctl(epfd: u64, op: u64, fd: u64, event: u64) -> SysResult {
    let instance = instance_of(epfd)?;
    if fd == epfd {
        return Err(EINVAL);
    }
    if fd > 2 && pipe::lookup(fd) == Open::Closed {
        return Err(EBADF);
    }
    // struct epoll_event is packed on x86-64: u32 events, u64 data.
    let wanted = if op == EPOLL_CTL_DEL {
        None
    } else {
        let bytes: [u8; 12] = user::read(event)?;
        let events = u32::from_le_bytes(bytes[0..4].try_into().unwrap_or_default());
        let data = u64::from_le_bytes(bytes[4..12].try_into().unwrap_or_default());
        Some(Interest { fd, events, data })
    };
    INSTANCES.with(|all| {
        let e = &mut all[instance];
        let found = e.interests[..e.len].iter().position(|i| i.fd == fd);
        match (op, found, wanted) {
            (EPOLL_CTL_ADD, Some(_), _) => Err(EEXIST),
            (EPOLL_CTL_ADD, None, Some(interest)) => {
                *e.interests.get_mut(e.len).ok_or(ENOMEM)? = interest;
                e.len += 1;
                Ok(0)
            }
            (EPOLL_CTL_MOD, Some(at), Some(interest)) => {
                e.interests[at] = interest;
                Ok(0)
            }
            (EPOLL_CTL_DEL, Some(at), _) => {
                e.interests.copy_within(at + 1..e.len, at);
                e.len -= 1;
                Ok(0)
            }
            (EPOLL_CTL_MOD | EPOLL_CTL_DEL, None, _) => Err(ENOENT),
            _ => Err(EINVAL),
        }
    })
}

/// `epoll_pwait(epfd, events, max, timeout_ms, sigmask)` (the signal mask is not applied).
/// Writes the ready events and answers their count, or blocks (see the module comment).
pub fn wait(frame: &mut UserFrame, cpu: usize, [epfd, events, max, timeout, _, _]: [u64; 6]) -> Option<SysResult> {
    let instance = match instance_of(epfd) {
        Ok(instance) => instance,
        Err(errno) => return Some(Err(errno)),
    };
    let max = max as i32;
    if max <= 0 || max > 1024 {
        return Some(Err(EINVAL));
    }
    if let Err(errno) = user::writable(events, max as u64 * 12) {
        return Some(Err(errno));
    }
    let interests = INSTANCES.with(|all| all[instance]);
    let mut ready = 0;
    for interest in &interests.interests[..interests.len] {
        let now = pipe::readiness(interest.fd) & (interest.events | EPOLLERR_HUP);
        if now != 0 && ready < max as u64 {
            let mut bytes = [0u8; 12];
            bytes[0..4].copy_from_slice(&now.to_le_bytes());
            bytes[4..12].copy_from_slice(&interest.data.to_le_bytes());
            if let Err(errno) = user::write(events + ready * 12, bytes) {
                return Some(Err(errno));
            }
            ready += 1;
        }
    }
    let timeout = timeout as i32;
    if ready > 0 || timeout == 0 {
        return Some(Ok(ready));
    }
    let deadline =
        if timeout < 0 { u64::MAX } else { crate::clock::monotonic_ns().saturating_add(timeout as u64 * 1_000_000) };
    let mut sched = SCHED.lock();
    if sched.signal_waiting(cpu) {
        return Some(Err(EINTR));
    }
    let thread = sched.block_current(cpu, frame, waiters_key(), u32::MAX, deadline, 0);
    sched.threads[thread].restartable = true;
    sched::run_next(sched, cpu, frame);
    None
}

/// Something may have become ready: every waiter runs its `epoll_pwait` again.
pub fn notify() {
    let key = waiters_key();
    let mut wakeups = Wakeups::default();
    SCHED.with(|sched| {
        for thread in sched.used() {
            let t = &sched.threads[thread];
            if t.state == State::Blocked && t.futex == key {
                sched.make_runnable(thread, RESTART_SYSCALL, &mut wakeups);
            }
        }
    });
    wakeups.send();
}

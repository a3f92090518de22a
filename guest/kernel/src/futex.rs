//! `futex`: the one primitive every thread library waits with (pthread mutexes and condition
//! variables, Go's runtime, Rust's std). A thread waits on a 32-bit word of its memory while
//! it holds an expected value; another thread changes the word and wakes waiters.
//!
//! The check of the word and the decision to block happen under the scheduler's lock, and a
//! wake takes the same lock, so a wake between "the value is still X" and "asleep" cannot be
//! lost. There is one address space, so private and shared futexes are the same thing.

use crate::clock::{self, monotonic_ns};
use crate::entry::UserFrame;
use crate::errno::{Errno, SysResult, EAGAIN, EINTR, EINVAL, ENOSYS, ETIMEDOUT};
use crate::sched::{self, State, Wakeups, SCHED};
use crate::user;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
const FUTEX_BITSET_MATCH_ANY: u32 = u32::MAX;

/// `futex(uaddr, op, val, timeout_or_val2, uaddr2, val3)`. Waits block the caller (the result
/// reaches its RAX when it is woken); everything else answers at once.
pub fn futex(
    frame: &mut UserFrame,
    cpu: usize,
    [uaddr, op, val, timeout, uaddr2, val3]: [u64; 6],
) -> Option<SysResult> {
    let command = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    if !uaddr.is_multiple_of(4) {
        return Some(Err(EINVAL));
    }
    // As Linux: a realtime clock only for the waits that take an absolute time.
    if op & FUTEX_CLOCK_REALTIME != 0 && command != FUTEX_WAIT_BITSET {
        return Some(Err(ENOSYS));
    }
    // Even a wake must name a word of the program's memory.
    if let Err(errno) = user::readable(uaddr, 4) {
        return Some(Err(errno));
    }
    match command {
        FUTEX_WAIT => wait(frame, cpu, uaddr, val as u32, timeout, false, op, FUTEX_BITSET_MATCH_ANY),
        FUTEX_WAIT_BITSET if val3 as u32 == 0 => Some(Err(EINVAL)),
        FUTEX_WAIT_BITSET => wait(frame, cpu, uaddr, val as u32, timeout, true, op, val3 as u32),
        FUTEX_WAKE => Some(wake(uaddr, val, FUTEX_BITSET_MATCH_ANY)),
        FUTEX_WAKE_BITSET if val3 as u32 == 0 => Some(Err(EINVAL)),
        FUTEX_WAKE_BITSET => Some(wake(uaddr, val, val3 as u32)),
        FUTEX_REQUEUE => Some(requeue(uaddr, val, timeout, uaddr2, None)),
        FUTEX_CMP_REQUEUE => Some(requeue(uaddr, val, timeout, uaddr2, Some(val3 as u32))),
        FUTEX_WAKE_OP => Some(wake_op(uaddr, val, timeout, uaddr2, val3 as u32)),
        _ => Some(Err(ENOSYS)),
    }
}

/// Blocks while `*uaddr == expected`, until a wake or the timeout. `absolute`: the timeout is
/// a point in time (WAIT_BITSET, on CLOCK_REALTIME with FUTEX_CLOCK_REALTIME, else MONOTONIC);
/// otherwise a duration (FUTEX_WAIT).
#[allow(clippy::too_many_arguments)]
fn wait(
    frame: &mut UserFrame,
    cpu: usize,
    uaddr: u64,
    expected: u32,
    timeout: u64,
    absolute: bool,
    op: u64,
    bitset: u32,
) -> Option<SysResult> {
    let deadline = match deadline(timeout, absolute, op) {
        Ok(deadline) => deadline,
        Err(errno) => return Some(Err(errno)),
    };
    let mut sched = SCHED.lock();
    match user::read::<u32>(uaddr) {
        Err(errno) => return Some(Err(errno)),
        Ok(value) if value != expected => return Some(Err(EAGAIN)),
        Ok(_) => {}
    }
    if deadline <= monotonic_ns() {
        return Some(Err(ETIMEDOUT));
    }
    if sched.signal_waiting(cpu) {
        return Some(Err(EINTR));
    }
    let timed_out = (-i64::from(ETIMEDOUT.0)) as u64;
    sched.block_current(cpu, frame, uaddr, bitset, deadline, timed_out);
    sched::run_next(sched, cpu, frame);
    None
}

fn deadline(timeout: u64, absolute: bool, op: u64) -> Result<u64, Errno> {
    if timeout == 0 {
        return Ok(u64::MAX);
    }
    let [seconds, nanos]: [u64; 2] = user::read(timeout)?;
    if nanos >= 1_000_000_000 || (seconds as i64) < 0 {
        return Err(EINVAL);
    }
    let ns = seconds.saturating_mul(1_000_000_000).saturating_add(nanos);
    Ok(if !absolute {
        monotonic_ns().saturating_add(ns)
    } else if op & FUTEX_CLOCK_REALTIME != 0 {
        monotonic_ns().saturating_add(ns.saturating_sub(clock::realtime_ns()))
    } else {
        ns
    })
}

/// Wakes up to `count` threads waiting on `uaddr` whose bitset meets `bitset`, oldest first.
pub fn wake(uaddr: u64, count: u64, bitset: u32) -> SysResult {
    let mut wakeups = Wakeups::default();
    let woken = SCHED.with(|sched| wake_locked(sched, uaddr, count, bitset, &mut wakeups));
    wakeups.send();
    Ok(woken)
}

fn wake_locked(sched: &mut sched::Scheduler, uaddr: u64, count: u64, bitset: u32, wakeups: &mut Wakeups) -> u64 {
    let mut woken = 0;
    while woken < count {
        let oldest = sched
            .used()
            .filter(|&t| {
                let thread = &sched.threads[t];
                thread.state == State::Blocked && thread.futex == uaddr && thread.futex_bitset & bitset != 0
            })
            .min_by_key(|&t| sched.threads[t].wait_seq);
        let Some(thread) = oldest else { break };
        sched.make_runnable(thread, 0, wakeups);
        woken += 1;
    }
    woken
}

/// Wakes `count` waiters of `uaddr` and moves up to `limit` more to wait on `uaddr2`
/// (CMP_REQUEUE: only while `*uaddr` still holds `expected`).
fn requeue(uaddr: u64, count: u64, limit: u64, uaddr2: u64, expected: Option<u32>) -> SysResult {
    if !uaddr2.is_multiple_of(4) {
        return Err(EINVAL);
    }
    user::readable(uaddr2, 4)?;
    let mut wakeups = Wakeups::default();
    let result = SCHED.with(|sched| {
        if let Some(expected) = expected {
            if user::read::<u32>(uaddr)? != expected {
                return Err(EAGAIN);
            }
        }
        let woken = wake_locked(sched, uaddr, count, FUTEX_BITSET_MATCH_ANY, &mut wakeups);
        let mut moved = 0;
        for thread in sched.used() {
            let t = &mut sched.threads[thread];
            if moved < limit && t.state == State::Blocked && t.futex == uaddr {
                t.futex = uaddr2;
                moved += 1;
            }
        }
        Ok(woken + moved)
    });
    wakeups.send();
    result
}

/// FUTEX_WAKE_OP (glibc's condition variables): atomically `*uaddr2 = *uaddr2 OP oparg`, wake
/// `count` waiters on `uaddr`, and if the old `*uaddr2` meets the comparison, `count2` on
/// `uaddr2`.
fn wake_op(uaddr: u64, count: u64, count2: u64, uaddr2: u64, encoded: u32) -> SysResult {
    let op = (encoded >> 28) & 0xf;
    let cmp = (encoded >> 24) & 0xf;
    // Both arguments are signed 12-bit numbers, as Linux reads them.
    let sign_extend = |field: u32| (((field << 20) as i32) >> 20) as u32;
    let mut oparg = sign_extend((encoded >> 12) & 0xfff);
    let cmparg = sign_extend(encoded & 0xfff);
    if op & 8 != 0 {
        oparg = 1u32 << (oparg & 31); // Linux masks the shift to 0..31
    }
    let mut wakeups = Wakeups::default();
    let result = SCHED.with(|sched| {
        let old = user::read::<u32>(uaddr2)?;
        let new = match op & 7 {
            0 => oparg,
            1 => old.wrapping_add(oparg),
            2 => old | oparg,
            3 => old & !oparg,
            4 => old ^ oparg,
            _ => return Err(ENOSYS),
        };
        user::write(uaddr2, new)?;
        let meets = match cmp {
            0 => old == cmparg,
            1 => old != cmparg,
            2 => old < cmparg,
            3 => old <= cmparg,
            4 => old > cmparg,
            5 => old >= cmparg,
            _ => return Err(ENOSYS),
        };
        let mut woken = wake_locked(sched, uaddr, count, FUTEX_BITSET_MATCH_ANY, &mut wakeups);
        if meets {
            woken += wake_locked(sched, uaddr2, count2, FUTEX_BITSET_MATCH_ANY, &mut wakeups);
        }
        Ok(woken)
    });
    wakeups.send();
    result
}

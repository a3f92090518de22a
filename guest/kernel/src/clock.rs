//! Clocks from the TSC: `clock_gettime`, `gettimeofday`, `time`, and when a `nanosleep` ends
//! (the sleep itself is the scheduler's: the vCPU runs other threads or parks in the VMM).
//!
//! ns = (tsc - tsc_at_boot) * mult >> 32, with mult = 10^6 * 2^32 / tsc_khz computed once at
//! boot: integer only, one multiply per read. Wall-clock time is the host's realtime at boot
//! (from BootInfo) plus that. Every vCPU reads the same TSC (KVM keeps the vCPUs' TSCs in
//! step), so the clocks agree across vCPUs. The CPU-time clocks equal the monotonic one (not
//! per thread: an honest simplification).

use crate::cpu::rdtsc;
use crate::errno::{Errno, SysResult, EINVAL};
use crate::global::Global;
use crate::user;

#[derive(Clone, Copy)]
struct Clock {
    tsc_at_boot: u64,
    /// ns per TSC tick, fixed point 32.32.
    mult: u64,
    realtime_ns_at_boot: u64,
}

#[link_section = ".data.hot"]
static CLOCK: Global<Clock> = Global::new(Clock { tsc_at_boot: 0, mult: 1 << 32, realtime_ns_at_boot: 0 });

const NS_PER_SEC: u64 = 1_000_000_000;
/// Assumed when the VMM does not know the TSC frequency.
const FALLBACK_TSC_KHZ: u64 = 1_000_000;

pub fn init(tsc_at_boot: u64, tsc_khz: u64, realtime_ns_at_boot: u64) {
    let khz = if tsc_khz == 0 { FALLBACK_TSC_KHZ } else { tsc_khz };
    CLOCK.set(Clock { tsc_at_boot, mult: (1_000_000u64 << 32) / khz, realtime_ns_at_boot });
}

/// Nanoseconds since the kernel started.
pub fn monotonic_ns() -> u64 {
    let clock = CLOCK.get();
    let ticks = rdtsc().wrapping_sub(clock.tsc_at_boot);
    ((ticks as u128 * clock.mult as u128) >> 32) as u64
}

pub fn realtime_ns() -> u64 {
    CLOCK.get().realtime_ns_at_boot + monotonic_ns()
}

const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;
const CLOCK_PROCESS_CPUTIME_ID: u64 = 2;
const CLOCK_THREAD_CPUTIME_ID: u64 = 3;
const CLOCK_MONOTONIC_RAW: u64 = 4;
const CLOCK_REALTIME_COARSE: u64 = 5;
const CLOCK_MONOTONIC_COARSE: u64 = 6;
const CLOCK_BOOTTIME: u64 = 7;
const CLOCK_REALTIME_ALARM: u64 = 8;
const CLOCK_BOOTTIME_ALARM: u64 = 9;
const CLOCK_TAI: u64 = 11;

fn read_clock(id: u64) -> Option<u64> {
    match id {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE | CLOCK_REALTIME_ALARM | CLOCK_TAI => Some(realtime_ns()),
        CLOCK_MONOTONIC
        | CLOCK_MONOTONIC_RAW
        | CLOCK_MONOTONIC_COARSE
        | CLOCK_BOOTTIME
        | CLOCK_BOOTTIME_ALARM
        | CLOCK_PROCESS_CPUTIME_ID
        | CLOCK_THREAD_CPUTIME_ID => Some(monotonic_ns()),
        _ => None,
    }
}

/// `struct timespec` / `struct timeval`: two 64-bit integers.
fn split(ns: u64, unit: u64) -> [u64; 2] {
    [ns / NS_PER_SEC, (ns % NS_PER_SEC) / unit]
}

pub fn clock_gettime(id: u64, timespec: u64) -> SysResult {
    let ns = read_clock(id).ok_or(EINVAL)?;
    user::write(timespec, split(ns, 1))?;
    Ok(0)
}

pub fn clock_getres(id: u64, timespec: u64) -> SysResult {
    read_clock(id).ok_or(EINVAL)?;
    user::write_optional(timespec, [0u64, 1])?;
    Ok(0)
}

pub fn gettimeofday(timeval: u64, timezone: u64) -> SysResult {
    user::write_optional(timeval, split(realtime_ns(), 1000))?;
    user::write_optional(timezone, [0u32; 2])?;
    Ok(0)
}

pub fn time(out: u64) -> SysResult {
    let seconds = realtime_ns() / NS_PER_SEC;
    user::write_optional(out, seconds)?;
    Ok(seconds)
}

/// The monotonic time a `nanosleep(request, remaining)` ends. The caller blocks until then
/// (sched.rs: the vCPU runs other threads or parks in the VMM); a signal that interrupts it
/// writes what was left to `remaining` (signal.rs).
pub fn nanosleep_deadline(request: u64) -> Result<u64, Errno> {
    let [seconds, nanos]: [u64; 2] = user::read(request)?;
    if nanos >= NS_PER_SEC || seconds > i64::MAX as u64 {
        return Err(EINVAL);
    }
    Ok(monotonic_ns().saturating_add(seconds.saturating_mul(NS_PER_SEC)).saturating_add(nanos))
}

const TIMER_ABSTIME: u64 = 1;

/// The same for `clock_nanosleep(id, flags, request, remaining)`: relative, or with
/// TIMER_ABSTIME a point on clock `id`.
pub fn clock_nanosleep_deadline(id: u64, flags: u64, request: u64) -> Result<u64, Errno> {
    let now = read_clock(id).ok_or(EINVAL)?;
    if flags & TIMER_ABSTIME == 0 {
        return nanosleep_deadline(request);
    }
    let [seconds, nanos]: [u64; 2] = user::read(request)?;
    if nanos >= NS_PER_SEC || seconds > i64::MAX as u64 {
        return Err(EINVAL);
    }
    let target = seconds.saturating_mul(NS_PER_SEC).saturating_add(nanos);
    Ok(monotonic_ns().saturating_add(target.saturating_sub(now)))
}

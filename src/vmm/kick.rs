//! Getting the vCPU thread out of `KVM_RUN` when the guest never exits by itself.
//!
//! A POSIX timer sends a real-time signal to the vCPU thread every [`KICK_PERIOD`]. Its
//! handler does nothing and is installed without `SA_RESTART`, so a `KVM_RUN` in progress
//! returns `EINTR`; the run loop then checks the `--timeout` deadline and cvm's own SIGINT /
//! SIGTERM flag. The tick is periodic, so a signal that lands just before `KVM_RUN` starts
//! costs one period, never a hang. A guest busy at CPL3 pays one exit per period (0.05 % of a
//! core at 50 ms).

use std::cell::Cell;
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, Result};

pub const KICK_PERIOD: Duration = Duration::from_millis(50);

/// A vCPU's host thread, to kick: its kernel thread id. Not a pthread_t: the end of a run
/// kicks every vCPU thread, some of which may have returned already, and with musl
/// `pthread_kill` on a finished thread reads freed memory (a crash seen under load with 4
/// vCPUs); `tgkill` of a finished thread is only ESRCH.
#[derive(Clone, Copy, Debug)]
pub struct VcpuThread(libc::pid_t);

impl VcpuThread {
    /// The calling thread.
    pub fn current() -> VcpuThread {
        // SAFETY: gettid has no preconditions.
        VcpuThread(unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t)
    }
}

/// Sends the kick signal to `thread` now: its `KVM_RUN` (or park) returns at once.
pub fn kick_thread(thread: VcpuThread) {
    install_handler();
    // SAFETY: tgkill only signals a thread of this process (a reused id can only be another
    // thread of cvm, for which the kick's handler does nothing either).
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), thread.0, kick_signal()) };
}

/// The signal used to kick the vCPU out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

extern "C" fn ignore_kick(_: libc::c_int) {}

fn install_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler does nothing, which is
        // async-signal-safe; no SA_RESTART on purpose (KVM_RUN must return EINTR).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_kick as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(kick_signal(), &action, std::ptr::null_mut());
        }
    });
}

/// A periodic timer signalling the calling thread; deleted on drop.
pub struct VcpuKicker {
    timer: libc::timer_t,
}

thread_local! {
    /// The kicker of this thread while it runs, and its period: what [`paused`] stops.
    static ACTIVE: Cell<Option<(libc::timer_t, Duration)>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's kick timer stopped: while the VMM parks the vCPU thread for a
/// sleeping guest it is not in `KVM_RUN`, so kicks would only wake it for nothing (20 times a
/// second, in every idle VM). `f` must bound its own waiting (the run's deadline, cvm's
/// interrupt flag).
pub fn paused<R>(f: impl FnOnce() -> R) -> R {
    let active = ACTIVE.with(Cell::get);
    if let Some((timer, _)) = active {
        arm(timer, Duration::ZERO);
    }
    let result = f();
    if let Some((timer, period)) = active {
        arm(timer, period);
    }
    result
}

/// Makes this thread's next kick come no later than `when` (then every period again): how the
/// guest's one-shot timer gets the vCPU out of `KVM_RUN` on time.
pub fn next_no_later_than(when: std::time::Instant) {
    if let Some((timer, period)) = ACTIVE.with(Cell::get) {
        let first = when.saturating_duration_since(std::time::Instant::now()).clamp(Duration::from_micros(1), period);
        arm_first(timer, first, period);
    }
}

/// Sets `timer` to fire every `period` (zero: disarmed).
fn arm(timer: libc::timer_t, period: Duration) -> bool {
    arm_first(timer, period, period)
}

/// Sets `timer` to fire after `first`, then every `period` (zero first: disarmed).
fn arm_first(timer: libc::timer_t, first: Duration, period: Duration) -> bool {
    let spec = |d: Duration| libc::timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ };
    let schedule = libc::itimerspec { it_interval: spec(period), it_value: spec(first) };
    // SAFETY: `timer` is a live timer of this thread's kicker; `schedule` is valid for the call.
    unsafe { libc::timer_settime(timer, 0, &schedule, std::ptr::null_mut()) == 0 }
}

impl VcpuKicker {
    /// Starts ticking the calling thread (the one that will call `KVM_RUN`).
    pub fn start(period: Duration) -> Result<VcpuKicker> {
        install_handler();
        // SAFETY: zeroed sigevent is a valid starting point; the fields set below select
        // delivery of `kick_signal()` to this thread (SIGEV_THREAD_ID).
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = kick_signal();
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `event` and `timer` are valid for the call; the timer is deleted in Drop.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating the vCPU kick timer");
        }
        let kicker = VcpuKicker { timer };
        if !arm(kicker.timer, period) {
            return Err(std::io::Error::last_os_error()).context("arming the vCPU kick timer");
        }
        ACTIVE.with(|active| active.set(Some((kicker.timer, period))));
        Ok(kicker)
    }
}

impl Drop for VcpuKicker {
    fn drop(&mut self) {
        ACTIVE.with(|active| active.set(None));
        // SAFETY: the timer was created by timer_create and is deleted exactly once.
        unsafe {
            libc::timer_delete(self.timer);
        }
    }
}

//! Port 0x502, Sleep: the guest kernel has nothing to run for the given number of microseconds
//! (the program called `nanosleep`). The VMM parks the vCPU's thread for that long instead of
//! letting the guest spin on its clock, so an idle VM costs the host no CPU. The TSC keeps
//! running, so the guest's clock is right when it wakes; the guest checks it and asks again
//! if it woke early. The park ends early at the run's deadline or when cvm is interrupted. The
//! vCPU kick timer is stopped during the park, so an idle VM wakes its host thread only when its
//! guest asks to be woken (and at most once a second).

use std::time::{Duration, Instant};

use crate::interrupt;

/// How long the vCPU thread slept, for the record.
#[derive(Debug, Default)]
pub struct Sleeper {
    pub requests: u64,
    pub slept: Duration,
}

impl Sleeper {
    /// Parks the calling (vCPU) thread for `micros`, or until `deadline` or an interruption.
    /// The kick timer is stopped meanwhile; a stopping signal interrupts the sleep (EINTR), and
    /// the sleep goes in slices of at most a second so one that lands just before it is seen
    /// within a second.
    pub fn sleep(&mut self, micros: u32, deadline: Instant) {
        self.requests += 1;
        let started = Instant::now();
        let until = (started + Duration::from_micros(u64::from(micros))).min(deadline);
        crate::vmm::kick::paused(|| loop {
            let now = Instant::now();
            if now >= until || interrupt::requested().is_some() {
                break;
            }
            sleep_once((until - now).min(Duration::from_secs(1)));
        });
        self.slept += started.elapsed();
    }
}

/// One nanosleep of at most `duration`; a signal ends it early (no restart).
fn sleep_once(duration: Duration) {
    let request = libc::timespec { tv_sec: duration.as_secs() as libc::time_t, tv_nsec: duration.subsec_nanos() as _ };
    // SAFETY: a valid timespec; no remainder is asked for.
    unsafe { libc::nanosleep(&request, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_the_time_asked_but_never_past_the_deadline() {
        let mut sleeper = Sleeper::default();
        let started = Instant::now();
        sleeper.sleep(20_000, started + Duration::from_secs(5));
        assert!(started.elapsed() >= Duration::from_millis(20));
        let started = Instant::now();
        sleeper.sleep(5_000_000, started + Duration::from_millis(30));
        assert!(started.elapsed() < Duration::from_secs(1), "the deadline ends the sleep");
        assert_eq!(sleeper.requests, 2);
    }
}

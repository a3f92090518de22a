//! Port 0x502, Sleep: the guest kernel has nothing to run on this vCPU for the given number of
//! microseconds (its program called `nanosleep`, or all its threads wait). The VMM parks the
//! vCPU's thread for that long instead of letting the guest spin on its clock, so an idle VM
//! costs the host no CPU. The TSC keeps running, so the guest's clock is right when it wakes;
//! the guest checks it and asks again if it woke early. A park ends early at the run's deadline,
//! when cvm is interrupted (the signal interrupts the wait), or when another vCPU wakes this one
//! ([`Parker::wake`]). The vCPU kick timer is stopped during the park, so an idle VM wakes its
//! host thread only when its guest asks to be woken (and at most once a second).
//!
//! The first time every vCPU is parked at once for a while, the VMM gives back the copies of
//! the program's pages it made at start (`GuestRam::give_back_unchanged_file_pages`): an idle
//! VM then shares its program's unchanged pages with every other VM running the same program.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::super::bus::{port_value, Access, Device, PortAction};
use super::super::memory::GuestRam;
use super::lock;
use crate::interrupt;

/// Where a parked vCPU thread waits: an eventfd another thread can signal.
pub struct Parker {
    event: OwnedFd,
}

impl Parker {
    pub fn new() -> Result<Parker> {
        // SAFETY: eventfd with valid flags returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("creating a vCPU parker (eventfd)");
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Parker { event: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Ends the current (or the next) park of this vCPU.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a u64 we own to our eventfd.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Waits until `until`, a wake, or a signal, whichever is first. Returns true when woken.
    fn park(&self, until: Instant) -> bool {
        loop {
            if interrupt::requested().is_some() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            // At most a second at a time: bounds a signal that lands just before the poll.
            let wait = (until - now).min(Duration::from_secs(1));
            let mut fd = libc::pollfd { fd: self.event.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd; the timeout is at least 1 ms.
            let ready = unsafe { libc::poll(&mut fd, 1, wait.as_millis().max(1) as libc::c_int) };
            if ready > 0 {
                let mut value = 0u64;
                // SAFETY: reading the 8-byte counter into a u64 we own (resets it).
                unsafe { libc::read(self.event.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
                return true;
            }
        }
    }
}

/// The Sleep port of every vCPU.
pub struct SleepDevice {
    parkers: Vec<Parker>,
    deadline: Instant,
    requests: AtomicU64,
    slept_ns: AtomicU64,
    /// How many vCPUs are in a park; a vCPU leaving one waits while the copies are given back.
    parked: Mutex<usize>,
}

/// A park at least this long is "a while": worth giving the program's copied pages back for.
const IDLE_MICROS: u32 = 10_000;

impl SleepDevice {
    pub fn new(cpus: usize, deadline: Instant) -> Result<SleepDevice> {
        let parkers = (0..cpus.max(1)).map(|_| Parker::new()).collect::<Result<_>>()?;
        Ok(SleepDevice {
            parkers,
            deadline,
            requests: AtomicU64::new(0),
            slept_ns: AtomicU64::new(0),
            parked: Mutex::new(0),
        })
    }

    /// Wakes every parked vCPU (the run is over: they must notice).
    pub fn wake_all(&self) {
        self.parkers.iter().for_each(Parker::wake);
    }

    /// The parker of vCPU `cpu`, to wake it from another thread.
    pub fn parker(&self, cpu: usize) -> Option<&Parker> {
        self.parkers.get(cpu)
    }

    /// How many parks the guest asked for, and how long its vCPUs slept in total.
    pub fn totals(&self) -> (u64, Duration) {
        (self.requests.load(Ordering::Relaxed), Duration::from_nanos(self.slept_ns.load(Ordering::Relaxed)))
    }

    /// Parks vCPU `cpu` for `micros` (or until the deadline, a wake or an interruption). When
    /// this makes every vCPU parked and the park is long, gives `ram`'s copied pages back first.
    pub fn sleep(&self, cpu: usize, micros: u32, ram: Option<&GuestRam>) {
        let Some(parker) = self.parkers.get(cpu) else { return };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let until = (started + Duration::from_micros(u64::from(micros))).min(self.deadline);
        {
            let mut parked = lock(&self.parked);
            *parked += 1;
            if let Some(ram) = ram.filter(|_| *parked == self.parkers.len() && micros >= IDLE_MICROS) {
                // No vCPU runs guest code: the others are parked, and one leaving its park
                // waits for this lock. Failing to give back only costs memory.
                let _ = ram.give_back_unchanged_file_pages();
            }
        }
        crate::vmm::kick::paused(|| parker.park(until));
        *lock(&self.parked) -= 1;
        self.slept_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Device for SleepDevice {
    fn write(&self, _port: u16, data: &[u8], access: &Access) -> PortAction {
        // The run loop checks the deadline and interruptions when the guest resumes.
        self.sleep(access.cpu, port_value(data), Some(access.ram));
        PortAction::Continue
    }
}

/// Port 0x503, Wake: ends the park of the vCPU whose number is written (another vCPU queued a
/// thread for it).
pub struct WakePort(pub std::sync::Arc<SleepDevice>);

impl Device for WakePort {
    fn write(&self, _port: u16, data: &[u8], _access: &Access) -> PortAction {
        if let Some(parker) = self.0.parker(port_value(data) as usize) {
            parker.wake();
        }
        PortAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_the_time_asked_but_never_past_the_deadline_and_wakes_early() {
        let started = Instant::now();
        let device = SleepDevice::new(2, started + Duration::from_secs(5)).unwrap();
        device.sleep(0, 20_000, None);
        assert!(started.elapsed() >= Duration::from_millis(20));
        let short = SleepDevice::new(1, Instant::now() + Duration::from_millis(30)).unwrap();
        let started = Instant::now();
        short.sleep(0, 5_000_000, None);
        assert!(started.elapsed() < Duration::from_secs(1), "the deadline ends the sleep");
        std::thread::scope(|scope| {
            let started = Instant::now();
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                device.parker(1).unwrap().wake();
            });
            device.sleep(1, 3_000_000, None);
            assert!(started.elapsed() < Duration::from_secs(2), "a wake ends the sleep");
        });
        assert_eq!(device.totals().0, 2);
    }

    #[test]
    fn the_copied_program_pages_go_back_when_every_vcpu_parks_for_a_while() {
        use std::io::Write;
        let page = crate::vmm::memory::host_page_size();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![7u8; 2 * page as usize]).unwrap();
        let ram = GuestRam::new(4 << 20).unwrap();
        ram.map_file(0x10_0000, 2 * page, &file, 0).unwrap();
        let device = SleepDevice::new(1, Instant::now() + Duration::from_secs(5)).unwrap();
        device.sleep(0, 100, Some(&ram));
        assert_eq!(ram.residency(0).unwrap().anonymous, 2 * page, "a short park keeps the copies");
        device.sleep(0, IDLE_MICROS, Some(&ram));
        assert_eq!(ram.residency(0).unwrap().anonymous, 0, "a long one gives them back");
        let two = SleepDevice::new(2, Instant::now() + Duration::from_secs(5)).unwrap();
        ram.map_file(0x20_0000, page, &file, 0).unwrap();
        two.sleep(0, IDLE_MICROS, Some(&ram));
        assert_eq!(ram.residency(0).unwrap().anonymous, page, "not while another vCPU may run");
    }
}

//! Port 0x504, Timer: a one-shot timer per vCPU, like a TSC-deadline timer. The guest writes
//! how many microseconds from now it wants interrupt [`TIMER_VECTOR`] (0 cancels). The VMM
//! makes that vCPU's `KVM_RUN` return by then (its kick timer fires early) and injects the
//! interrupt before entering the guest again (`KVM_INTERRUPT`); KVM holds it while the guest
//! runs with interrupts off. The guest kernel uses it to end a thread's time slice when others
//! wait for a vCPU, and to wake sleeping threads when no vCPU is parked to watch the clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::super::bus::{port_value, Access, Device, PortAction};
use super::lock;

pub use cvm_guest_abi::TIMER_VECTOR;

pub struct TimerDevice {
    deadlines: Vec<Mutex<Option<Instant>>>,
}

impl TimerDevice {
    pub fn new(cpus: usize) -> TimerDevice {
        TimerDevice { deadlines: (0..cpus.max(1)).map(|_| Mutex::new(None)).collect() }
    }

    /// Makes vCPU `cpu`'s timer expire now (port INTERRUPT): it gets the interrupt as soon as
    /// it runs the program.
    pub fn fire_now(&self, cpu: usize, now: Instant) {
        if let Some(slot) = self.deadlines.get(cpu) {
            *lock(slot) = Some(now);
        }
    }

    /// True (once) when vCPU `cpu`'s timer has expired: the caller injects the interrupt.
    pub fn take_due(&self, cpu: usize, now: Instant) -> bool {
        let Some(slot) = self.deadlines.get(cpu) else { return false };
        let mut deadline = lock(slot);
        match *deadline {
            Some(when) if when <= now => {
                *deadline = None;
                true
            }
            _ => false,
        }
    }
}

impl Device for TimerDevice {
    fn write(&self, _port: u16, data: &[u8], access: &Access) -> PortAction {
        let Some(slot) = self.deadlines.get(access.cpu) else { return PortAction::Continue };
        let micros = port_value(data);
        let deadline = (micros != 0).then(|| access.now + Duration::from_micros(u64::from(micros)));
        *lock(slot) = deadline;
        // This runs on the vCPU's own thread: make its next kick come no later than that.
        if let Some(when) = deadline {
            crate::vmm::kick::next_no_later_than(when);
        }
        PortAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::memory::GuestRam;

    #[test]
    fn fires_once_after_its_time_and_can_be_cancelled() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let timer = TimerDevice::new(2);
        let now = Instant::now();
        timer.write(0x504, &1000u32.to_le_bytes(), &Access { cpu: 1, ram: &ram, now });
        assert!(!timer.take_due(1, now));
        assert!(!timer.take_due(0, now + Duration::from_secs(1)), "another vCPU's timer");
        assert!(timer.take_due(1, now + Duration::from_millis(2)));
        assert!(!timer.take_due(1, now + Duration::from_millis(3)), "one shot");
        timer.write(0x504, &1000u32.to_le_bytes(), &Access { cpu: 1, ram: &ram, now });
        timer.write(0x504, &0u32.to_le_bytes(), &Access { cpu: 1, ram: &ram, now });
        assert!(!timer.take_due(1, now + Duration::from_secs(1)), "cancelled");
    }
}

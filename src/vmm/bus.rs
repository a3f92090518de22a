//! The device bus: which device answers an I/O port (or an MMIO address), as Firecracker's
//! `vstate/bus.rs` and rust-vmm's `vm-device` do it. Devices register the port range they own;
//! an exit is routed by a binary search over the ranges, which never change once the VM runs.
//! A device is shared by every vCPU thread, so it keeps its own state behind its own lock and
//! never holds a lock while it waits (a parked vCPU must not stop the others' devices).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};

use super::memory::GuestRam;
use super::VmStop;

/// What the run loop does after a device access.
#[derive(Debug)]
pub enum PortAction {
    Continue,
    Stop(VmStop),
}

/// The circumstances of one access: which vCPU made it, guest RAM, and when.
pub struct Access<'a> {
    pub cpu: usize,
    pub ram: &'a GuestRam,
    pub now: Instant,
}

/// A device behind one or more I/O ports.
pub trait Device: Send + Sync {
    /// `out` to one of the device's ports.
    fn write(&self, port: u16, data: &[u8], access: &Access) -> PortAction;
    /// `in` from one of the device's ports; the default reads all ones, like an empty slot.
    fn read(&self, _port: u16, data: &mut [u8], _access: &Access) -> PortAction {
        data.fill(0xff);
        PortAction::Continue
    }
}

/// How accesses no device answers are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownPorts {
    /// The builtin kernel knows the ports: touching another one is a bug that ends the run.
    Refuse,
    /// A Linux kernel probes legacy hardware: reads return all ones, writes are dropped.
    Ignore,
}

struct PortRange {
    first: u16,
    last: u16,
    device: Arc<dyn Device>,
}

pub struct Bus {
    /// Sorted by `first`, never overlapping.
    ports: Vec<PortRange>,
    unknown: UnknownPorts,
    /// Accesses to unknown ports (and MMIO addresses) that were ignored.
    ignored: AtomicU64,
}

/// Little-endian value of a 1-, 2- or 4-byte port write.
pub fn port_value(data: &[u8]) -> u32 {
    data.iter().take(4).rev().fold(0, |value, &byte| (value << 8) | u32::from(byte))
}

impl Bus {
    pub fn new(unknown: UnknownPorts) -> Bus {
        Bus { ports: Vec::new(), unknown, ignored: AtomicU64::new(0) }
    }

    /// Gives `device` the ports [first, first + count).
    pub fn register(&mut self, first: u16, count: u16, device: Arc<dyn Device>) -> Result<()> {
        let Some(last) = count.checked_sub(1).and_then(|extra| first.checked_add(extra)) else {
            bail!("a device cannot own {count} ports from {first:#x}");
        };
        if let Some(taken) = self.ports.iter().find(|r| r.first <= last && first <= r.last) {
            bail!("ports {first:#x}..={last:#x} overlap {:#x}..={:#x}, already taken", taken.first, taken.last);
        }
        let at = self.ports.partition_point(|r| r.first < first);
        self.ports.insert(at, PortRange { first, last, device });
        Ok(())
    }

    fn device(&self, port: u16) -> Option<&Arc<dyn Device>> {
        let index = self.ports.partition_point(|r| r.first <= port).checked_sub(1)?;
        let range = &self.ports[index];
        (port <= range.last).then_some(&range.device)
    }

    pub fn write(&self, port: u16, data: &[u8], access: &Access) -> PortAction {
        match self.device(port) {
            Some(device) => device.write(port, data, access),
            None => self.unknown(|| {
                format!("the guest made a {}-byte write to I/O port {port:#x}, where this VM has no device", data.len())
            }),
        }
    }

    pub fn read(&self, port: u16, data: &mut [u8], access: &Access) -> PortAction {
        match self.device(port) {
            Some(device) => device.read(port, data, access),
            None => {
                data.fill(0xff);
                let width = data.len();
                self.unknown(|| {
                    format!("the guest made a {width}-byte read from I/O port {port:#x}, where this VM has no device")
                })
            }
        }
    }

    /// An access to guest-physical `address` outside RAM: there are no MMIO devices.
    pub fn mmio(&self, address: u64, access: &str, data: &mut [u8]) -> PortAction {
        data.fill(0xff);
        let width = data.len();
        self.unknown(|| {
            format!(
                "the guest made a {width}-byte {access} address {address:#x}, which is neither guest RAM nor a device (MMIO)"
            )
        })
    }

    /// Accesses no device answered that were ignored (a Linux kernel probing hardware).
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    /// What an access no device answers does: ignored (counted) or the end of the run.
    fn unknown(&self, reason: impl FnOnce() -> String) -> PortAction {
        match self.unknown {
            UnknownPorts::Ignore => {
                self.ignored.fetch_add(1, Ordering::Relaxed);
                PortAction::Continue
            }
            UnknownPorts::Refuse => PortAction::Stop(VmStop::UnhandledDevice { reason: reason() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u16, u32)>>);

    impl Device for Recorder {
        fn write(&self, port: u16, data: &[u8], _access: &Access) -> PortAction {
            self.0.lock().unwrap().push((port, port_value(data)));
            PortAction::Continue
        }
    }

    #[test]
    fn routes_by_range_and_refuses_the_rest() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let access = Access { cpu: 0, ram: &ram, now: Instant::now() };
        let serial = Arc::new(Recorder::default());
        let exit = Arc::new(Recorder::default());
        let mut bus = Bus::new(UnknownPorts::Refuse);
        bus.register(0x3f8, 8, serial.clone()).unwrap();
        bus.register(0xf4, 1, exit.clone()).unwrap();
        assert!(bus.register(0x3fc, 2, exit.clone()).is_err(), "overlap");
        assert!(bus.register(0xffff, 2, exit.clone()).is_err(), "past the last port");
        bus.write(0x3ff, &[7], &access);
        bus.write(0xf4, &[1, 2], &access);
        assert_eq!(*serial.0.lock().unwrap(), vec![(0x3ff, 7)]);
        assert_eq!(*exit.0.lock().unwrap(), vec![(0xf4, 0x201)]);
        assert!(matches!(bus.write(0x400, &[0], &access), PortAction::Stop(VmStop::UnhandledDevice { .. })));
        let mut data = [0u8; 2];
        assert!(matches!(bus.read(0x3f8, &mut data, &access), PortAction::Continue));
        assert_eq!(data, [0xff, 0xff]);
        let lenient = Bus::new(UnknownPorts::Ignore);
        assert!(matches!(lenient.write(0x61, &[0], &access), PortAction::Continue));
        assert_eq!(lenient.ignored(), 1);
    }
}

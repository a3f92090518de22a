//! The VM's devices: all of them are I/O ports (the VM has no MMIO device and no interrupt
//! controller). The guest ABI (`guest/abi`) fixes the ports; [`PortBus`] routes an `in`/`out`
//! exit to the device behind the port.

pub mod boot_timer;
pub mod console;
pub mod exit_port;
pub mod fault;
pub mod serial;
pub mod sleep;

use std::time::Instant;

use cvm_guest_abi::port;

use super::memory::GuestRam;
use super::VmStop;
use crate::runtime::relay::Stalled;
use boot_timer::BootTimer;
use console::{ConsoleError, ProgramConsole};
use serial::SerialConsole;
use sleep::Sleeper;

/// What the run loop does after a port access.
#[derive(Debug)]
pub enum PortAction {
    Continue,
    Stop(VmStop),
}

/// How unknown ports are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownPorts {
    /// The builtin kernel knows the ports: touching another one is a bug that ends the run.
    Refuse,
    /// A Linux kernel probes legacy hardware: reads return all ones, writes are dropped.
    Ignore,
}

pub struct PortBus {
    pub serial: SerialConsole,
    pub sleeper: Sleeper,
    /// The run's deadline: a sleeping vCPU wakes up then at the latest.
    pub deadline: Instant,
    pub boot_timer: BootTimer,
    pub console: ProgramConsole,
    pub unknown_ports: UnknownPorts,
    /// The cvm guest ABI's ports (boot timer, ConsoleWrite, fault report) are served; off for a
    /// Linux kernel, which uses port 0x80 for I/O delays.
    pub abi_ports: bool,
    /// Accesses to unknown ports (and MMIO addresses) that were ignored.
    pub ignored: u64,
}

/// Little-endian value of a 1-, 2- or 4-byte port write.
pub fn port_value(data: &[u8]) -> u32 {
    data.iter().take(4).rev().fold(0, |value, &byte| (value << 8) | u32::from(byte))
}

impl PortBus {
    /// The devices of one run; live output (with `echo`) gives up waiting on a stalled reader
    /// at `deadline`.
    pub fn new(echo: bool, unknown_ports: UnknownPorts, deadline: Instant) -> PortBus {
        PortBus {
            serial: SerialConsole::new(echo, deadline),
            sleeper: Sleeper::default(),
            deadline,
            boot_timer: BootTimer::default(),
            console: ProgramConsole::new(echo, deadline),
            unknown_ports,
            abi_ports: true,
            ignored: 0,
        }
    }

    /// The devices a Linux kernel sees: the serial console and the exit port; everything else
    /// reads as all ones and ignores writes, like empty ISA slots.
    pub fn for_linux(echo: bool, deadline: Instant) -> PortBus {
        PortBus { abi_ports: false, ..PortBus::new(echo, UnknownPorts::Ignore, deadline) }
    }

    pub fn write(&mut self, address: u16, data: &[u8], ram: &GuestRam, now: Instant) -> PortAction {
        let value = port_value(data);
        match address {
            _ if SerialConsole::owns(address) => {
                self.serial.write(address, value as u8);
                PortAction::Continue
            }
            port::EXIT => PortAction::Stop(exit_port::stop(value)),
            port::BOOT_TIMER | port::CONSOLE_WRITE | port::GUEST_FAULT | port::SLEEP if !self.abi_ports => {
                self.unknown(address, "write to", data.len())
            }
            port::BOOT_TIMER => {
                self.boot_timer.record(value as u8, now);
                PortAction::Continue
            }
            port::CONSOLE_WRITE => match self.console.write(u64::from(value), ram, now) {
                Ok(()) => PortAction::Continue,
                Err(ConsoleError::Invalid(reason)) => PortAction::Stop(VmStop::KernelFault { reason }),
                Err(ConsoleError::Stalled(Stalled::Deadline)) => PortAction::Stop(VmStop::TimedOut),
                Err(ConsoleError::Stalled(Stalled::Interrupted(signal))) => {
                    PortAction::Stop(VmStop::Interrupted { signal })
                }
            },
            port::GUEST_FAULT => PortAction::Stop(fault::stop(u64::from(value), ram)),
            port::SLEEP => {
                // The run loop checks the deadline and interruptions when the guest resumes.
                self.sleeper.sleep(value, self.deadline);
                PortAction::Continue
            }
            other => self.unknown(other, "write to", data.len()),
        }
    }

    pub fn read(&mut self, address: u16, data: &mut [u8]) -> PortAction {
        if SerialConsole::owns(address) {
            let value = self.serial.read(address);
            data.fill(0);
            if let Some(first) = data.first_mut() {
                *first = value;
            }
            return PortAction::Continue;
        }
        data.fill(0xff);
        self.unknown(address, "read from", data.len())
    }

    /// An access to guest-physical `address` outside RAM: there are no MMIO devices.
    pub fn mmio(&mut self, address: u64, access: &str, data: &mut [u8]) -> PortAction {
        data.fill(0xff);
        let width = data.len();
        self.refuse_or_ignore(|| {
            format!(
                "the guest made a {width}-byte {access} address {address:#x}, which is neither guest RAM nor a device (MMIO)"
            )
        })
    }

    fn unknown(&mut self, address: u16, access: &str, width: usize) -> PortAction {
        self.refuse_or_ignore(|| {
            format!("the guest made a {width}-byte {access} I/O port {address:#x}, where this VM has no device")
        })
    }

    /// What an access no device answers does: ignored (counted) or the end of the run.
    fn refuse_or_ignore(&mut self, reason: impl FnOnce() -> String) -> PortAction {
        match self.unknown_ports {
            UnknownPorts::Ignore => {
                self.ignored += 1;
                PortAction::Continue
            }
            UnknownPorts::Refuse => PortAction::Stop(VmStop::UnhandledDevice { reason: reason() }),
        }
    }
}

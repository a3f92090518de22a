//! The VM's devices. All of them are I/O ports (the VM has no MMIO device); the guest ABI
//! (`guest/abi`) fixes the ports. [`Devices`] makes the set a VM gets and registers each on
//! the [`Bus`], which routes every `in`/`out` exit to the device that owns the port.

pub mod boot_timer;
pub mod console;
pub mod exit_port;
pub mod fault;
pub mod protect;
pub mod serial;
pub mod sleep;
pub mod timer;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Result;
use cvm_guest_abi::port;

use super::bus::{port_value, Access, Bus, Device, PortAction, UnknownPorts};
use super::VmStop;
use crate::runtime::relay::Stalled;
use boot_timer::BootTimer;
use console::{ConsoleError, ProgramConsole};
use protect::{FillTablePort, ShootdownPort};
use serial::SerialConsole;
use sleep::{SleepDevice, WakePort};
use timer::TimerDevice;

use super::tlb::Tlb;
use super::vcpu_threads::VcpuThreads;

/// Every device of one VM, and the bus that routes to them. The fields give the VMM what it
/// reads after the run (output, boot times); the bus is what the vCPUs use.
pub struct Devices {
    pub serial: Arc<Mutex<SerialConsole>>,
    pub boot_timer: Arc<Mutex<BootTimer>>,
    pub console: Arc<Mutex<ProgramConsole>>,
    pub sleep: Arc<SleepDevice>,
    pub timer: Arc<TimerDevice>,
    /// Every vCPU's cached translations, dropped when the page tables change.
    pub tlb: Arc<Tlb>,
    /// The host thread of each vCPU, to kick it.
    pub threads: Arc<VcpuThreads>,
    pub bus: Bus,
}

/// A poisoned lock only means another vCPU thread panicked; its data is still what it was.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Devices {
    /// What the builtin guest kernel uses: serial, exit, boot timer, ConsoleWrite, fault report,
    /// Sleep, Wake, Timer, TLB shootdown, Interrupt and page-table fill (for the kernel's
    /// page-table pool, [start, end)); any other port is a kernel bug that ends the run.
    /// Live output (with `echo`) gives up waiting on a stalled reader at `deadline`.
    pub fn builtin(cpus: usize, echo: bool, deadline: Instant, page_table_pool: (u64, u64)) -> Result<Devices> {
        let mut devices = Devices::bare(cpus, echo, deadline, UnknownPorts::Refuse)?;
        let bus = &mut devices.bus;
        bus.register(port::BOOT_TIMER, 1, devices.boot_timer.clone())?;
        bus.register(port::CONSOLE_WRITE, 1, devices.console.clone())?;
        bus.register(port::GUEST_FAULT, 1, Arc::new(FaultPort))?;
        bus.register(port::SLEEP, 1, devices.sleep.clone())?;
        bus.register(port::WAKE, 1, Arc::new(WakePort(devices.sleep.clone())))?;
        bus.register(port::TIMER, 1, devices.timer.clone())?;
        bus.register(port::TLB_SHOOTDOWN, 1, Arc::new(ShootdownPort(devices.tlb.clone())))?;
        let interrupt = InterruptPort { timer: devices.timer.clone(), threads: devices.threads.clone() };
        bus.register(port::INTERRUPT, 1, Arc::new(interrupt))?;
        bus.register(port::FILL_PAGE_TABLE, 1, Arc::new(FillTablePort(page_table_pool)))?;
        Ok(devices)
    }

    /// What a Linux kernel sees: the serial console and the exit port; everything else reads as
    /// all ones and ignores writes, like empty ISA slots (port 0x80 included: Linux uses it for
    /// I/O delays).
    pub fn for_linux(echo: bool, deadline: Instant) -> Result<Devices> {
        Devices::bare(1, echo, deadline, UnknownPorts::Ignore)
    }

    fn bare(cpus: usize, echo: bool, deadline: Instant, unknown: UnknownPorts) -> Result<Devices> {
        let serial = Arc::new(Mutex::new(SerialConsole::new(echo, deadline)));
        let mut bus = Bus::new(unknown);
        bus.register(port::SERIAL_COM1, serial::REGISTERS, serial.clone())?;
        bus.register(port::EXIT, 1, Arc::new(ExitPort))?;
        let threads = Arc::new(VcpuThreads::new(cpus));
        Ok(Devices {
            serial,
            boot_timer: Arc::new(Mutex::new(BootTimer::default())),
            console: Arc::new(Mutex::new(ProgramConsole::new(echo, deadline))),
            sleep: Arc::new(SleepDevice::new(cpus, deadline)?),
            timer: Arc::new(TimerDevice::new(cpus)),
            tlb: Arc::new(Tlb::new(cpus, threads.clone())),
            threads,
            bus,
        })
    }

    /// When the guest kernel said it entered the program (boot code 0x41).
    pub fn program_entered(&self) -> Option<Instant> {
        lock(&self.boot_timer).program_entered
    }
}

impl Device for Mutex<SerialConsole> {
    fn write(&self, port: u16, data: &[u8], _access: &Access) -> PortAction {
        lock(self).write(port, port_value(data) as u8);
        PortAction::Continue
    }

    fn read(&self, port: u16, data: &mut [u8], _access: &Access) -> PortAction {
        let value = lock(self).read(port);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
        PortAction::Continue
    }
}

impl Device for Mutex<BootTimer> {
    fn write(&self, _port: u16, data: &[u8], access: &Access) -> PortAction {
        lock(self).record(port_value(data) as u8, access.now);
        PortAction::Continue
    }
}

impl Device for Mutex<ProgramConsole> {
    fn write(&self, _port: u16, data: &[u8], access: &Access) -> PortAction {
        match lock(self).write(u64::from(port_value(data)), access.ram, access.now) {
            Ok(()) => PortAction::Continue,
            Err(ConsoleError::Invalid(reason)) => PortAction::Stop(VmStop::KernelFault { reason }),
            Err(ConsoleError::Stalled(Stalled::Deadline)) => PortAction::Stop(VmStop::TimedOut),
            Err(ConsoleError::Stalled(Stalled::Interrupted(signal))) => {
                PortAction::Stop(VmStop::Interrupted { signal })
            }
        }
    }
}

/// Port 0x506: interrupt the vCPU whose number is written (its timer fires now, and its
/// thread is kicked out of `KVM_RUN` so the VMM injects the interrupt at once).
struct InterruptPort {
    timer: Arc<TimerDevice>,
    threads: Arc<VcpuThreads>,
}

impl Device for InterruptPort {
    fn write(&self, _port: u16, data: &[u8], access: &Access) -> PortAction {
        let cpu = port_value(data) as usize;
        self.timer.fire_now(cpu, access.now);
        self.threads.kick(cpu);
        PortAction::Continue
    }
}

/// Port 0xf4: the run ends with the status written.
struct ExitPort;

impl Device for ExitPort {
    fn write(&self, _port: u16, data: &[u8], _access: &Access) -> PortAction {
        PortAction::Stop(exit_port::stop(port_value(data)))
    }
}

/// Port 0x501: the guest kernel's fault report ends the run.
struct FaultPort;

impl Device for FaultPort {
    fn write(&self, _port: u16, data: &[u8], access: &Access) -> PortAction {
        PortAction::Stop(fault::stop(u64::from(port_value(data)), access.ram))
    }
}

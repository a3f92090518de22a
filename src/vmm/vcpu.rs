//! One vCPU's run loop: `KVM_RUN` until the guest ends the run (or another vCPU does), with
//! every kind of VM exit handled and counted, and the guest's timer interrupt injected when it
//! is due. Nothing the guest does can make this loop panic or spin forever: every exit either
//! continues the guest or becomes a [`VmStop`] with a reason.

use std::time::Instant;

use anyhow::{Context, Result};
use kvm_bindings::{KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_SIMUL_EX};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::bus::{Access, Bus, PortAction};
use super::devices::timer::{TimerDevice, TIMER_VECTOR};
use super::exits::{ExitCounts, ExitKind};
use super::memory::GuestRam;
use super::tlb::Tlb;
use super::VmStop;
use crate::interrupt;

/// What one vCPU's loop works with.
pub struct VcpuContext<'a> {
    pub cpu: usize,
    pub bus: &'a Bus,
    pub ram: &'a GuestRam,
    pub deadline: Instant,
    /// The guest's one-shot timers, when the VM has them.
    pub timer: Option<&'a TimerDevice>,
    /// Set when another vCPU ended the run.
    pub stopping: Option<&'a std::sync::atomic::AtomicBool>,
    /// The VM's cached-translation bookkeeping, when the VMM may change its page tables.
    pub tlb: Option<&'a Tlb>,
}

impl<'a> VcpuContext<'a> {
    /// The only vCPU of a VM, without timers.
    pub fn single(bus: &'a Bus, ram: &'a GuestRam, deadline: Instant) -> VcpuContext<'a> {
        VcpuContext { cpu: 0, bus, ram, deadline, timer: None, stopping: None, tlb: None }
    }
}

/// How soon to look again when the timer is due but the vCPU is in the guest kernel.
const RETRY_INTERRUPT: std::time::Duration = std::time::Duration::from_micros(200);

/// True when the vCPU stopped in the program (at or above USER_BASE), where interrupts are
/// always on: the program cannot turn them off. Without an in-kernel interrupt controller KVM
/// injects what it is given even when the guest has interrupts off, and on PVM hosts neither
/// `if_flag` nor RFLAGS.IF from `KVM_GET_REGS` tells (both read 0 in user mode), so the VMM
/// injects only where it knows they are on; the guest kernel never runs up there.
fn in_program(vcpu: &VcpuFd) -> Result<bool> {
    let regs = vcpu.get_regs().context("reading the vCPU's registers (KVM_GET_REGS)")?;
    Ok(regs.rip >= cvm_guest_abi::USER_BASE)
}

/// `KVM_INTERRUPT` (no in-kernel interrupt controller): queue `vector` for the vCPU. KVM
/// delivers it once the guest has interrupts on; EEXIST means one is already queued.
fn inject(vcpu: &VcpuFd, vector: u8) -> Result<()> {
    use std::os::fd::AsRawFd;
    const KVM_INTERRUPT: libc::c_ulong = 0x4004_ae86;
    let irq: u32 = u32::from(vector);
    // SAFETY: KVM_INTERRUPT reads one struct kvm_interrupt { __u32 irq } from the pointer.
    let result = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT as _, &irq) };
    if result < 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EEXIST) {
            return Err(error).context("injecting the guest's timer interrupt (KVM_INTERRUPT)");
        }
    }
    Ok(())
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// An exit that needs the vCPU itself (registers) to be described, after the borrow of the
/// exit data has ended.
enum Pending {
    Continue,
    Stop(VmStop),
    Shutdown,
    InternalError,
    FailEntry(u64),
    Hlt,
}

/// Runs one vCPU until the run ends; counts exits by kind into `exits`. None: another vCPU
/// ended the run.
pub fn run(vcpu: &mut VcpuFd, context: &VcpuContext, exits: &mut ExitCounts) -> Result<Option<VmStop>> {
    let VcpuContext { cpu, bus, ram, deadline, timer, stopping, tlb } = *context;
    let mut count = |kind: ExitKind| exits.count(kind);
    let mut interrupt_due = false;
    loop {
        if stopping.is_some_and(|flag| flag.load(std::sync::atomic::Ordering::Acquire)) {
            return Ok(None);
        }
        if let Some(signal) = interrupt::requested() {
            return Ok(Some(VmStop::Interrupted { signal }));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Some(VmStop::TimedOut));
        }
        if timer.is_some_and(|timer| timer.take_due(cpu, now)) {
            interrupt_due = true;
        }
        if interrupt_due && in_program(vcpu)? {
            inject(vcpu, TIMER_VECTOR)?;
            interrupt_due = false;
        } else if interrupt_due {
            // In the guest kernel, perhaps with interrupts off: try again very soon.
            super::kick::next_no_later_than(now + RETRY_INTERRUPT);
        }
        if let Some(tlb) = tlb {
            tlb.before_entry(cpu, vcpu)?;
        }
        let ran = vcpu.run();
        if let Some(tlb) = tlb {
            tlb.after_exit(cpu);
        }
        let pending = match ran {
            Ok(exit) => {
                let access = Access { cpu, ram, now: Instant::now() };
                match exit {
                    VcpuExit::IoOut(port, data) => {
                        count(ExitKind::Io);
                        action(bus.write(port, data, &access))
                    }
                    VcpuExit::IoIn(port, data) => {
                        count(ExitKind::Io);
                        action(bus.read(port, data, &access))
                    }
                    VcpuExit::MmioRead(address, data) => {
                        count(ExitKind::Mmio);
                        action(bus.mmio(address, "read from", data))
                    }
                    VcpuExit::MmioWrite(address, data) => {
                        count(ExitKind::Mmio);
                        let mut ignored = [0u8; 8];
                        let width = data.len().min(8);
                        action(bus.mmio(address, "write to", &mut ignored[..width]))
                    }
                    VcpuExit::Hlt => {
                        count(ExitKind::Hlt);
                        Pending::Hlt
                    }
                    VcpuExit::Shutdown => {
                        count(ExitKind::Shutdown);
                        Pending::Shutdown
                    }
                    VcpuExit::InternalError => {
                        count(ExitKind::InternalError);
                        Pending::InternalError
                    }
                    VcpuExit::FailEntry(reason, _cpu) => {
                        count(ExitKind::FailEntry);
                        Pending::FailEntry(reason)
                    }
                    VcpuExit::SystemEvent(kind, _data) => {
                        count(ExitKind::SystemEvent);
                        Pending::Stop(system_event(kind))
                    }
                    VcpuExit::Intr => {
                        count(ExitKind::Intr);
                        Pending::Continue
                    }
                    VcpuExit::IrqWindowOpen => {
                        count(ExitKind::IrqWindow);
                        Pending::Continue
                    }
                    other => {
                        count(ExitKind::Other);
                        let name = exit_name(&other);
                        Pending::Stop(VmStop::KernelFault {
                            reason: format!("the VM stopped with a VM exit cvm does not handle ({name})"),
                        })
                    }
                }
            }
            Err(error) if error.errno() == libc::EINTR => {
                count(ExitKind::Intr);
                Pending::Continue
            }
            Err(error) if error.errno() == libc::EAGAIN => Pending::Continue,
            Err(error) => return Err(error).context("running the vCPU (KVM_RUN)"),
        };
        let stop = match pending {
            Pending::Continue => continue,
            Pending::Stop(stop) => stop,
            Pending::Hlt => VmStop::KernelFault {
                reason: format!(
                    "the guest kernel halted the CPU (hlt{}) and nothing will wake it: cvm's guest kernel parks through the Sleep port instead",
                    where_(vcpu)
                ),
            },
            Pending::Shutdown => VmStop::KernelFault {
                reason: format!(
                    "the VM shut down (triple fault{}): the guest kernel hit an exception it could not handle",
                    where_(vcpu)
                ),
            },
            Pending::InternalError => VmStop::KernelFault { reason: internal_error(vcpu, ram) },
            Pending::FailEntry(reason) => VmStop::KernelFault {
                reason: format!("KVM could not enter the guest (hardware entry failure reason {reason:#x})"),
            },
        };
        return Ok(Some(stop));
    }
}

fn action(port: PortAction) -> Pending {
    match port {
        PortAction::Continue => Pending::Continue,
        PortAction::Stop(stop) => Pending::Stop(stop),
    }
}

fn system_event(kind: u32) -> VmStop {
    let what = match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => "asked to power off",
        KVM_SYSTEM_EVENT_RESET => "asked to reset",
        KVM_SYSTEM_EVENT_CRASH => "reported a crash",
        _ => "raised a system event",
    };
    VmStop::KernelFault { reason: format!("the guest {what} (KVM system event {kind}) before the program exited") }
}

/// " at rip 0x...", when the registers can be read.
fn where_(vcpu: &VcpuFd) -> String {
    vcpu.get_regs().map(|regs| format!(" at rip {:#x}", regs.rip)).unwrap_or_default()
}

/// Why KVM gave up, with the instruction bytes when it was an emulation failure.
fn internal_error(vcpu: &mut VcpuFd, ram: &GuestRam) -> String {
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active union field.
    let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
    let location = where_(vcpu);
    match suberror {
        KVM_INTERNAL_ERROR_EMULATION => {
            let bytes = instruction_bytes(vcpu, ram);
            format!(
                "KVM could not emulate a guest-kernel instruction{location}{bytes}; \
                 on this host guest kernel code is emulated and some instructions are not supported"
            )
        }
        KVM_INTERNAL_ERROR_SIMUL_EX => format!("KVM hit an exception while delivering another{location}"),
        KVM_INTERNAL_ERROR_DELIVERY_EV => format!("KVM could not deliver an event to the guest{location}"),
        other => format!("KVM reported an internal error (suberror {other}){location}"),
    }
}

/// " (bytes 0f c7 ...)" read through the guest's page tables, or nothing.
fn instruction_bytes(vcpu: &VcpuFd, ram: &GuestRam) -> String {
    let Ok(regs) = vcpu.get_regs() else { return String::new() };
    let Ok(translation) = vcpu.translate_gva(regs.rip) else { return String::new() };
    if translation.valid == 0 {
        return String::new();
    }
    let mut bytes = [0u8; 8];
    if ram.read(translation.physical_address, &mut bytes).is_err() {
        return String::new();
    }
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match instruction_name(&bytes) {
        Some(name) => format!(" ({name}: instruction bytes {})", hex.join(" ")),
        None => format!(" (instruction bytes {})", hex.join(" ")),
    }
}

/// Names the instructions KVM's emulator is known to refuse, from their first bytes.
fn instruction_name(bytes: &[u8]) -> Option<&'static str> {
    let start = bytes.iter().position(|&b| !matches!(b, 0x40..=0x4f | 0x66 | 0xf0 | 0xf2 | 0xf3))?;
    let modrm_reg = |at: usize| bytes.get(at).map(|m| (m >> 3) & 7);
    match &bytes[start..] {
        [0xcc, ..] => Some("int3"),
        [0x0f, 0x0b, ..] => Some("ud2"),
        [0x0f, 0x01, 0xd0, ..] => Some("xgetbv"),
        [0x0f, 0x01, 0xd1, ..] => Some("xsetbv"),
        [0x0f, 0xc7, ..] if modrm_reg(start + 2) == Some(1) => Some("cmpxchg16b"),
        [0x0f, 0xae, ..] => match modrm_reg(start + 2) {
            Some(4) => Some("xsave"),
            Some(5) => Some("xrstor"),
            Some(0) => Some("fxsave"),
            Some(1) => Some("fxrstor"),
            _ => None,
        },
        _ => None,
    }
}

fn exit_name(exit: &VcpuExit) -> String {
    match exit {
        VcpuExit::Unknown => "unknown".into(),
        VcpuExit::Exception => "exception".into(),
        VcpuExit::Hypercall(_) => "hypercall".into(),
        VcpuExit::Debug(_) => "debug".into(),
        VcpuExit::IrqWindowOpen => "irq_window_open".into(),
        VcpuExit::Nmi => "nmi".into(),
        VcpuExit::X86Rdmsr(_) => "rdmsr".into(),
        VcpuExit::X86Wrmsr(_) => "wrmsr".into(),
        VcpuExit::MemoryFault { .. } => "memory_fault".into(),
        VcpuExit::IoapicEoi(_) => "ioapic_eoi".into(),
        VcpuExit::Unsupported(code) => format!("exit_{code}"),
        other => format!("{other:?}").split('(').next().unwrap_or("other").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::instruction_name;

    #[test]
    fn names_the_instructions_the_emulator_refuses() {
        assert_eq!(instruction_name(&[0x48, 0x0f, 0xae, 0x2f, 0x31]), Some("xrstor"));
        assert_eq!(instruction_name(&[0xcc, 0x90]), Some("int3"));
        assert_eq!(instruction_name(&[0xf0, 0x48, 0x0f, 0xc7, 0x0e]), Some("cmpxchg16b"));
        assert_eq!(instruction_name(&[0x48, 0x0f, 0xc7, 0x0e]), Some("cmpxchg16b"));
        assert_eq!(instruction_name(&[0x90]), None);
    }
}

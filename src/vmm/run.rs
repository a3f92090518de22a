//! Running every vCPU of a VM at once: vCPU 0 on the calling thread, each other one on a thread
//! of its own, each with its own kick timer. The first vCPU whose loop ends the run (the
//! program exited or crashed, a kernel fault, the deadline, Ctrl-C) records why; the others are
//! told to stop (a flag, a kick signal to get them out of `KVM_RUN`, a wake for a parked one)
//! and return. The VM is only dropped after every vCPU thread has joined.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, Result};
use kvm_ioctls::VcpuFd;

use super::devices::Devices;
use super::exits::ExitCounts;
use super::kick::{self, VcpuKicker, KICK_PERIOD};
use super::memory::GuestRam;
use super::vcpu::{self, VcpuContext};
use super::VmStop;
use crate::own_usage;

/// How a multi-vCPU run ended, and what it cost.
pub struct RunOutcome {
    pub stop: VmStop,
    /// Every vCPU's exits, added up.
    pub exits: ExitCounts,
    /// CPU time of the vCPU threads other than the caller's (vCPU 0 runs on the caller's
    /// thread, which measures its own time). Guest time is charged to these threads.
    pub others_user_ns: u64,
    pub others_system_ns: u64,
}

/// What the vCPU threads share.
struct RunControl {
    stopping: AtomicBool,
    /// The first reason the run ended (or the first VMM error).
    outcome: Mutex<Option<Result<VmStop, String>>>,
    /// Each vCPU thread's pthread, to kick it out of KVM_RUN.
    threads: Mutex<Vec<kick::VcpuThread>>,
}

impl RunControl {
    fn finish(&self, result: Result<VmStop, String>, devices: &Devices) {
        {
            let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
            outcome.get_or_insert(result);
        }
        if !self.stopping.swap(true, Ordering::AcqRel) {
            devices.sleep.wake_all();
            let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
            for &thread in threads.iter() {
                kick::kick_thread(thread);
            }
        }
    }
}

/// Runs every vCPU in `vcpus` (vCPU i is `vcpus[i]`) until the run ends.
pub fn run_all(vcpus: &mut [VcpuFd], ram: &GuestRam, devices: &Devices, deadline: Instant) -> Result<RunOutcome> {
    let control =
        RunControl { stopping: AtomicBool::new(false), outcome: Mutex::new(None), threads: Mutex::new(Vec::new()) };
    let (first, others) = vcpus.split_first_mut().ok_or_else(|| anyhow!("a VM needs a vCPU"))?;
    let results: Vec<Result<(ExitCounts, (u64, u64))>> = std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter_mut()
            .enumerate()
            .map(|(index, vcpu)| {
                let control = &control;
                scope.spawn(move || one_vcpu(vcpu, index + 1, ram, devices, deadline, control))
            })
            .collect();
        let mut results = vec![one_vcpu(first, 0, ram, devices, deadline, &control)];
        results.extend(
            handles.into_iter().map(|handle| handle.join().unwrap_or_else(|_| Err(anyhow!("a vCPU thread panicked")))),
        );
        results
    });
    let mut exits = ExitCounts::default();
    let (mut user_ns, mut system_ns) = (0, 0);
    for (index, result) in results.into_iter().enumerate() {
        let (counts, (user, system)) = result?;
        exits.add(&counts);
        if index > 0 {
            user_ns += user;
            system_ns += system;
        }
    }
    let outcome = control.outcome.into_inner().unwrap_or_else(|p| p.into_inner());
    let stop = outcome.ok_or_else(|| anyhow!("the VM's vCPUs stopped without a reason"))?.map_err(|e| anyhow!(e))?;
    Ok(RunOutcome { stop, exits, others_user_ns: user_ns, others_system_ns: system_ns })
}

/// One vCPU's thread: its kick timer, its loop, and its share of the CPU time.
fn one_vcpu(
    vcpu: &mut VcpuFd,
    cpu: usize,
    ram: &GuestRam,
    devices: &Devices,
    deadline: Instant,
    control: &RunControl,
) -> Result<(ExitCounts, (u64, u64))> {
    control.threads.lock().unwrap_or_else(|p| p.into_inner()).push(kick::VcpuThread::current());
    let cpu_before = own_usage::thread_cpu_ns();
    let mut exits = ExitCounts::default();
    let context = VcpuContext {
        cpu,
        bus: &devices.bus,
        ram,
        deadline,
        timer: Some(&devices.timer),
        stopping: Some(&control.stopping),
        tlb: Some(&devices.tlb),
    };
    devices.threads.register(cpu);
    let result = match VcpuKicker::start(KICK_PERIOD) {
        Ok(_kicker) => vcpu::run(vcpu, &context, &mut exits),
        Err(error) => Err(error),
    };
    match result {
        Ok(Some(stop)) => control.finish(Ok(stop), devices),
        Ok(None) => {}
        Err(error) => control.finish(Err(format!("{error:#}")), devices),
    }
    let cpu_after = own_usage::thread_cpu_ns();
    Ok((exits, (cpu_after.0.saturating_sub(cpu_before.0), cpu_after.1.saturating_sub(cpu_before.1))))
}

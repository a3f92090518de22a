//! Dropping every vCPU's cached translations after the VMM changed the guest's page tables
//! (a "TLB shootdown", done by the VMM instead of by inter-processor interrupts).
//!
//! The VMM writes the tables in guest RAM from outside the guest, which KVM does not see: its
//! cached translations (the TLB, and on hosts without EPT its shadow page tables) must be
//! dropped. Changing CR4 through `KVM_SET_SREGS` makes KVM reset the vCPU's MMU ([`flush`]),
//! and only the vCPU's own thread may do that, between two `KVM_RUN`s. So: the changing vCPU
//! marks every vCPU, kicks the others out of `KVM_RUN`, and waits until each one either has
//! reset its MMU or is not in the guest (it resets before it enters again). Each vCPU says it
//! is in the guest *before* it looks for the mark, and the changer marks *before* it looks at
//! who is in the guest, so one of the two always sees the other.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kvm_ioctls::VcpuFd;

use super::vcpu_threads::VcpuThreads;

struct CpuState {
    in_guest: AtomicBool,
    flush: AtomicBool,
}

/// Drops the vCPU's cached translations. KVM resets a vCPU's MMU when `KVM_SET_SREGS` changes
/// CR4 (reloading the same values changes nothing), so CR4.PGE is flipped and flipped back:
/// two register writes, the second one restoring exactly what the guest had.
fn flush(vcpu: &VcpuFd) -> Result<()> {
    const CR4_PGE: u64 = 1 << 7;
    let sregs = vcpu.get_sregs().context("reading the vCPU's special registers for a TLB flush")?;
    let mut flipped = sregs;
    flipped.cr4 ^= CR4_PGE;
    vcpu.set_sregs(&flipped).context("flipping CR4.PGE (TLB flush)")?;
    vcpu.set_sregs(&sregs).context("restoring CR4 (TLB flush)")?;
    Ok(())
}

pub struct Tlb {
    cpus: Vec<CpuState>,
    threads: Arc<VcpuThreads>,
}

/// How often a waiting vCPU kicks again (a kick that lands just before `KVM_RUN` is lost).
const KICK_AGAIN: Duration = Duration::from_micros(200);
/// Longest wait for the other vCPUs; a vCPU thread always leaves `KVM_RUN` on a kick, so this
/// is only reached if one is stuck in the host.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

impl Tlb {
    pub fn new(cpus: usize, threads: Arc<VcpuThreads>) -> Tlb {
        let state = || CpuState { in_guest: AtomicBool::new(false), flush: AtomicBool::new(false) };
        Tlb { cpus: (0..cpus.max(1)).map(|_| state()).collect(), threads }
    }

    /// Right before `KVM_RUN`: in the guest from now on; resets the MMU if a change is pending.
    pub fn before_entry(&self, cpu: usize, vcpu: &VcpuFd) -> Result<()> {
        let Some(state) = self.cpus.get(cpu) else { return Ok(()) };
        state.in_guest.store(true, SeqCst);
        if state.flush.swap(false, SeqCst) {
            flush(vcpu)?;
        }
        Ok(())
    }

    /// Right after `KVM_RUN` returned, and when the vCPU's loop ends.
    pub fn after_exit(&self, cpu: usize) {
        if let Some(state) = self.cpus.get(cpu) {
            state.in_guest.store(false, SeqCst);
        }
    }

    /// Every other vCPU drops its cached translations before it runs guest code again; returns
    /// once they have.
    pub fn shoot_down(&self, from: usize) {
        // Not the caller: the guest dropped its own translations with invlpg already, and a
        // reset MMU costs every page touched so far a new fault on shadow-paging hosts.
        for (cpu, state) in self.cpus.iter().enumerate() {
            if cpu != from {
                state.flush.store(true, SeqCst);
            }
        }
        let started = Instant::now();
        let mut kicked = None;
        loop {
            let waiting: Vec<usize> = self
                .cpus
                .iter()
                .enumerate()
                .filter(|&(cpu, state)| cpu != from && state.in_guest.load(SeqCst) && state.flush.load(SeqCst))
                .map(|(cpu, _)| cpu)
                .collect();
            if waiting.is_empty() || started.elapsed() > LONGEST_WAIT {
                return;
            }
            if kicked.is_none_or(|at: Instant| at.elapsed() >= KICK_AGAIN) {
                for cpu in waiting {
                    self.threads.kick(cpu);
                }
                kicked = Some(Instant::now());
            }
            std::hint::spin_loop();
        }
    }
}

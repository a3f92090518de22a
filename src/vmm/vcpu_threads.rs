//! Which host thread runs each vCPU, so the VMM can kick one out of `KVM_RUN` on another's
//! behalf (a TLB shootdown, an interrupt for a signal, the end of the run).

use std::sync::Mutex;

use super::devices::lock;
use super::kick;

pub struct VcpuThreads {
    threads: Vec<Mutex<Option<kick::VcpuThread>>>,
}

impl VcpuThreads {
    pub fn new(cpus: usize) -> VcpuThreads {
        VcpuThreads { threads: (0..cpus.max(1)).map(|_| Mutex::new(None)).collect() }
    }

    /// Called by vCPU `cpu`'s own thread before its first `KVM_RUN`.
    pub fn register(&self, cpu: usize) {
        if let Some(slot) = self.threads.get(cpu) {
            *lock(slot) = Some(kick::VcpuThread::current());
        }
    }

    /// Gets vCPU `cpu` out of `KVM_RUN` (or a park) now. Only valid while the vCPU threads
    /// live: run.rs joins them only after every vCPU stopped.
    pub fn kick(&self, cpu: usize) {
        if let Some(thread) = self.threads.get(cpu).and_then(|slot| *lock(slot)) {
            kick::kick_thread(thread);
        }
    }
}

//! cvm's virtual machine monitor: a KVM micro-VM with one vCPU, guest RAM, a handful of I/O
//! port devices and nothing else, built for one program run and torn down after it.
//!
//! How a VM comes together is in [`builder`] (the one place that assembles it); the run loop
//! is in [`vcpu`]; exits reach devices through the [`bus`], and each device has its own file in
//! [`devices`]. The contract with the builtin
//! guest kernel (memory map, entry state, ports) is the `cvm-guest-abi` crate. The student's
//! tour is `docs/vm.md`.

pub mod builder;
pub mod bus;
pub mod cpu;
pub mod devices;
pub mod exits;
pub mod kick;
pub mod layout;
pub mod linux_boot;
pub mod loader;
pub mod memory;
pub mod paging;
pub mod regs;
pub mod run;
pub mod syscall_names;
pub mod tlb;
pub mod user_stack;
pub mod vcpu;
pub mod vcpu_threads;

/// How a VM run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmStop {
    /// The guest kernel wrote the program's exit status to the exit port.
    Exited { status: i32 },
    /// The program faulted; the guest kernel reported it (a crash, like `signal` on the host).
    ProgramFault { signal: i32, reason: String },
    /// A signal's default action ended the program (kill, tgkill, abort), as on the host.
    Signaled { signal: i32 },
    /// The guest kernel had no memory left for the program (an out-of-memory kill).
    OutOfMemory { reason: String },
    /// The guest kernel faulted, the VM triple-faulted, halted, or KVM could not run it.
    KernelFault { reason: String },
    /// The guest touched a port or address where there is no device.
    UnhandledDevice { reason: String },
    /// `--timeout` passed first.
    TimedOut,
    /// cvm was asked to stop (SIGINT/SIGTERM/SIGHUP).
    Interrupted { signal: i32 },
}

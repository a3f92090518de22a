//! Port 0xf4, isa-debug-exit style: the guest kernel writes the program's exit status and the
//! run ends. (QEMU's device exits with `(value << 1) | 1`; cvm reports the value itself.)

use crate::vmm::VmStop;

/// The stop for a write of `value`: like a Linux exit status, only the low 8 bits count.
pub fn stop(value: u32) -> VmStop {
    VmStop::Exited { status: (value & 0xff) as i32 }
}

//! Port 0x80, the boot timer (as Cloud Hypervisor's debug port): the guest writes a code and the
//! VMM notes when. 0x40 = kernel entered, 0x41 = program entered; other codes (Linux uses port
//! 0x80 for I/O delays) are ignored.

use std::time::Instant;

use cvm_guest_abi::boot_code;

#[derive(Debug, Default)]
pub struct BootTimer {
    pub kernel_entered: Option<Instant>,
    pub program_entered: Option<Instant>,
}

impl BootTimer {
    pub fn record(&mut self, code: u8, now: Instant) {
        match code {
            boot_code::KERNEL_ENTERED => {
                self.kernel_entered.get_or_insert(now);
            }
            boot_code::PROGRAM_ENTERED => {
                self.program_entered.get_or_insert(now);
            }
            _ => {}
        }
    }
}

//! Port 0x505, TLB shootdown: the guest kernel took access to some pages away (it writes the
//! page-table entries itself, see guest/kernel/src/paging.rs) and every other vCPU must drop
//! its cached translations before it runs guest code again. The guest has no inter-processor
//! interrupts; the VMM does it for it (tlb.rs) and lets the writing vCPU go on once they have.

use std::sync::Arc;

use super::super::bus::{Access, Device, PortAction};
use super::super::tlb::Tlb;

pub struct ShootdownPort(pub Arc<Tlb>);

impl Device for ShootdownPort {
    fn write(&self, _port: u16, _data: &[u8], access: &Access) -> PortAction {
        self.0.shoot_down(access.cpu);
        PortAction::Continue
    }
}

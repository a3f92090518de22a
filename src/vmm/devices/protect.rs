//! The ports the guest kernel uses when it changes page protections.
//!
//! Port 0x505, TLB shootdown: the guest kernel took access to some pages away (it writes the
//! page-table entries itself, see guest/kernel/src/paging.rs) and every other vCPU must drop
//! its cached translations before it runs guest code again. The guest has no inter-processor
//! interrupts; the VMM does it for it (tlb.rs) and lets the writing vCPU go on once they have.

use std::sync::Arc;

use super::super::bus::{port_value, Access, Device, PortAction};
use super::super::paging::fill_split_table;
use super::super::tlb::Tlb;
use super::super::VmStop;

pub struct ShootdownPort(pub Arc<Tlb>);

impl Device for ShootdownPort {
    fn write(&self, _port: u16, _data: &[u8], access: &Access) -> PortAction {
        self.0.shoot_down(access.cpu);
        PortAction::Continue
    }
}

/// Port 0x507: fill the 4 KiB page table the guest kernel is splitting a 2 MiB page into
/// (paging.rs `fill_split_table`; the value is the address of the request). Holds the
/// guest's page-table pool, [start, end).
pub struct FillTablePort(pub (u64, u64));

impl Device for FillTablePort {
    fn write(&self, _port: u16, data: &[u8], access: &Access) -> PortAction {
        match fill_split_table(access.ram, self.0, u64::from(port_value(data))) {
            Ok(()) => PortAction::Continue,
            Err(error) => PortAction::Stop(VmStop::KernelFault { reason: format!("{error:#}") }),
        }
    }
}

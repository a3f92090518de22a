//! The vm runtime: the program inside a KVM micro-VM with its own guest kernel (see `src/vmm`).
//! (Being built: issue 3.)

use anyhow::{bail, Result};

use super::{RunSpec, Runtime};
use crate::record::{RunRecord, RuntimeKind};

pub struct VmRuntime;

impl Runtime for VmRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Vm
    }

    fn check_available(&self) -> Result<()> {
        bail!("the vm runtime is not built yet")
    }

    fn run(&self, _spec: &RunSpec) -> Result<RunRecord> {
        bail!("the vm runtime is not built yet")
    }
}

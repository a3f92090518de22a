//! The container runtime: namespaces, a cgroup and an image root file system, on the host kernel.
//! (Being built: issue 2.)

use anyhow::{bail, Result};

use super::{RunSpec, Runtime};
use crate::record::{RunRecord, RuntimeKind};

pub struct ContainerRuntime;

impl Runtime for ContainerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Container
    }

    fn check_available(&self) -> Result<()> {
        bail!("the container runtime is not built yet")
    }

    fn run(&self, _spec: &RunSpec) -> Result<RunRecord> {
        bail!("the container runtime is not built yet")
    }
}

//! What to measure: the runtime × workload matrix, with warm-up and measured runs per cell.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::program::Program;
use crate::record::RuntimeKind;
use crate::runtime::KernelChoice;

/// A workload and its arguments, written `NAME` or `NAME:ARG[:ARG...]` on the command line
/// (for example `cpu:100000` for 100 000 SHA-256 rounds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadChoice {
    pub name: String,
    pub args: Vec<String>,
}

impl WorkloadChoice {
    pub fn new(name: &str, args: &[&str]) -> WorkloadChoice {
        WorkloadChoice { name: name.to_string(), args: args.iter().map(|a| a.to_string()).collect() }
    }

    pub fn parse(text: &str) -> Result<WorkloadChoice> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or_default().trim();
        if name.is_empty() {
            bail!("empty workload name in '{text}': write NAME or NAME:ARG, for example cpu:100000");
        }
        Program::workload(name)?;
        Ok(WorkloadChoice { name: name.to_string(), args: parts.map(str::to_string).collect() })
    }

    pub fn program(&self) -> Result<Program> {
        Program::workload(&self.name)
    }

    /// `cpu:N:T`: the thread count T, when given.
    pub fn threads(&self) -> Option<u64> {
        if self.name != "cpu" {
            return None;
        }
        self.args.get(1)?.parse().ok()
    }
}

#[derive(Clone, Debug)]
pub struct CellPlan {
    pub runtime: RuntimeKind,
    pub workload: WorkloadChoice,
    pub runs: usize,
    pub warmup: usize,
    /// Measure every run from outside as one whole command (the peer view); always true for
    /// a peer, and for cvm's own runtimes beside peers.
    pub whole_command: bool,
}

#[derive(Clone, Debug)]
pub struct BenchPlan {
    /// In the order they run: workload by workload, each on every runtime.
    pub cells: Vec<CellPlan>,
    pub kernel: KernelChoice,
    pub timeout: Duration,
}

impl BenchPlan {
    /// The given cells, builtin guest kernel, 30 s timeout per run.
    pub fn from_cells(cells: Vec<CellPlan>) -> BenchPlan {
        BenchPlan { cells, kernel: KernelChoice::Builtin, timeout: Duration::from_secs(30) }
    }

    /// Every runtime × every workload, with the same repetitions everywhere. With a peer among
    /// the runtimes every cell is measured as a whole command, so all are measured alike.
    pub fn matrix(runtimes: &[RuntimeKind], workloads: &[WorkloadChoice], runs: usize, warmup: usize) -> BenchPlan {
        let whole_command = runtimes.iter().any(|r| r.is_peer());
        let cells = workloads
            .iter()
            .flat_map(|workload| {
                runtimes.iter().map(move |&runtime| CellPlan {
                    runtime,
                    workload: workload.clone(),
                    runs,
                    warmup,
                    whole_command,
                })
            })
            .collect();
        BenchPlan::from_cells(cells)
    }

    /// Runs the progress bar counts (warm-up included).
    pub fn total_runs(&self) -> u64 {
        self.cells.iter().map(|c| (c.runs + c.warmup) as u64).sum()
    }
}

/// Runtimes in the canonical order (process first: it is the baseline; the peers after cvm's
/// own), without duplicates.
pub fn ordered_runtimes(chosen: Option<&[RuntimeKind]>) -> Vec<RuntimeKind> {
    let chosen = chosen.unwrap_or(&RuntimeKind::ALL);
    RuntimeKind::ALL.into_iter().chain(RuntimeKind::PEERS).filter(|kind| chosen.contains(kind)).collect()
}

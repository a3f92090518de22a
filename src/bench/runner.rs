//! Runs a [`BenchPlan`]: availability checked once per runtime, then, workload by workload,
//! every runtime's warm-up runs followed by the measured runs *interleaved* across runtimes
//! (process, container, vm, process, ...), so a burst of background noise hits all runtimes
//! alike instead of skewing one of them. Produces raw records only; statistics happen elsewhere.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::plan::{BenchPlan, CellPlan};
use super::progress::Progress;
use crate::interrupt;
use crate::record::{Outcome, RunRecord, RuntimeKind};
use crate::results::CellResult;
use crate::runtime::{self, KernelChoice, RunSpec, Runtime};

/// What a bench produced, and whether it was cut short by Ctrl-C.
pub struct BenchOutcome {
    pub cells: Vec<CellResult>,
    /// The signal that stopped the bench early, if one did.
    pub interrupted: Option<i32>,
}

/// One cell being measured: its plan, its results so far, and what runs it.
struct ActiveCell<'a> {
    plan: &'a CellPlan,
    result: CellResult,
    runner: Option<(Box<dyn Runtime>, RunSpec)>,
}

impl ActiveCell<'_> {
    fn label(&self) -> String {
        format!("{} · {}", self.result.workload_label(), self.plan.runtime)
    }

    /// Runs once; false when the runtime broke and the cell must stop.
    fn run_once(&mut self, warmup: bool, progress: &Progress) -> bool {
        let Some((runtime, spec)) = &self.runner else { return false };
        let outcome = runtime.run(spec);
        progress.advance(1);
        match outcome {
            // A run cut short by Ctrl-C says nothing about the runtime: it is dropped.
            Ok(record) if record.outcome == Outcome::Interrupted => {}
            Ok(record) if warmup => self.note_warmup(&record),
            Ok(record) => self.result.records.push(record),
            Err(error) => {
                // The runtime itself failed (not the program): repeating it would only repeat
                // the error, so the cell stops here and says why.
                self.result.errors.push(format!("{error:#}"));
                self.runner = None;
                return false;
            }
        }
        true
    }

    fn note_warmup(&mut self, record: &RunRecord) {
        if !record.succeeded() {
            let why = crate::stats::cell::describe_failure(record);
            let index = self.result.warmup_failures.len() + 1;
            self.result.warmup_failures.push(format!("a warm-up run failed ({index}): {why}"));
        }
    }
}

pub fn run_plan(plan: &BenchPlan, progress: &Progress) -> BenchOutcome {
    let availability = check_runtimes(plan);
    let mut cells = Vec::with_capacity(plan.cells.len());
    for group in workload_groups(&plan.cells) {
        let mut active: Vec<ActiveCell> = group.iter().map(|p| activate(p, plan, &availability, progress)).collect();
        let interrupted = measure_group(&mut active, progress);
        cells.extend(active.into_iter().map(|mut cell| {
            cell.result.refresh_summary();
            cell.result
        }));
        if interrupted {
            break;
        }
    }
    BenchOutcome { cells, interrupted: interrupt::requested() }
}

/// Warm-up of every cell, then measured runs round-robin; true when interrupted.
fn measure_group(active: &mut [ActiveCell], progress: &Progress) -> bool {
    for cell in active.iter_mut() {
        for index in 0..cell.plan.warmup {
            if interrupt::requested().is_some() {
                return true;
            }
            progress.step(format!("{} · warm-up {}/{}", cell.label(), index + 1, cell.plan.warmup));
            if !cell.run_once(true, progress) {
                progress.advance((cell.plan.warmup + cell.plan.runs - index - 1) as u64);
                break;
            }
        }
    }
    let rounds = active.iter().map(|c| c.plan.runs).max().unwrap_or(0);
    for round in 0..rounds {
        for cell in active.iter_mut().filter(|c| round < c.plan.runs && c.runner.is_some()) {
            if interrupt::requested().is_some() {
                return true;
            }
            progress.step(format!("{} · run {}/{}", cell.label(), round + 1, cell.plan.runs));
            if !cell.run_once(false, progress) {
                progress.advance((cell.plan.runs - round - 1) as u64);
            }
        }
    }
    false
}

/// Consecutive cells of the same workload (and arguments) form one interleaved group.
fn workload_groups(cells: &[CellPlan]) -> Vec<&[CellPlan]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for index in 1..=cells.len() {
        if index == cells.len() || cells[index].workload != cells[start].workload {
            groups.push(&cells[start..index]);
            start = index;
        }
    }
    groups
}

fn activate<'a>(
    cell_plan: &'a CellPlan,
    plan: &BenchPlan,
    availability: &BTreeMap<RuntimeKind, std::result::Result<(), String>>,
    progress: &Progress,
) -> ActiveCell<'a> {
    let kernel = kernel_label(cell_plan.runtime, &plan.kernel);
    let mut result = CellResult::new(cell_plan.runtime, &cell_plan.workload.name, &cell_plan.workload.args, &kernel);
    result.whole_command = cell_plan.whole_command || cell_plan.runtime.is_peer();
    result.warmup_runs = cell_plan.warmup;
    result.requested_runs = cell_plan.runs;
    let all_runs = (cell_plan.runs + cell_plan.warmup) as u64;
    let runner = match &availability[&cell_plan.runtime] {
        Err(reason) => {
            result.unavailable = Some(reason.clone());
            None
        }
        Ok(()) => match build_spec(cell_plan, plan).and_then(|spec| Ok((runtime_of(cell_plan)?, spec))) {
            Ok(runner) => Some(runner),
            Err(error) => {
                result.errors.push(format!("{error:#}"));
                None
            }
        },
    };
    if runner.is_none() {
        progress.advance(all_runs);
    }
    ActiveCell { plan: cell_plan, result, runner }
}

/// What runs a cell: the runtime itself, or, in the peer view, `cvm run` as a whole command.
fn runtime_of(cell_plan: &CellPlan) -> Result<Box<dyn Runtime>> {
    if cell_plan.whole_command && !cell_plan.runtime.is_peer() {
        let exe = std::env::current_exe().context("finding cvm's own executable")?;
        return Ok(Box::new(crate::peers::own::WholeCommandRuntime::new(cell_plan.runtime, exe)));
    }
    Ok(runtime::runtime(cell_plan.runtime))
}

/// `check_available` of every runtime in the plan, once.
fn check_runtimes(plan: &BenchPlan) -> BTreeMap<RuntimeKind, std::result::Result<(), String>> {
    plan.cells
        .iter()
        .map(|cell| cell.runtime)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|kind| (kind, runtime::runtime(kind).check_available().map_err(|e| format!("{e:#}"))))
        .collect()
}

fn kernel_label(kind: RuntimeKind, kernel: &KernelChoice) -> String {
    match kind {
        RuntimeKind::Vm | RuntimeKind::Qemu => kernel.label(),
        _ => "host".into(),
    }
}

fn build_spec(cell_plan: &CellPlan, plan: &BenchPlan) -> Result<RunSpec> {
    let mut spec = RunSpec::new(cell_plan.workload.program()?, cell_plan.workload.args.clone());
    spec.kernel = plan.kernel.clone();
    spec.timeout = plan.timeout;
    spec.echo_output = false;
    // `cpu:N:T` measures scaling: the container gets a quota of T CPUs and the VM T vCPUs, the
    // resources the T threads need, so each runtime is compared on what it was given.
    if let Some(threads) = cell_plan.workload.threads() {
        match cell_plan.runtime {
            RuntimeKind::Container => spec.cpus = Some(threads as f64),
            RuntimeKind::Vm => spec.cpus = Some(threads.clamp(1, cvm_guest_abi::MAX_CPUS as u64) as f64),
            _ => {}
        }
    }
    Ok(spec)
}

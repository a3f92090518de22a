//! The CPU-scaling view: the `cpu N T` cells of one machine (N rounds on each of T threads),
//! throughput by thread count for each runtime, where the bench gave the container a quota of
//! T CPUs and the VM T vCPUs (bench/runner.rs). As a chart (every point ÷ the process's
//! 1-thread throughput, so overhead and scaling show on one axis) and a sentence of reading.

use super::charts::color_of;
use super::model::{CellView, MachineView, ReportModel};
use crate::plot::{Chart, LineChart, LinePoint, LineSeries, Quantity};
use crate::record::RuntimeKind;
use crate::stats::Metric;

/// One runtime's throughput by thread count (ascending), for one number of rounds.
pub struct ScalingSeries {
    pub runtime: RuntimeKind,
    /// (threads, median ops/s, q1, q3)
    pub points: Vec<(u64, f64, f64, f64)>,
}

/// The thread count of a `cpu N T` cell; `cpu N` is one thread (which one vCPU, and a
/// container without a quota, run as they would with --cpus 1). None for other cells.
fn threads(cell: &CellView) -> Option<u64> {
    if cell.workload != "cpu" {
        return None;
    }
    match cell.args.get(1) {
        None => Some(1),
        Some(text) => text.parse().ok(),
    }
}

/// The series of one machine, for the rounds with the most thread counts; empty unless some
/// runtime has at least two thread counts.
pub fn of_machine(machine: &MachineView) -> Vec<ScalingSeries> {
    let cells: Vec<(&CellView, u64)> =
        machine.cells.iter().filter(|c| c.has_data()).filter_map(|c| Some((c, threads(c)?))).collect();
    let rounds_of = |cell: &CellView| cell.args.first().cloned().unwrap_or_default();
    let mut rounds: Vec<String> = cells.iter().map(|(c, _)| rounds_of(c)).collect();
    rounds.sort();
    rounds.dedup();
    let count = |r: &String| cells.iter().filter(|(c, _)| &rounds_of(c) == r).count();
    let Some(chosen) = rounds.iter().max_by_key(|r| count(r)) else { return Vec::new() };
    let series: Vec<ScalingSeries> = RuntimeKind::ALL
        .iter()
        .filter_map(|&runtime| {
            let mut points: Vec<(u64, f64, f64, f64)> = cells
                .iter()
                .filter(|(c, _)| c.runtime == runtime && &rounds_of(c) == chosen)
                .filter_map(|(c, t)| c.metric(Metric::OpsPerSec).map(|s| (*t, s.median, s.q1, s.q3)))
                .collect();
            points.sort_by_key(|p| p.0);
            (!points.is_empty()).then_some(ScalingSeries { runtime, points })
        })
        .collect();
    if series.iter().any(|s| s.points.len() >= 2) {
        series
    } else {
        Vec::new()
    }
}

fn resources(runtime: RuntimeKind) -> &'static str {
    match runtime {
        RuntimeKind::Container => "container (--cpus T)",
        RuntimeKind::Vm => "vm (T vCPUs)",
        other => other.name(),
    }
}

/// The chart, for the first machine that has the view.
pub fn chart(model: &ReportModel) -> Option<Chart> {
    let (machine, series) = model.machines.iter().map(|m| (m, of_machine(m))).find(|(_, s)| !s.is_empty())?;
    let base = series.iter().find(|s| s.runtime == RuntimeKind::Process)?.points.iter().find(|p| p.0 == 1)?.1;
    if base <= 0.0 {
        return None;
    }
    let on = if model.multi_machine() { format!(" · {}", machine.label) } else { String::new() };
    Some(Chart::Lines(LineChart {
        title: "CPU scaling: throughput by threads".into(),
        subtitle: format!(
            "cpu N T: T threads × N rounds · medians ÷ process 1-thread median · whiskers: quartiles{on}"
        ),
        count_label: "threads T (log scale)".into(),
        value_label: "throughput ÷ process with 1 thread".into(),
        quantity: Quantity::Plain,
        series: series
            .iter()
            .map(|s| LineSeries {
                name: resources(s.runtime).into(),
                color: color_of(s.runtime),
                points: s
                    .points
                    .iter()
                    .map(|&(threads, median, q1, q3)| LinePoint {
                        count: threads as f64,
                        value: median / base,
                        low: q1 / base,
                        high: q3 / base,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// "With 2 threads, the process ran 1.9× its 1-thread throughput, the container (--cpus 2)
/// 1.8× and the VM (2 vCPUs) 1.8×, each against its own 1-thread run."
pub fn reading(machine: &MachineView) -> Option<String> {
    let series = of_machine(machine);
    let most = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).max()?;
    let speedup = |s: &ScalingSeries| -> Option<f64> {
        let one = s.points.iter().find(|p| p.0 == 1)?.1;
        let top = s.points.iter().find(|p| p.0 == most)?.1;
        (one > 0.0).then(|| top / one)
    };
    let parts: Vec<String> = series
        .iter()
        .filter_map(|s| {
            let factor = speedup(s)?;
            let given = match s.runtime {
                RuntimeKind::Container => format!(" (--cpus {most})"),
                RuntimeKind::Vm => format!(" ({most} vCPUs)"),
                _ => String::new(),
            };
            Some(format!("the {}{given} {factor:.2}×", s.runtime))
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    let cores = machine.environment().host.cpu_count;
    let beyond = if most > u64::from(cores) {
        format!(" This machine has {cores} CPUs: beyond that, threads (and vCPUs) only take turns.")
    } else {
        String::new()
    };
    Some(format!(
        "CPU scaling: with {most} threads, {} of their own 1-thread throughput. A container's threads run on the \
         host's CPUs under a quota; a VM's run on the vCPUs it was given, each a thread of the VMM that the host \
         schedules like any other.{beyond}",
        parts.join(", ")
    ))
}

//! `cvm bench`'s summary in hyperfine's spirit: per cell mean ± σ, range, median, p95, user
//! and system time, phases, memory, outliers and failures; then each runtime relative to the
//! bare process with its uncertainty.

use std::fmt::Write;

use crate::record::RuntimeKind;
use crate::report::model::{CellView, MachineView, ReportModel};
use crate::stats::outliers::MODIFIED_Z_THRESHOLD;
use crate::stats::{Metric, Summary};

pub fn render(model: &ReportModel) -> String {
    let mut out = String::new();
    let mut number = 0;
    for machine in &model.machines {
        for cell in &machine.cells {
            number += 1;
            cell_block(&mut out, number, cell);
        }
        for workload in &model.workloads {
            relative_block(&mut out, machine, workload);
        }
        if let Some(reading) = crate::report::scaling::reading(machine) {
            let _ = writeln!(out, "{reading}\n");
        }
    }
    out.push_str(&super::peer_view(model));
    out
}

fn fmt(metric: Metric, value: f64) -> String {
    metric.unit().format(value)
}

fn cell_block(out: &mut String, number: usize, cell: &CellView) {
    let title = format!("Benchmark {number}: {} on {}", cell.workload_label, cell.runtime);
    if let Some(reason) = &cell.unavailable {
        let _ = writeln!(out, "{title}\n  not run: {reason}\n");
        return;
    }
    let s = &cell.summary;
    let _ = writeln!(out, "{title}  ({} measured runs, {} warm-up)", s.runs, cell.warmup_runs);
    if let Some(total) = cell.metric(Metric::Total) {
        let user = cell.metric(Metric::UserTime).map_or(0.0, |u| u.mean);
        let system = cell.metric(Metric::SystemTime).map_or(0.0, |u| u.mean);
        let sd = total.std_dev.map_or_else(|| "(1 run: no σ)".to_string(), |sd| fmt(Metric::Total, sd));
        let _ = writeln!(
            out,
            "  Time (mean ± σ):     {:>10} ± {:<10}   [User: {}, System: {}]",
            fmt(Metric::Total, total.mean),
            sd,
            fmt(Metric::UserTime, user),
            fmt(Metric::SystemTime, system)
        );
        let _ = writeln!(
            out,
            "  Range (min … max):   {:>10} … {:<10}   median {} · p95 {}",
            fmt(Metric::Total, total.min),
            fmt(Metric::Total, total.max),
            fmt(Metric::Total, total.median),
            fmt(Metric::Total, total.p95)
        );
        let phases: Vec<String> = [Metric::Setup, Metric::Boot, Metric::FirstOutput, Metric::Exit, Metric::Teardown]
            .iter()
            .filter_map(|&m| cell.metric(m).map(|v| format!("{} {}", m.label(), fmt(m, v.median))))
            .collect();
        let _ = writeln!(out, "  Phases (median):     {}", phases.join(" · "));
        let memory: Vec<String> = [
            Metric::ProgramMemory,
            Metric::RuntimePrivate,
            Metric::RuntimeShared,
            Metric::GuestKernel,
            Metric::CgroupPeak,
        ]
        .iter()
        .filter_map(|&m| cell.metric(m).map(|v| format!("{} {}", m.label(), fmt(m, v.median))))
        .collect();
        if !memory.is_empty() {
            let _ = writeln!(out, "  Memory (median):     {}", memory.join(" · "));
        }
        if let Some(ops) = cell.metric(Metric::OpsPerSec) {
            let _ =
                writeln!(out, "  Throughput:          {} (the workload's own timing)", mean_sd(ops, Metric::OpsPerSec));
        }
        if !total.outliers.is_empty() {
            let _ = writeln!(
                out,
                "  Warning: {} of {} runs are statistical outliers (modified z-score above {MODIFIED_Z_THRESHOLD}). \
                 Something else may have disturbed them: close other programs, add --warmup runs, or use more --runs.",
                total.outliers.len(),
                total.n
            );
        }
    }
    if !s.failed.is_empty() {
        let _ = writeln!(
            out,
            "  Failed: {} of {} runs failed and are not in the statistics (first: run {}: {}).",
            s.failed.len(),
            s.runs,
            s.failed[0].index + 1,
            s.failed[0].reason
        );
    }
    for error in &cell.errors {
        let _ = writeln!(out, "  Error: the runtime stopped: {error}");
    }
    for warning in &cell.warmup_failures {
        let _ = writeln!(out, "  Warning: {warning}");
    }
    out.push('\n');
}

fn mean_sd(summary: &Summary, metric: Metric) -> String {
    match summary.std_dev {
        Some(sd) => format!("{} ± {}", fmt(metric, summary.mean), fmt(metric, sd)),
        None => fmt(metric, summary.mean),
    }
}

fn relative_block(out: &mut String, machine: &MachineView, workload: &str) {
    let mut lines = Vec::new();
    for runtime in [RuntimeKind::Container, RuntimeKind::Vm] {
        if let Some(ratio) = machine.ratio_to_process(workload, runtime, Metric::Total) {
            let word = if ratio.value >= 1.0 { "slower" } else { "faster" };
            let shown = if ratio.value >= 1.0 {
                ratio
            } else {
                crate::stats::Ratio::of(1.0, Some(0.0), ratio.value, ratio.uncertainty).unwrap_or(ratio)
            };
            let median = machine
                .median_ratio_to_process(workload, runtime, Metric::Total)
                .map_or_else(String::new, |m| format!("; medians: {}×", m.display()));
            lines.push(format!(
                "    {:<10} {} times {word} than process (total time, means{median})",
                runtime.name(),
                shown.display()
            ));
        }
        if let Some(ratio) = machine.ratio_to_process(workload, runtime, Metric::OpsPerSec) {
            lines.push(format!("    {:<10} {} × the process's throughput", runtime.name(), ratio.display()));
        }
    }
    if !lines.is_empty() {
        let _ = writeln!(
            out,
            "Summary for {workload} (relative to the bare process, ± propagated σ)\n{}\n",
            lines.join("\n")
        );
    }
}

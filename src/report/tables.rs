//! The report's tables, built from the model as rows of text (shared by report.md,
//! report.html, the Markdown export and the terminal).

use super::document::Table;
use super::model::{CellView, MachineView, ReportModel};
use crate::record::RuntimeKind;
use crate::stats::{Metric, Summary};

/// "1.23 ms ± 0.10 ms" (or just the mean when there is no spread estimate).
pub fn mean_sd(summary: &Summary, metric: Metric) -> String {
    let unit = metric.unit();
    match summary.std_dev {
        Some(sd) => format!("{} ± {}", unit.format(summary.mean), unit.format(sd)),
        None => unit.format(summary.mean),
    }
}

pub fn value(cell: &CellView, metric: Metric, pick: fn(&Summary) -> f64) -> String {
    cell.metric(metric).map_or_else(|| "—".into(), |s| metric.unit().format(pick(s)))
}

/// "12.3 ± 0.8×" relative to the process on the same machine, "1 (baseline)" for the process.
pub fn ratio_text(machine: &MachineView, cell: &CellView, metric: Metric) -> String {
    if cell.runtime == RuntimeKind::Process {
        return if cell.metric(metric).is_some() { "1 (baseline)".into() } else { "—".into() };
    }
    machine
        .ratio_to_process(&cell.workload_label, cell.runtime, metric)
        .map_or_else(|| "—".into(), |r| format!("{}×", r.display()))
}

/// Like [`ratio_text`] with medians and robust spreads.
pub fn median_ratio_text(machine: &MachineView, cell: &CellView, metric: Metric) -> String {
    if cell.runtime == RuntimeKind::Process {
        return if cell.metric(metric).is_some() { "1 (baseline)".into() } else { "—".into() };
    }
    machine
        .median_ratio_to_process(&cell.workload_label, cell.runtime, metric)
        .map_or_else(|| "—".into(), |r| format!("{}×", r.display()))
}

/// "9 of 10 ok" with failures counted.
pub fn runs_text(cell: &CellView) -> String {
    if let Some(_reason) = &cell.unavailable {
        return "unavailable".into();
    }
    let s = &cell.summary;
    if s.runs == 0 && !cell.errors.is_empty() {
        return "error".into();
    }
    if s.failed.is_empty() {
        s.runs.to_string()
    } else {
        format!("{} ok of {}", s.succeeded, s.runs)
    }
}

/// One table per workload: timing, CPU and throughput of every runtime (and machine).
pub fn timing_table(model: &ReportModel, workload: &str) -> Table {
    let with_throughput = model
        .machines
        .iter()
        .any(|m| m.cells.iter().any(|c| c.workload_label == workload && c.metric(Metric::OpsPerSec).is_some()));
    let mut header: Vec<String> = [
        "runtime",
        "runs",
        "total: mean ± σ",
        "median",
        "min … max",
        "p95",
        "first output (median)",
        "user CPU",
        "system CPU",
        "total vs process (means)",
        "total vs process (medians)",
    ]
    .map(String::from)
    .to_vec();
    if with_throughput {
        header.push("throughput: mean ± σ".into());
        header.push("throughput vs process".into());
    }
    let mut rows = Vec::new();
    for machine in &model.machines {
        for cell in machine.cells.iter().filter(|c| c.workload_label == workload) {
            let mut row = vec![model.series_label(machine, cell.runtime), runs_text(cell)];
            match cell.metric(Metric::Total) {
                Some(total) => {
                    let unit = Metric::Total.unit();
                    let outliers = if total.outliers.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({} outlier{})",
                            total.outliers.len(),
                            if total.outliers.len() == 1 { "" } else { "s" }
                        )
                    };
                    row.push(format!("{}{outliers}", mean_sd(total, Metric::Total)));
                    row.push(unit.format(total.median));
                    row.push(format!("{} … {}", unit.format(total.min), unit.format(total.max)));
                    row.push(unit.format(total.p95));
                }
                None => row.extend(["—", "—", "—", "—"].map(String::from)),
            }
            row.push(value(cell, Metric::FirstOutput, |s| s.median));
            row.push(value(cell, Metric::UserTime, |s| s.mean));
            row.push(value(cell, Metric::SystemTime, |s| s.mean));
            row.push(ratio_text(machine, cell, Metric::Total));
            row.push(median_ratio_text(machine, cell, Metric::Total));
            if with_throughput {
                row.push(cell.metric(Metric::OpsPerSec).map_or_else(|| "—".into(), |s| mean_sd(s, Metric::OpsPerSec)));
                row.push(ratio_text(machine, cell, Metric::OpsPerSec));
            }
            rows.push(row);
        }
    }
    Table { header, rows, numeric: true }
}

/// Start-up phases (medians of the cumulative timestamps) of one workload.
pub fn phases_table(model: &ReportModel, workload: &str) -> Table {
    let header = ["runtime", "setup", "boot", "first output", "exit", "teardown", "total"].map(String::from).to_vec();
    let metrics = [Metric::Setup, Metric::Boot, Metric::FirstOutput, Metric::Exit, Metric::Teardown, Metric::Total];
    let mut rows = Vec::new();
    for machine in &model.machines {
        for cell in machine.cells.iter().filter(|c| c.workload_label == workload && c.has_data()) {
            let mut row = vec![model.series_label(machine, cell.runtime)];
            row.extend(metrics.iter().map(|&m| value(cell, m, |s| s.median)));
            rows.push(row);
        }
    }
    Table { header, rows, numeric: true }
}

/// Memory of every cell with data (medians). Each column is one measure in every row.
pub fn memory_table(model: &ReportModel) -> Table {
    let header = [
        "workload",
        "runtime",
        "program's memory",
        "runtime memory the run added",
        "cvm's shared pages",
        "guest kernel",
        "cgroup peak",
        "guest RAM (configured)",
    ]
    .map(String::from)
    .to_vec();
    let mut rows = Vec::new();
    for workload in &model.workloads {
        for machine in &model.machines {
            for cell in machine.cells.iter().filter(|c| &c.workload_label == workload && c.has_data()) {
                let guest_ram = cell
                    .records
                    .iter()
                    .find_map(|r| r.memory.guest_ram_bytes)
                    .map_or_else(|| "—".into(), crate::units::format_bytes);
                rows.push(vec![
                    workload.clone(),
                    model.series_label(machine, cell.runtime),
                    value(cell, Metric::ProgramMemory, |s| s.median),
                    value(cell, Metric::RuntimeAdded, |s| s.median),
                    value(cell, Metric::RuntimeShared, |s| s.median),
                    value(cell, Metric::GuestKernel, |s| s.median),
                    value(cell, Metric::CgroupPeak, |s| s.median),
                    guest_ram,
                ]);
            }
        }
    }
    Table { header, rows, numeric: true }
}

/// What the probe saw, one column per runtime (and machine).
pub fn isolation_table(model: &ReportModel) -> Option<Table> {
    let mut columns = Vec::new();
    for machine in &model.machines {
        for facts in machine.isolation() {
            columns.push((model.series_label(machine, facts.runtime), facts.rows()));
        }
    }
    let first = columns.first()?;
    let mut header = vec!["what the program saw".to_string()];
    header.extend(columns.iter().map(|(label, _)| label.clone()));
    let rows = (0..first.1.len())
        .map(|index| {
            let mut row = vec![first.1[index].0.to_string()];
            row.extend(columns.iter().map(|(_, facts)| facts[index].1.clone()));
            row
        })
        .collect();
    Some(Table { header, rows, numeric: false })
}

/// One line of the environment table: how to read it from a machine.
type MachineFact = fn(&MachineView) -> String;

/// The machines side by side.
pub fn environment_table(model: &ReportModel) -> Table {
    let mut header = vec![String::new()];
    header.extend(model.machines.iter().map(|m| m.label.clone()));
    let facts: [(&str, MachineFact); 10] = [
        ("host kernel", |m| m.environment().host.kernel_release.clone()),
        ("CPU", |m| m.environment().host.cpu_model.clone()),
        ("cores", |m| m.environment().host.cpu_count.to_string()),
        ("memory", |m| crate::units::format_bytes(m.environment().host.memory_bytes)),
        ("virtualization (KVM)", |m| describe_virtualization(&m.environment().host.virtualization)),
        ("cvm version", |m| m.environment().cvm_version.clone()),
        ("measured at (UTC)", |m| m.environments.iter().map(|e| e.date_utc.clone()).collect::<Vec<_>>().join(", ")),
        ("command", |m| m.environments.iter().map(|e| format!("`{}`", e.command_line)).collect::<Vec<_>>().join(", ")),
        ("load average at start (1, 5, 15 min)", |m| {
            let loads = m.environments.iter().filter_map(|e| e.load_average);
            loads.map(|[a, b, c]| format!("{a:.2} {b:.2} {c:.2}")).collect::<Vec<_>>().join(", ")
        }),
        ("results files merged", |m| m.environments.len().to_string()),
    ];
    let rows = facts
        .iter()
        .map(|(label, get)| {
            let mut row = vec![label.to_string()];
            row.extend(model.machines.iter().map(get));
            row
        })
        .collect();
    Table { header, rows, numeric: false }
}

pub fn describe_virtualization(kind: &str) -> String {
    match kind {
        "vmx" => "vmx (Intel VT-x)".into(),
        "svm" => "svm (AMD-V)".into(),
        "pvm" => "pvm (nested KVM without hardware assist)".into(),
        "none" | "" => "none".into(),
        other => other.into(),
    }
}

/// The compare overview: one row per measure of each workload, one column per runtime: the
/// median (the typical run) and its ratio to the process's median with the propagated robust
/// spread.
pub fn overview_table(model: &ReportModel) -> Table {
    let runtimes = model.runtimes();
    let mut header = vec!["workload".to_string(), "measure".to_string()];
    for machine in &model.machines {
        header.extend(runtimes.iter().map(|&r| model.series_label(machine, r)));
    }
    let mut rows = Vec::new();
    for workload in &model.workloads {
        let mut lines: Vec<(String, Metric)> = vec![("total".into(), Metric::Total)];
        if workload.starts_with("hello") || workload.starts_with("probe") {
            lines.push(("first output".into(), Metric::FirstOutput));
        }
        let has_throughput = model
            .machines
            .iter()
            .any(|m| m.cells.iter().any(|c| &c.workload_label == workload && c.metric(Metric::OpsPerSec).is_some()));
        if has_throughput {
            lines.push(("throughput".into(), Metric::OpsPerSec));
        }
        lines.push(("program's memory".into(), Metric::ProgramMemory));
        lines.push(("runtime memory added".into(), Metric::RuntimeAdded));
        for (index, (name, metric)) in lines.iter().enumerate() {
            let mut row = vec![if index == 0 { workload.clone() } else { String::new() }, name.clone()];
            for machine in &model.machines {
                for &runtime in &runtimes {
                    row.push(overview_cell(machine, workload, runtime, *metric));
                }
            }
            rows.push(row);
        }
    }
    Table { header, rows, numeric: true }
}

fn overview_cell(machine: &MachineView, workload: &str, runtime: RuntimeKind, metric: Metric) -> String {
    let Some(cell) = machine.cell(workload, runtime) else {
        return "—".into();
    };
    if cell.unavailable.is_some() {
        return "unavailable".into();
    }
    if !cell.errors.is_empty() && !cell.has_data() {
        return "error".into();
    }
    let Some(summary) = cell.metric(metric) else {
        return if cell.has_data() { "—".into() } else { "failed".into() };
    };
    let text = metric.unit().format(summary.median);
    if runtime == RuntimeKind::Process || metric.unit() == crate::stats::metric::Unit::Bytes {
        return text;
    }
    match machine.median_ratio_to_process(workload, runtime, metric) {
        Some(ratio) => format!("{text} ({}×)", ratio.display()),
        None => text,
    }
}

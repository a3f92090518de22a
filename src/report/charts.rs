//! Turns the report model into its charts (plain numbers handed to the plot layer): five, and
//! the CPU-scaling view when the results have `cpu N T` cells.

use super::model::{CellView, MachineView, ReportModel};
use crate::plot::box_plot::BoxShape;
use crate::plot::{BoxGroup, BoxPlotChart, Chart, Quantity, RatioBar, RatioBarChart, StackedBarChart, StackedCategory};
use crate::record::RuntimeKind;
use crate::stats::cell::PHASE_SEGMENTS;
use crate::stats::{Metric, TukeyBox};

/// A chart with the file stem it is saved under.
pub struct NamedChart {
    pub stem: &'static str,
    pub chart: Chart,
}

pub fn build_all(model: &ReportModel) -> Vec<NamedChart> {
    let mut charts = Vec::new();
    if let Some(workload) = model.startup_workload() {
        if let Some(chart) = startup_phases(model, workload) {
            charts.push(NamedChart { stem: "startup-phases", chart });
        }
        if let Some(chart) = startup_distribution(model, workload) {
            charts.push(NamedChart { stem: "startup-distribution", chart });
        }
    }
    if let Some(chart) = memory(model) {
        charts.push(NamedChart { stem: "memory", chart });
    }
    if let Some(chart) = cpu_time(model) {
        charts.push(NamedChart { stem: "cpu-time", chart });
    }
    if let Some(chart) = throughput(model) {
        charts.push(NamedChart { stem: "throughput", chart });
    }
    if let Some(chart) = super::scaling::chart(model) {
        charts.push(NamedChart { stem: "cpu-scaling", chart });
    }
    charts
}

pub(crate) fn color_of(runtime: RuntimeKind) -> usize {
    match runtime {
        RuntimeKind::Process => 0,
        RuntimeKind::Container => 1,
        RuntimeKind::Vm => 2,
        RuntimeKind::Runc => 3,
        RuntimeKind::Crun => 4,
        RuntimeKind::Unshare => 6,
        RuntimeKind::Qemu => 5,
    }
}

/// Cells with successful runs, machine by machine, for one workload.
fn cells_of<'a>(
    model: &'a ReportModel,
    workload: &'a str,
) -> impl Iterator<Item = (usize, &'a MachineView, &'a CellView)> {
    model.machines.iter().enumerate().flat_map(move |(index, machine)| {
        machine
            .cells
            .iter()
            .filter(move |c| c.workload_label == workload && c.has_data())
            .map(move |cell| (index, machine, cell))
    })
}

fn runs_phrase(model: &ReportModel, workload: &str) -> String {
    let counts: Vec<usize> = cells_of(model, workload).map(|(_, _, c)| c.summary.succeeded).collect();
    match (counts.iter().min(), counts.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format!("{lo} runs each"),
        (Some(lo), Some(hi)) => format!("{lo} to {hi} runs each"),
        _ => String::new(),
    }
}

fn startup_phases(model: &ReportModel, workload: &str) -> Option<Chart> {
    let categories: Vec<StackedCategory> = cells_of(model, workload)
        .filter_map(|(_, machine, cell)| {
            let segments = cell.summary.phase_segments_ns?;
            let total = cell.metric(Metric::Total)?.mean;
            Some(StackedCategory {
                label: model.series_label(machine, cell.runtime),
                values: segments.to_vec(),
                annotation: Some(format!("total {}", Metric::Total.unit().format(total))),
                shaded: false,
            })
        })
        .collect();
    if categories.is_empty() {
        return None;
    }
    Some(Chart::Stacked(StackedBarChart {
        title: format!("Where the time goes: {workload}, from start to clean-up"),
        subtitle: format!("mean of {}; each segment is one phase of the run", runs_phrase(model, workload)),
        value_label: "time since the run started".into(),
        quantity: Quantity::Nanoseconds,
        segments: PHASE_SEGMENTS.iter().map(|s| s.to_string()).collect(),
        categories,
    }))
}

/// One box of a box plot: `metric` in every successful run of `cell`; None without any.
pub(crate) fn box_group(label: String, cell: &CellView, metric: Metric, shade: usize) -> Option<BoxGroup> {
    let samples: Vec<f64> = cell.records.iter().filter(|r| r.succeeded()).filter_map(|r| metric.value(r)).collect();
    let shape = TukeyBox::of(&samples)?;
    Some(BoxGroup {
        label,
        color: color_of(cell.runtime),
        shade,
        shape: BoxShape {
            q1: shape.q1,
            median: shape.median,
            q3: shape.q3,
            whisker_low: shape.whisker_low,
            whisker_high: shape.whisker_high,
        },
        samples,
    })
}

fn startup_distribution(model: &ReportModel, workload: &str) -> Option<Chart> {
    let groups: Vec<BoxGroup> = cells_of(model, workload)
        .filter_map(|(shade, machine, cell)| {
            box_group(model.series_label(machine, cell.runtime), cell, Metric::Total, shade)
        })
        .collect();
    if groups.is_empty() {
        return None;
    }
    Some(Chart::Boxes(BoxPlotChart {
        title: format!("How much each {workload} run varies: total time"),
        subtitle: "dots: runs · box: middle half · thick line: median · whiskers: runs within 1.5 IQR · rings: beyond"
            .into(),
        value_label: "total time of one run".into(),
        quantity: Quantity::Nanoseconds,
        groups,
    }))
}

fn memory(model: &ReportModel) -> Option<Chart> {
    let mut categories = Vec::new();
    for (group, workload) in model.workloads.iter().enumerate() {
        for (_, machine, cell) in cells_of(model, workload) {
            let median = |metric: Metric| cell.metric(metric).map_or(0.0, |s| s.median);
            let values = vec![median(Metric::ProgramMemory), median(Metric::RuntimeAdded), median(Metric::GuestKernel)];
            // No figure is not zero: without taskstats (not root) the process runtime records
            // none when the program stayed below cvm's own high-water mark (the notes say so).
            let annotation = (values[0] <= 0.0).then(|| "program's memory not measured".to_string());
            categories.push(StackedCategory {
                label: format!("{workload} · {}", model.series_label(machine, cell.runtime)),
                values,
                annotation,
                shaded: group % 2 == 1,
            });
        }
    }
    if categories.iter().all(|c| c.values.iter().all(|v| *v <= 0.0)) {
        return None;
    }
    Some(Chart::Stacked(StackedBarChart {
        title: "Memory of one run: the program, the runtime around it, the guest kernel".into(),
        subtitle:
            "medians · program: peak RSS (vm: guest pages it touched) · runtime: private memory the run added to cvm"
                .into(),
        value_label: "memory".into(),
        quantity: Quantity::Bytes,
        segments: vec!["program's memory".into(), "runtime private (USS)".into(), "guest kernel (vm)".into()],
        categories,
    }))
}

fn cpu_time(model: &ReportModel) -> Option<Chart> {
    let mut categories = Vec::new();
    for (group, workload) in model.workloads.iter().enumerate() {
        for (_, machine, cell) in cells_of(model, workload) {
            let mean = |metric: Metric| cell.metric(metric).map_or(0.0, |s| s.mean);
            categories.push(StackedCategory {
                label: format!("{workload} · {}", model.series_label(machine, cell.runtime)),
                values: vec![mean(Metric::UserTime), mean(Metric::SystemTime)],
                annotation: None,
                shaded: group % 2 == 1,
            });
        }
    }
    if categories.is_empty() {
        return None;
    }
    Some(Chart::Stacked(StackedBarChart {
        title: "CPU time charged for one run: user and system".into(),
        subtitle: "mean per run, as the host accounts it (for the vm: the VMM process, guest included)".into(),
        value_label: "CPU time".into(),
        quantity: Quantity::Nanoseconds,
        segments: vec!["user (program code, or guest code in the vm)".into(), "system (host kernel)".into()],
        categories,
    }))
}

fn throughput(model: &ReportModel) -> Option<Chart> {
    let mut bars = Vec::new();
    let mut group = 0;
    for workload in &model.workloads {
        let before = bars.len();
        for (shade, machine, cell) in cells_of(model, workload) {
            let Some(own) = cell.metric(Metric::OpsPerSec) else { continue };
            let (value, uncertainty) = if cell.runtime == RuntimeKind::Process {
                // The baseline against itself: 1, with its own robust run-to-run spread.
                (1.0, own.robust_std_dev().filter(|_| own.median > 0.0).map(|sd| sd / own.median))
            } else {
                match machine.median_ratio_to_process(workload, cell.runtime, Metric::OpsPerSec) {
                    Some(ratio) => (ratio.value, ratio.uncertainty),
                    None => continue,
                }
            };
            bars.push(RatioBar {
                label: format!("{workload} · {}", model.series_label(machine, cell.runtime)),
                value,
                uncertainty,
                color: color_of(cell.runtime),
                shade,
                shaded: group % 2 == 1,
            });
        }
        if bars.len() > before {
            group += 1;
        }
    }
    if bars.is_empty() {
        return None;
    }
    Some(Chart::Ratios(RatioBarChart {
        title: "Throughput relative to the bare process".into(),
        subtitle: "medians of the workload's own operations per second ÷ the process's; error bars: ± robust σ (1.4826·MAD), propagated"
            .into(),
        value_label: "throughput ÷ process throughput (1 = as fast as the bare process)".into(),
        reference_label: "= process".into(),
        bars,
    }))
}

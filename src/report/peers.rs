//! The peer view: "where the industry's tools stand". cvm's runtimes and the peers (runc,
//! crun, unshare, QEMU), every run one whole command from spawn to exit, so every row is the
//! same measure: the time a user waits for the command, and the peak RSS of the command's own
//! process (the tool, not the program it starts). Built from the model's `peer_cells` only.

use super::charts::box_group;
use super::document::{Block, Table};
use super::model::{CellView, MachineView, ReportModel};
use crate::plot::{BoxPlotChart, Chart, Quantity};
use crate::record::RuntimeKind;
use crate::stats::{Metric, Ratio};

/// "cvm container" or "runc": whose tool the row is.
pub fn label(runtime: RuntimeKind) -> String {
    if runtime.is_peer() {
        runtime.name().to_string()
    } else {
        format!("cvm {runtime}")
    }
}

fn what(runtime: RuntimeKind) -> &'static str {
    match runtime {
        RuntimeKind::Process => "a plain child process",
        RuntimeKind::Container => "namespaces, cgroup, image, seccomp",
        RuntimeKind::Vm => "cvm's VMM and guest kernel",
        RuntimeKind::Runc => "OCI runtime, same image (bundle)",
        RuntimeKind::Crun => "OCI runtime in C, same bundle",
        RuntimeKind::Unshare => "the same namespaces, nothing else",
        RuntimeKind::Qemu => "QEMU microvm, same guest kernel",
    }
}

fn machines_with_peers(model: &ReportModel) -> impl Iterator<Item = &MachineView> {
    model.machines.iter().filter(|m| !m.peer_cells.is_empty())
}

/// The workloads of the peer view, in the order they first appear.
fn peer_workloads(model: &ReportModel) -> Vec<String> {
    let mut workloads: Vec<String> = Vec::new();
    for cell in model.machines.iter().flat_map(|m| &m.peer_cells) {
        if !workloads.contains(&cell.workload_label) {
            workloads.push(cell.workload_label.clone());
        }
    }
    workloads
}

fn median(cell: &CellView, metric: Metric) -> Option<f64> {
    cell.has_data().then(|| cell.metric(metric).map(|s| s.median)).flatten()
}

fn peer_cell<'a>(machine: &'a MachineView, workload: &str, runtime: RuntimeKind) -> Option<&'a CellView> {
    machine.peer_cells.iter().find(|c| c.workload_label == workload && c.runtime == runtime && c.has_data())
}

/// Medians with the ratio to cvm's own runtime of the same family (container to runc, vm to
/// QEMU), so each peer is read against what cvm offers in its place.
pub fn table(model: &ReportModel) -> Option<Table> {
    let mut rows = Vec::new();
    let several = peer_workloads(model).len() > 1;
    for machine in machines_with_peers(model) {
        for cell in &machine.peer_cells {
            let on = if model.multi_machine() { format!(" @ {}", machine.label) } else { String::new() };
            let workload = if several { format!(" · {}", cell.workload_label) } else { String::new() };
            let name = format!("{}{workload}{on}", label(cell.runtime));
            if let Some(reason) = &cell.unavailable {
                let _ = reason; // said in the reading below the table
                rows.push(vec![
                    name,
                    what(cell.runtime).into(),
                    "unavailable (below)".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ]);
                continue;
            }
            let wall = cell.metric(Metric::CommandWall).filter(|_| cell.has_data());
            let Some(wall) = wall else {
                rows.push(vec![
                    name,
                    what(cell.runtime).into(),
                    "no successful run".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ]);
                continue;
            };
            let ratio = peer_cell(machine, &cell.workload_label, cvm_counterpart(cell.runtime))
                .and_then(|ours| Ratio::of_medians(ours.metric(Metric::CommandWall)?, wall))
                .filter(|_| cell.runtime.is_peer())
                .map_or_else(|| "—".into(), |r| format!("{}×", r.display()));
            rows.push(vec![
                name,
                what(cell.runtime).into(),
                format!(
                    "{} (IQR {} – {}, {} runs)",
                    Metric::CommandWall.unit().format(wall.median),
                    Metric::CommandWall.unit().format(wall.q1),
                    Metric::CommandWall.unit().format(wall.q3),
                    wall.n
                ),
                ratio,
                median(cell, Metric::CommandPeakRss).map_or("—".into(), |v| Metric::CommandPeakRss.unit().format(v)),
                median(cell, Metric::CommandCpu).map_or("—".into(), |v| Metric::CommandCpu.unit().format(v)),
            ]);
        }
    }
    (!rows.is_empty()).then(|| Table {
        header: [
            "runtime",
            "what it is",
            "whole command (median)",
            "cvm's time ÷ this",
            "peak RSS of its process",
            "CPU time",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        numeric: true,
    })
}

/// cvm's runtime a peer stands in for.
fn cvm_counterpart(runtime: RuntimeKind) -> RuntimeKind {
    match runtime.family() {
        RuntimeKind::Vm => RuntimeKind::Vm,
        RuntimeKind::Container => RuntimeKind::Container,
        _ => RuntimeKind::Process,
    }
}

/// Every whole-command run of every runtime, as box plots (log axis when QEMU is there).
pub fn chart(model: &ReportModel) -> Option<Chart> {
    let mut groups = Vec::new();
    // One workload per chart: the first (hello in `cvm compare --peers`).
    let workload = peer_workloads(model).into_iter().next()?;
    for (shade, machine) in machines_with_peers(model).enumerate() {
        for cell in machine.peer_cells.iter().filter(|c| c.has_data() && c.workload_label == workload) {
            let on = if model.multi_machine() { format!(" @ {}", machine.label) } else { String::new() };
            groups.extend(box_group(format!("{}{on}", label(cell.runtime)), cell, Metric::CommandWall, shade));
        }
    }
    if groups.len() < 2 {
        return None;
    }
    Some(Chart::Boxes(BoxPlotChart {
        title: format!("Where the industry's tools stand: `{workload}` as one whole command"),
        subtitle: "every run from spawn to exit, as hyperfine times it; cvm's runtimes pay for their own start-up"
            .into(),
        value_label: "whole command".into(),
        quantity: Quantity::Nanoseconds,
        groups,
    }))
}

/// The sentences of reading: cvm's container against runc and the unshare floor, cvm's VMM
/// against QEMU on the same guest, and the peers that could not run.
pub fn reading(model: &ReportModel) -> Vec<String> {
    let mut out = Vec::new();
    for (machine, workload) in
        machines_with_peers(model).flat_map(|m| peer_workloads(model).into_iter().map(move |w| (m, w)))
    {
        let wall = |runtime| peer_cell(machine, &workload, runtime).and_then(|c| median(c, Metric::CommandWall));
        let rss = |runtime| peer_cell(machine, &workload, runtime).and_then(|c| median(c, Metric::CommandPeakRss));
        let ms = |ns: f64| format!("{:.2} ms", ns / 1e6);
        let mib = |bytes: f64| format!("{:.1} MiB", bytes / 1048576.0);
        if let Some(ours) = wall(RuntimeKind::Container) {
            let mut parts = vec![format!("cvm's container ran `{workload}` in {} as a whole command", ms(ours))];
            if let Some(runc) = wall(RuntimeKind::Runc) {
                parts.push(format!("{:.2}× runc's {}", ours / runc, ms(runc)));
            }
            if let Some(floor) = wall(RuntimeKind::Unshare) {
                parts.push(format!(
                    "{} more than unshare's {} (the same namespaces and nothing else: no cgroup, image, seccomp filter \
                     or capability drop, the floor under any container)",
                    ms(ours - floor),
                    ms(floor)
                ));
            }
            out.push(format!("{}.", parts.join(", ")));
        }
        if let (Some(ours), Some(qemu)) = (wall(RuntimeKind::Vm), wall(RuntimeKind::Qemu)) {
            let mut sentence = format!(
                "cvm's micro-VM took {}, {:.3}× QEMU's {} booting the same guest kernel with the same program: the \
                 guest is the same, the difference is the two VMMs' own work",
                ms(ours),
                ours / qemu,
                ms(qemu)
            );
            if let (Some(a), Some(b)) = (rss(RuntimeKind::Vm), rss(RuntimeKind::Qemu)) {
                sentence.push_str(&format!(
                    "; the VMM process's peak RSS {} against {} ({:.2}×), guest RAM touched included in both",
                    mib(a),
                    mib(b),
                    a / b
                ));
            }
            out.push(format!("{sentence}."));
        }
        // Once per machine: with the first workload.
        let first = peer_workloads(model).first() == Some(&workload);
        for cell in
            machine.peer_cells.iter().filter(|c| first && c.unavailable.is_some() && c.workload_label == workload)
        {
            out.push(format!(
                "{} was not measured: {}.",
                label(cell.runtime),
                cell.unavailable.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

/// The report's section: reading, table and chart.
pub fn blocks(model: &ReportModel, chart: Option<Block>) -> Vec<Block> {
    let Some(table) = table(model) else { return Vec::new() };
    let mut blocks = vec![
        Block::Heading(2, "Where the industry's tools stand".into()),
        Block::Paragraph(
            "Every row is one whole command, spawned and reaped by the harness as hyperfine does it, cvm's own \
             runtimes included (`cvm run --json`, so cvm pays for its own start-up like every other tool). The \
             ratio reads cvm's time against the peer's (below 1: cvm is faster). Peak RSS is the command's own \
             process's, from the kernel's exit record (taskstats): for the two VMMs it includes the guest RAM they \
             touched; for runc and cvm's container it is the tool's process, not the program in the container."
                .into(),
        ),
    ];
    let reading = reading(model);
    if !reading.is_empty() {
        blocks.push(Block::Bullets(reading));
    }
    blocks.push(Block::Table(table));
    blocks.extend(chart);
    blocks
}

//! A short reading of the results in plain language, every number computed from the data.

use super::model::{MachineView, ReportModel};
use crate::record::RuntimeKind;
use crate::stats::{Metric, Ratio, Unit};

pub fn findings(model: &ReportModel) -> Vec<String> {
    let mut out = Vec::new();
    for machine in &model.machines {
        let on = if model.multi_machine() { format!("On {}: ", machine.label) } else { String::new() };
        let mut push = |text: String| out.push(sentence(&on, &text));
        for (runtime, reason) in machine.unavailable() {
            push(format!("the {runtime} runtime could not run on this machine ({reason}); its cells are empty."));
        }
        if machine.environment().host.virtualization == "pvm" {
            push(
                "KVM here is nested and has no hardware assist (PVM): guest code that runs at user level is native, \
                 but privileged guest-kernel instructions are emulated, so expect VM start-up and guest system calls to \
                 be slower here than on a laptop or server with VT-x or AMD-V. There the guest kernel's memory is \
                 also open to the program (its system-call path runs with user page permissions), so guest-side \
                 figures (system-call counts, guest fault reports) are as the guest reported them, not verified."
                    .to_string(),
            );
        }
        if let Some(workload) = model.startup_workload() {
            startup(machine, workload).into_iter().for_each(&mut push);
        }
        for workload in &model.workloads {
            throughput(machine, workload).into_iter().for_each(&mut push);
        }
        super::scaling::reading(machine).into_iter().for_each(&mut push);
        memory(machine).into_iter().for_each(&mut push);
        isolation(machine).into_iter().for_each(&mut push);
        quality(machine).into_iter().for_each(&mut push);
    }
    out
}

/// "On laptop: the vm ..." or "The vm ..." (capitalized when it starts the sentence).
fn sentence(prefix: &str, text: &str) -> String {
    if !prefix.is_empty() {
        return format!("{prefix}{text}");
    }
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

fn ms(ns: f64) -> String {
    Unit::Nanoseconds.format(ns)
}

fn times(ratio: &Ratio) -> String {
    format!("{}×", ratio.display())
}

fn startup(machine: &MachineView, workload: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(base) = machine.cell(workload, RuntimeKind::Process).and_then(|c| c.metric(Metric::FirstOutput)) else {
        return out;
    };
    let mut parts = Vec::new();
    for runtime in [RuntimeKind::Container, RuntimeKind::Vm] {
        let Some(first) = machine.cell(workload, runtime).and_then(|c| c.metric(Metric::FirstOutput)) else {
            continue;
        };
        if let Some(ratio) = Ratio::of_medians(first, base) {
            parts.push(format!("in the {runtime} after {} ({} the process's)", ms(first.median), times(&ratio)));
        }
    }
    if !parts.is_empty() {
        out.push(format!(
            "Start-up ({workload}, typical run = median): the program's first output reached the host after {} as a \
             plain process, {}.",
            ms(base.median),
            parts.join(", and ")
        ));
    }
    for runtime in [RuntimeKind::Container, RuntimeKind::Vm] {
        let Some(cell) = machine.cell(workload, runtime) else { continue };
        let (Some(segments), Some(total)) = (cell.summary.phase_segments_ns, cell.metric(Metric::Total)) else {
            continue;
        };
        let names = [
            "setting up",
            "booting the guest kernel",
            "running until the first output",
            "running to the end",
            "tearing down",
        ];
        if let Some((index, longest)) = segments.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
            if total.mean > 0.0 {
                let share = 100.0 * longest / total.mean;
                let amount = if share >= 50.0 { "most" } else { "the largest part" };
                out.push(format!(
                    "The {runtime} spent {amount} of a {workload} run {}: {} of {} on average ({share:.0}%).",
                    names[index],
                    ms(*longest),
                    ms(total.mean),
                ));
            }
        }
    }
    out
}

fn throughput(machine: &MachineView, workload: &str) -> Vec<String> {
    let mut out = Vec::new();
    for runtime in [RuntimeKind::Container, RuntimeKind::Vm] {
        let Some(ratio) = machine.median_ratio_to_process(workload, runtime, Metric::OpsPerSec) else { continue };
        let judgement = if (ratio.value - 1.0).abs() <= ratio.uncertainty.unwrap_or(0.0).max(0.03) {
            "indistinguishable from the bare process".to_string()
        } else if ratio.value < 1.0 {
            format!("{:.0}% slower than the bare process", 100.0 * (1.0 - ratio.value))
        } else {
            format!("{:.0}% faster than the bare process", 100.0 * (ratio.value - 1.0))
        };
        out.push(format!(
            "Throughput of `{workload}` in the {runtime} (medians): {} the process's, {judgement}.",
            times(&ratio)
        ));
    }
    out
}

fn memory(machine: &MachineView) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = |v: f64| Unit::Bytes.format(v);
    let workload = machine.cells.iter().find(|c| c.workload == "hello").map(|c| c.workload_label.clone());
    let Some(workload) = workload.or_else(|| machine.cells.first().map(|c| c.workload_label.clone())) else {
        return out;
    };
    let median = |runtime: RuntimeKind, metric: Metric| {
        machine.cell(&workload, runtime).and_then(|cell| cell.metric(metric)).map(|s| s.median)
    };
    if let (Some(private), Some(kernel), Some(program)) = (
        median(RuntimeKind::Vm, Metric::RuntimeAdded),
        median(RuntimeKind::Vm, Metric::GuestKernel),
        median(RuntimeKind::Vm, Metric::ProgramMemory),
    ) {
        out.push(format!(
            "Memory ({workload}): a VM run added {} of the VMM's own private memory and {} of guest kernel pages \
             to the program's {}. The VMM's file-backed pages (cvm's code) are shared by every VM, so they are \
             not part of what one more VM costs; the density section measures that cost from outside.",
            bytes(private),
            bytes(kernel),
            bytes(program)
        ));
    }
    if let (Some(private), Some(program)) =
        (median(RuntimeKind::Container, Metric::RuntimePrivate), median(RuntimeKind::Container, Metric::ProgramMemory))
    {
        let cgroup = median(RuntimeKind::Container, Metric::CgroupPeak)
            .map(|peak| {
                format!(" (the cgroup, which also counts kernel memory and page cache, was charged {})", bytes(peak))
            })
            .unwrap_or_default();
        out.push(format!(
            "Memory ({workload}): a container run added {} of its supervisor's private memory to the program's \
             {}{cgroup}: no second kernel.",
            bytes(private),
            bytes(program)
        ));
    }
    out
}

fn isolation(machine: &MachineView) -> Vec<String> {
    let facts = machine.isolation();
    let mut out = Vec::new();
    let describe = |runtime: RuntimeKind| facts.iter().find(|f| f.runtime == runtime);
    let host_kernel = &machine.environment().host.kernel_release;
    let kernels: Vec<String> = facts
        .iter()
        .filter_map(|f| {
            let kernel = f.kernel.clone()?;
            let shared = kernel.contains(host_kernel.as_str()) && !host_kernel.is_empty();
            Some(format!("the {} saw {kernel}{}", f.runtime, if shared { " (the host's)" } else { "" }))
        })
        .collect();
    if !kernels.is_empty() {
        out.push(format!("Isolation (probe): {}.", kernels.join("; ")));
    }
    let pids: Vec<String> = facts
        .iter()
        .filter_map(|f| {
            let processes = match f.visible_processes {
                Some(1) => "seeing 1 process (itself)".to_string(),
                Some(n) => format!("seeing {n} processes"),
                None => "with no process list to look at".to_string(),
            };
            Some(format!("{} pid {} {processes}", f.runtime, f.pid?))
        })
        .collect();
    if pids.len() > 1 {
        out.push(format!("Each program saw itself as: {}.", pids.join("; ")));
    }
    if let (Some(process), Some(container)) = (describe(RuntimeKind::Process), describe(RuntimeKind::Container)) {
        if process.capabilities != container.capabilities {
            out.push(format!(
                "Capabilities: the process had {}, the container's program {}.",
                process.capabilities.clone().unwrap_or_else(|| "none visible".into()),
                container.capabilities.clone().unwrap_or_else(|| "none visible".into())
            ));
        }
    }
    out
}

fn quality(machine: &MachineView) -> Vec<String> {
    let mut out = Vec::new();
    let noisy: Vec<String> = machine
        .cells
        .iter()
        .filter(|c| c.summary.total_outliers() > 0)
        .map(|c| {
            format!("{} on {} ({} of {})", c.workload_label, c.runtime, c.summary.total_outliers(), c.summary.succeeded)
        })
        .collect();
    if !noisy.is_empty() {
        out.push(format!(
            "Some runs were statistical outliers (modified z-score above 3.5): {}. Other programs may have \
             disturbed them; close them, use more --warmup and more --runs.",
            noisy.join(", ")
        ));
    }
    for cell in &machine.cells {
        if !cell.summary.failed.is_empty() {
            out.push(format!(
                "{} of {} runs of {} on {} failed and are not in the statistics (first: {}).",
                cell.summary.failed.len(),
                cell.summary.runs,
                cell.workload_label,
                cell.runtime,
                cell.summary.failed[0].reason
            ));
        }
        if let Some(error) = cell.errors.first() {
            out.push(format!("{} on {} stopped with an error: {error}.", cell.workload_label, cell.runtime));
        }
    }
    out
}

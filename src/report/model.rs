//! What a report shows, derived from one or more results files: the machines (files from the
//! same machine merge), their cells with freshly computed statistics, ratios to the bare
//! process and the isolation facts the probe saw. Data only; rendering is elsewhere.

use crate::record::{RunRecord, RuntimeKind};
use crate::results::{CellResult, Environment, ResultsFile};
use crate::stats::{CellSummary, Metric, Ratio};

#[derive(Clone, Debug)]
pub struct ReportModel {
    pub machines: Vec<MachineView>,
    /// Workload labels ("hello", "cpu 100000") in the order they first appear.
    pub workloads: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct MachineView {
    /// Unique among the report's machines.
    pub label: String,
    /// The environment of every results file that came from this machine.
    pub environments: Vec<Environment>,
    pub cells: Vec<CellView>,
    /// The peer view's cells (every run a whole command), kept apart: a whole command and
    /// cvm's inside phases are two measures and never share a table.
    pub peer_cells: Vec<CellView>,
}

#[derive(Clone, Debug)]
pub struct CellView {
    pub runtime: RuntimeKind,
    pub workload: String,
    pub args: Vec<String>,
    pub workload_label: String,
    pub kernel: String,
    pub warmup_runs: usize,
    pub unavailable: Option<String>,
    pub errors: Vec<String>,
    pub warmup_failures: Vec<String>,
    pub records: Vec<RunRecord>,
    pub summary: CellSummary,
}

impl CellView {
    fn from_result(cell: &CellResult) -> CellView {
        CellView {
            runtime: cell.runtime,
            workload: cell.workload.clone(),
            args: cell.args.clone(),
            workload_label: cell.workload_label(),
            kernel: cell.kernel.clone(),
            warmup_runs: cell.warmup_runs,
            unavailable: cell.unavailable.clone(),
            errors: cell.errors.clone(),
            warmup_failures: cell.warmup_failures.clone(),
            records: cell.records.clone(),
            summary: CellSummary::of(&cell.records),
        }
    }

    /// Merges another file's cell of the same runtime and workload into this one.
    fn absorb(&mut self, other: &CellResult) {
        self.records.extend(other.records.iter().cloned());
        self.errors.extend(other.errors.iter().cloned());
        self.warmup_failures.extend(other.warmup_failures.iter().cloned());
        self.unavailable = match (&self.unavailable, &other.unavailable) {
            (Some(reason), Some(_)) => Some(reason.clone()),
            _ if !self.records.is_empty() => None,
            (mine, theirs) => mine.clone().or(theirs.clone()),
        };
        self.summary = CellSummary::of(&self.records);
    }

    /// True when at least one run succeeded.
    pub fn has_data(&self) -> bool {
        self.summary.succeeded > 0
    }

    pub fn metric(&self, metric: Metric) -> Option<&crate::stats::Summary> {
        self.summary.metric(metric)
    }

    /// The first successful record's workload result.
    pub fn first_result(&self) -> Option<&serde_json::Value> {
        self.records.iter().find(|r| r.succeeded()).and_then(|r| r.result.as_ref())
    }
}

impl ReportModel {
    pub fn from_results(files: &[ResultsFile]) -> ReportModel {
        let mut machines: Vec<MachineView> = Vec::new();
        let mut workloads: Vec<String> = Vec::new();
        for file in files {
            let key = machine_key(&file.environment);
            let index = match machines.iter().position(|m| machine_key(&m.environments[0]) == key) {
                Some(index) => index,
                None => {
                    machines.push(MachineView {
                        label: file.environment.machine_label(),
                        environments: Vec::new(),
                        cells: Vec::new(),
                        peer_cells: Vec::new(),
                    });
                    machines.len() - 1
                }
            };
            let machine = &mut machines[index];
            machine.environments.push(file.environment.clone());
            for cell in &file.cells {
                let label = cell.workload_label();
                let cells = if cell.whole_command { &mut machine.peer_cells } else { &mut machine.cells };
                if !cell.whole_command && !workloads.contains(&label) {
                    workloads.push(label.clone());
                }
                let same = cells
                    .iter_mut()
                    .find(|c| c.runtime == cell.runtime && c.workload_label == label && c.kernel == cell.kernel);
                match same {
                    Some(existing) => existing.absorb(cell),
                    None => cells.push(CellView::from_result(cell)),
                }
            }
        }
        make_labels_unique(&mut machines);
        for machine in &mut machines {
            machine.cells.sort_by_key(|c| {
                (workloads.iter().position(|w| *w == c.workload_label).unwrap_or(usize::MAX), c.runtime)
            });
            machine.peer_cells.sort_by(|a, b| (&a.workload_label, a.runtime).cmp(&(&b.workload_label, b.runtime)));
        }
        ReportModel { machines, workloads }
    }

    pub fn multi_machine(&self) -> bool {
        self.machines.len() > 1
    }

    /// "vm" on one machine, "vm @ laptop" when several are side by side.
    pub fn series_label(&self, machine: &MachineView, runtime: RuntimeKind) -> String {
        if self.multi_machine() {
            format!("{runtime} @ {}", machine.label)
        } else {
            runtime.to_string()
        }
    }

    /// The start-up workload of the report: hello if measured, else the first workload.
    pub fn startup_workload(&self) -> Option<&str> {
        self.workloads.iter().find(|w| w.as_str() == "hello").or_else(|| self.workloads.first()).map(String::as_str)
    }

    /// Every runtime measured or attempted anywhere, in canonical order.
    pub fn runtimes(&self) -> Vec<RuntimeKind> {
        RuntimeKind::ALL
            .into_iter()
            .filter(|kind| self.machines.iter().any(|m| m.cells.iter().any(|c| c.runtime == *kind)))
            .collect()
    }
}

impl MachineView {
    pub fn environment(&self) -> &Environment {
        &self.environments[0]
    }

    pub fn cell(&self, workload_label: &str, runtime: RuntimeKind) -> Option<&CellView> {
        self.cells.iter().find(|c| c.workload_label == workload_label && c.runtime == runtime)
    }

    /// metric(runtime) / metric(process) for one workload, means with propagated σ.
    pub fn ratio_to_process(&self, workload_label: &str, runtime: RuntimeKind, metric: Metric) -> Option<Ratio> {
        let this = self.cell(workload_label, runtime)?.metric(metric)?;
        let base = self.cell(workload_label, RuntimeKind::Process)?.metric(metric)?;
        Ratio::of_means(this, base)
    }

    /// The same with medians and robust spreads (see [`Ratio::of_medians`]).
    pub fn median_ratio_to_process(&self, workload_label: &str, runtime: RuntimeKind, metric: Metric) -> Option<Ratio> {
        let this = self.cell(workload_label, runtime)?.metric(metric)?;
        let base = self.cell(workload_label, RuntimeKind::Process)?.metric(metric)?;
        Ratio::of_medians(this, base)
    }

    /// Runtimes that could not run here, with their reasons (one per runtime).
    pub fn unavailable(&self) -> Vec<(RuntimeKind, String)> {
        let mut out: Vec<(RuntimeKind, String)> = Vec::new();
        for cell in &self.cells {
            if let Some(reason) = &cell.unavailable {
                if !out.iter().any(|(kind, _)| *kind == cell.runtime) {
                    out.push((cell.runtime, reason.clone()));
                }
            }
        }
        out
    }

    /// What the probe workload saw under each runtime that ran it.
    pub fn isolation(&self) -> Vec<IsolationFacts> {
        self.cells
            .iter()
            .filter(|c| c.workload == "probe")
            .filter_map(|c| c.first_result().map(|result| IsolationFacts::from_probe(c.runtime, result)))
            .collect()
    }
}

/// Files from the same host name and CPU model are the same machine.
fn machine_key(environment: &Environment) -> (String, String) {
    (environment.host.machine.clone(), environment.host.cpu_model.clone())
}

fn make_labels_unique(machines: &mut [MachineView]) {
    for index in 0..machines.len() {
        let label = machines[index].label.clone();
        if machines.iter().filter(|m| m.label == label).count() > 1 {
            let cpu = machines[index].environment().host.cpu_model.clone();
            machines[index].label = format!("{label} ({cpu})");
        }
    }
}

/// The isolation facts of one runtime, as the probe workload reported them.
#[derive(Clone, Debug, PartialEq)]
pub struct IsolationFacts {
    pub runtime: RuntimeKind,
    /// "Linux 6.18.0" or the builtin guest kernel's name and release.
    pub kernel: Option<String>,
    pub pid: Option<u64>,
    pub hostname: Option<String>,
    pub visible_processes: Option<u64>,
    pub capabilities: Option<String>,
    pub uid: Option<u64>,
    pub mounts: Option<u64>,
    pub network_interfaces: Option<String>,
}

impl IsolationFacts {
    pub fn from_probe(runtime: RuntimeKind, result: &serde_json::Value) -> IsolationFacts {
        let text = |key: &str| result.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let number = |key: &str| result.get(key).and_then(|v| v.as_u64());
        let kernel = match (text("kernel_name"), text("kernel_release")) {
            (Some(name), Some(release)) => Some(format!("{name} {release}")),
            (name, release) => name.or(release),
        };
        let capabilities = match (number("cap_eff_count"), text("cap_eff")) {
            (Some(count), Some(mask)) => Some(format!("{count} (CapEff {mask})")),
            (Some(count), None) => Some(count.to_string()),
            (None, mask) => mask,
        };
        let network_interfaces = result
            .get("network_interfaces")
            .and_then(|v| v.as_array())
            .map(|list| list.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(", "));
        IsolationFacts {
            runtime,
            kernel,
            pid: number("pid"),
            hostname: text("hostname"),
            visible_processes: number("visible_processes"),
            capabilities,
            uid: number("uid"),
            mounts: number("mounts"),
            network_interfaces,
        }
    }

    /// (label, value) rows, "not visible" where the program could not see the fact.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "not visible".into());
        let num = |v: Option<u64>| v.map_or_else(|| "not visible".into(), |n| n.to_string());
        vec![
            ("kernel the program saw", show(&self.kernel)),
            ("its pid", num(self.pid)),
            ("its hostname", show(&self.hostname)),
            ("visible processes", num(self.visible_processes)),
            ("capabilities", show(&self.capabilities)),
            ("uid", num(self.uid)),
            ("mounts", num(self.mounts)),
            ("network interfaces", show(&self.network_interfaces)),
        ]
    }
}

//! `cvm compare`'s side-by-side table, the isolation facts and the runtimes that could not run.

use std::fmt::Write;

use super::text_table;
use crate::report::model::ReportModel;
use crate::report::tables;

pub fn render(model: &ReportModel) -> String {
    let mut out = String::new();
    for machine in &model.machines {
        let host = &machine.environment().host;
        let _ = writeln!(
            out,
            "cvm compare on {} — Linux {}, {} ({} cores), KVM: {}\n",
            machine.label,
            host.kernel_release,
            host.cpu_model,
            host.cpu_count,
            tables::describe_virtualization(&host.virtualization)
        );
    }
    let _ = writeln!(out, "{}\n", text_table::render(&tables::overview_table(model), "  "));
    let _ = writeln!(
        out,
        "  (medians: the typical run; in brackets: × the bare process's median, ± propagated robust σ = 1.4826·MAD)\n"
    );
    for machine in &model.machines {
        if let Some(reading) = crate::report::scaling::reading(machine) {
            let _ = writeln!(out, "{reading}\n");
        }
    }
    out.push_str(&super::peer_view(model));
    if let Some(table) = tables::isolation_table(model) {
        let _ = writeln!(out, "Isolation — what the probe program saw:\n");
        let _ = writeln!(out, "{}\n", text_table::render(&table, "  "));
    }
    for machine in &model.machines {
        for (runtime, reason) in machine.unavailable() {
            let _ = writeln!(out, "Not run: {runtime}: {reason}");
        }
        for cell in &machine.cells {
            super::failures(&mut out, cell, &cell.runtime.to_string(), "");
            if cell.summary.total_outliers() > 0 {
                let _ = writeln!(
                    out,
                    "Warning: {} of {} runs of {} on {} are outliers (modified z > 3.5): close other programs, \
                     use more --warmup and --runs",
                    cell.summary.total_outliers(),
                    cell.summary.succeeded,
                    cell.workload_label,
                    cell.runtime
                );
            }
        }
    }
    out
}

/// The density look's first finding (memory per instance and per GiB against the lecture).
pub fn density(density: &crate::density::DensityResults) -> String {
    let mut out = String::from("Density — idle instances at once (the report has the tables and charts):\n");
    for finding in crate::report::density::findings(density).iter().take(3) {
        let _ = writeln!(out, "  • {}", text_table::plain(finding));
    }
    out.push('\n');
    out
}

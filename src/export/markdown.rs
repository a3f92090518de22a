//! Markdown export: the summary tables of a results file, ready to paste into a report.

use std::path::Path;

use anyhow::{Context, Result};

use crate::report::document::markdown_table;
use crate::report::model::ReportModel;
use crate::report::tables;
use crate::results::ResultsFile;

pub fn render(results: &ResultsFile) -> String {
    let model = ReportModel::from_results(std::slice::from_ref(results));
    let mut out = format!(
        "# cvm bench\n\n`{}` on {} ({}), {}\n\n",
        results.environment.command_line,
        results.environment.machine_label(),
        results.environment.host.cpu_model,
        results.environment.date_utc
    );
    for workload in &model.workloads {
        out.push_str(&format!("## `{workload}`\n\n"));
        out.push_str(&markdown_table(&tables::timing_table(&model, workload)));
    }
    let unavailable: Vec<String> = model
        .machines
        .iter()
        .flat_map(|m| m.unavailable())
        .map(|(runtime, reason)| format!("- **{runtime}** not run: {reason}\n"))
        .collect();
    if !unavailable.is_empty() {
        out.push_str("## Not run\n\n");
        out.push_str(&unavailable.concat());
        out.push('\n');
    }
    if !model.workloads.is_empty() {
        out.push_str("## Memory\n\n");
        out.push_str(&markdown_table(&tables::memory_table(&model)));
    }
    if let Some(table) = crate::report::peers::table(&model) {
        out.push_str("## Where the industry's tools stand (each run one whole command)\n\n");
        for sentence in crate::report::peers::reading(&model) {
            out.push_str(&format!("- {sentence}\n"));
        }
        out.push('\n');
        out.push_str(&markdown_table(&table));
    }
    out
}

pub fn write(path: &Path, results: &ResultsFile) -> Result<()> {
    std::fs::write(path, render(results)).with_context(|| format!("cannot write {}", path.display()))
}

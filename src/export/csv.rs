//! CSV export: one row per measured run with every number of its record, for spreadsheets and
//! notebooks. Failed runs are included with their outcome, so nothing is hidden.

use std::path::Path;

use anyhow::{Context, Result};

use crate::record::RunRecord;
use crate::results::ResultsFile;

pub const COLUMNS: [&str; 33] = [
    "machine",
    "runtime",
    "kernel",
    "workload",
    "args",
    "run",
    "outcome",
    "exit_code",
    "setup_ns",
    "boot_ns",
    "first_output_ns",
    "exit_ns",
    "teardown_ns",
    "total_ns",
    "user_ns",
    "system_ns",
    "program_peak_rss_bytes",
    "runtime_private_bytes",
    "runtime_added_bytes",
    "runtime_shared_bytes",
    "guest_kernel_bytes",
    "peak_rss_bytes",
    "runtime_overhead_bytes",
    "guest_ram_bytes",
    "guest_touched_bytes",
    "cgroup_peak_bytes",
    "ops_per_sec",
    "workload_elapsed_ns",
    "command_wall_ns",
    "command_peak_rss_bytes",
    "command_user_ns",
    "command_system_ns",
    "measured",
];

pub fn render(files: &[ResultsFile]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for file in files {
        for cell in &file.cells {
            for (index, record) in cell.records.iter().enumerate() {
                let fields = row(&file.environment.host.machine, index, record);
                out.push_str(&fields.iter().map(|f| quote(f)).collect::<Vec<_>>().join(","));
                out.push('\n');
            }
        }
    }
    out
}

pub fn write(path: &Path, files: &[ResultsFile]) -> Result<()> {
    std::fs::write(path, render(files)).with_context(|| format!("cannot write {}", path.display()))
}

fn row(machine: &str, index: usize, r: &RunRecord) -> Vec<String> {
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    let result = |key: &str| {
        r.result.as_ref().and_then(|v| v.get(key)).and_then(|v| v.as_f64()).map_or(String::new(), |v| v.to_string())
    };
    let outcome = serde_json::to_value(r.outcome).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let p = &r.phases_ns;
    vec![
        machine.to_string(),
        r.runtime.to_string(),
        r.kernel.clone(),
        r.workload.clone(),
        r.args.join(" "),
        (index + 1).to_string(),
        outcome,
        r.exit_code.to_string(),
        p.setup.to_string(),
        p.boot.to_string(),
        opt(p.first_output),
        p.exit.to_string(),
        p.teardown.to_string(),
        p.total.to_string(),
        r.cpu.user_ns.to_string(),
        r.cpu.system_ns.to_string(),
        opt(r.memory.program_peak_rss_bytes),
        opt(r.memory.runtime_private_bytes),
        opt(r.memory.runtime_added_bytes),
        opt(r.memory.runtime_shared_bytes),
        opt(r.memory.guest_kernel_bytes),
        opt(r.memory.peak_rss_bytes),
        opt(r.memory.runtime_overhead_bytes),
        opt(r.memory.guest_ram_bytes),
        opt(r.memory.guest_touched_bytes),
        opt(r.memory.cgroup_peak_bytes),
        result("ops_per_sec"),
        result("elapsed_ns"),
        opt(r.command.as_ref().map(|c| c.wall_ns)),
        opt(r.command.as_ref().and_then(|c| c.peak_rss_bytes)),
        opt(r.command.as_ref().map(|c| c.user_ns)),
        opt(r.command.as_ref().map(|c| c.system_ns)),
        // The peer view's records are whole commands; the others cvm's phases from inside.
        if r.command.is_some() { "whole command" } else { "in process" }.to_string(),
    ]
}

/// RFC 4180 quoting where needed.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

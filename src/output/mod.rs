//! Terminal output: what `cvm bench` and `cvm compare` print on stdout. Formatting only; the
//! numbers come from the statistics layer through the report model.

pub mod bench_summary;
pub mod compare_summary;
pub mod text_table;

/// The peer view for the terminal: its reading and table, or nothing without peer cells.
pub fn peer_view(model: &crate::report::model::ReportModel) -> String {
    use std::fmt::Write;
    let Some(table) = crate::report::peers::table(model) else { return String::new() };
    let mut out = String::from("Where the industry's tools stand — each run one whole command, spawn to exit:\n\n");
    let _ = writeln!(out, "{}\n", text_table::render(&table, "  "));
    for sentence in crate::report::peers::reading(model) {
        let _ = writeln!(out, "  • {}", text_table::plain(&sentence));
    }
    for cell in model.machines.iter().flat_map(|m| &m.peer_cells) {
        failures(&mut out, cell, &crate::report::peers::label(cell.runtime), "  ");
    }
    out.push('\n');
    out
}

/// A cell's failed runs (the first one's reason) and the errors that stopped its runtime, one
/// line each; `name` is how the runtime is called there.
pub fn failures(out: &mut String, cell: &crate::report::model::CellView, name: &str, indent: &str) {
    use std::fmt::Write;
    if let Some(failure) = cell.summary.failed.first() {
        let _ = writeln!(
            out,
            "{indent}Failed: {} of {} runs of {} on {name} ({}) — excluded from the statistics",
            cell.summary.failed.len(),
            cell.summary.runs,
            cell.workload_label,
            failure.reason
        );
    }
    for error in &cell.errors {
        let _ = writeln!(out, "{indent}Error: {} on {name}: {error}", cell.workload_label);
    }
}

/// Writes to stdout; a closed pipe (`cvm compare | head`) ends the output quietly instead of
/// panicking like `print!` does.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

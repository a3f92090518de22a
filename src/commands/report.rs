//! `cvm report`: renders a report folder from one or more results files; files from several
//! machines appear side by side.

use anyhow::Result;

use super::compare::default_folder;
use crate::cli::ReportArgs;
use crate::output;
use crate::report;
use crate::results;

pub fn report(args: ReportArgs) -> Result<i32> {
    let mut files = Vec::new();
    for path in &args.results {
        files.extend(results::load(path)?);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let dir = args.out.clone().unwrap_or_else(|| default_folder("report", now));
    let written = report::write_report(&dir, &files)?;
    let machines = report::model::ReportModel::from_results(&files).machines.len();
    output::emit(&format!(
        "Report of {} results file{} from {machines} machine{}: {}\n        {} · {} · charts in {}\n",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        if machines == 1 { "" } else { "s" },
        written.html.display(),
        written.markdown.display(),
        written.results.display(),
        dir.join("charts").display()
    ));
    Ok(0)
}

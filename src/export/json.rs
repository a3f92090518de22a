//! JSON export: the full results file (schema version, environment, exact command, every raw
//! run record, per-cell summaries). `cvm report` reads it back.

use std::path::Path;

use anyhow::Result;

use crate::results::{self, ResultsFile};

pub fn write(path: &Path, results: &ResultsFile) -> Result<()> {
    results::save(path, std::slice::from_ref(results))
}

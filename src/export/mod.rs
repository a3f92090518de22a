//! Exports of results, one file per format: JSON (everything, re-readable by `cvm report`),
//! Markdown (summary tables) and CSV (one row per run).

pub mod csv;
pub mod json;
pub mod markdown;

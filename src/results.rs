//! The results file: everything one `cvm bench` or `cvm compare` measured, self-describing
//! enough to be re-rendered, merged with other machines' files and re-analysed elsewhere.
//!
//! It holds the environment (host, exact command line, tool version, date), every raw run
//! record (warm-up runs excluded) and, for convenience of other readers, each cell's summary.
//! cvm itself always recomputes summaries from the raw records.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::host::HostInfo;
use crate::record::{RunRecord, RuntimeKind};
use crate::stats::CellSummary;

/// Version of the results-file layout (independent of the run record's `schema`).
pub const RESULTS_SCHEMA: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub host: HostInfo,
    /// argv of the cvm invocation that produced the file.
    pub command: Vec<String>,
    /// The same, as one shell-quoted line.
    pub command_line: String,
    pub cvm_version: String,
    /// "2026-11-29T07:22:45Z".
    pub date_utc: String,
    pub unix_time_s: u64,
    /// /proc/loadavg (1, 5, 15 minutes) when measuring began: how busy the machine was.
    #[serde(default)]
    pub load_average: Option<[f64; 3]>,
}

impl Environment {
    /// This machine, this invocation, now.
    pub fn current() -> Environment {
        let command: Vec<String> = std::env::args().collect();
        let unix_time_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Environment {
            host: HostInfo::current().clone(),
            command_line: shell_line(&command),
            command,
            cvm_version: env!("CARGO_PKG_VERSION").to_string(),
            date_utc: utc_date_time(unix_time_s),
            unix_time_s,
            load_average: load_average(),
        }
    }

    /// The machine's name in reports (its host name).
    pub fn machine_label(&self) -> String {
        if self.host.machine.is_empty() {
            "unknown machine".into()
        } else {
            self.host.machine.clone()
        }
    }
}

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// One cell of the matrix: one runtime running one workload (with its arguments).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub runtime: RuntimeKind,
    pub workload: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// "host", "builtin" or the guest kernel image's path.
    pub kernel: String,
    pub warmup_runs: usize,
    pub requested_runs: usize,
    /// The runtime cannot run on this host: its `check_available` reason. No runs then.
    #[serde(default)]
    pub unavailable: Option<String>,
    /// Errors of the runtime itself (not of the program), which stopped the cell early.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Warm-up runs whose program failed (they are never part of the statistics).
    #[serde(default)]
    pub warmup_failures: Vec<String>,
    /// Every measured run, successful or not, in the order they ran.
    #[serde(default)]
    pub records: Vec<RunRecord>,
    /// Computed from `records` when the file was written.
    #[serde(default)]
    pub summary: CellSummary,
    /// The peer view: every run measured from outside as one whole command (`record.command`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole_command: bool,
}

impl CellResult {
    pub fn new(runtime: RuntimeKind, workload: &str, args: &[String], kernel: &str) -> CellResult {
        CellResult {
            runtime,
            workload: workload.to_string(),
            args: args.to_vec(),
            kernel: kernel.to_string(),
            warmup_runs: 0,
            requested_runs: 0,
            unavailable: None,
            errors: Vec::new(),
            warmup_failures: Vec::new(),
            records: Vec::new(),
            summary: CellSummary::default(),
            whole_command: false,
        }
    }

    /// "cpu 100000": the workload as typed on a command line.
    pub fn workload_label(&self) -> String {
        workload_label(&self.workload, &self.args)
    }

    pub fn refresh_summary(&mut self) {
        self.summary = CellSummary::of(&self.records);
    }
}

pub fn workload_label(workload: &str, args: &[String]) -> String {
    std::iter::once(workload).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    pub schema: u32,
    /// Always "cvm-results": tells this file from a run record or a merged set.
    pub kind: String,
    pub environment: Environment,
    pub cells: Vec<CellResult>,
    /// `cvm compare`'s short density look (many instances at once), when it took one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<crate::density::DensityResults>,
}

pub const RESULTS_KIND: &str = "cvm-results";
pub const RESULTS_SET_KIND: &str = "cvm-results-set";

impl ResultsFile {
    pub fn new(environment: Environment, mut cells: Vec<CellResult>) -> ResultsFile {
        cells.iter_mut().for_each(CellResult::refresh_summary);
        ResultsFile { schema: RESULTS_SCHEMA, kind: RESULTS_KIND.into(), environment, cells, density: None }
    }
}

/// Several results files kept side by side (what a report of several machines writes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultsSet {
    pub schema: u32,
    pub kind: String,
    pub results: Vec<ResultsFile>,
}

/// Writes one results file, or a set when there are several, as pretty JSON.
pub fn save(path: &Path, results: &[ResultsFile]) -> Result<()> {
    let text = match results {
        [single] => serde_json::to_string_pretty(single),
        several => serde_json::to_string_pretty(&ResultsSet {
            schema: RESULTS_SCHEMA,
            kind: RESULTS_SET_KIND.into(),
            results: several.to_vec(),
        }),
    }
    .context("serializing the results")?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a results file or a results set; every problem is one clear error naming the file.
pub fn load(path: &Path) -> Result<Vec<ResultsFile>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read results file {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not a usable cvm results file", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<ResultsFile>> {
    let value: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    let schema = value.get("schema").and_then(|s| s.as_u64()).unwrap_or(0);
    if kind != RESULTS_KIND && kind != RESULTS_SET_KIND {
        if value.get("phases_ns").is_some() {
            bail!("it is a single run record (cvm run --json); results files come from cvm bench --export-json or cvm compare");
        }
        bail!("it has no \"kind\": \"{RESULTS_KIND}\" field");
    }
    if schema > u64::from(RESULTS_SCHEMA) {
        bail!("it has results schema {schema}, newer than the {RESULTS_SCHEMA} this cvm reads: update cvm");
    }
    let files = if kind == RESULTS_SET_KIND {
        serde_json::from_value::<ResultsSet>(value).context("malformed results set")?.results
    } else {
        vec![serde_json::from_value::<ResultsFile>(value).context("malformed results file")?]
    };
    Ok(files)
}

/// "cvm bench --runs 10" with arguments quoted for a POSIX shell where needed.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seconds since the epoch → "YYYY-MM-DDTHH:MM:SSZ" (proleptic Gregorian, UTC).
pub fn utc_date_time(unix_s: u64) -> String {
    let (year, month, day) = civil_from_days((unix_s / 86_400) as i64);
    let secs = unix_s % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// "20261129-072245": a compact UTC stamp for folder names.
pub fn utc_stamp(unix_s: u64) -> String {
    utc_date_time(unix_s).replace(['-', ':'], "").replace('T', "-").trim_end_matches('Z').to_string()
}

/// Days since 1970-01-01 → (year, month, day); Howard Hinnant's civil-from-days algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date_time(1_795_937_965), "2026-11-29T07:39:25Z");
        assert_eq!(utc_stamp(1_795_937_965), "20261129-073925");
    }

    #[test]
    fn quoting() {
        let argv: Vec<String> = ["cvm", "bench", "--runs", "5", "it's here"].map(String::from).to_vec();
        assert_eq!(shell_line(&argv), r"cvm bench --runs 5 'it'\''s here'");
    }

    #[test]
    fn refuses_what_is_not_a_results_file() {
        assert!(parse("{").unwrap_err().to_string().contains("not valid JSON"));
        assert!(parse("{\"phases_ns\":{}}").unwrap_err().to_string().contains("single run record"));
        let newer = format!("{{\"kind\":\"{RESULTS_KIND}\",\"schema\":99}}");
        assert!(parse(&newer).unwrap_err().to_string().contains("newer"));
    }
}

//! The statistics of one cell of the matrix (one runtime × one workload): every metric
//! summarized over the successful runs, and the failed runs listed, never averaged in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::metric::Metric;
use super::summary::Summary;
use crate::record::{Outcome, RunRecord};

/// The five consecutive parts of a run, as drawn in the start-up chart.
pub const PHASE_SEGMENTS: [&str; 5] = [
    "setup",
    "boot (boot − setup)",
    "to first output (first output − boot)",
    "rest of the program (exit − first output)",
    "teardown (teardown − exit)",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedRun {
    /// Position of the run among the measured runs (0-based).
    pub index: usize,
    pub outcome: Outcome,
    pub exit_code: i32,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    /// Measured runs (warm-up excluded).
    pub runs: usize,
    pub succeeded: usize,
    pub failed: Vec<FailedRun>,
    /// Each metric over the successful runs that have it.
    pub metrics: BTreeMap<Metric, Summary>,
    /// Mean duration of each of [`PHASE_SEGMENTS`] over the successful runs, in ns. Means add up,
    /// so the segments stack to the mean teardown time.
    pub phase_segments_ns: Option<[f64; 5]>,
}

impl CellSummary {
    pub fn of(records: &[RunRecord]) -> CellSummary {
        let ok: Vec<&RunRecord> = records.iter().filter(|r| r.succeeded()).collect();
        let failed = records
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.succeeded())
            .map(|(index, r)| FailedRun {
                index,
                outcome: r.outcome,
                exit_code: r.exit_code,
                reason: describe_failure(r),
            })
            .collect();
        let mut metrics = BTreeMap::new();
        for metric in Metric::ALL {
            let values: Vec<f64> = ok.iter().filter_map(|r| metric.value(r)).collect();
            if let Some(summary) = Summary::of(&values) {
                metrics.insert(metric, summary);
            }
        }
        CellSummary {
            runs: records.len(),
            succeeded: ok.len(),
            failed,
            metrics,
            phase_segments_ns: mean_phase_segments(&ok),
        }
    }

    pub fn metric(&self, metric: Metric) -> Option<&Summary> {
        self.metrics.get(&metric)
    }

    /// Outliers in the primary quantity (total time).
    pub fn total_outliers(&self) -> usize {
        self.metric(Metric::Total).map_or(0, |s| s.outliers.len())
    }
}

/// One line saying how a run failed.
pub fn describe_failure(record: &RunRecord) -> String {
    if let Some(reason) = &record.reason {
        return reason.clone();
    }
    match record.outcome {
        Outcome::Exited => format!("exit status {}", record.exit_code),
        other => format!("{other:?} (exit status {})", record.exit_code),
    }
}

/// The durations between consecutive phase timestamps of one run, in ns.
pub fn phase_segments(record: &RunRecord) -> [f64; 5] {
    let p = &record.phases_ns;
    // A run that printed nothing has no first-output moment: its whole program time counts as
    // "rest of the program".
    let first_output = p.first_output.unwrap_or(p.boot).clamp(p.boot, p.exit.max(p.boot));
    [
        p.setup as f64,
        p.boot.saturating_sub(p.setup) as f64,
        first_output.saturating_sub(p.boot) as f64,
        p.exit.saturating_sub(first_output) as f64,
        p.teardown.saturating_sub(p.exit) as f64,
    ]
}

fn mean_phase_segments(records: &[&RunRecord]) -> Option<[f64; 5]> {
    if records.is_empty() {
        return None;
    }
    let mut sums = [0.0; 5];
    for record in records {
        for (sum, part) in sums.iter_mut().zip(phase_segments(record)) {
            *sum += part;
        }
    }
    Some(sums.map(|sum| sum / records.len() as f64))
}

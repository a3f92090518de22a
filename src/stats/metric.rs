//! The quantities cvm summarizes, and where each one comes from in a run record.

use serde::{Deserialize, Serialize};

use crate::record::RunRecord;
use crate::units::{format_bytes, format_ns};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// phases_ns.total: the whole run as the user waits for it (the primary quantity).
    Total,
    Setup,
    Boot,
    FirstOutput,
    Exit,
    Teardown,
    UserTime,
    SystemTime,
    PeakRss,
    RuntimeOverhead,
    GuestTouched,
    CgroupPeak,
    /// The workload's own throughput (result.ops_per_sec), where it reports one.
    OpsPerSec,
    /// The workload's own timing of its work (result.elapsed_ns).
    WorkloadElapsed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Nanoseconds,
    Bytes,
    PerSecond,
}

impl Unit {
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Nanoseconds => format_ns(value),
            Unit::Bytes => format_bytes(value.max(0.0).round() as u64),
            Unit::PerSecond => format_rate(value),
        }
    }
}

/// 1_234_567 → "1.23 M ops/s" (operations as the workload counts them).
pub fn format_rate(per_second: f64) -> String {
    let (scaled, prefix) = if per_second >= 1e9 {
        (per_second / 1e9, "G ")
    } else if per_second >= 1e6 {
        (per_second / 1e6, "M ")
    } else if per_second >= 1e3 {
        (per_second / 1e3, "k ")
    } else {
        (per_second, "")
    };
    format!("{scaled:.2} {prefix}ops/s")
}

impl Metric {
    pub const ALL: [Metric; 14] = [
        Metric::Total,
        Metric::Setup,
        Metric::Boot,
        Metric::FirstOutput,
        Metric::Exit,
        Metric::Teardown,
        Metric::UserTime,
        Metric::SystemTime,
        Metric::PeakRss,
        Metric::RuntimeOverhead,
        Metric::GuestTouched,
        Metric::CgroupPeak,
        Metric::OpsPerSec,
        Metric::WorkloadElapsed,
    ];

    /// The key used in files (JSON, CSV).
    pub fn key(self) -> &'static str {
        match self {
            Metric::Total => "total",
            Metric::Setup => "setup",
            Metric::Boot => "boot",
            Metric::FirstOutput => "first_output",
            Metric::Exit => "exit",
            Metric::Teardown => "teardown",
            Metric::UserTime => "user",
            Metric::SystemTime => "system",
            Metric::PeakRss => "peak_rss",
            Metric::RuntimeOverhead => "runtime_overhead",
            Metric::GuestTouched => "guest_touched",
            Metric::CgroupPeak => "cgroup_peak",
            Metric::OpsPerSec => "ops_per_sec",
            Metric::WorkloadElapsed => "workload_elapsed",
        }
    }

    /// What a reader calls it.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Total => "total time",
            Metric::Setup => "setup",
            Metric::Boot => "boot",
            Metric::FirstOutput => "first output",
            Metric::Exit => "exit",
            Metric::Teardown => "teardown",
            Metric::UserTime => "user CPU time",
            Metric::SystemTime => "system CPU time",
            Metric::PeakRss => "peak RSS",
            Metric::RuntimeOverhead => "runtime overhead",
            Metric::GuestTouched => "guest memory touched",
            Metric::CgroupPeak => "cgroup peak",
            Metric::OpsPerSec => "throughput",
            Metric::WorkloadElapsed => "workload's own time",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Metric::PeakRss | Metric::RuntimeOverhead | Metric::GuestTouched | Metric::CgroupPeak => Unit::Bytes,
            Metric::OpsPerSec => Unit::PerSecond,
            _ => Unit::Nanoseconds,
        }
    }

    /// True when more is better (throughput); false for times and memory.
    pub fn higher_is_better(self) -> bool {
        self == Metric::OpsPerSec
    }

    /// This metric's value in one record, when the record has it.
    pub fn value(self, record: &RunRecord) -> Option<f64> {
        let p = &record.phases_ns;
        let m = &record.memory;
        let from_result = |key: &str| record.result.as_ref()?.get(key)?.as_f64().filter(|v| v.is_finite());
        let value = match self {
            Metric::Total => Some(p.total),
            Metric::Setup => Some(p.setup),
            Metric::Boot => Some(p.boot),
            Metric::FirstOutput => p.first_output,
            Metric::Exit => Some(p.exit),
            Metric::Teardown => Some(p.teardown),
            Metric::UserTime => Some(record.cpu.user_ns),
            Metric::SystemTime => Some(record.cpu.system_ns),
            Metric::PeakRss => m.peak_rss_bytes,
            Metric::RuntimeOverhead => m.runtime_overhead_bytes,
            Metric::GuestTouched => m.guest_touched_bytes,
            Metric::CgroupPeak => m.cgroup_peak_bytes,
            Metric::OpsPerSec => return from_result("ops_per_sec"),
            Metric::WorkloadElapsed => return from_result("elapsed_ns"),
        };
        value.map(|v| v as f64)
    }
}

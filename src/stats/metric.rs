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
    /// memory.program_peak_rss_bytes: the program's own memory in every runtime.
    ProgramMemory,
    /// memory.runtime_private_bytes: cvm's own private memory (USS), guest RAM excluded.
    RuntimePrivate,
    /// memory.runtime_added_bytes: the private memory the run added to cvm.
    RuntimeAdded,
    /// memory.runtime_shared_bytes: cvm's file-backed pages, shared between instances.
    RuntimeShared,
    /// memory.guest_kernel_bytes (vm).
    GuestKernel,
    GuestTouched,
    CgroupPeak,
    /// memory.peak_rss_bytes, kept for old results files: it mixes the program's RSS
    /// (process, container) with the VMM process's (vm), so no table shows it.
    PeakRss,
    /// memory.runtime_overhead_bytes, kept for old results files.
    RuntimeOverhead,
    /// The workload's own throughput (result.ops_per_sec), where it reports one.
    OpsPerSec,
    /// The workload's own timing of its work (result.elapsed_ns).
    WorkloadElapsed,
    /// command.wall_ns: the peer view's measure, the whole command from spawn to exit.
    CommandWall,
    /// command.peak_rss_bytes: the peak RSS of the command's own process.
    CommandPeakRss,
    /// command.user_ns + command.system_ns: CPU time of the whole command.
    CommandCpu,
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
    pub const ALL: [Metric; 22] = [
        Metric::Total,
        Metric::Setup,
        Metric::Boot,
        Metric::FirstOutput,
        Metric::Exit,
        Metric::Teardown,
        Metric::UserTime,
        Metric::SystemTime,
        Metric::ProgramMemory,
        Metric::RuntimePrivate,
        Metric::RuntimeAdded,
        Metric::RuntimeShared,
        Metric::GuestKernel,
        Metric::GuestTouched,
        Metric::CgroupPeak,
        Metric::PeakRss,
        Metric::RuntimeOverhead,
        Metric::OpsPerSec,
        Metric::WorkloadElapsed,
        Metric::CommandWall,
        Metric::CommandPeakRss,
        Metric::CommandCpu,
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
            Metric::ProgramMemory => "program_memory",
            Metric::RuntimePrivate => "runtime_private",
            Metric::RuntimeAdded => "runtime_added",
            Metric::RuntimeShared => "runtime_shared",
            Metric::GuestKernel => "guest_kernel",
            Metric::PeakRss => "peak_rss",
            Metric::RuntimeOverhead => "runtime_overhead",
            Metric::GuestTouched => "guest_touched",
            Metric::CgroupPeak => "cgroup_peak",
            Metric::OpsPerSec => "ops_per_sec",
            Metric::WorkloadElapsed => "workload_elapsed",
            Metric::CommandWall => "command_wall",
            Metric::CommandPeakRss => "command_peak_rss",
            Metric::CommandCpu => "command_cpu",
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
            Metric::ProgramMemory => "program's memory",
            Metric::RuntimePrivate => "runtime private (USS)",
            Metric::RuntimeAdded => "runtime memory the run added",
            Metric::RuntimeShared => "runtime shared pages",
            Metric::GuestKernel => "guest kernel memory",
            Metric::PeakRss => "peak RSS (program or VMM)",
            Metric::RuntimeOverhead => "runtime overhead (old measure)",
            Metric::GuestTouched => "guest memory touched",
            Metric::CgroupPeak => "cgroup peak",
            Metric::OpsPerSec => "throughput",
            Metric::WorkloadElapsed => "workload's own time",
            Metric::CommandWall => "whole command",
            Metric::CommandPeakRss => "command process's peak RSS",
            Metric::CommandCpu => "whole command's CPU time",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Metric::ProgramMemory
            | Metric::RuntimePrivate
            | Metric::RuntimeAdded
            | Metric::RuntimeShared
            | Metric::GuestKernel
            | Metric::GuestTouched
            | Metric::CgroupPeak
            | Metric::PeakRss
            | Metric::CommandPeakRss
            | Metric::RuntimeOverhead => Unit::Bytes,
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
            // Results files from before the split have only peak_rss_bytes, which is the
            // program's own outside a VM.
            Metric::ProgramMemory => m
                .program_peak_rss_bytes
                .or(m.peak_rss_bytes.filter(|_| record.runtime != crate::record::RuntimeKind::Vm)),
            Metric::RuntimePrivate => m.runtime_private_bytes,
            Metric::RuntimeAdded => m.runtime_added_bytes,
            Metric::RuntimeShared => m.runtime_shared_bytes,
            Metric::GuestKernel => m.guest_kernel_bytes,
            Metric::PeakRss => m.peak_rss_bytes,
            Metric::RuntimeOverhead => m.runtime_overhead_bytes,
            Metric::GuestTouched => m.guest_touched_bytes,
            Metric::CgroupPeak => m.cgroup_peak_bytes,
            Metric::OpsPerSec => return from_result("ops_per_sec"),
            Metric::WorkloadElapsed => return from_result("elapsed_ns"),
            Metric::CommandWall => record.command.as_ref().map(|c| c.wall_ns),
            Metric::CommandPeakRss => record.command.as_ref().and_then(|c| c.peak_rss_bytes),
            Metric::CommandCpu => record.command.as_ref().map(|c| c.user_ns + c.system_ns),
        };
        value.map(|v| v as f64)
    }
}

//! Per runtime and instance count: the per-instance figures over the repetitions (median and
//! range) and what they mean per GiB of memory.

use serde::{Deserialize, Serialize};

use crate::record::RuntimeKind;
use crate::stats::summary::{median, percentile_of_sorted};

use super::Step;

const GIB: f64 = 1073741824.0;

/// A figure over repetitions: its median and the range it spanned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let median = median(values)?;
        let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread { median, min, max })
    }
}

/// N instances of one runtime, over the repetitions that were measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityRow {
    pub runtime: RuntimeKind,
    pub instances: usize,
    pub repetitions: usize,
    /// What one instance added to the system's used memory, bytes.
    pub marginal_bytes: Spread,
    /// The machine's memory noise divided among the instances (the largest of the steps):
    /// a marginal figure smaller than this is not told apart from zero.
    pub noise_per_instance_bytes: f64,
    /// Per instance: the USS and PSS of its processes, bytes.
    pub uss_bytes: Spread,
    pub pss_bytes: Spread,
    /// container: the run cgroup's charge per instance, bytes.
    #[serde(default)]
    pub cgroup_bytes: Option<Spread>,
    /// Launch to ready line over every instance of every repetition, ns.
    pub start_p50_ns: f64,
    pub start_p95_ns: f64,
    pub start_max_ns: f64,
    /// Instances started per second (N / first launch to last ready).
    pub starts_per_second: Spread,
    /// Percent of one core each idle instance used.
    pub cpu_percent: Spread,
    /// 1 GiB divided by the median marginal memory (None when that is within the noise).
    pub per_gib: Option<f64>,
    /// 1 GiB divided by the median USS per instance.
    pub per_gib_uss: Option<f64>,
}

pub fn rows(steps: &[Step]) -> Vec<DensityRow> {
    let mut keys: Vec<(RuntimeKind, usize)> = steps.iter().map(|s| (s.runtime, s.instances)).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter_map(|(runtime, instances)| row(steps, runtime, instances)).collect()
}

fn row(steps: &[Step], runtime: RuntimeKind, instances: usize) -> Option<DensityRow> {
    let mine: Vec<&Step> = steps.iter().filter(|s| s.runtime == runtime && s.instances == instances).collect();
    let per = |f: &dyn Fn(&Step) -> f64| -> Vec<f64> { mine.iter().map(|s| f(s)).collect() };
    let n = instances as f64;
    let marginal = Spread::of(&per(&|s| s.marginal_bytes()))?;
    let noise = mine.iter().map(|s| s.used_noise_bytes as f64 / n).fold(0.0, f64::max);
    let uss = Spread::of(&per(&|s| s.uss_bytes as f64 / n))?;
    let pss = Spread::of(&per(&|s| s.pss_bytes as f64 / n))?;
    let cgroups: Vec<f64> = mine.iter().filter_map(|s| s.cgroup_bytes.map(|b| b as f64 / n)).collect();
    let mut latencies: Vec<f64> = mine.iter().flat_map(|s| s.start_latency_ns.iter().map(|&ns| ns as f64)).collect();
    latencies.sort_by(f64::total_cmp);
    let distinct = marginal.median > noise && marginal.median > 0.0;
    Some(DensityRow {
        runtime,
        instances,
        repetitions: mine.len(),
        marginal_bytes: marginal,
        noise_per_instance_bytes: noise,
        uss_bytes: uss,
        pss_bytes: pss,
        cgroup_bytes: Spread::of(&cgroups),
        start_p50_ns: percentile_of_sorted(&latencies, 0.5),
        start_p95_ns: percentile_of_sorted(&latencies, 0.95),
        start_max_ns: latencies.last().copied().unwrap_or(0.0),
        starts_per_second: Spread::of(&per(&|s| s.starts_per_second()))?,
        cpu_percent: Spread::of(&per(&|s| s.cpu_percent_per_instance()))?,
        per_gib: distinct.then(|| GIB / marginal.median),
        per_gib_uss: (uss.median > 0.0).then(|| GIB / uss.median),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(runtime: RuntimeKind, instances: usize, before: u64, with: u64, repetition: usize) -> Step {
        Step {
            runtime,
            instances,
            repetition,
            used_before_bytes: before,
            used_with_bytes: with,
            used_after_bytes: before,
            used_noise_bytes: 1 << 20,
            rss_bytes: instances as u64 * (6 << 20),
            pss_bytes: instances as u64 * (2 << 20),
            uss_bytes: instances as u64 * (1 << 20),
            processes: instances,
            cgroup_bytes: None,
            start_latency_ns: vec![10_000_000; instances],
            all_ready_ns: 1_000_000_000,
            cpu_ns: 10_000_000,
            window_ns: 2_000_000_000,
        }
    }

    #[test]
    fn per_instance_figures_and_per_gib() {
        let base = 1u64 << 30;
        let steps = vec![
            step(RuntimeKind::Vm, 32, base, base + 32 * (1 << 20), 1),
            step(RuntimeKind::Vm, 32, base, base + 32 * (3 << 19), 2),
            step(RuntimeKind::Vm, 32, base, base + 32 * (1 << 19), 3),
        ];
        let rows = rows(&steps);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.marginal_bytes.median, (1 << 20) as f64);
        assert_eq!(row.marginal_bytes.min, (1 << 19) as f64);
        assert_eq!(row.per_gib, Some(1024.0));
        assert_eq!(row.per_gib_uss, Some(1024.0));
        assert!((row.cpu_percent.median - 0.015625).abs() < 1e-9);
        assert_eq!(row.starts_per_second.median, 32.0);
    }

    #[test]
    fn a_marginal_figure_within_the_noise_gives_no_per_gib() {
        let base = 1u64 << 30;
        let rows = rows(&[step(RuntimeKind::Container, 1, base, base + (512 << 10), 1)]);
        assert_eq!(rows[0].per_gib, None, "0.5 MiB is within 1 MiB of noise");
    }
}

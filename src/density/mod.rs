//! `cvm density`: how many containers and micro-VMs fit on one machine, measured from outside.
//!
//! One step starts N instances of one runtime at once (N `cvm run ... idle` processes, what a
//! user would start: [`instance`]), waits until each says it is ready, lets them settle, and
//! measures system-wide while they all idle ([`sample`]): the system's used memory before and
//! with them, the sum of every involved process's USS/PSS, a container's cgroup charge, the CPU
//! time all their threads took, and each instance's start latency (launch to ready line). Then
//! it stops them all. Steps run runtime after runtime for each N, repeated, so a drift of the
//! machine hits every runtime alike; [`summary`] turns the steps into per-instance figures with
//! their spread. Before each step [`limits`] checks the host has room; where it does not, or an
//! instance fails, the run stops with a message and keeps what it measured.

pub mod instance;
pub mod limits;
pub mod sample;
pub mod summary;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::bench::progress::Progress;
use crate::record::RuntimeKind;
use crate::stats::summary::median;
use crate::units::format_bytes;
use instance::Fleet;
use sample::ProcessMemory;
pub use summary::{DensityRow, Spread};

/// What to measure.
#[derive(Clone, Debug)]
pub struct DensityPlan {
    pub runtimes: Vec<RuntimeKind>,
    /// Instances started at once, in increasing order.
    pub counts: Vec<usize>,
    pub repetitions: usize,
    /// After the last instance is ready, before measuring: start-up work dies down.
    pub settle: Duration,
    /// How long the idle instances' CPU time and memory are watched.
    pub window: Duration,
}

impl DensityPlan {
    /// `cvm density`'s default: 1, 8 and 32 instances, three repetitions, a 2 s window.
    pub fn full(runtimes: Vec<RuntimeKind>, counts: Vec<usize>, repetitions: usize) -> DensityPlan {
        DensityPlan { runtimes, counts, repetitions, settle: Duration::from_secs(1), window: Duration::from_secs(2) }
    }

    /// The short look `cvm compare` takes: 8 instances, once, a 1 s window.
    pub fn short(runtimes: Vec<RuntimeKind>) -> DensityPlan {
        DensityPlan {
            runtimes,
            counts: vec![8],
            repetitions: 1,
            settle: Duration::from_millis(500),
            window: Duration::from_secs(1),
        }
    }

    pub fn steps(&self) -> usize {
        self.runtimes.len() * self.counts.len() * self.repetitions
    }
}

/// One step: N instances of one runtime, all idle at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub runtime: RuntimeKind,
    pub instances: usize,
    /// 1-based.
    pub repetition: usize,
    /// The system's used memory (see `sample::used_memory_bytes`): medians of samples before
    /// the launch, during the window, and after every instance was gone. The baseline is the
    /// mean of before and after, which cancels a steady drift of the machine's memory.
    pub used_before_bytes: u64,
    pub used_with_bytes: u64,
    #[serde(default)]
    pub used_after_bytes: u64,
    /// The largest spread (max − min) of the samples before, during or after: the machine's
    /// own memory noise at this moment.
    pub used_noise_bytes: u64,
    /// Sums over every process of every instance (the `cvm run` processes and the programs they
    /// started), from smaps_rollup.
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    pub uss_bytes: u64,
    pub processes: usize,
    /// container: the sum of the run cgroups' charge (kernel memory included).
    pub cgroup_bytes: Option<u64>,
    /// Launch of each `cvm run` to its ready line, ns.
    pub start_latency_ns: Vec<u64>,
    /// First launch to last ready line, ns.
    pub all_ready_ns: u64,
    /// CPU time all their threads took during the window, and the window, ns.
    pub cpu_ns: u64,
    pub window_ns: u64,
}

impl Step {
    /// What one instance added to the system's used memory (negative within the noise).
    pub fn marginal_bytes(&self) -> f64 {
        (self.used_with_bytes as f64 - self.baseline_bytes()) / self.instances as f64
    }

    /// The machine without the instances: before and after, averaged (before alone in old files).
    pub fn baseline_bytes(&self) -> f64 {
        if self.used_after_bytes == 0 {
            self.used_before_bytes as f64
        } else {
            (self.used_before_bytes as f64 + self.used_after_bytes as f64) / 2.0
        }
    }

    /// Percent of one core each idle instance used.
    pub fn cpu_percent_per_instance(&self) -> f64 {
        100.0 * self.cpu_ns as f64 / self.window_ns.max(1) as f64 / self.instances as f64
    }

    pub fn starts_per_second(&self) -> f64 {
        self.instances as f64 * 1e9 / self.all_ready_ns.max(1) as f64
    }
}

/// Everything a density run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DensityResults {
    pub workload: String,
    pub counts: Vec<usize>,
    pub repetitions: usize,
    pub window_ns: u64,
    pub steps: Vec<Step>,
    /// Per runtime and instance count, over the repetitions.
    pub rows: Vec<DensityRow>,
    /// Runtimes this host cannot run, with the reason.
    #[serde(default)]
    pub unavailable: Vec<(RuntimeKind, String)>,
    /// Why the run stopped before the end, and how far it got.
    #[serde(default)]
    pub stopped: Option<String>,
    /// Total memory of the machine, for the per-GiB figures' context.
    pub memory_total_bytes: u64,
}

/// What `density.json` holds: the environment and the results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DensityFile {
    pub schema: u32,
    /// Always "cvm-density".
    pub kind: String,
    pub environment: crate::results::Environment,
    pub density: DensityResults,
}

impl DensityFile {
    pub fn new(environment: crate::results::Environment, density: DensityResults) -> DensityFile {
        DensityFile { schema: 1, kind: "cvm-density".into(), environment, density }
    }
}

/// Runs the plan; `exe` is the cvm binary each instance runs. Never fails half-way: a failure
/// or a full host ends the run with `stopped` set, and the steps measured so far are kept.
pub fn measure(plan: &DensityPlan, exe: &Path, progress: &Progress) -> DensityResults {
    let mut results = DensityResults {
        workload: "idle".into(),
        counts: plan.counts.clone(),
        repetitions: plan.repetitions,
        window_ns: plan.window.as_nanos() as u64,
        memory_total_bytes: sample::total_memory_bytes().unwrap_or(0),
        ..DensityResults::default()
    };
    let mut runtimes = Vec::new();
    for &runtime in &plan.runtimes {
        match crate::runtime::runtime(runtime).check_available() {
            Ok(()) => runtimes.push(runtime),
            Err(err) => {
                progress.note(&format!("density: {runtime} is not available here: {err:#}"));
                results.unavailable.push((runtime, format!("{err:#}")));
            }
        }
    }
    limits::raise_descriptor_limit();
    'all: for repetition in 1..=plan.repetitions {
        for &count in &plan.counts {
            for &runtime in &runtimes {
                if let Some(signal) = crate::interrupt::requested() {
                    results.stopped = Some(format!("interrupted (signal {signal})"));
                    break 'all;
                }
                let label = format!("{runtime} ×{count} (repetition {repetition} of {})", plan.repetitions);
                progress.step(label.clone());
                if let Err(why) = limits::room_for(runtime, count, &results.steps) {
                    results.stopped = Some(format!("stopped before {count} {runtime} instances: {why}"));
                    break 'all;
                }
                match measure_step(plan, exe, runtime, count, repetition) {
                    Ok(step) => {
                        progress.note(&describe_step(&step));
                        results.steps.push(step);
                    }
                    Err(err) => {
                        results.stopped = Some(format!("stopped at {count} {runtime} instances: {err:#}"));
                        break 'all;
                    }
                }
                progress.advance(1);
            }
        }
    }
    if let Some(stopped) = &results.stopped {
        progress.note(&format!("density: {stopped}; {}", how_far(&results.steps)));
    }
    results.rows = summary::rows(&results.steps);
    results
}

/// How far a stopped run got: the largest N measured per runtime.
pub fn how_far(steps: &[Step]) -> String {
    let mut reached: Vec<String> = RuntimeKind::ALL
        .iter()
        .filter_map(|&runtime| {
            let most = steps.iter().filter(|s| s.runtime == runtime).map(|s| s.instances).max()?;
            Some(format!("{most} {runtime} instances"))
        })
        .collect();
    if reached.is_empty() {
        reached.push("nothing".into());
    }
    format!("measured up to {}", reached.join(", "))
}

fn describe_step(step: &Step) -> String {
    let p50 = median(&step.start_latency_ns.iter().map(|&ns| ns as f64).collect::<Vec<_>>()).unwrap_or(0.0);
    format!(
        "density: {} ×{} (repetition {}): ready in {:.2} s (median start {:.1} ms), {} used memory per instance, \
         USS {} per instance, {} of a core per idle instance",
        step.runtime,
        step.instances,
        step.repetition,
        step.all_ready_ns as f64 / 1e9,
        p50 / 1e6,
        signed_bytes(step.marginal_bytes()),
        format_bytes(step.uss_bytes / step.instances as u64),
        crate::report::density::percent(step.cpu_percent_per_instance())
    )
}

/// "+1.2 MiB", "−0.3 MiB".
pub fn signed_bytes(value: f64) -> String {
    let sign = if value < 0.0 { "−" } else { "+" };
    format!("{sign}{}", format_bytes(value.abs().round() as u64))
}

/// Samples of the system's used memory, `count` of them `every` apart: (median, max − min).
fn used_memory(count: usize, every: Duration, fleet: Option<&mut Fleet>) -> Result<(u64, u64)> {
    let mut values = Vec::with_capacity(count);
    let mut fleet = fleet;
    for index in 0..count {
        if index > 0 {
            match fleet.as_deref_mut() {
                Some(fleet) => fleet.hold(every)?,
                None => std::thread::sleep(every),
            }
        }
        values.push(sample::used_memory_bytes().ok_or_else(|| anyhow::anyhow!("cannot read /proc/meminfo"))? as f64);
    }
    let middle = median(&values).unwrap_or(0.0);
    let spread = values.iter().cloned().fold(f64::MIN, f64::max) - values.iter().cloned().fold(f64::MAX, f64::min);
    Ok((middle as u64, spread.max(0.0) as u64))
}

/// How long N instances may take to be ready: generous, a slow machine is not a failure.
fn ready_timeout(count: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(500) * count as u32
}

fn measure_step(plan: &DensityPlan, exe: &Path, runtime: RuntimeKind, count: usize, repetition: usize) -> Result<Step> {
    let (used_before, noise_before) = used_memory(5, Duration::from_millis(100), None)?;
    let hold = ready_timeout(count) + plan.settle + plan.window + Duration::from_secs(30);
    let mut fleet = Fleet::launch(exe, runtime, count, hold.as_secs())?;
    fleet.pump(ready_timeout(count), true)?;
    check_fleet(&fleet)?;
    if fleet.ready_count() < count {
        anyhow::bail!(
            "only {} of {count} instances were ready after {} s",
            fleet.ready_count(),
            ready_timeout(count).as_secs()
        );
    }
    let all_ready = fleet.all_ready_after().unwrap_or_default();
    fleet.hold(plan.settle)?;
    check_fleet(&fleet)?;

    // The window: the CPU time of every thread of every process, and the memory, while idle.
    let processes: Vec<libc::pid_t> = sample::process_trees(&fleet.pids()).into_iter().collect();
    let cpu_before: u64 = processes.iter().map(|&pid| sample::cpu_ns(pid)).sum();
    let window_start = Instant::now();
    let mut memory = ProcessMemory::default();
    for &pid in &processes {
        memory += sample::process_memory(pid).unwrap_or_default();
    }
    let cgroup_bytes = (runtime == RuntimeKind::Container).then(|| cgroup_charge(&processes, &fleet.pids()));
    let samples = 5;
    let (used_with, noise_with) = used_memory(samples, plan.window / samples as u32, Some(&mut fleet))?;
    let remaining = plan.window.saturating_sub(window_start.elapsed());
    fleet.hold(remaining)?;
    let cpu_after: u64 = processes.iter().map(|&pid| sample::cpu_ns(pid)).sum();
    let window_ns = window_start.elapsed().as_nanos() as u64;
    check_fleet(&fleet)?;
    let start_latency_ns = fleet.start_latencies_ns();
    let killed = fleet.stop();
    if killed > 0 {
        anyhow::bail!("{killed} of {count} instances did not stop within 20 s of SIGTERM and were killed");
    }
    drop(fleet);
    std::thread::sleep(Duration::from_millis(300));
    let (used_after, noise_after) = used_memory(5, Duration::from_millis(100), None)?;
    Ok(Step {
        runtime,
        instances: count,
        repetition,
        used_before_bytes: used_before,
        used_with_bytes: used_with,
        used_after_bytes: used_after,
        used_noise_bytes: noise_before.max(noise_with).max(noise_after),
        rss_bytes: memory.rss,
        pss_bytes: memory.pss,
        uss_bytes: memory.uss,
        processes: processes.len(),
        cgroup_bytes: cgroup_bytes.flatten(),
        start_latency_ns,
        all_ready_ns: all_ready.as_nanos() as u64,
        cpu_ns: cpu_after.saturating_sub(cpu_before),
        window_ns,
    })
}

/// An instance that ended on its own, or an interruption, ends the step.
fn check_fleet(fleet: &Fleet) -> Result<()> {
    if let Some(signal) = crate::interrupt::requested() {
        anyhow::bail!("interrupted (signal {signal})");
    }
    if let Some(failure) = fleet.failure() {
        anyhow::bail!("{failure}");
    }
    Ok(())
}

/// The charge of the distinct cgroups the containers' programs run in (not cvm's own).
fn cgroup_charge(processes: &[libc::pid_t], instances: &[libc::pid_t]) -> Option<u64> {
    let mut groups: Vec<std::path::PathBuf> = processes
        .iter()
        .filter(|pid| !instances.contains(pid))
        .filter_map(|&pid| sample::memory_cgroup_of(pid))
        .collect();
    groups.sort();
    groups.dedup();
    let charges: Vec<u64> = groups.iter().filter_map(|dir| sample::cgroup_charge(dir)).collect();
    (!charges.is_empty()).then(|| charges.iter().sum())
}

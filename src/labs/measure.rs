//! What the checker measures itself, and how far an answer may be from it.
//!
//! Rules that keep a lab from flipping on noise: compare runtimes interleaved (A B B A ...), so
//! a change in the machine's load hits both alike; grade a number within a band derived from
//! the spread of the checker's own samples (never a fixed percentage); and where a difference
//! is within the noise, accept "within the noise" instead of a winner. Each experiment runs
//! once per check, however many questions use it ([`Context::once`]).

use std::any::Any;
use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::program::Program;
use crate::record::{RunRecord, RuntimeKind};
use crate::runtime::{self, RunSpec};
use crate::stats::summary::{median, percentile_of_sorted};

/// Measurements of one check, shared by its questions.
#[derive(Default)]
pub struct Context {
    cache: HashMap<&'static str, Box<dyn Any>>,
    /// Print what is measured as it happens (a check; not the key, not a class).
    pub verbose: bool,
}

impl Context {
    /// The value of experiment `key`, measured the first time it is asked for.
    pub fn once<T: Clone + 'static>(
        &mut self,
        key: &'static str,
        measure: impl FnOnce(&mut Context) -> Result<T>,
    ) -> Result<T> {
        if let Some(value) = self.cache.get(key).and_then(|v| v.downcast_ref::<T>()) {
            return Ok(value.clone());
        }
        let value = measure(self)?;
        self.cache.insert(key, Box::new(value.clone()));
        Ok(value)
    }

    /// Drops every measurement so far: the next question asking for one measures it again.
    pub fn forget(&mut self) {
        self.cache.clear();
    }

    pub fn note(&self, line: impl AsRef<str>) {
        if self.verbose {
            eprintln!("  measured: {}", line.as_ref());
        }
    }
}

/// One way to run a workload.
#[derive(Clone, Debug)]
pub struct Setup {
    pub runtime: RuntimeKind,
    pub workload: &'static str,
    pub args: Vec<String>,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    /// Run cvm's own runtime as a whole `cvm run` command spawned from outside (as the peers
    /// always are), so its figure is `command.wall_ns` like theirs.
    pub whole_command: bool,
}

impl Setup {
    pub fn new(runtime: RuntimeKind, workload: &'static str, args: &[&str]) -> Setup {
        Setup {
            runtime,
            workload,
            args: args.iter().map(|a| a.to_string()).collect(),
            memory_bytes: None,
            cpus: None,
            whole_command: false,
        }
    }

    pub fn whole_command(mut self) -> Setup {
        self.whole_command = true;
        self
    }

    pub fn memory(mut self, bytes: u64) -> Setup {
        self.memory_bytes = Some(bytes);
        self
    }

    /// Runs it once; the record whatever the outcome.
    pub fn run(&self) -> Result<RunRecord> {
        let runtime: Box<dyn runtime::Runtime> = if self.whole_command && !self.runtime.is_peer() {
            Box::new(crate::peers::own::WholeCommandRuntime::new(self.runtime, cvm_executable()?))
        } else {
            runtime::runtime(self.runtime)
        };
        runtime.check_available()?;
        let mut spec = RunSpec::new(Program::workload(self.workload)?, self.args.clone());
        spec.memory_bytes = self.memory_bytes;
        spec.cpus = self.cpus;
        runtime.run(&spec)
    }

    /// Runs it once; a run that did not end normally is an error.
    pub fn run_ok(&self) -> Result<RunRecord> {
        let record = self.run()?;
        if !record.succeeded() {
            bail!(
                "{} in the {} runtime did not end normally: {}",
                self.workload,
                self.runtime,
                crate::stats::cell::describe_failure(&record)
            );
        }
        Ok(record)
    }
}

/// The cvm executable to spawn for a whole command: this process, which is cvm, unless
/// `CVM_EXECUTABLE` names another (the tests, whose process is the test harness).
pub fn cvm_executable() -> Result<std::path::PathBuf> {
    match std::env::var_os("CVM_EXECUTABLE") {
        Some(path) => Ok(path.into()),
        None => Ok(std::env::current_exe()?),
    }
}

/// `cvm ARGS` as a check runs it: this cvm, no input, its output discarded (a caller that
/// reads the output sets its own).
pub fn cvm_command(args: &[&str]) -> Result<std::process::Command> {
    use std::process::Stdio;
    let mut command = std::process::Command::new(cvm_executable()?);
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    Ok(command)
}

/// `pairs` runs of `a` and `b`, interleaved A B B A A B ..., as (a, b) values of `metric`.
pub fn paired(a: &Setup, b: &Setup, pairs: usize, metric: fn(&RunRecord) -> Option<f64>) -> Result<Vec<(f64, f64)>> {
    let value = |setup: &Setup| -> Result<f64> {
        let record = setup.run_ok()?;
        match metric(&record) {
            Some(value) if value.is_finite() && value > 0.0 => Ok(value),
            _ => bail!("the {} run of {} has no figure to compare", setup.runtime, setup.workload),
        }
    };
    let mut samples = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let (x, y) = if pair % 2 == 0 {
            let x = value(a)?;
            (x, value(b)?)
        } else {
            let y = value(b)?;
            (value(a)?, y)
        };
        samples.push((x, y));
    }
    Ok(samples)
}

/// The ratio b/a of each pair.
pub fn ratios(samples: &[(f64, f64)]) -> Vec<f64> {
    samples.iter().map(|(a, b)| b / a).collect()
}

/// The accepted range of a numeric answer around what the checker measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Band {
    pub measured: f64,
    pub low: f64,
    pub high: f64,
}

/// Robust spread of log values: 1.4826 × the median absolute deviation (σ for normal data).
fn log_sigma(values: &[f64]) -> f64 {
    let logs: Vec<f64> = values.iter().map(|v| v.ln()).collect();
    let center = median(&logs).unwrap_or(0.0);
    let deviations: Vec<f64> = logs.iter().map(|l| (l - center).abs()).collect();
    1.4826 * median(&deviations).unwrap_or(0.0)
}

impl Band {
    /// Around the median of the per-pair `ratios`, six robust standard deviations of a single
    /// pair either way (in log space: timings spread by factors), plus the answer's
    /// `resolution` (what rounding a written answer may lose). A single pair's spread is wide
    /// on purpose: it also covers the machine's load drifting between the student's
    /// measurement and the checker's, which one short measurement cannot see.
    pub fn from_ratios(ratios: &[f64], resolution: f64) -> Band {
        let measured = median(ratios).unwrap_or(f64::NAN);
        let width = 6.0 * log_sigma(ratios);
        Band { measured, low: measured * (-width).exp() - resolution, high: measured * width.exp() + resolution }
    }

    /// The band, widened to at least `fraction` of the measured value either way: for figures
    /// whose level shifts between minutes more than within one measurement (a system call's cost
    /// moves by 15% with the code's placement and the host's other tenants), so a right answer
    /// measured a few minutes before the check still passes.
    pub fn at_least(self, fraction: f64) -> Band {
        Band {
            measured: self.measured,
            low: self.low.min(self.measured * (1.0 - fraction)),
            high: self.high.max(self.measured * (1.0 + fraction)),
        }
    }

    /// For a figure whose single runs fall into two levels (a run is fast or slow as a whole):
    /// from the 10th to the 90th percentile of the per-pair `ratios`, each widened by the
    /// factor `drift`, around their median. Six robust deviations of such a mixture are too
    /// wide to grade at all, while both levels, and a drift between the student's minute and
    /// the checker's, are what a right answer may land on.
    pub fn spanning(ratios: &[f64], drift: f64) -> Band {
        let mut sorted: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return Band { measured: f64::NAN, low: f64::NAN, high: f64::NAN };
        }
        Band {
            measured: median(&sorted).unwrap_or(f64::NAN),
            low: percentile_of_sorted(&sorted, 0.1) / drift,
            high: percentile_of_sorted(&sorted, 0.9) * drift,
        }
    }

    /// A quantity that does not vary: the value, give or take `resolution`.
    pub fn exact(value: f64, resolution: f64) -> Band {
        Band { measured: value, low: value - resolution, high: value + resolution }
    }

    pub fn contains(&self, value: f64) -> bool {
        value >= self.low && value <= self.high
    }

    /// True when the band is narrow enough to tell an answer off by a factor of three from a
    /// right one. Wider, the machine is too noisy right now to grade the number at all.
    pub fn is_decisive(&self) -> bool {
        // An exact count (none at all, too) is decisive whatever its value.
        self.low == self.high || (self.low > self.measured / 3.0 && self.high < 3.0 * self.measured)
    }
}

/// The options a measured choice accepts, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub accepted: Vec<usize>,
    /// The accepted option least likely to stop being accepted when measured again (the key's).
    pub preferred: usize,
    /// An option the measurement rules out beyond doubt, if any (for tests of wrong answers):
    /// the loser of a difference more than 3.5 single-run spreads wide. Under a load that
    /// drifts, a smaller difference can turn round between two measurements minutes apart.
    pub ruled_out: Option<usize>,
    pub because: String,
}

/// Which of two things is larger, or whether the difference is within the noise, from the
/// per-pair ratios b/a of interleaved runs: the options are (a is larger, b is larger, within
/// the noise). "Beyond the noise" means what a student sees in a bench summary: the difference
/// against the spread of single runs. The median ratio is measured in robust standard
/// deviations of a single pair (z): below 2 only "within the noise" is right, above 5 only the
/// winner; in between both are accepted, so an answer measured a moment earlier under another
/// load does not flip.
///
pub fn compare(ratios: &[f64]) -> Decision {
    let m = median(ratios).unwrap_or(1.0);
    let z = m.ln().abs() / log_sigma(ratios).max(1e-9);
    let (winner, loser) = if m > 1.0 { (1, 0) } else { (0, 1) };
    let accepted = if z < 2.0 {
        vec![2]
    } else if z > 5.0 {
        vec![winner]
    } else {
        vec![winner, 2]
    };
    // The key answers what stays accepted under the largest change of z either way.
    let preferred = if z > 3.5 { winner } else { 2 };
    let because =
        format!("median ratio {m:.3} over {} interleaved pairs, {z:.1} single-run spreads from 1", ratios.len());
    Decision { accepted, preferred, ruled_out: (z > 3.5).then_some(loser), because }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_band_follows_the_spread() {
        let tight = Band::from_ratios(&[10.0, 10.1, 9.9, 10.0, 10.05], 0.0);
        let loose = Band::from_ratios(&[10.0, 13.0, 8.0, 11.0, 9.0], 0.0);
        assert!(tight.contains(10.2) && !tight.contains(12.0));
        assert!(loose.contains(13.0) && !loose.contains(30.0));
        assert!(tight.is_decisive());
        assert!(!Band::from_ratios(&[1.0, 10.0, 0.1, 3.0, 0.3], 0.0).is_decisive());
        assert!(!loose.contains(50.0), "an answer off by five is never inside a decisive band");
        assert!(Band::exact(540.0, 4.0).contains(543.0));
    }

    /// The lab 4 ratios a quiet build machine measured (two levels of a VM's system call):
    /// the spanning band takes either level and stays decisive; six deviations were not.
    #[test]
    fn a_two_level_figure_is_graded_across_both_levels() {
        let two_levels = [
            283.1, 377.5, 367.1, 364.1, 258.0, 366.3, 347.7, 314.4, 360.1, 358.0, 258.7, 268.9, 265.1, 309.4, 275.9,
            317.7,
        ];
        let band = Band::spanning(&two_levels, 1.3).at_least(0.5);
        assert!(band.is_decisive(), "{band:?}");
        assert!(band.contains(265.0) && band.contains(450.0) && band.contains(309.0), "{band:?}");
        assert!(!band.contains(5.0 * 316.0) && !band.contains(316.0 / 5.0), "{band:?}");
        assert!(Band::spanning(&[], 1.3).measured.is_nan());
    }

    #[test]
    fn noise_is_not_a_winner() {
        let noisy = [1.1, 0.9, 1.05, 0.95, 1.2, 0.85, 1.0, 1.02];
        assert_eq!(compare(&noisy).accepted, vec![2]);
        assert_eq!(compare(&noisy).preferred, 2);
        let clear = [1.9, 2.1, 2.0, 1.95, 2.05, 2.0, 1.98, 2.02];
        assert_eq!(compare(&clear).accepted, vec![1]);
        let clear_a = [0.5, 0.52, 0.49, 0.51, 0.5, 0.5];
        assert_eq!(compare(&clear_a).accepted, vec![0]);
        assert_eq!(compare(&clear_a).ruled_out, Some(1));
        assert_eq!(compare(&noisy).ruled_out, None);
        let slight = [1.05, 1.0, 1.1, 0.95, 1.08, 1.02, 0.97, 1.04];
        assert_eq!(compare(&slight).accepted, vec![2], "a shift smaller than the spread of single runs is noise");
    }
}

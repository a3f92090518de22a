//! `cvm density`: N instances of each runtime at once, measured from outside; a summary on
//! stdout (or JSON with `--json`) and a report folder with two charts.

use anyhow::{bail, Context, Result};

use crate::bench::plan::ordered_runtimes;
use crate::bench::Progress;
use crate::cli::DensityArgs;
use crate::density::{self, DensityFile, DensityPlan};
use crate::output::{self, text_table};
use crate::report;
use crate::results::Environment;
use crate::units::check_count;

/// The most instances of one runtime started at once (the host's limits usually stop a run
/// well before).
pub const MAX_INSTANCES: u64 = 4096;
/// The most repetitions of every step.
pub const MAX_REPEAT: u64 = 100;

pub fn density(args: DensityArgs) -> Result<i32> {
    if args.workload != "idle" {
        bail!(
            "--workload {}: density keeps every instance alive until all of them are measured, and only the idle \
             workload waits; use --workload idle",
            args.workload
        );
    }
    let mut counts = Vec::new();
    for &count in &args.instances {
        counts.push(check_count("--instances", count, 1, MAX_INSTANCES)? as usize);
    }
    counts.sort_unstable();
    counts.dedup();
    let repeat = check_count("--repeat", args.repeat, 1, MAX_REPEAT)? as usize;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| super::compare::default_folder("density", Environment::current().unix_time_s));
    if dir.exists() && !dir.is_dir() {
        bail!("--out {}: it exists and is not a folder", dir.display());
    }
    let exe = std::env::current_exe().context("cannot find the cvm binary to start instances with")?;

    let environment = Environment::current();
    let runtimes = ordered_runtimes(args.runtimes.as_deref());
    if let Some(peer) = runtimes.iter().find(|r| r.is_peer()) {
        bail!("cvm density measures cvm's own runtimes; {peer} is a peer (compare them with `cvm compare --peers`)");
    }
    let plan = DensityPlan::full(runtimes, counts, repeat);
    let progress = Progress::counting(plan.steps() as u64, "steps");
    let results = density::measure(&plan, &exe, &progress);
    progress.finish();
    let file = DensityFile::new(environment, results);
    let written = report::write_density_report(&dir, &file)?;

    if args.json {
        output::emit(&format!("{}\n", serde_json::to_string_pretty(&file).context("serializing the results")?));
    } else {
        output::emit(&summary(&file.density));
    }
    eprint!("{}", written.describe());
    Ok(exit_status(&file.density))
}

/// The terminal summary: the reading, then the two tables.
fn summary(density: &density::DensityResults) -> String {
    let mut out = String::from("── cvm density: idle instances started at once ──\n");
    for finding in report::density::findings(density) {
        out.push_str(&format!("• {}\n", text_table::plain(&finding)));
    }
    out.push_str("\nMemory per instance\n");
    out.push_str(&text_table::render(&report::density::memory_table(density), "  "));
    out.push_str("\n\nStart latency and idle CPU\n");
    out.push_str(&text_table::render(&report::density::start_table(density), "  "));
    out.push('\n');
    out
}

/// 0 when every step ran; 128 + signal when interrupted; 1 when the run stopped early (the
/// host ran out, an instance failed) or nothing could be measured.
fn exit_status(density: &density::DensityResults) -> i32 {
    if let Some(signal) = crate::interrupt::requested() {
        eprintln!("cvm: interrupted; the results above cover the steps finished so far");
        return crate::interrupt::exit_status(signal);
    }
    if let Some(stopped) = &density.stopped {
        eprintln!("cvm: density {stopped}; {}", density::how_far(&density.steps));
        return 1;
    }
    if density.steps.is_empty() {
        eprintln!("cvm: none of the chosen runtimes can run on this machine; `cvm doctor` says why");
        return 1;
    }
    0
}

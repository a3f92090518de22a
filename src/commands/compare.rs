//! `cvm compare`: the main job. A short default matrix (hello, cpu, mem and probe on every
//! runtime), a side-by-side table with ratios and isolation facts, and a report folder.

use std::path::PathBuf;

use anyhow::Result;

use super::bench::{exit_status, measure};
use crate::bench::plan::ordered_runtimes;
use crate::bench::{BenchPlan, CellPlan, WorkloadChoice};
use crate::cli::CompareArgs;
use crate::output::{self, compare_summary};
use crate::record::RuntimeKind;
use crate::report::{self, model::ReportModel};
use crate::results::utc_stamp;
use crate::runtime::KernelChoice;
use crate::units::{check_count, MAX_RUNS, MAX_WARMUP};

/// The default matrix: (workload, args, measured runs, warm-up runs). Sized to finish in well
/// under a minute on a 2-core nested-KVM machine (about 10 s): `cpu 100000` is half the
/// workload's default rounds, `mem 16` touches 16 MiB. `cpu 100000 2` (two threads; the
/// container gets --cpus 2, the VM 2 vCPUs) makes the CPU-scaling view, on hosts with 2 CPUs
/// or more.
const DEFAULT_MATRIX: [(&str, &[&str], usize, usize); 5] = [
    ("hello", &[], 30, 3),
    ("cpu", &["100000"], 10, 1),
    ("cpu", &["100000", "2"], 10, 1),
    ("mem", &["16"], 10, 1),
    ("probe", &[], 10, 1),
];

pub fn compare(args: CompareArgs) -> Result<i32> {
    if let Some(runs) = args.runs {
        check_count("--runs", runs as u64, 1, MAX_RUNS)?;
    }
    if let Some(warmup) = args.warmup {
        check_count("--warmup", warmup as u64, 0, MAX_WARMUP)?;
    }
    let chosen = ordered_runtimes(args.runtimes.as_deref());
    let runtimes: Vec<_> = chosen.iter().copied().filter(|r| !r.is_peer()).collect();
    let mut peers: Vec<_> = chosen.iter().copied().filter(|r| r.is_peer()).collect();
    if args.peers {
        peers = RuntimeKind::PEERS.to_vec();
    }
    let workloads: Vec<(WorkloadChoice, usize, usize)> = match &args.workload {
        Some(text) => {
            let choice = WorkloadChoice::parse(text)?;
            let (runs, warmup) = DEFAULT_MATRIX
                .iter()
                .find(|(name, ..)| *name == choice.name)
                .map_or((10, 2), |(_, _, runs, warmup)| (*runs, *warmup));
            // `cpu:N:T` alone: the 1-thread run beside it, for the CPU-scaling view.
            let single = match choice.threads() {
                Some(threads) if threads > 1 => Some(WorkloadChoice::new("cpu", &[choice.args[0].as_str()])),
                _ => None,
            };
            single.into_iter().chain([choice]).map(|c| (c, runs, warmup)).collect()
        }
        None => DEFAULT_MATRIX
            .iter()
            .filter(|(name, wargs, ..)| !(*name == "cpu" && wargs.len() > 1 && host_cpus() < 2))
            .map(|(name, wargs, runs, warmup)| (WorkloadChoice::new(name, wargs), *runs, *warmup))
            .collect(),
    };
    let cells = workloads
        .iter()
        .flat_map(|(workload, runs, warmup)| {
            runtimes.iter().map(move |&runtime| CellPlan {
                runtime,
                workload: workload.clone(),
                runs: args.runs.unwrap_or(*runs),
                warmup: args.warmup.unwrap_or(*warmup),
                whole_command: false,
            })
        })
        .collect::<Vec<_>>();
    let cells = cells.into_iter().chain(peer_cells(&runtimes, &peers, &args)).collect();
    let mut plan = BenchPlan::from_cells(cells);
    plan.kernel = KernelChoice::from_arg(&args.kernel);

    let (mut results, mut interrupted) = measure(&plan);
    if interrupted.is_none() && !args.no_density {
        results.density = density_look(&runtimes);
        interrupted = crate::interrupt::requested();
    }
    let files = std::slice::from_ref(&results);
    output::emit(&compare_summary::render(&ReportModel::from_results(files)));
    if let Some(density) = &results.density {
        output::emit(&compare_summary::density(density));
    }

    let dir = args.out.clone().unwrap_or_else(|| default_folder("compare", results.environment.unix_time_s));
    let written = report::write_report(&dir, files)?;
    output::emit(&written.describe());
    Ok(exit_status(&results, interrupted))
}

/// The peer view: hello on cvm's runtimes and the peers, every run one whole command.
fn peer_cells(runtimes: &[RuntimeKind], peers: &[RuntimeKind], args: &CompareArgs) -> Vec<CellPlan> {
    if peers.is_empty() {
        return Vec::new();
    }
    let workload = WorkloadChoice::new("hello", &[]);
    runtimes
        .iter()
        .chain(peers)
        .map(|&runtime| CellPlan {
            runtime,
            workload: workload.clone(),
            runs: args.runs.unwrap_or(PEER_RUNS),
            warmup: args.warmup.unwrap_or(PEER_WARMUP),
            whole_command: true,
        })
        .collect()
}

/// Runs of the peer view per runtime: QEMU takes about 0.1 s each.
const PEER_RUNS: usize = 20;
const PEER_WARMUP: usize = 2;

/// The short density look: 8 idle containers and 8 idle micro-VMs at once (the runtimes of
/// this comparison that are among them), a few seconds.
fn density_look(runtimes: &[RuntimeKind]) -> Option<crate::density::DensityResults> {
    let chosen: Vec<RuntimeKind> =
        runtimes.iter().copied().filter(|r| matches!(r, RuntimeKind::Container | RuntimeKind::Vm)).collect();
    if chosen.is_empty() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let plan = crate::density::DensityPlan::short(chosen);
    let progress = crate::bench::Progress::counting(plan.steps() as u64, "density steps");
    let results = crate::density::measure(&plan, &exe, &progress);
    progress.finish();
    Some(results)
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn default_folder(kind: &str, unix_s: u64) -> PathBuf {
    PathBuf::from("reports").join(format!("{kind}-{}", utc_stamp(unix_s)))
}

//! `cvm bench`: the runtime × workload matrix with warm-up and repeated runs, a hyperfine-style
//! summary on stdout, and exports (JSON with every raw record, Markdown, CSV).

use anyhow::Result;

use crate::bench::plan::ordered_runtimes;
use crate::bench::{run_plan, BenchPlan, Progress, WorkloadChoice};
use crate::cli::BenchArgs;
use crate::export;
use crate::output::{self, bench_summary};
use crate::report::model::ReportModel;
use crate::results::{Environment, ResultsFile};
use crate::runtime::KernelChoice;
use crate::units::{check_count, parse_timeout, MAX_RUNS, MAX_WARMUP};

pub fn bench(args: BenchArgs) -> Result<i32> {
    check_count("--runs", args.runs as u64, 1, MAX_RUNS)?;
    check_count("--warmup", args.warmup as u64, 0, MAX_WARMUP)?;
    let timeout = parse_timeout(args.timeout)?;
    for (option, path) in [
        ("--export-json", &args.export_json),
        ("--export-markdown", &args.export_markdown),
        ("--export-csv", &args.export_csv),
    ] {
        if let Some(path) = path {
            export::check_destination(option, path)?;
        }
    }
    let runtimes = ordered_runtimes(args.runtimes.as_deref());
    let workloads = match &args.workloads {
        Some(list) => list.iter().map(|w| WorkloadChoice::parse(w)).collect::<Result<Vec<_>>>()?,
        None => vec![WorkloadChoice::new("hello", &[])],
    };
    let mut plan = BenchPlan::matrix(&runtimes, &workloads, args.runs, args.warmup);
    plan.kernel = KernelChoice::from_arg(&args.kernel);
    plan.timeout = timeout;

    let (results, interrupted) = measure(&plan);
    output::emit(&bench_summary::render(&ReportModel::from_results(std::slice::from_ref(&results))));

    if let Some(path) = &args.export_json {
        export::json::write(path, &results)?;
        eprintln!("cvm: wrote {}", path.display());
    }
    if let Some(path) = &args.export_markdown {
        export::markdown::write(path, &results)?;
        eprintln!("cvm: wrote {}", path.display());
    }
    if let Some(path) = &args.export_csv {
        export::csv::write(path, std::slice::from_ref(&results))?;
        eprintln!("cvm: wrote {}", path.display());
    }
    Ok(exit_status(&results, interrupted))
}

/// Runs the plan under a progress bar and wraps the cells with this machine's environment.
pub fn measure(plan: &BenchPlan) -> (ResultsFile, Option<i32>) {
    // Detect the environment before the first run, so no run pays for it.
    let environment = Environment::current();
    let progress = Progress::new(plan.total_runs());
    let outcome = run_plan(plan, &progress);
    progress.finish();
    (ResultsFile::new(environment, outcome.cells), outcome.interrupted)
}

/// 0 when every measured run succeeded (runtimes this host cannot run are not failures),
/// 1 when a run failed or a runtime broke, 128 + signal when interrupted.
pub fn exit_status(results: &ResultsFile, interrupted: Option<i32>) -> i32 {
    if let Some(signal) = interrupted {
        eprintln!("cvm: interrupted; the results above cover the runs finished so far");
        return crate::interrupt::exit_status(signal);
    }
    let failed = results.cells.iter().any(|c| !c.summary.failed.is_empty() || !c.errors.is_empty());
    if failed {
        eprintln!("cvm: some runs failed (see above); they are reported, not averaged");
        return 1;
    }
    if results.cells.iter().all(|c| c.unavailable.is_some()) {
        eprintln!("cvm: none of the chosen runtimes can run on this machine; `cvm doctor` says why");
        return 1;
    }
    0
}

//! Criterion benchmarks of cvm's hot paths, each through the same interface `cvm run` uses
//! (`runtime(kind).run(&spec)`):
//!
//! - `start/hello/<runtime>`: a whole run of the hello workload: the process baseline,
//!   container start (namespaces, cgroup, root file system, teardown) and VM create + boot +
//!   teardown;
//! - `syscall_round_trip/<runtime>`: one `getppid()` system call, timed by the workload itself
//!   inside the runtime (in the VM: a round trip into the guest kernel and back).
//!
//! A runtime this host cannot run is skipped with its reason. Run with `cargo bench`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use cvm::program::Program;
use cvm::record::RuntimeKind;
use cvm::runtime::{runtime, RunSpec};

/// Runtimes available here, each announced when skipped.
fn available() -> Vec<RuntimeKind> {
    RuntimeKind::ALL
        .into_iter()
        .filter(|&kind| match runtime(kind).check_available() {
            Ok(()) => true,
            Err(reason) => {
                eprintln!("skipping the {kind} benchmarks: {reason:#}");
                false
            }
        })
        .collect()
}

fn spec(workload: &str, args: &[String]) -> RunSpec {
    RunSpec::new(Program::workload(workload).expect("embedded workload"), args.to_vec())
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    // Runs take milliseconds (VM: up to a few hundred): few, equally sized samples.
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
}

fn start_hello(c: &mut Criterion) {
    let mut group = c.benchmark_group("start/hello");
    configure(&mut group);
    let hello = spec("hello", &[]);
    for kind in available() {
        let rt = runtime(kind);
        group.bench_function(kind.name(), |b| {
            b.iter(|| {
                let record = rt.run(&hello).expect("the runtime ran hello");
                assert!(record.succeeded(), "hello failed on {kind}: {:?}", record.reason);
                record.phases_ns.total
            })
        });
    }
    group.finish();
}

fn syscall_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("syscall_round_trip");
    configure(&mut group);
    for kind in available() {
        let rt = runtime(kind);
        group.bench_function(kind.name(), |b| {
            // One iteration = one system call; the workload times `iters` of them itself, so
            // start-up is not part of the figure.
            b.iter_custom(|iters| {
                let count = iters.clamp(1, 2_000_000);
                let record = rt.run(&spec("syscall", &[count.to_string()])).expect("the runtime ran syscall");
                let elapsed = record.result.as_ref().and_then(|r| r.get("elapsed_ns")).and_then(|v| v.as_u64());
                let elapsed = elapsed.unwrap_or_else(|| panic!("syscall on {kind} reported no elapsed_ns"));
                Duration::from_nanos(elapsed * iters / count)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, start_hello, syscall_round_trip);
criterion_main!(benches);

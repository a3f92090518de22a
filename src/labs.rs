//! Classroom labs: each lab's README lives in `labs/NN-name/README.md` (embedded here) and its
//! check runs the experiment on the student's machine and verifies the observation.

use anyhow::{bail, Result};
use serde_json::Value;

use crate::program::Program;
use crate::record::{Outcome, RunRecord, RuntimeKind};
use crate::runtime::{self, RunSpec};

pub struct Lab {
    pub number: u32,
    pub title: &'static str,
    pub readme: &'static str,
    check: fn(&mut Observations) -> Result<Verdict>,
}

/// PASSED or FAILED, with the reason in a sentence.
pub struct Verdict {
    pub passed: bool,
    pub reason: String,
}

fn verdict(passed: bool, reason: String) -> Result<Verdict> {
    Ok(Verdict { passed, reason })
}

/// What a check saw, printed as it goes so the student follows the experiment.
#[derive(Default)]
pub struct Observations {
    pub lines: Vec<String>,
}

impl Observations {
    fn note(&mut self, line: String) {
        println!("  observed: {line}");
        self.lines.push(line);
    }
}

pub static LABS: [Lab; 6] = [
    Lab {
        number: 1,
        title: "One program, two kernels",
        readme: include_str!("../labs/01-one-program-two-kernels/README.md"),
        check: check_two_kernels,
    },
    Lab { number: 2, title: "Start-up", readme: include_str!("../labs/02-start-up/README.md"), check: check_start_up },
    Lab {
        number: 3,
        title: "Memory footprint and density",
        readme: include_str!("../labs/03-memory-footprint/README.md"),
        check: check_memory,
    },
    Lab {
        number: 4,
        title: "CPU and system calls",
        readme: include_str!("../labs/04-cpu-and-system-calls/README.md"),
        check: check_cpu_and_syscalls,
    },
    Lab {
        number: 5,
        title: "Isolation",
        readme: include_str!("../labs/05-isolation/README.md"),
        check: check_isolation,
    },
    Lab {
        number: 6,
        title: "Resource limits",
        readme: include_str!("../labs/06-resource-limits/README.md"),
        check: check_limits,
    },
];

pub fn find(number: u32) -> Result<&'static Lab> {
    match LABS.iter().find(|lab| lab.number == number) {
        Some(lab) => Ok(lab),
        None => bail!("there is no lab {number}: `cvm lab list` shows labs 1 to {}", LABS.len()),
    }
}

impl Lab {
    pub fn check(&self) -> Result<Verdict> {
        let mut observations = Observations::default();
        (self.check)(&mut observations)
    }
}

/// Runs `workload ARGS` once in `kind` (`memory`: the runtime's --memory).
fn run(kind: RuntimeKind, workload: &str, args: &[&str], memory: Option<u64>) -> Result<RunRecord> {
    let runtime = runtime::runtime(kind);
    runtime.check_available()?;
    let mut spec = RunSpec::new(Program::workload(workload)?, args.iter().map(|a| a.to_string()).collect());
    spec.memory_bytes = memory;
    runtime.run(&spec)
}

/// [`run`] without a memory limit; a run that did not end normally is an error.
fn run_ok(kind: RuntimeKind, workload: &str, args: &[&str]) -> Result<RunRecord> {
    let record = run(kind, workload, args, None)?;
    if !record.succeeded() {
        let why = crate::stats::cell::describe_failure(&record);
        bail!("{workload} in the {kind} runtime did not end normally: {why}");
    }
    Ok(record)
}

fn result_str(record: &RunRecord, key: &str) -> String {
    record.result.as_ref().and_then(|r| r.get(key)).and_then(Value::as_str).unwrap_or("?").to_string()
}

fn result_f64(record: &RunRecord, key: &str) -> Option<f64> {
    record.result.as_ref()?.get(key)?.as_f64()
}

fn median(values: Vec<f64>) -> f64 {
    crate::stats::summary::median(&values).unwrap_or(f64::NAN)
}

fn check_two_kernels(seen: &mut Observations) -> Result<Verdict> {
    let host = crate::host::HostInfo::current().kernel_release.clone();
    seen.note(format!("host kernel release: {host}"));
    let container = run_ok(RuntimeKind::Container, "probe", &[])?;
    let (c_name, c_release) = (result_str(&container, "kernel_name"), result_str(&container, "kernel_release"));
    seen.note(format!("container: the program saw {c_name} {c_release}"));
    let vm = run_ok(RuntimeKind::Vm, "probe", &[])?;
    let (v_name, v_release) = (result_str(&vm, "kernel_name"), result_str(&vm, "kernel_release"));
    seen.note(format!("vm: the program saw {v_name} {v_release}"));
    if c_release != host {
        return verdict(false, format!("the container reported kernel {c_release}, not the host's {host}"));
    }
    if v_release == host {
        return verdict(false, "the VM reported the host's kernel release; it should run its own kernel".into());
    }
    verdict(true, format!("the container shares the host kernel ({host}); the VM runs its own ({v_name} {v_release})"))
}

fn check_start_up(seen: &mut Observations) -> Result<Verdict> {
    let mut medians = Vec::new();
    for kind in RuntimeKind::ALL {
        let mut totals = Vec::new();
        for _ in 0..10 {
            totals.push(run_ok(kind, "hello", &[])?.phases_ns.total as f64 / 1e6);
        }
        let m = median(totals);
        seen.note(format!("{kind}: median total {m:.2} ms over 10 runs"));
        medians.push(m);
    }
    let (process, container, vm) = (medians[0], medians[1], medians[2]);
    let faster = if container < vm {
        "the container started before the VM"
    } else {
        "the micro-VM started before the container"
    };
    seen.note(format!(
        "{faster}: container {:.1}x and VM {:.1}x the process's time",
        container / process,
        vm / process
    ));
    if process < container && process < vm {
        verdict(
            true,
            format!(
                "isolation costs start-up time: process {process:.2} ms, container {container:.2} ms, VM {vm:.2} ms"
            ),
        )
    } else {
        verdict(
            false,
            format!("expected the process to start first, measured {process:.2} / {container:.2} / {vm:.2} ms"),
        )
    }
}

fn check_memory(seen: &mut Observations) -> Result<Verdict> {
    let container = run_ok(RuntimeKind::Container, "hello", &[])?;
    let vm = run_ok(RuntimeKind::Vm, "hello", &[])?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let container_footprint = container.memory.cgroup_peak_bytes.or(container.memory.peak_rss_bytes).unwrap_or(0);
    let overhead = vm.memory.runtime_overhead_bytes.unwrap_or(0);
    let touched = vm.memory.guest_touched_bytes.unwrap_or(0);
    seen.note(format!("container: cgroup peak {:.2} MiB", mib(container_footprint)));
    seen.note(format!("vm: VMM overhead {:.2} MiB + guest touched {:.2} MiB", mib(overhead), mib(touched)));
    let vm_footprint = overhead + touched;
    if container_footprint == 0 || vm_footprint == 0 {
        return verdict(false, "a memory figure is missing from the run records".into());
    }
    let per_gib = |b: u64| (1u64 << 30) / b.max(1);
    seen.note(format!(
        "density: about {} containers or {} VMs per GiB",
        per_gib(container_footprint),
        per_gib(vm_footprint)
    ));
    verdict(
        vm_footprint > container_footprint,
        format!(
            "VM footprint {:.2} MiB vs container {:.2} MiB ({:.1}x)",
            mib(vm_footprint),
            mib(container_footprint),
            vm_footprint as f64 / container_footprint as f64
        ),
    )
}

fn check_cpu_and_syscalls(seen: &mut Observations) -> Result<Verdict> {
    // Alternate the two runtimes so a change in the machine's load hits both alike.
    let (mut process_runs, mut vm_runs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (kind, runs) in [(RuntimeKind::Process, &mut process_runs), (RuntimeKind::Vm, &mut vm_runs)] {
            runs.push(result_f64(&run_ok(kind, "cpu", &["100000"])?, "ops_per_sec").unwrap_or(0.0));
        }
    }
    let (process_cpu, vm_cpu) = (median(process_runs), median(vm_runs));
    let ratio = vm_cpu / process_cpu;
    seen.note(format!(
        "cpu: process {process_cpu:.0} rounds/s, vm {vm_cpu:.0} rounds/s (ratio {ratio:.3}, medians of 5)"
    ));
    let per_call = |kind| -> Result<f64> {
        Ok(result_f64(&run_ok(kind, "syscall", &["5000"])?, "ns_per_call").unwrap_or(f64::NAN))
    };
    let (process_call, vm_call) = (per_call(RuntimeKind::Process)?, per_call(RuntimeKind::Vm)?);
    seen.note(format!("syscall: process {process_call:.0} ns per call, vm {vm_call:.0} ns per call"));
    if (ratio - 1.0).abs() > 0.10 {
        return verdict(false, format!("the VM's CPU throughput is {ratio:.2}x the process's, not within 10%"));
    }
    if vm_call <= process_call {
        return verdict(false, "a system call was not more expensive in the VM".into());
    }
    verdict(
        true,
        format!(
            "CPU work runs at {:.1}% of native in the VM; a system call costs {:.1}x more",
            ratio * 100.0,
            vm_call / process_call
        ),
    )
}

fn check_isolation(seen: &mut Observations) -> Result<Verdict> {
    let process = run_ok(RuntimeKind::Process, "probe", &[])?;
    let container = run_ok(RuntimeKind::Container, "probe", &[])?;
    let vm = run_ok(RuntimeKind::Vm, "probe", &[])?;
    let field = |r: &RunRecord, key: &str| r.result.as_ref().and_then(|v| v.get(key)).cloned().unwrap_or(Value::Null);
    for (name, record) in [("process", &process), ("container", &container), ("vm", &vm)] {
        seen.note(format!(
            "{name}: pid {}, hostname {}, processes {}, capabilities {}, kernel {}",
            field(record, "pid"),
            field(record, "hostname"),
            field(record, "visible_processes"),
            field(record, "cap_eff_count"),
            field(record, "kernel_release")
        ));
    }
    let mut problems = Vec::new();
    if field(&container, "pid") != 1 {
        problems.push("the container's program is not pid 1");
    }
    if field(&container, "hostname") == field(&process, "hostname") {
        problems.push("the container has the host's host name");
    }
    let count = |r: &RunRecord, key: &str| field(r, key).as_u64();
    if count(&container, "visible_processes") >= count(&process, "visible_processes") {
        problems.push("the container sees as many processes as the host");
    }
    if count(&container, "cap_eff_count") >= count(&process, "cap_eff_count") {
        problems.push("the container has as many capabilities as the process");
    }
    if field(&vm, "pid") != 1 {
        problems.push("the VM's program is not pid 1");
    }
    if field(&vm, "kernel_release") == field(&process, "kernel_release") {
        problems.push("the VM reported the host's kernel");
    }
    if problems.is_empty() {
        verdict(
            true,
            "the container has its own pids, host name, process view and fewer capabilities; the VM its own kernel"
                .into(),
        )
    } else {
        verdict(false, problems.join("; "))
    }
}

fn check_limits(seen: &mut Observations) -> Result<Verdict> {
    let fits = run(RuntimeKind::Container, "mem", &["16"], Some(64 << 20))?;
    seen.note(format!("mem 16 under a 64 MiB limit: {}, exit status {}", fits.outcome.label(), fits.exit_code));
    let too_big = run(RuntimeKind::Container, "mem", &["64"], Some(16 << 20))?;
    seen.note(format!("mem 64 under a 16 MiB limit: {}, exit status {}", too_big.outcome.label(), too_big.exit_code));
    if !fits.succeeded() {
        return verdict(false, "mem 16 did not fit under a 64 MiB limit".into());
    }
    if too_big.outcome != Outcome::OomKilled {
        return verdict(false, format!("mem 64 under 16 MiB ended {}, not oom-killed", too_big.outcome.label()));
    }
    verdict(true, "the cgroup let 16 MiB through and the OOM killer stopped 64 MiB at the 16 MiB limit".into())
}

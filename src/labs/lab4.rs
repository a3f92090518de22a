//! Lab 4: CPU and system calls. Lecture 2.3-2.5 (what a VM costs) against Felter et al.: CPU
//! work runs at native speed in both; the VM pays where the guest kernel is involved, and on
//! a nested host (guest kernel code emulated) much more than on hardware virtualization.

use anyhow::{Context as _, Result};

use super::measure::{compare, paired, ratios, Band, Context, Decision, Setup};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::{RunRecord, RuntimeKind};

pub static LAB: Lab = Lab {
    number: 4,
    title: "CPU and system calls",
    minutes: 40,
    topics: &[
        "2.3 a guest OS on top of the host: what it costs (hands-on)",
        "2.4-2.5 containers run at native speed; VMs pay at the kernel boundary (hands-on; the size depends on the host)",
    ],
    sheet: include_str!("../../labs/04-cpu-and-system-calls/README.md"),
    questions,
};

const PAIRS: usize = 16;

fn result(record: &RunRecord, key: &str) -> Option<f64> {
    record.result.as_ref()?.get(key)?.as_f64()
}

/// VM/process `cpu 100000` throughput per interleaved pair.
fn cpu_ratios(context: &mut Context) -> Result<Vec<f64>> {
    context.once("lab4-cpu", |context| {
        let process = Setup::new(RuntimeKind::Process, "cpu", &["100000"]);
        let vm = Setup::new(RuntimeKind::Vm, "cpu", &["100000"]);
        let samples = ratios(&paired(&process, &vm, PAIRS, |r| result(r, "ops_per_sec"))?);
        context.note(format!("cpu throughput vm/process per pair: {samples:.3?}"));
        Ok(samples)
    })
}

/// VM/process nanoseconds per `getppid` per interleaved pair, from each run's fastest batch
/// (a batch that was not preempted: the cost of the call itself, as lmbench reports it).
fn syscall_ratios(context: &mut Context) -> Result<Vec<f64>> {
    context.once("lab4-syscall", |context| {
        let process = Setup::new(RuntimeKind::Process, "syscall", &["1000"]);
        let vm = Setup::new(RuntimeKind::Vm, "syscall", &["1000"]);
        let samples = ratios(&paired(&process, &vm, PAIRS, |r| result(r, "fastest_batch_ns_per_call"))?);
        context.note(format!("ns per system call vm/process per pair: {samples:.1?}"));
        Ok(samples)
    })
}

fn cpu_ratio(context: &mut Context) -> Result<Band> {
    Ok(Band::from_ratios(&cpu_ratios(context)?, 0.02))
}

fn cpu_difference(context: &mut Context) -> Result<Decision> {
    Ok(compare(&cpu_ratios(context)?))
}

fn syscall_ratio(context: &mut Context) -> Result<Band> {
    // Single runs fall into two levels. On the build machine the process's fastest getppid
    // takes 84 ns in most runs and 92-104 ns in some; the VM's takes 26.5-28 µs in most runs
    // and 34-39 µs in others (one run in five to one in three, on either CPU). So the median
    // of 16 pairs moves between about 320 and 450 from one minute to the next (CI once
    // measured 309 for the key and, moments later, more than 441 for the check), and six
    // robust deviations of the mixture were mostly too wide to grade. The band spans both
    // levels instead, and at least half the value either way; it still refuses 3x off.
    Ok(Band::spanning(&syscall_ratios(context)?, 1.3).at_least(0.5))
}

/// (CPU-bound code, system calls, nowhere beyond the noise): where the VM pays.
fn where_vm_pays(context: &mut Context) -> Result<Decision> {
    let calls = compare(&syscall_ratios(context)?);
    // compare's options are (the process's calls take longer, the VM's, within the noise): the
    // first is not an option here, and CPU-bound code (option 0) is never where it pays.
    let keep = |i: &usize| *i != 0;
    let accepted: Vec<usize> = calls.accepted.iter().copied().filter(keep).collect();
    let accepted = if accepted.is_empty() { vec![2] } else { accepted };
    let preferred = if accepted.contains(&calls.preferred) { calls.preferred } else { accepted[0] };
    Ok(Decision {
        accepted,
        preferred,
        ruled_out: Some(0),
        because: format!("system calls vm/process: {}", calls.because),
    })
}

fn check_trace(task: &mut TaskCheck) -> Result<Grade> {
    let path = task.evidence("vm-syscall.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Grade::Unanswered) };
    let record: RunRecord =
        serde_json::from_str(text.trim()).context("evidence/vm-syscall.json is not one cvm run record")?;
    if record.runtime != RuntimeKind::Vm || record.workload != "syscall" || !record.succeeded() {
        return Ok(Grade::Wrong("the saved record is not a successful `syscall` run in the vm runtime".into()));
    }
    let counted = record.guest.as_ref().and_then(|g| g.syscalls.get("getppid")).copied().unwrap_or(0);
    let asked: u64 = record.args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    if counted != asked {
        return Ok(Grade::Wrong(format!(
            "the guest kernel counted {counted} getppid calls, not the {asked} asked for"
        )));
    }
    Ok(Grade::Passed(format!("the guest kernel served all {counted} getppid calls")))
}

fn perform_trace(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    task.save_cvm_output("vm-syscall.json", &["run", "--runtime", "vm", "--json", "syscall", "20000"])?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "cpu_vm_over_process",
            text: "Run `cvm run --runtime process cpu 100000` and `cvm run --runtime vm cpu 100000` a few times, \
                   alternating. The VM's rounds/s as a fraction of the process's (1.0 = the same)?",
            needs: &[Need::Kvm],
            hint: "take the median of several alternating runs of each; one run is not a measurement",
            answer: Answer::Number { unit: "", measure: cpu_ratio },
        },
        Question {
            id: "cpu_difference",
            text: "Is the difference in CPU throughput between the process and the VM larger than the noise here?",
            needs: &[Need::Kvm],
            hint: "compare the difference with how much the runs of one runtime vary among themselves",
            answer: Answer::Choice {
                options: &[
                    "yes: the process computes faster",
                    "yes: the VM computes faster",
                    "no: the difference is within the run-to-run noise",
                ],
                correct: Correct::Measured(cpu_difference),
            },
        },
        Question {
            id: "syscall_vm_over_process",
            text: "Run `cvm run --runtime process syscall 1000` and `cvm run --runtime vm syscall 1000`, alternating. \
                   How many times the process's is the VM's time per system call (the fastest batch's ns per call)?",
            needs: &[Need::Kvm],
            hint: "divide the VM's fastest-batch ns per call by the process's, using medians of a few runs",
            answer: Answer::Number { unit: "times", measure: syscall_ratio },
        },
        Question {
            id: "where_vm_pays",
            text: "On this machine, where does the VM pay beyond the noise?",
            needs: &[Need::Kvm],
            hint: "which of your two ratios is far from 1?",
            answer: Answer::Choice {
                options: &[
                    "in CPU-bound user code",
                    "in system calls: each one enters the guest kernel, whose code this host may emulate",
                    "nowhere: both are within the noise",
                ],
                correct: Correct::Measured(where_vm_pays),
            },
        },
        Question {
            id: "why_cpu_is_native",
            text: "Why does CPU-bound user code run at about native speed in a VM, in a sentence?",
            needs: &[],
            hint: "who executes the guest program's instructions?",
            answer: Answer::Words {
                groups: &[&["cpu", "processor", "hardware", "instruction*"], &["direct*", "native*", "real", "same", "itself"]],
                example: "The guest's user code runs directly on the real CPU (hardware virtualization); only entering the \
                          guest kernel or leaving the VM costs extra, and the cpu workload makes no system call while timed.",
            },
        },
        Question {
            id: "felter",
            text: "Felter et al. (IBM, 2015) found that KVM adds latency to every I/O while containers are close to \
                   native. Which of your measurements shows the VM's extra latency?",
            needs: &[],
            hint: "I/O reaches the kernel through system calls",
            answer: Answer::Choice {
                options: &["rounds/s of the cpu workload", "ns per system call", "the peak RSS"],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "syscall_evidence",
            text: "Task: save the record of the VM answering 20000 system calls: \
                   `cvm run --runtime vm --json syscall 20000 > evidence/vm-syscall.json`. Write done here when it is saved.",
            needs: &[Need::Kvm],
            hint: "run the command in the workspace folder, exactly as given",
            answer: Answer::Task { check: check_trace, perform: perform_trace },
        },
    ]
}

//! Lab 2: start-up. Lecture 2.2 (building and booting a VM takes long), 2.4 (a container is
//! fast to start), and where cvm's measurement disagrees: its micro-VM starts about as fast as a
//! container, which the lab shows and asks the student to explain.

use anyhow::{Context as _, Result};

use super::measure::{compare, paired, ratios, Band, Context, Decision, Setup};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::{RunRecord, RuntimeKind};

pub static LAB: Lab = Lab {
    number: 2,
    title: "Start-up",
    minutes: 40,
    topics: &[
        "2.2 building and booting a VM takes long (hands-on; measured against the claim)",
        "2.4 containers are fast to start (hands-on)",
        "2.5 containers as an evolution of VMs: what isolation costs (reasoning)",
    ],
    sheet: include_str!("../../labs/02-start-up/README.md"),
    questions,
};

const PAIRS: usize = 30;

fn total(record: &RunRecord) -> Option<f64> {
    Some(record.phases_ns.total as f64 / 1e6)
}

/// Interleaved hello runs of process and container: container/process totals.
fn container_over_process(context: &mut Context) -> Result<Band> {
    context.once("lab2-container-over-process", |context| {
        let process = Setup::new(RuntimeKind::Process, "hello", &[]);
        let container = Setup::new(RuntimeKind::Container, "hello", &[]);
        let band = Band::from_ratios(&ratios(&paired(&process, &container, PAIRS, total)?), 0.05);
        context.note(format!(
            "the container's median total is {:.2}x the process's ({PAIRS} interleaved pairs)",
            band.measured
        ));
        Ok(band)
    })
}

/// Interleaved hello runs of container and VM: which one starts faster, or neither.
fn container_or_vm(context: &mut Context) -> Result<Decision> {
    context.once("lab2-container-or-vm", |context| {
        let vm = Setup::new(RuntimeKind::Vm, "hello", &[]);
        let container = Setup::new(RuntimeKind::Container, "hello", &[]);
        // container/vm: above 1 the VM is faster (option b), below 1 the container (option a).
        let decision = compare(&ratios(&paired(&vm, &container, PAIRS, total)?));
        context.note(format!("container against VM: {}", decision.because));
        Ok(decision)
    })
}

fn check_bench(task: &mut TaskCheck) -> Result<Grade> {
    let path = task.evidence("startup.json");
    if !path.exists() {
        return Ok(Grade::Unanswered);
    }
    let files = crate::results::load(&path).context("evidence/startup.json is not a cvm results file")?;
    let cells: Vec<_> = files.iter().flat_map(|f| f.cells.iter()).filter(|c| c.workload == "hello").collect();
    let runs = |runtime: RuntimeKind| -> Vec<f64> {
        cells
            .iter()
            .filter(|c| c.runtime == runtime)
            .flat_map(|c| c.records.iter())
            .filter(|r| r.succeeded())
            .map(|r| r.phases_ns.total as f64)
            .collect()
    };
    let (process, container) = (runs(RuntimeKind::Process), runs(RuntimeKind::Container));
    if process.len() < 20 || container.len() < 20 {
        return Ok(Grade::Wrong(format!(
            "the file has {} process and {} container runs of hello; the task asks for at least 20 each",
            process.len(),
            container.len()
        )));
    }
    let median = |v: &[f64]| crate::stats::summary::median(v).unwrap_or(f64::NAN);
    Ok(Grade::Passed(format!(
        "{} + {} runs; in your file the container's median is {:.2}x the process's",
        process.len(),
        container.len(),
        median(&container) / median(&process)
    )))
}

fn perform_bench(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let path = task.evidence("startup.json");
    let bench = ["bench", "--runtimes", "process,container", "--workloads", "hello", "--runs", "20", "--warmup", "2"];
    let status = super::measure::cvm_command(&bench)?.arg("--export-json").arg(&path).status()?;
    anyhow::ensure!(status.success(), "cvm bench failed");
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "container_over_process",
            text: "Run `cvm bench --runtimes process,container --workloads hello --runs 30`. How many times \
                   the process's median total time is the container's? (the summary's `medians:` figure)",
            needs: &[Need::Containers],
            hint: "read the ratio of medians in the bench summary, not a single run",
            answer: Answer::Number { unit: "times", measure: container_over_process },
        },
        Question {
            id: "container_or_vm",
            text: "Run `cvm bench --runtimes container,vm --workloads hello --runs 30` twice. Which starts faster \
                   on this machine, taking the spread (±) into account?",
            needs: &[Need::Containers, Need::Kvm],
            hint: "compare the difference of the two medians with their spread, and check whether both benches agree",
            answer: Answer::Choice {
                options: &[
                    "the container",
                    "the micro-VM",
                    "neither: the difference is within the run-to-run noise here",
                ],
                correct: Correct::Measured(container_or_vm),
            },
        },
        Question {
            id: "why_microvm_is_fast",
            text: "The lecture says a VM takes long to build and boot. Why can cvm's micro-VM start about as fast \
                   as a container?",
            needs: &[],
            hint: "what does a general-purpose VM do before the program runs (firmware, device probing, an OS boot) that cvm's does not?",
            answer: Answer::Words {
                groups: &[
                    &["kernel", "guest", "os", "operating", "vmm", "boot*"],
                    &["small", "tiny", "minimal", "little", "few", "firmware", "bios", "device*", "no", "without", "prepar*", "host-side", "advance"],
                ],
                example: "Its guest kernel is tiny and boots in a few hundred instructions: there is no firmware, no \
                          devices to probe and no OS to start, and the VMM prepares memory and page tables in advance.",
            },
        },
        Question {
            id: "lightvm",
            text: "LightVM (SOSP 2017) booted a VM in 2.3 ms, while a Debian guest under QEMU takes seconds. \
                   What does the paper blame the usual slowness on?",
            needs: &[],
            hint: "the paper's title says a VM can be lighter than a container",
            answer: Answer::Choice {
                options: &[
                    "hardware virtualization itself",
                    "the guest operating system and the toolstack around the VM",
                    "the speed of the disk",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "median_not_mean",
            text: "Why does cvm report the median of the runs, not only the mean?",
            needs: &[],
            hint: "think of one run slowed down by something else on the machine",
            answer: Answer::Choice {
                options: &[
                    "the median is faster to compute",
                    "one disturbed run moves the mean but hardly the median",
                    "the median is always smaller than the mean",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "startup_evidence",
            text: "Task: save a bench of hello in the process and container runtimes with at least 20 runs each: \
                   `cvm bench --runtimes process,container --workloads hello --runs 20 --export-json evidence/startup.json`. \
                   Write done here when it is saved.",
            needs: &[Need::Containers],
            hint: "run the command in the workspace folder, exactly as given",
            answer: Answer::Task { check: check_bench, perform: perform_bench },
        },
    ]
}

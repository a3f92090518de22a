//! Lab 3: memory footprint. Lecture 2.3 (a VM holds its memory exclusively) and 2.4 (a
//! container is light), measured: guest RAM is configured but only touched pages are real, and
//! a program's own pages are the same in every runtime.

use anyhow::{Context as _, Result};

use super::measure::{Band, Context, Setup};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::{RunRecord, RuntimeKind};

pub static LAB: Lab = Lab {
    number: 3,
    title: "Memory footprint",
    minutes: 35,
    topics: &[
        "2.3 a VM holds memory exclusively (hands-on; measured: only touched pages are real)",
        "2.4 containers are light: no separate OS (hands-on)",
    ],
    sheet: include_str!("../../labs/03-memory-footprint/README.md"),
    questions,
};

const MIB: f64 = (1 << 20) as f64;

/// `metric` of five runs of `setup`. These figures hardly vary, but when they do they jump by
/// a few pages: the band is what the runs spanned, widened by that span again on each side
/// (another five runs may land a little beyond), give or take the answer's `resolution`.
fn five_runs(setup: Setup, metric: fn(&RunRecord) -> Option<f64>, resolution: f64) -> Result<Band> {
    let mut values = Vec::new();
    for _ in 0..5 {
        let record = setup.run_ok()?;
        values.push(metric(&record).context("the run record lacks this memory figure")?);
    }
    let (low, high) = values.iter().fold((f64::MAX, 0.0f64), |(l, h), &v| (l.min(v), h.max(v)));
    let middle = crate::stats::summary::median(&values).unwrap_or(low);
    let span = high - low;
    Ok(Band { measured: middle, low: low - span - resolution, high: high + span + resolution })
}

fn vm_hello_touched(context: &mut Context) -> Result<Band> {
    context.once("lab3-vm-hello-touched", |context| {
        let band = five_runs(
            Setup::new(RuntimeKind::Vm, "hello", &[]),
            |r| r.memory.guest_touched_bytes.map(|b| b as f64 / 1024.0),
            4.0,
        )?;
        context.note(format!("the VM touched {} KiB of guest memory for hello", band.measured));
        Ok(band)
    })
}

fn process_mem16_peak(context: &mut Context) -> Result<Band> {
    context.once("lab3-process-mem16", |context| {
        let band = five_runs(
            Setup::new(RuntimeKind::Process, "mem", &["16"]),
            |r| r.memory.program_peak_rss_bytes.map(|b| b as f64 / MIB),
            // A process's peak RSS moves by up to 0.2 MiB between runs here (how many of the
            // program file's pages the kernel maps around each fault depends on the page cache).
            0.2,
        )?;
        context.note(format!("mem 16 as a process: peak RSS {:.2} MiB", band.measured));
        Ok(band)
    })
}

fn vm_mem16_touched(context: &mut Context) -> Result<Band> {
    context.once("lab3-vm-mem16", |context| {
        let band = five_runs(
            Setup::new(RuntimeKind::Vm, "mem", &["16"]),
            |r| r.memory.guest_touched_bytes.map(|b| b as f64 / MIB),
            0.1,
        )?;
        context.note(format!("mem 16 in the VM: {:.2} MiB of guest memory touched", band.measured));
        Ok(band)
    })
}

fn check_record(task: &mut TaskCheck) -> Result<Grade> {
    let path = task.evidence("vm-mem16.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Grade::Unanswered) };
    let record: RunRecord =
        serde_json::from_str(text.trim()).context("evidence/vm-mem16.json is not one cvm run record")?;
    let touched = record.memory.guest_touched_bytes.unwrap_or(0) as f64 / MIB;
    let right_run =
        record.runtime == RuntimeKind::Vm && record.workload == "mem" && record.args == ["16"] && record.succeeded();
    if !right_run {
        return Ok(Grade::Wrong("the saved record is not a successful `mem 16` run in the vm runtime".into()));
    }
    let ram = record.memory.guest_ram_bytes.unwrap_or(0) as f64 / MIB;
    Ok(Grade::Passed(format!("your VM touched {touched:.1} MiB of its {ram:.0} MiB of guest RAM")))
}

fn perform_record(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    task.save_cvm_output("vm-mem16.json", &["run", "--runtime", "vm", "--json", "mem", "16"])?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "vm_hello_touched_kib",
            text: "Run `cvm run --runtime vm --json hello`. How much guest memory did the VM touch (`guest_touched_bytes`), in KiB?",
            needs: &[Need::Kvm],
            hint: "divide guest_touched_bytes by 1024",
            answer: Answer::Number { unit: "KiB", measure: vm_hello_touched },
        },
        Question {
            id: "process_mem16_mib",
            text: "Run `cvm run --runtime process mem 16`. What is the program's peak RSS, in MiB?",
            needs: &[],
            hint: "the `memory` line of the summary: program",
            answer: Answer::Number { unit: "MiB", measure: process_mem16_peak },
        },
        Question {
            id: "vm_mem16_touched_mib",
            text: "Run `cvm run --runtime vm mem 16`. How much guest memory did the VM touch, in MiB?",
            needs: &[Need::Kvm],
            hint: "the `memory` line: guest touched",
            answer: Answer::Number { unit: "MiB", measure: vm_mem16_touched },
        },
        Question {
            id: "guest_ram_cost",
            text: "The VM has 64 MiB of guest RAM but touched well under 1 MiB for hello. How much of the host's memory \
                   does its guest RAM take?",
            needs: &[],
            hint: "compare guest_ram_bytes and guest_touched_bytes, then run mem 16 with --memory 128M",
            answer: Answer::Choice {
                options: &[
                    "all 64 MiB, from the moment the VM is created",
                    "only the pages the guest touched: the host backs guest RAM page by page, on first use",
                    "nothing: guest memory is free",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "shared_vmm_pages",
            text: "The VM's record splits the VMM's own memory into private pages (`runtime_private_bytes`) and \
                   file-backed pages (`runtime_shared_bytes`, cvm's own code). What happens to the file-backed pages \
                   when a second VM runs at the same time?",
            needs: &[],
            hint: "what does the kernel do with two processes mapping the same file?",
            answer: Answer::Choice {
                options: &[
                    "each VM loads its own copy: two VMs cost twice the figure",
                    "they are shared: the second VM adds far less than the per-run figure",
                    "they are freed as soon as the guest starts",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "container_is_light",
            text: "Why does a container add almost no memory to its program's own, in a sentence?",
            needs: &[],
            hint: "what does a VM run that a container does not?",
            answer: Answer::Words {
                groups: &[&["kernel", "os", "operating", "guest", "vmm"], &["no", "without", "share*", "same", "host"]],
                example: "It runs no second kernel and no VMM: it shares the host's kernel, so only the program's own \
                          pages and a little kernel bookkeeping are added.",
            },
        },
        Question {
            id: "vm_memory_evidence",
            text: "Task: save the record of a VM run of mem 16: `cvm run --runtime vm --json mem 16 > evidence/vm-mem16.json`. \
                   Write done here when it is saved.",
            needs: &[Need::Kvm],
            hint: "run the command in the workspace folder, exactly as given",
            answer: Answer::Task { check: check_record, perform: perform_record },
        },
    ]
}

//! Lab 13: the shared kernel as a shared attack surface. Lecture 2.4 (less independence: host
//! kernel updates and bugs affect every container; weaker security than a VM): what a container
//! is refused by the host kernel's filter (EPERM) against what cvm's guest kernel does not even
//! have (ENOSYS), counted with `--trace-syscalls`, and why a kernel bug reaches every container.

use anyhow::{Context as _, Result};

use super::measure::{Band, Context, Setup};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::{RunRecord, RuntimeKind};

pub static LAB: Lab = Lab {
    number: 13,
    title: "The shared kernel",
    minutes: 30,
    topics: &[
        "2.4 the host kernel shared by every container: its bugs and its interface are theirs (hands-on and reasoning)",
    ],
    sheet: include_str!("../../labs/13-the-shared-kernel/README.md"),
    questions,
};

fn probe(context: &mut Context, runtime: RuntimeKind) -> Result<RunRecord> {
    let key = if runtime == RuntimeKind::Vm { "lab13-vm" } else { "lab13-container" };
    context.once(key, |_| Setup::new(runtime, "probe", &[]).run_ok())
}

fn vm_calls(context: &mut Context) -> Result<Band> {
    let guest = probe(context, RuntimeKind::Vm)?.guest.context("the VM's record has no guest statistics")?;
    let mut names: Vec<&String> = guest.syscalls.keys().chain(guest.unsupported_syscalls.keys()).collect();
    names.sort();
    names.dedup();
    Ok(Band::exact(names.len() as f64, 0.0))
}

fn vm_enosys(context: &mut Context) -> Result<Band> {
    let guest = probe(context, RuntimeKind::Vm)?.guest.context("the VM's record has no guest statistics")?;
    Ok(Band::exact(guest.unsupported_syscalls.len() as f64, 0.0))
}

fn keyring_error(context: &mut Context, runtime: RuntimeKind) -> Result<String> {
    let record = probe(context, runtime)?;
    let result = record.result.context("probe printed no result")?;
    result["session_keyring_error"].as_str().map(str::to_string).context("probe shows no session_keyring_error")
}

fn container_keyring(context: &mut Context) -> Result<String> {
    keyring_error(context, RuntimeKind::Container)
}

fn vm_keyring(context: &mut Context) -> Result<String> {
    keyring_error(context, RuntimeKind::Vm)
}

fn check_trace(task: &mut TaskCheck) -> Result<Grade> {
    let Ok(text) = std::fs::read_to_string(task.evidence("vm-probe.json")) else { return Ok(Grade::Unanswered) };
    let record: RunRecord =
        serde_json::from_str(text.trim()).context("evidence/vm-probe.json is not one cvm run record")?;
    let Some(guest) = record.guest.as_ref().filter(|_| record.runtime == RuntimeKind::Vm && record.succeeded()) else {
        return Ok(Grade::Wrong("the saved record is not a successful run in the vm runtime".into()));
    };
    if record.workload != "probe" || guest.unsupported_syscalls.is_empty() {
        return Ok(Grade::Wrong("the saved record is not probe's, or shows no call the guest kernel refused".into()));
    }
    let refused: Vec<&str> = guest.unsupported_syscalls.keys().map(String::as_str).collect();
    Ok(Grade::Passed(format!("the guest kernel answered ENOSYS to: {}", refused.join(", "))))
}

fn perform_trace(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    task.save_cvm_output("vm-probe.json", &["run", "--runtime", "vm", "--json", "probe"])?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "vm_calls",
            text: "`cvm run --runtime vm --trace-syscalls probe`: how many different system calls did probe make \
                   (rows of the table, without the total)?",
            needs: &[Need::Kvm],
            hint: "count the rows of the trace table",
            answer: Answer::Number { unit: "calls", measure: vm_calls },
        },
        Question {
            id: "vm_enosys",
            text: "How many of them did the guest kernel answer with ENOSYS?",
            needs: &[Need::Kvm],
            hint: "the ENOSYS column of the same table",
            answer: Answer::Number { unit: "calls", measure: vm_enosys },
        },
        Question {
            id: "container_keyring",
            text: "`cvm run --runtime container --json probe`: what error does probe's session keyring call get \
                   (result.session_keyring_error)?",
            needs: &[Need::Containers],
            hint: "the error's name, as the record writes it",
            answer: Answer::Text { measure: container_keyring },
        },
        Question {
            id: "vm_keyring",
            text: "And in the VM?",
            needs: &[Need::Kvm],
            hint: "the same field of the vm runtime's record",
            answer: Answer::Text { measure: vm_keyring },
        },
        Question {
            id: "dirty_pipe",
            text:
                "Dirty Pipe (CVE-2022-0847, 2022) let an unprivileged process overwrite read-only files through a bug \
                   in the Linux kernel's pipe code. On an unpatched host, which programs could use it?",
            needs: &[],
            hint: "which kernel's pipe code does each program use, and does Docker's filter refuse pipe or splice?",
            answer: Answer::Choice {
                options: &[
                    "only programs running directly on the host, never those in containers",
                    "every container's program too, since each calls that same host kernel (pipes and splice are \
                     allowed by the filter); a program in cvm's VM calls its guest kernel, which has no such code",
                    "none: containers and VMs alike are protected by namespaces",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "smaller_surface",
            text: "The host kernel offers about 450 system calls, Docker's filter lets a container reach about 300 of \
                   them, cvm's guest kernel implements a few dozen. Why is the smaller interface the smaller attack \
                   surface?",
            needs: &[],
            hint: "where do kernel bugs live, and what can a program not reach?",
            answer: Answer::Words {
                groups: &[&["fewer", "less", "smaller", "few", "only"], &["code", "call*", "bug*", "path*", "reach*"]],
                example:
                    "A program can only exploit kernel code it can reach: fewer system calls mean fewer code paths, \
                          and so fewer bugs within its reach.",
            },
        },
        Question {
            id: "vm_trace_evidence",
            text: "Task: save probe's record in the VM: `cvm run --runtime vm --json probe > evidence/vm-probe.json`. \
                   Write done here.",
            needs: &[Need::Kvm],
            hint: "run the command in the workspace folder, exactly as given",
            answer: Answer::Task { check: check_trace, perform: perform_trace },
        },
    ]
}

//! Lab 5: isolation. Lecture 1.4 (a container runs isolated from the host's other resources),
//! 2.4 (weaker security than a VM: the shared kernel), with what cvm's container is given and
//! refused, against what the VM's guest kernel does not even have.

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::measure::{Band, Context, Setup};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::{RunRecord, RuntimeKind};

pub static LAB: Lab = Lab {
    number: 5,
    title: "Isolation",
    minutes: 40,
    topics: &[
        "1.4 a container is isolated from the host's other resources (hands-on)",
        "2.4 weaker security than a VM: the host kernel is shared (hands-on and reasoning)",
    ],
    sheet: include_str!("../../labs/05-isolation/README.md"),
    questions,
};

fn probe(context: &mut Context, runtime: RuntimeKind) -> Result<Value> {
    let key = match runtime.family() {
        RuntimeKind::Container => "lab5-container",
        RuntimeKind::Vm => "lab5-vm",
        _ => "lab5-process",
    };
    context.once(key, |context| {
        let record = Setup::new(runtime, "probe", &[]).run_ok()?;
        let result = record.result.context("probe printed no CVM-RESULT line")?;
        context.note(format!("{runtime}: {result}"));
        Ok(result)
    })
}

fn count(context: &mut Context, runtime: RuntimeKind, key: &str) -> Result<Band> {
    let value =
        probe(context, runtime)?.get(key).and_then(Value::as_u64).with_context(|| format!("probe has no {key}"))?;
    Ok(Band::exact(value as f64, 0.0))
}

fn container_pid(context: &mut Context) -> Result<Band> {
    count(context, RuntimeKind::Container, "pid")
}

fn container_processes(context: &mut Context) -> Result<Band> {
    count(context, RuntimeKind::Container, "visible_processes")
}

fn container_capabilities(context: &mut Context) -> Result<Band> {
    count(context, RuntimeKind::Container, "cap_eff_count")
}

fn process_capabilities(context: &mut Context) -> Result<Band> {
    count(context, RuntimeKind::Process, "cap_eff_count")
}

fn container_interfaces(context: &mut Context) -> Result<String> {
    let result = probe(context, RuntimeKind::Container)?;
    let names: Vec<&str> = result
        .get("network_interfaces")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Ok(names.join(", "))
}

fn check_unconfined(task: &mut TaskCheck) -> Result<Grade> {
    let path = task.evidence("unconfined.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Grade::Unanswered) };
    let record: RunRecord =
        serde_json::from_str(text.trim()).context("evidence/unconfined.json is not one cvm run record")?;
    let seccomp = record.container.as_ref().map(|c| c.seccomp.as_str()).unwrap_or("");
    let seen = record.result.as_ref().and_then(|r| r.get("seccomp")).and_then(Value::as_str).unwrap_or("");
    let keyring = record.result.as_ref().and_then(|r| r.get("session_keyring")).and_then(Value::as_u64);
    if record.runtime != RuntimeKind::Container || record.workload != "probe" || !record.succeeded() {
        return Ok(Grade::Wrong("the saved record is not a successful `probe` run in the container runtime".into()));
    }
    if seccomp != "unconfined" || seen != "disabled" {
        return Ok(Grade::Wrong("that container still had its system-call filter".into()));
    }
    match keyring {
        Some(id) => Ok(Grade::Passed(format!("without the filter, keyctl answered: session keyring {id}, a new one"))),
        None => Ok(Grade::Wrong("the record shows no session keyring".into())),
    }
}

fn perform_unconfined(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    task.save_cvm_output(
        "unconfined.json",
        &["run", "--runtime", "container", "--seccomp", "unconfined", "--json", "probe"],
    )?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "container_pid",
            text: "Run `cvm run --runtime container probe`. Which pid does the program have inside the container?",
            needs: &[Need::Containers],
            hint: "the `pid:` line of the container's probe",
            answer: Answer::Number { unit: "", measure: container_pid },
        },
        Question {
            id: "container_processes",
            text: "How many processes can the program see in the container?",
            needs: &[Need::Containers],
            hint: "the `processes:` line",
            answer: Answer::Number { unit: "processes", measure: container_processes },
        },
        Question {
            id: "container_interfaces",
            text: "Which network interfaces does the program see in the container? (their names, comma-separated)",
            needs: &[Need::Containers],
            hint: "the `interfaces:` line of the container's probe, not the process's",
            answer: Answer::Text { measure: container_interfaces },
        },
        Question {
            id: "container_capabilities",
            text: "How many capabilities does the program have in the container (`cap_eff_count` in the --json record)?",
            needs: &[Need::Containers],
            hint: "run the container's probe with --json and look at result.cap_eff_count",
            answer: Answer::Number { unit: "capabilities", measure: container_capabilities },
        },
        Question {
            id: "process_capabilities",
            text: "And as a plain process (`cvm run --runtime process --json probe`)?",
            needs: &[],
            hint: "the same field in the process runtime's record",
            answer: Answer::Number { unit: "capabilities", measure: process_capabilities },
        },
        Question {
            id: "eperm_vs_enosys",
            text: "probe's `keyring:` line says refused (EPERM) in the container and refused (ENOSYS) in the VM. \
                   What do the two answers mean?",
            needs: &[],
            hint: "EPERM: not permitted; ENOSYS: no such function. Who gave each answer?",
            answer: Answer::Choice {
                options: &[
                    "both mean the same: the call is not allowed",
                    "the container's seccomp filter refused a call the host kernel has; the guest kernel does not implement it at all",
                    "the host kernel has no keyrings",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "shared_kernel_risk",
            text: "Why does a bug in the host kernel reach every container on the host, but not the program in cvm's VM?",
            needs: &[],
            hint: "which kernel does each program send its system calls to?",
            answer: Answer::Words {
                groups: &[&["kernel"], &["share*", "same", "one", "single", "host's", "host"], &["guest", "own", "vm", "separate"]],
                example: "Every container sends its system calls to the one host kernel they all share; the VM's program \
                          talks to its own guest kernel, and the host is reached only through KVM and a few device ports.",
            },
        },
        Question {
            id: "unconfined_evidence",
            text: "Task: run probe in a container without the system-call filter and save the record: \
                   `cvm run --runtime container --seccomp unconfined --json probe > evidence/unconfined.json`. \
                   Write done here when it is saved.",
            needs: &[Need::Containers],
            hint: "run the command in the workspace folder, exactly as given",
            answer: Answer::Task { check: check_unconfined, perform: perform_unconfined },
        },
    ]
}

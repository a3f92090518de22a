//! Lab 1: one program, two kernels. Lecture 1.2-1.3 (a container uses the host's kernel; the
//! kernel connects hardware and software), 2.2 and 2.4 (a VM runs its own guest OS).

use anyhow::Result;

use super::measure::{Band, Context, Setup};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::RuntimeKind;

pub static LAB: Lab = Lab {
    number: 1,
    title: "One program, two kernels",
    minutes: 30,
    topics: &[
        "1.2 a container is light because it uses the host's kernel (hands-on)",
        "1.3 what a kernel is: the layer every system call goes to (hands-on)",
        "2.2 a VM runs its own guest OS (hands-on)",
        "2.4 a host kernel bug reaches every container (reasoning)",
    ],
    sheet: include_str!("../../labs/01-one-program-two-kernels/README.md"),
    questions,
};

fn probe(context: &mut Context, runtime: RuntimeKind) -> Result<(String, String)> {
    let key = match runtime.family() {
        RuntimeKind::Container => "lab1-container-probe",
        RuntimeKind::Vm => "lab1-vm-probe",
        _ => "lab1-process-probe",
    };
    context.once(key, |context| {
        let record = Setup::new(runtime, "probe", &[]).run_ok()?;
        let field = |key: &str| {
            record.result.as_ref().and_then(|r| r.get(key)).and_then(|v| v.as_str()).unwrap_or("?").to_string()
        };
        let seen = (field("kernel_name"), field("kernel_release"));
        context.note(format!("{runtime}: the program saw {} {}", seen.0, seen.1));
        Ok(seen)
    })
}

fn container_release(context: &mut Context) -> Result<String> {
    Ok(probe(context, RuntimeKind::Container)?.1)
}

fn vm_kernel(context: &mut Context) -> Result<String> {
    let (name, release) = probe(context, RuntimeKind::Vm)?;
    Ok(format!("{name} {release}"))
}

/// System calls the guest kernel served for `hello` (the same count on every run).
fn vm_hello_syscalls(context: &mut Context) -> Result<Band> {
    context.once("lab1-vm-syscalls", |context| {
        let mut counts = Vec::new();
        for _ in 0..3 {
            let record = Setup::new(RuntimeKind::Vm, "hello", &[]).run_ok()?;
            let served: u64 = record.guest.as_ref().map_or(0, |g| g.syscalls.values().sum());
            counts.push(served as f64);
        }
        context.note(format!("the guest kernel served {counts:?} system calls for hello"));
        // The band is what the three runs spanned: exact when the count does not vary.
        let low = counts.iter().copied().fold(f64::MAX, f64::min);
        let high = counts.iter().copied().fold(0.0, f64::max);
        Ok(Band { measured: counts[0], low, high })
    })
}

fn check_refusal(task: &mut TaskCheck) -> Result<Grade> {
    let path = task.evidence("vm-refusal.txt");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Grade::Unanswered) };
    let line = text.lines().find(|l| l.starts_with("cvm: error:")).unwrap_or_default();
    if line.contains("dynamically linked") && line.contains("cannot run") {
        Ok(Grade::Passed("the VM refused a dynamically linked program, and said why".into()))
    } else if line.is_empty() {
        Ok(Grade::Wrong("evidence/vm-refusal.txt holds no `cvm: error:` line".into()))
    } else {
        Ok(Grade::Wrong("the saved refusal is not the VM refusing a dynamically linked program".into()))
    }
}

fn perform_refusal(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let out = super::measure::cvm_command(&["run", "--runtime", "vm", "--binary", "/bin/sh"])?
        .stderr(std::process::Stdio::piped())
        .output()?;
    std::fs::write(task.evidence("vm-refusal.txt"), out.stderr)?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "container_kernel",
            text: "Run `cvm run --runtime container probe`. Which kernel release does the program report?",
            needs: &[Need::Containers],
            hint: "copy the release from the `kernel:` line, and compare it with `uname -r` in your own shell",
            answer: Answer::Text { measure: container_release },
        },
        Question {
            id: "vm_kernel",
            text: "Run `cvm run --runtime vm probe`. Which kernel (name and release) does the program report?",
            needs: &[Need::Kvm],
            hint: "copy the whole `kernel:` line of the VM run, name and release",
            answer: Answer::Text { measure: vm_kernel },
        },
        Question {
            id: "vm_hello_syscalls",
            text: "Run `cvm run --runtime vm --trace-syscalls hello`. How many system calls did the guest kernel serve in all?",
            needs: &[Need::Kvm],
            hint: "the last line of the table is the total",
            answer: Answer::Number { unit: "calls", measure: vm_hello_syscalls },
        },
        Question {
            id: "who_answers_uname",
            text: "The program file is byte for byte the same in all three runs. Who answers its `uname` call in the VM?",
            needs: &[],
            hint: "a system call goes to the kernel the program runs on",
            answer: Answer::Choice {
                options: &["the host's kernel", "cvm's guest kernel inside the VM", "the program itself", "the VMM, cvm, on the host"],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "kernel_bug_reach",
            text: "A bug in the host kernel's code for a system call: the programs of which runs can reach it?",
            needs: &[],
            hint: "which runtimes send their system calls to the host's kernel?",
            answer: Answer::Choice {
                options: &["the process only", "the process and the container", "all three", "none of them"],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "why_same_release",
            text: "Why does the container report the host's kernel release, in one sentence?",
            needs: &[],
            hint: "what does a container have of its own, and what does it not?",
            answer: Answer::Words {
                groups: &[&["share", "shares", "shared", "same", "uses", "host's", "host"], &["kernel"]],
                example: "A container is a process in namespaces: it shares the host's kernel, so uname is answered by that kernel.",
            },
        },
        Question {
            id: "vm_refusal",
            text: "Task: make the VM runtime refuse a program and save what it says: \
                   `cvm run --runtime vm --binary /bin/sh 2> evidence/vm-refusal.txt`. Write done here when it is saved.",
            needs: &[],
            hint: "run the command exactly as given, in the workspace folder, so the error line lands in evidence/",
            answer: Answer::Task { check: check_refusal, perform: perform_refusal },
        },
    ]
}

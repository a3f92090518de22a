//! Lab 6: resource limits. Lecture 1.4 (containers do not disturb each other) and 2.3 (a VM
//! holds memory and CPU exclusively): a cgroup enforces a container's memory and CPU limits; in
//! the VM, --memory is the guest's RAM and its own kernel is the one that runs out.

use anyhow::{bail, Result};

use super::measure::{Band, Context, Setup};
use super::question::{number, Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::{Outcome, RunRecord, RuntimeKind};

pub static LAB: Lab = Lab {
    number: 6,
    title: "Resource limits",
    minutes: 40,
    topics: &[
        "1.4 containers do not disturb each other: cgroups enforce it (hands-on)",
        "2.3 a VM's memory and CPU are its own (hands-on and reasoning)",
    ],
    sheet: include_str!("../../labs/06-resource-limits/README.md"),
    questions,
};

const MIB: u64 = 1 << 20;

fn mem64(limit_mib: u64) -> Setup {
    Setup::new(RuntimeKind::Container, "mem", &["64"]).memory(limit_mib * MIB)
}

/// The smallest limit in MiB at which `mem 64` completes in a container.
fn boundary() -> Result<u64> {
    let (mut killed, mut fits) = (16u64, 256u64);
    if mem64(killed).run()?.outcome != Outcome::OomKilled {
        bail!("mem 64 was not OOM-killed under a 16 MiB limit");
    }
    if !mem64(fits).run()?.succeeded() {
        bail!("mem 64 did not complete under a 256 MiB limit");
    }
    while fits - killed > 1 {
        let middle = (killed + fits) / 2;
        let record = mem64(middle).run()?;
        match record.outcome {
            Outcome::OomKilled => killed = middle,
            Outcome::Exited if record.exit_code == 0 => fits = middle,
            other => bail!("mem 64 under {middle} MiB ended {}", other.label()),
        }
    }
    Ok(fits)
}

/// Two bisections: the band is what they spanned, give or take one MiB (the answer's unit).
fn oom_boundary(context: &mut Context) -> Result<Band> {
    context.once("lab6-boundary", |context| {
        let found = [boundary()?, boundary()?];
        context.note(format!("mem 64 completes from {found:?} MiB on (two bisections)"));
        let (low, high) = (found[0].min(found[1]) as f64, found[0].max(found[1]) as f64);
        Ok(Band { measured: high, low: low - 1.0, high: high + 1.0 })
    })
}

fn oom_exit_status(context: &mut Context) -> Result<Band> {
    context.once("lab6-oom-status", |context| {
        let record = mem64(16).run()?;
        context.note(format!("mem 64 under 16 MiB: {}, exit status {}", record.outcome.label(), record.exit_code));
        Ok(Band::exact(record.exit_code as f64, 0.0))
    })
}

fn cpu_quota_ms(_: &mut Context) -> Result<Band> {
    Ok(Band::exact(50.0, 0.5))
}

fn limit_mib(record: &RunRecord) -> Option<u64> {
    record.container.as_ref()?.memory_limit_bytes.map(|b| b / MIB)
}

fn check_boundary(task: &mut TaskCheck) -> Result<Grade> {
    let (Some(oom), Some(fits)) = (task.saved_record("oom.json")?, task.saved_record("fits.json")?) else {
        return Ok(Grade::Unanswered);
    };
    let Some(answer) = task.answer.and_then(number) else {
        return Ok(Grade::Wrong("write the limit you found, in MiB, as the answer".into()));
    };
    let is_mem64 = |r: &RunRecord| r.runtime == RuntimeKind::Container && r.workload == "mem" && r.args == ["64"];
    if !is_mem64(&oom) || !is_mem64(&fits) {
        return Ok(Grade::Wrong("both saved records must be `mem 64` runs in the container runtime".into()));
    }
    if oom.outcome != Outcome::OomKilled || !fits.succeeded() {
        return Ok(Grade::Wrong("oom.json must be a run that was OOM-killed, fits.json one that completed".into()));
    }
    let answer = answer.round() as u64;
    if limit_mib(&fits) != Some(answer) || limit_mib(&oom) != Some(answer.saturating_sub(1)) {
        return Ok(Grade::Wrong(format!(
            "fits.json must be the run at your answer ({answer} MiB) and oom.json the run one MiB below it"
        )));
    }
    let band = oom_boundary(task.context)?;
    if !band.contains(answer as f64) {
        return Ok(Grade::Wrong(format!("{answer} MiB is not where this machine's boundary lies")));
    }
    Ok(Grade::Passed(format!("{answer} MiB, with both runs as evidence; measured here: {} MiB", band.measured)))
}

fn perform_boundary(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let found = boundary()?;
    for (limit, file) in [(found - 1, "oom.json"), (found, "fits.json")] {
        let memory = format!("{limit}M");
        task.save_cvm_output(file, &["run", "--runtime", "container", "--json", "--memory", &memory, "mem", "64"])?;
    }
    Ok(Some(toml::Value::Integer(found as i64)))
}

fn check_quota(task: &mut TaskCheck) -> Result<Grade> {
    let Some(record) = task.saved_record("quota.json")? else { return Ok(Grade::Unanswered) };
    let limit = record.container.as_ref().and_then(|c| c.cpu_limit);
    if record.runtime != RuntimeKind::Container || record.workload != "cpu" || !record.succeeded() || limit != Some(0.2)
    {
        return Ok(Grade::Wrong(
            "the saved record must be a completed `cpu` run in a container with --cpus 0.2".into(),
        ));
    }
    // Under a 20% quota the program can use at most a fifth of the wall-clock time, whatever
    // else the machine does: its run lasts at least 5 times its CPU time (3 leaves margin).
    let wall = record.phases_ns.exit.saturating_sub(record.phases_ns.setup) as f64;
    let cpu = (record.cpu.user_ns + record.cpu.system_ns) as f64;
    if cpu <= 0.0 || wall / cpu < 3.0 {
        return Ok(Grade::Wrong("in that record the program was not held back by the quota".into()));
    }
    Ok(Grade::Passed(format!(
        "the run lasted {:.1}x its CPU time: the quota held it to about a fifth of a CPU",
        wall / cpu
    )))
}

fn perform_quota(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    task.save_cvm_output("quota.json", &["run", "--runtime", "container", "--cpus", "0.2", "--json", "cpu", "200000"])?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "oom_boundary_mib",
            text: "Task: find the smallest --memory, in whole MiB, with which `mem 64` completes in a container. Save \
                   the run at that limit and the one a MiB below: `cvm run --runtime container --json --memory NM mem 64 \
                   > evidence/fits.json` and, with N-1, `> evidence/oom.json`. Write N here.",
            needs: &[Need::Containers, Need::Cgroup],
            hint: "halve the interval between a limit that kills and one that fits until they are one MiB apart",
            answer: Answer::Task { check: check_boundary, perform: perform_boundary },
        },
        Question {
            id: "oom_exit_status",
            text: "What exit status does cvm report for `mem 64` under a 16 MiB limit?",
            needs: &[Need::Containers, Need::Cgroup],
            hint: "run it and look at the `ended` line",
            answer: Answer::Number { unit: "", measure: oom_exit_status },
        },
        Question {
            id: "why_that_status",
            text: "Why that exit status, in a sentence?",
            needs: &[],
            hint: "a shell reports a program killed by a signal as 128 plus the signal's number",
            answer: Answer::Words {
                groups: &[&["128"], &["sigkill", "kill", "killed", "9"]],
                example: "It is 128 + 9: the kernel's OOM killer ended the program with SIGKILL (signal 9).",
            },
        },
        Question {
            id: "cpu_quota_ms",
            text: "With --cpus 0.5, how many milliseconds of CPU time may the container use in each 100 ms period?",
            needs: &[],
            hint: "read how --cpus becomes a quota in docs/container.md, section 2",
            answer: Answer::Number { unit: "ms", measure: cpu_quota_ms },
        },
        Question {
            id: "quota_evidence",
            text: "Task: show that a CPU quota holds a program back: \
                   `cvm run --runtime container --cpus 0.2 --json cpu 200000 > evidence/quota.json`. Write done here.",
            needs: &[Need::Containers, Need::Cgroup],
            hint: "run the command in the workspace folder, exactly as given",
            answer: Answer::Task { check: check_quota, perform: perform_quota },
        },
        Question {
            id: "process_memory_limit",
            text: "What does `cvm run --runtime process --memory 16M mem 64` do with the limit?",
            needs: &[],
            hint: "run it and read the notes",
            answer: Answer::Choice {
                options: &[
                    "enforces it: the program is OOM-killed",
                    "ignores it and says so in a note: a plain process has no cgroup",
                    "refuses to run",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "vm_memory_limit",
            text: "In the VM, --memory is the guest's RAM. Run `cvm run --runtime vm --memory 32M mem 64`: who stops the program?",
            needs: &[],
            hint: "in a VM the program can only ask its own kernel for memory",
            answer: Answer::Choice {
                options: &[
                    "the host kernel's OOM killer",
                    "nobody from outside: the guest kernel has no more memory to give, and the program fails inside the VM",
                    "cvm's cgroup",
                ],
                correct: Correct::Fixed(1),
            },
        },
    ]
}

//! Lab 11: density. Lecture 2.3 (a VM holds its memory exclusively), 2.4 (containers are
//! light) and 2.5: how many containers and micro-VMs fit per GiB on this machine, measured from
//! outside with `cvm density`, against the lecture's claim and published figures.

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::measure::{cvm_command, Band, Context};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;

pub static LAB: Lab = Lab {
    number: 11,
    title: "Density",
    minutes: 30,
    topics: &[
        "2.3 a VM holds its memory exclusively (measured against the claim)",
        "2.4, 2.5 containers are light: how many fit per GiB, containers and micro-VMs (hands-on)",
    ],
    sheet: include_str!("../../labs/11-density/README.md"),
    questions,
};

/// What the lab's density run starts, and how often it measures each step: 16 of each, so that
/// what they add stands out from the machine's own ups and downs.
const DENSITY_ARGS: [&str; 8] =
    ["density", "--runtimes", "container,vm", "--instances", "16", "--repeat", "3", "--json"];

/// The rows of the checker's own density run (16 of each at once, 3 times).
fn rows(context: &mut Context) -> Result<Vec<Value>> {
    context.once("lab11-density", |context| {
        let out =
            cvm_command(&DENSITY_ARGS)?.stdout(std::process::Stdio::piped()).output().context("running cvm density")?;
        anyhow::ensure!(out.status.success(), "cvm density failed");
        let results: Value = serde_json::from_slice(&out.stdout).context("cvm density --json printed no JSON")?;
        let rows = results["density"]["rows"].as_array().cloned().context("cvm density's results have no rows")?;
        for row in &rows {
            context.note(format!("{}: {:.0} per GiB", row["runtime"], row["per_gib"].as_f64().unwrap_or(0.0)));
        }
        Ok(rows)
    })
}

/// Instances per GiB of used memory for `runtime`: the median, and a band from the fewest and
/// most bytes one instance added in the repetitions, at least ±35% (the machine's other memory
/// moves between the student's run and the check's).
/// When what the instances added was within the machine's own noise, density gives no count:
/// the band is then not decisive, and the question is skipped as too noisy to grade now.
fn per_gib(context: &mut Context, runtime: &str) -> Result<Band> {
    let rows = rows(context)?;
    let row = rows.iter().find(|row| row["runtime"] == runtime).with_context(|| format!("no {runtime} row"))?;
    let bytes = |key: &str| row["marginal_bytes"][key].as_f64().filter(|b| *b > 0.0);
    let (Some(measured), Some(most), Some(fewest)) = (row["per_gib"].as_f64(), bytes("min"), bytes("max")) else {
        return Ok(Band { measured: 0.0, low: 0.0, high: f64::INFINITY });
    };
    let gib = (1u64 << 30) as f64;
    Ok(Band { measured, low: gib / fewest, high: gib / most }.at_least(0.35))
}

fn containers_per_gib(context: &mut Context) -> Result<Band> {
    per_gib(context, "container")
}

fn vms_per_gib(context: &mut Context) -> Result<Band> {
    per_gib(context, "vm")
}

/// VMs per GiB if each held its configured RAM (cvm's default) exclusively.
fn exclusive_vms_per_gib(_: &mut Context) -> Result<Band> {
    Ok(Band::exact(((1u64 << 30) / crate::vmm::layout::DEFAULT_RAM_BYTES) as f64, 0.0))
}

fn check_density(task: &mut TaskCheck) -> Result<Grade> {
    let path = task.evidence("density").join("density.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Grade::Unanswered) };
    let results: Value = serde_json::from_str(&text).context("evidence/density/density.json is not JSON")?;
    let rows = results["density"]["rows"].as_array().cloned().unwrap_or_default();
    let row = |runtime: &str| {
        rows.iter().find(|row| {
            row["runtime"] == runtime
                && row["instances"].as_u64().is_some_and(|n| n >= 8)
                && row["marginal_bytes"]["median"].is_number()
        })
    };
    let reading = |row: &Value| match row["per_gib"].as_f64() {
        Some(count) => format!("{count:.0}"),
        None => "(within the machine's noise)".into(),
    };
    match (row("container"), row("vm")) {
        (Some(containers), Some(vms)) => Ok(Grade::Passed(format!(
            "at 8 or more at once: {} containers or {} micro-VMs per GiB",
            reading(containers),
            reading(vms)
        ))),
        _ => Ok(Grade::Wrong("the report has no row of 8 or more containers and micro-VMs each".into())),
    }
}

fn perform_density(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let status = cvm_command(&["density", "--runtimes", "container,vm", "--instances", "16", "--out"])?
        .arg(task.evidence("density"))
        .status()?;
    anyhow::ensure!(status.success(), "cvm density failed");
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    const BOTH: &[Need] = &[Need::Containers, Need::Kvm];
    vec![
        Question {
            id: "containers_per_gib",
            text: "Run `cvm density --runtimes container,vm --instances 16`. How many containers fit per GiB of used \
                   memory, by its reading?",
            needs: BOTH,
            hint: "the per GiB (used memory) column of the container row",
            answer: Answer::Number { unit: "per GiB", measure: containers_per_gib },
        },
        Question {
            id: "vms_per_gib",
            text: "And how many micro-VMs?",
            needs: BOTH,
            hint: "the same column, the vm row",
            answer: Answer::Number { unit: "per GiB", measure: vms_per_gib },
        },
        Question {
            id: "exclusive_vms_per_gib",
            text: "cvm's micro-VM is configured with 64 MiB of RAM. How many would fit per GiB if each held all of it \
                   exclusively, as the lecture says a VM does?",
            needs: &[],
            hint: "1 GiB is 1024 MiB",
            answer: Answer::Number { unit: "per GiB", measure: exclusive_vms_per_gib },
        },
        Question {
            id: "why_not_exclusive",
            text: "Why does each micro-VM add so much less than its 64 MiB here?",
            needs: &[],
            hint: "when does the host give guest RAM a real page, and what else is shared?",
            answer: Answer::Choice {
                options: &[
                    "cvm compresses guest memory",
                    "the host backs guest RAM only where the guest touched it, the guest kernel is tiny, and the \
                     program's code is shared from the page cache by every VM",
                    "density cannot see the memory of VMs",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "published",
            text: "Which figures did Firecracker (AWS's micro-VM, the VMM under Lambda) publish for itself?",
            needs: &[],
            hint: "its design paper (NSDI 2020) and README",
            answer: Answer::Choice {
                options: &[
                    "about 5 MiB of memory overhead per microVM, booting Linux to user space in about 125 ms, up to 150 \
                     microVMs started per second on one host",
                    "1 GiB per microVM and one microVM per CPU core",
                    "no overhead at all: microVMs are containers",
                ],
                correct: Correct::Fixed(0),
            },
        },
        Question {
            id: "density_tradeoff",
            text: "If a micro-VM costs about as much memory as a container here, what does a general-purpose VM add \
                   per instance, and what does the micro-VM still cost that a container does not?",
            needs: &[],
            hint: "a full guest OS in memory; and what separates a VM's program from the host",
            answer: Answer::Words {
                groups: &[
                    &["kernel", "os", "operating", "guest", "services", "firmware"],
                    &["vcpu*", "vmm", "kvm", "thread*", "exit*", "start*", "cpu", "emulat*", "time", "slower"],
                ],
                example: "A general-purpose VM keeps a whole guest OS (its kernel, services and caches) resident; a \
                          micro-VM's tiny kernel costs little memory, but it still pays a VMM, KVM exits and vCPU \
                          threads, so starts and system calls cost more time than a container's.",
            },
        },
        Question {
            id: "density_report",
            text: "Task: `cvm density --runtimes container,vm --instances 16 --out evidence/density`. Write done here.",
            needs: BOTH,
            hint: "run it in the workspace folder, exactly as given",
            answer: Answer::Task { check: check_density, perform: perform_density },
        },
    ]
}

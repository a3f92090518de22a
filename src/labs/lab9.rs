//! Lab 9: hypervisors. Lecture 2.1 (VMs researched from the 1960s, spread from the 2000s with
//! hypervisors), 2.2 (a VM runs its own guest OS) and 2.3, with KVM, the VMMs that use it (cvm's
//! own and QEMU, booting the same guest kernel) and the VM exits that show who does what.

use anyhow::{Context as _, Result};

use super::measure::{compare, paired, ratios, Band, Context, Decision, Setup};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::{RunRecord, RuntimeKind};

pub static LAB: Lab = Lab {
    number: 9,
    title: "Hypervisors",
    minutes: 35,
    topics: &[
        "2.1 VMs from 1960s research to the 2000s' hypervisors (reading)",
        "2.2 a VM runs its own guest kernel, on a hypervisor: KVM, and the VMMs above it (hands-on)",
    ],
    sheet: include_str!("../../labs/09-hypervisors/README.md"),
    questions,
};

/// Interleaved pairs of whole commands: QEMU's start-up is ten times cvm's, so a few settle it.
const PAIRS: usize = 5;

fn io_exits(context: &mut Context) -> Result<Band> {
    let record = context.once("lab9-vm", |_| Setup::new(RuntimeKind::Vm, "hello", &[]).run_ok())?;
    let guest = record.guest.context("the VM's record has no guest statistics")?;
    Ok(Band::exact(guest.exits.get("io").copied().unwrap_or(0) as f64, 0.0))
}

/// The kinds of KVM the options name, in their order.
const KVM_KINDS: [&str; 3] = ["vmx", "svm", "pvm"];

fn kvm_kind(_: &mut Context) -> Result<Decision> {
    let kind = crate::host::HostInfo::current().virtualization.as_str();
    let index = KVM_KINDS.iter().position(|k| *k == kind).unwrap_or(KVM_KINDS.len());
    let other = (index + 1) % (KVM_KINDS.len() + 1);
    Ok(Decision {
        accepted: vec![index],
        preferred: index,
        ruled_out: Some(other),
        because: format!("this host's KVM: {kind}"),
    })
}

fn wall(record: &RunRecord) -> Option<f64> {
    record.command.as_ref().map(|command| command.wall_ns as f64)
}

fn cvm_or_qemu(context: &mut Context) -> Result<Decision> {
    context.once("lab9-vmms", |context| {
        let cvm = Setup::new(RuntimeKind::Vm, "hello", &[]).whole_command();
        let qemu = Setup::new(RuntimeKind::Qemu, "hello", &[]);
        // qemu/cvm: above 1 cvm's VMM is faster (option b), below 1 QEMU (option a).
        let decision = compare(&ratios(&paired(&cvm, &qemu, PAIRS, wall)?));
        context.note(format!("QEMU against cvm's VMM, whole commands: {}", decision.because));
        Ok(decision)
    })
}

fn check_side_by_side(task: &mut TaskCheck) -> Result<Grade> {
    let path = task.evidence("vmms").join("results.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Grade::Unanswered) };
    let results: serde_json::Value = serde_json::from_str(&text).context("evidence/vmms/results.json is not JSON")?;
    let runs = |runtime: &str| -> usize {
        results["cells"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|cell| cell["runtime"] == runtime && cell["workload"] == "hello")
            .flat_map(|cell| cell["records"].as_array().into_iter().flatten())
            .filter(|record| record["outcome"] == "exited" && record["exit_code"] == 0 && record["command"].is_object())
            .count()
    };
    let (vm, qemu) = (runs("vm"), runs("qemu"));
    if vm < 5 || qemu < 5 {
        return Ok(Grade::Wrong(format!(
            "the results hold {vm} whole-command runs of cvm's vm and {qemu} of qemu that ended well; 5 of each are asked"
        )));
    }
    Ok(Grade::Passed(format!("{vm} runs of cvm's VMM and {qemu} of QEMU, side by side")))
}

fn perform_side_by_side(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let out = task.evidence("vmms");
    let status = super::measure::cvm_command(&[
        "compare",
        "hello",
        "--runtimes",
        "vm,qemu",
        "--runs",
        "5",
        "--no-density",
        "--out",
    ])?
    .arg(&out)
    .stderr(std::process::Stdio::inherit())
    .status()?;
    anyhow::ensure!(status.success(), "cvm compare failed");
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "history",
            text: "When were virtual machines first researched, and when did they spread?",
            needs: &[],
            hint: "the lecture's 2.1; IBM's CP-40 ran on a System/360",
            answer: Answer::Choice {
                options: &[
                    "researched in the 1960s (IBM's CP-40 and CP-67), spread from the 2000s with hypervisors such as \
                     VMware, Xen and KVM",
                    "invented for the cloud in the 2010s",
                    "first built in the 1990s for Java's virtual machine",
                ],
                correct: Correct::Fixed(0),
            },
        },
        Question {
            id: "hypervisor_type",
            text: "A type 1 hypervisor runs on the hardware itself, a type 2 as an application on a host OS. KVM is a \
                   module of the Linux kernel; cvm and QEMU are ordinary processes that use it through /dev/kvm. \
                   Which description fits?",
            needs: &[],
            hint: "who runs directly on the hardware, and what do cvm and QEMU add?",
            answer: Answer::Choice {
                options: &[
                    "cvm is a type 1 hypervisor because it talks to the hardware",
                    "KVM makes the Linux kernel a (type 1) hypervisor; cvm and QEMU are the user-space VMMs that give \
                     each VM its memory, vCPUs and devices",
                    "QEMU with KVM emulates every guest instruction in software, like a type 2 hypervisor",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "io_exits",
            text: "Run `cvm run --runtime vm --json hello`. How many VM exits of kind io does `guest.exits` count?",
            needs: &[Need::Kvm],
            hint: "the io entry of guest.exits in the record",
            answer: Answer::Number { unit: "exits", measure: io_exits },
        },
        Question {
            id: "who_handles_io",
            text: "The guest writes to an I/O port (its console, its exit port). Who handles that exit?",
            needs: &[],
            hint: "where does KVM_RUN return to?",
            answer: Answer::Choice {
                options: &[
                    "the CPU, without leaving the guest",
                    "KVM inside the host kernel, which never tells user space",
                    "the VMM in user space: KVM_RUN returns with the port and the value, cvm acts on it (prints the \
                     output, ends the run) and enters the guest again",
                ],
                correct: Correct::Fixed(2),
            },
        },
        Question {
            id: "kvm_kind",
            text: "Which kind of KVM does this machine offer (`cvm doctor`, or host.virtualization in a record)?",
            needs: &[],
            hint: "cvm doctor's KVM line",
            answer: Answer::Choice {
                options: &["vmx: Intel VT-x", "svm: AMD-V", "pvm: KVM without hardware assist, in a VM itself", "none"],
                correct: Correct::Measured(kvm_kind),
            },
        },
        Question {
            id: "cvm_or_qemu",
            text: "Both VMMs boot the same guest kernel with the same program (`cvm run --runtime vm hello` and \
                   `cvm run --runtime qemu hello`). Which whole command is faster here?",
            needs: &[Need::Kvm, Need::Qemu],
            hint: "run both a few times, alternating, and compare whole commands (`cvm compare hello --runtimes \
                   vm,qemu`)",
            answer: Answer::Choice {
                options: &["QEMU", "cvm's VMM", "neither: the difference is within the run-to-run noise here"],
                correct: Correct::Measured(cvm_or_qemu),
            },
        },
        Question {
            id: "where_qemu_time_goes",
            text: "The guest is the same in both. Where does QEMU's extra time go?",
            needs: &[],
            hint: "what does a general-purpose machine emulator do before the first guest instruction?",
            answer: Answer::Words {
                groups: &[
                    &["start*", "initiali*", "setup", "set-up", "load*", "prepar*"],
                    &["qemu", "qemu's", "vmm", "emulator", "device*", "machine", "librar*"],
                ],
                example: "In QEMU's own start-up: it loads its libraries and builds a general machine model with its \
                          devices before the guest's first instruction; the guest kernel and program do the same \
                          work under both.",
            },
        },
        Question {
            id: "side_by_side",
            text: "Task: `cvm compare hello --runtimes vm,qemu --runs 5 --no-density --out evidence/vmms`. Write done \
                   here when it is written.",
            needs: &[Need::Kvm, Need::Qemu],
            hint: "run the command in the workspace folder, exactly as given",
            answer: Answer::Task { check: check_side_by_side, perform: perform_side_by_side },
        },
    ]
}

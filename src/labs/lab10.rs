//! Lab 10: Docker's architecture. Lecture 3.1 and 3.2 (daemon, client, API, registry and
//! objects), mapped to cvm's pieces, with the process tree of a cvm run against `docker run`'s
//! chain of client, daemon, containerd, shim and runc.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::measure::{cvm_command, Band, Context};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::RuntimeKind;

pub static LAB: Lab = Lab {
    number: 10,
    title: "Docker's architecture",
    minutes: 30,
    topics: &[
        "3.1 Docker, a platform to create and manage containers (reading)",
        "3.2 daemon, client, API, registry and objects, against cvm's pieces (hands-on and reasoning)",
    ],
    sheet: include_str!("../../labs/10-dockers-architecture/README.md"),
    questions,
};

/// Each process's parent and name, from /proc.
fn processes() -> HashMap<u32, (u32, String)> {
    let mut table = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return table };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let parent = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        table.insert(pid, (parent, stat[open + 1..close].to_string()));
    }
    table
}

/// How many processes below `root` the deepest one is (0: none), in `table`.
fn deepest_below(table: &HashMap<u32, (u32, String)>, root: u32) -> u64 {
    table
        .keys()
        .filter_map(|&pid| {
            let mut depth = 0;
            let mut at = pid;
            while at != root {
                at = table.get(&at)?.0;
                depth += 1;
                if at <= 1 || depth > 64 {
                    return None;
                }
            }
            Some(depth)
        })
        .max()
        .unwrap_or(0)
}

/// The processes from the `cvm run` command down to the program, both included: the command
/// is started here and its process tree watched until it ends.
fn chain(runtime: RuntimeKind) -> Result<u64> {
    let mut child = cvm_command(&["run", "--runtime", runtime.name(), "--timeout", "30", "idle", "1"])?
        .spawn()
        .context("starting cvm run")?;
    let started = Instant::now();
    let mut deepest = 0;
    let status = loop {
        deepest = deepest.max(deepest_below(&processes(), child.id()));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("cvm run --runtime {runtime} idle 1 did not end within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    anyhow::ensure!(status.success(), "cvm run --runtime {runtime} idle 1 failed");
    Ok(deepest + 1)
}

fn container_chain(context: &mut Context) -> Result<Band> {
    let length = context.once("lab10-container", |_| chain(RuntimeKind::Container))?;
    Ok(Band::exact(length as f64, 0.0))
}

fn vm_chain(context: &mut Context) -> Result<Band> {
    let length = context.once("lab10-vm", |_| chain(RuntimeKind::Vm))?;
    Ok(Band::exact(length as f64, 0.0))
}

/// The saved `ps -e -o pid,ppid,comm`: a cvm with the program as its child.
fn check_tree(task: &mut TaskCheck) -> Result<Grade> {
    let Ok(text) = std::fs::read_to_string(task.evidence("tree.txt")) else { return Ok(Grade::Unanswered) };
    let rows: Vec<(u32, u32, String)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let pid = fields.next()?.parse().ok()?;
            let parent = fields.next()?.parse().ok()?;
            let name = fields.collect::<Vec<_>>().join(" ");
            Some((pid, parent, name.trim_start_matches(['\\', '_', ' ', '|']).to_string()))
        })
        .collect();
    let found = rows.iter().find_map(|(pid, parent, name)| {
        let (cvm, _, _) = rows.iter().find(|(p, _, n)| p == parent && n == "cvm")?;
        name.starts_with("cvm-workload").then_some((*cvm, *pid))
    });
    match found {
        Some((cvm, program)) => {
            Ok(Grade::Passed(format!("cvm (pid {cvm}) and its child, the program (pid {program})")))
        }
        None if rows.is_empty() => Ok(Grade::Wrong("evidence/tree.txt has no `pid ppid comm` lines".into())),
        None => Ok(Grade::Wrong("evidence/tree.txt shows no cvm with the workload as its child".into())),
    }
}

fn perform_tree(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let mut child = cvm_command(&["run", "--runtime", "container", "--timeout", "30", "idle", "3"])?.spawn()?;
    let started = Instant::now();
    while deepest_below(&processes(), child.id()) == 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let ps = std::process::Command::new("ps").args(["-e", "-o", "pid,ppid,comm", "--forest"]).output()?;
    std::fs::write(task.evidence("tree.txt"), ps.stdout)?;
    child.wait()?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "container_chain",
            text: "Run `cvm run --runtime container idle 20 &`, then `ps -e -o pid,ppid,comm --forest`. How many \
                   processes lead from the cvm you started down to the program, both included?",
            needs: &[Need::Containers],
            hint: "find cvm in the tree and count down to cvm-workload",
            answer: Answer::Number { unit: "processes", measure: container_chain },
        },
        Question {
            id: "vm_chain",
            text: "And for `cvm run --runtime vm idle 20 &`?",
            needs: &[Need::Kvm],
            hint: "where does the program run, and what are the VM's vCPUs to the host?",
            answer: Answer::Number { unit: "processes", measure: vm_chain },
        },
        Question {
            id: "docker_chain",
            text: "`docker run` on a Linux host: which chain of processes brings the program up?",
            needs: &[],
            hint: "the sheet's background: the client talks to a daemon, which hands the container on twice",
            answer: Answer::Choice {
                options: &[
                    "docker (the client) starts the program itself",
                    "docker (the client) asks dockerd over its API; dockerd asks containerd; containerd starts a shim, \
                     which runs runc; runc sets the container up, starts the program and exits, the shim stays its \
                     parent",
                    "dockerd starts at boot one process per image",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "cvm_client_daemon",
            text: "Docker's client talks to its daemon over a REST API on a socket. How does the cvm command you type \
                   reach cvm's runtimes?",
            needs: &[],
            hint: "look at the process tree of step 1 again: is there a cvm process that was there before you typed?",
            answer: Answer::Choice {
                options: &[
                    "over a socket to a cvm daemon, the same way",
                    "it is the runtime itself: the command does the work in its own process and waits for the program, \
                     as podman and runc run without a daemon",
                    "over SSH",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "objects",
            text: "Docker's objects are images, containers, networks and volumes. Which line maps them to cvm?",
            needs: &[],
            hint: "`cvm --help` lists the commands; lab 7 and 8 used two of the objects",
            answer: Answer::Choice {
                options: &[
                    "images: cvm image (an OCI store), containers: cvm create/start/ps/diff/rm, the registry: a folder \
                     for push and pull; networks: each container only its own loopback; volumes: none yet",
                    "cvm has containers only; images are Docker's",
                    "cvm's images are virtual machine disks",
                ],
                correct: Correct::Fixed(0),
            },
        },
        Question {
            id: "daemon_tradeoff",
            text: "What does a daemon buy Docker, and what does it cost?",
            needs: &[],
            hint: "think of restarting containers after a crash or a reboot, and of one long-running process as root",
            answer: Answer::Words {
                groups: &[
                    &["restart*", "background", "api", "remote", "keep*", "manag*", "monitor*", "always", "detach*"],
                    &["root", "privileg*", "crash*", "single", "attack*", "memory", "fail*", "resident", "dies"],
                ],
                example: "It keeps containers managed in the background (restarts them, serves an API to local and \
                          remote clients), but it is one long-running process with root privileges: a single point of \
                          failure and of attack, and memory used all the time.",
            },
        },
        Question {
            id: "tree",
            text: "Task: while a container runs (`cvm run --runtime container idle 20 &`), save \
                   `ps -e -o pid,ppid,comm --forest` to evidence/tree.txt. Write done here.",
            needs: &[Need::Containers],
            hint: "take the snapshot while the container still runs, with exactly those columns",
            answer: Answer::Task { check: check_tree, perform: perform_tree },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_descendant_is_counted() {
        let table: HashMap<u32, (u32, String)> = [
            (100, (1, "cvm".to_string())),
            (101, (100, "cvm".to_string())),
            (102, (101, "cvm-workload".to_string())),
            (200, (1, "other".to_string())),
        ]
        .into_iter()
        .collect();
        assert_eq!(deepest_below(&table, 100), 2);
        assert_eq!(deepest_below(&table, 102), 0);
        assert_eq!(deepest_below(&table, 200), 0);
    }
}

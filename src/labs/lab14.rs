//! Lab 14: networks and volumes. Lecture 1.4 (a container is isolated from the host's other
//! resources) and 3.2 (Docker's objects: images, containers, networks, volumes): what a
//! container's network namespace holds (only `lo`) and what that means for a server in it, and
//! a host folder mounted as a volume, outside the container's layer and outliving it.
//!
//! The student works in a store of their own in the workspace (`CVM_STORE=$PWD/store`); what
//! the checker observes itself it does in a scratch store of its own.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::image_steps::{cvm_in, Scratch};
use super::measure::{Band, Context, Decision};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::RuntimeKind;

pub static LAB: Lab = Lab {
    number: 14,
    title: "Networks and volumes",
    minutes: 35,
    topics: &[
        "1.4 a container is isolated from the host's other resources: its network (hands-on)",
        "3.2 Docker's objects: networks and volumes (hands-on and reasoning)",
    ],
    sheet: include_str!("../../labs/14-networks-and-volumes/README.md"),
    questions,
};

const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "notes:1.0";
const CONTAINER: &str = "notes";
/// Where the volume is mounted in the container, and the file its program appends to.
const MOUNT: &str = "/notes";
const WRITE: &str = "hostname >> /notes/written-by";
/// What the test server answers.
const GREETING: &str = "hello-from-the-container";

fn busybox_in_container(store: &Path, command: &str) -> Result<String> {
    cvm_in(store, &["run", "--runtime", "container", "--binary", BUSYBOX, "sh", "-c", command])
}

/// Network interfaces the program sees, one line each (`ip -o link`).
fn container_interfaces(context: &mut Context) -> Result<Band> {
    context.once("lab14-interfaces", |context| {
        let scratch = Scratch::new("lab14-net")?;
        let links =
            cvm_in(scratch.path(), &["run", "--runtime", "container", "--binary", BUSYBOX, "ip", "-o", "link"])?;
        let count = links.lines().filter(|line| !line.trim().is_empty()).count();
        context.note(format!("ip -o link in a container: {count} interface(s)"));
        Ok(Band::exact(count as f64, 0.0))
    })
}

/// The host's interfaces, from /sys/class/net (what `ip -o link` lists on the host).
fn host_interfaces(context: &mut Context) -> Result<Band> {
    let count = std::fs::read_dir("/sys/class/net").context("reading /sys/class/net")?.count();
    context.note(format!("the host has {count} network interface(s)"));
    Ok(Band::exact(count as f64, 0.0))
}

/// Starts a persistent server in a container, tries to reach it from the host while it runs,
/// then lets a client in the same container connect: (host reached it, inside reached it).
fn reach_server() -> Result<(bool, bool)> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
    let scratch = Scratch::new("lab14-server")?;
    let command = format!("nc -ll -p {port} -e echo {GREETING} & sleep 2; nc -w 2 127.0.0.1 {port}");
    let store = scratch.path().to_path_buf();
    let inside = std::thread::scope(|scope| {
        let server = scope.spawn(|| busybox_in_container(&store, &command));
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        let mut host = false;
        // While the server listens in the container (from its start to 2 s), the host tries.
        std::thread::sleep(Duration::from_millis(500));
        while started.elapsed() < Duration::from_millis(1500) && !host {
            host = TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok();
            std::thread::sleep(Duration::from_millis(100));
        }
        let output = server.join().map_err(|_| anyhow::anyhow!("the container run panicked"))?;
        Ok::<_, anyhow::Error>((host, output?.contains(GREETING)))
    })?;
    Ok(inside)
}

fn reach_from_host(context: &mut Context) -> Result<Decision> {
    context.once("lab14-reach", |context| {
        let (host, inside) = reach_server()?;
        context.note(format!("a server in a container: reached from the host {host}, from inside {inside}"));
        let (answer, because) = match (host, inside) {
            (false, true) => {
                (1, "the host's connections were refused while a client in the container got the greeting")
            }
            (true, _) => (0, "the host reached the container's server"),
            (false, false) => bail!("the server in the container answered nobody, not even inside: cannot tell"),
        };
        Ok(Decision { accepted: vec![answer], preferred: answer, ruled_out: Some(1 - answer), because: because.into() })
    })
}

/// What `cvm diff` lists after a created container wrote into its volume, in a scratch store:
/// 0 the file, 1 only the mount point folder, 2 nothing.
fn diff_with_volume(context: &mut Context) -> Result<Decision> {
    context.once("lab14-diff", |context| {
        let scratch = Scratch::new("lab14-volume")?;
        let store = scratch.path();
        let shared = store.join("shared");
        std::fs::create_dir_all(&shared)?;
        cvm_in(store, &["image", "build", "-t", IMAGE, "--binary", BUSYBOX])?;
        let volume = format!("{}:{MOUNT}", shared.display());
        cvm_in(store, &["create", "--name", CONTAINER, "-v", &volume, "--image", IMAGE, "sh", "-c", WRITE])?;
        cvm_in(store, &["start", CONTAINER])?;
        let diff = cvm_in(store, &["diff", CONTAINER])?;
        cvm_in(store, &["rm", CONTAINER])?;
        if !shared.join("written-by").is_file() {
            bail!("the container's write did not reach the volume's host folder");
        }
        let lines: Vec<&str> = diff.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let answer = if lines.iter().any(|l| l.contains("written-by")) {
            0
        } else if lines.is_empty() {
            2
        } else {
            1
        };
        context.note(format!("cvm diff after writing into a volume: {lines:?}"));
        Ok(Decision {
            accepted: vec![answer],
            preferred: answer,
            ruled_out: Some((answer + 1) % 3),
            because: format!("cvm diff listed {lines:?}"),
        })
    })
}

fn check_inside(task: &mut TaskCheck) -> Result<Grade> {
    let Some(record) = task.saved_record("inside.json")? else { return Ok(Grade::Unanswered) };
    if record.runtime != RuntimeKind::Container || !record.succeeded() {
        return Ok(Grade::Wrong("the saved record must be a successful run in the container runtime".into()));
    }
    if !record.stdout.contains(GREETING) {
        return Ok(Grade::Wrong(format!("the program's output in the record does not hold {GREETING}")));
    }
    Ok(Grade::Passed("a client in the container reached the server in the same container over 127.0.0.1".into()))
}

fn perform_inside(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let command = format!("nc -l -p 8080 -e echo {GREETING} & sleep 0.5; nc 127.0.0.1 8080");
    let args = ["run", "--runtime", "container", "--json", "--binary", BUSYBOX, "sh", "-c", &command];
    task.save_cvm_output("inside.json", &args)?;
    Ok(Some("done".into()))
}

fn check_volume(task: &mut TaskCheck) -> Result<Grade> {
    let Some(record) = task.saved_record("start.json")? else { return Ok(Grade::Unanswered) };
    let shared = task.path("shared");
    let Ok(written) = std::fs::read_to_string(shared.join("written-by")) else {
        return Ok(Grade::Wrong("shared/written-by is missing: the container's write never reached the host".into()));
    };
    let Some(info) = record.container.as_ref().filter(|_| record.runtime == RuntimeKind::Container) else {
        return Ok(Grade::Wrong("evidence/start.json is not a container's run record (`cvm start --json`)".into()));
    };
    let wanted = format!("{}:{MOUNT}", std::fs::canonicalize(&shared)?.display());
    if !info.volumes.contains(&wanted) {
        return Ok(Grade::Wrong(format!("the saved start did not mount this workspace's shared/ at {MOUNT}")));
    }
    if !written.lines().any(|line| line.trim() == info.hostname) {
        return Ok(Grade::Wrong("shared/written-by does not hold the host name of the saved start".into()));
    }
    if task.path("store").join("containers").join(CONTAINER).exists() {
        return Ok(Grade::Wrong(format!(
            "the container {CONTAINER} still exists: remove it with `cvm rm {CONTAINER}`"
        )));
    }
    Ok(Grade::Passed(format!(
        "{} wrote shared/written-by through the volume, and the file is still there after `cvm rm`",
        info.hostname
    )))
}

fn perform_volume(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let store = task.path("store");
    let shared = task.path("shared");
    std::fs::create_dir_all(&shared)?;
    cvm_in(&store, &["image", "build", "-t", IMAGE, "--binary", BUSYBOX])?;
    let volume = format!("{}:{MOUNT}", shared.display());
    cvm_in(&store, &["create", "--name", CONTAINER, "-v", &volume, "--image", IMAGE, "sh", "-c", WRITE])?;
    std::fs::write(task.evidence("start.json"), cvm_in(&store, &["start", "--json", CONTAINER])?)?;
    cvm_in(&store, &["rm", CONTAINER])?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    const NEEDS: &[Need] = &[Need::Containers, Need::Busybox];
    vec![
        Question {
            id: "container_interfaces",
            text: "`cvm run --runtime container --binary /bin/busybox ip -o link`: how many network interfaces does \
                   the program see?",
            needs: NEEDS,
            hint: "one line per interface",
            answer: Answer::Number { unit: "interfaces", measure: container_interfaces },
        },
        Question {
            id: "host_interfaces",
            text: "And the host (`busybox ip -o link`, or `cvm run --runtime process --binary /bin/busybox ip -o \
                   link`)?",
            needs: &[],
            hint: "count the lines; the plain process shares the host's network",
            answer: Answer::Number { unit: "interfaces", measure: host_interfaces },
        },
        Question {
            id: "inside_connection",
            text: "Task: a server and a client in one container: `cvm run --runtime container --json --binary \
                   /bin/busybox sh -c 'nc -l -p 8080 -e echo hello-from-the-container & sleep 0.5; nc 127.0.0.1 \
                   8080' > evidence/inside.json`. Write done here.",
            needs: NEEDS,
            hint: "run it in the workspace folder exactly as given; the record keeps the program's output",
            answer: Answer::Task { check: check_inside, perform: perform_inside },
        },
        Question {
            id: "reach_from_host",
            text: "Step 3: while a server listens on port 8080 in a container, `busybox nc 127.0.0.1 8080` on the \
                   host. What happens?",
            needs: NEEDS,
            hint: "whose 127.0.0.1 is it? `ip -o link` in the container tells what it has",
            answer: Answer::Choice {
                options: &[
                    "the host connects and gets the greeting: 127.0.0.1 is the same everywhere",
                    "the connection is refused: the container's lo is its own, in its own network namespace, with \
                     no link to the host",
                    "it connects only when cvm runs as root",
                ],
                correct: Correct::Measured(reach_from_host),
            },
        },
        Question {
            id: "publish",
            text: "Docker can make such a server reachable (`docker run -p 8080:8080`). What does it add to the \
                   container for that, in a sentence?",
            needs: &[],
            hint: "the container needs a way out of its namespace, and the host a way in to the port",
            answer: Answer::Words {
                groups: &[
                    &["veth", "bridge", "virtual ethernet", "interface", "docker0"],
                    &["port", "publish*", "forward*", "nat", "iptables", "-p"],
                ],
                example: "A veth pair joining the container's network namespace to a bridge (docker0) on the host, \
                          and a published port: NAT rules forwarding the host's port 8080 to the container's.",
            },
        },
        Question {
            id: "volume_outlives_rm",
            text: "Task (steps 5-7): with CVM_STORE=$PWD/store, create the container notes with the volume \
                   \"$PWD/shared:/notes\", save `cvm start --json notes` to evidence/start.json, then `cvm rm \
                   notes`. Write done here.",
            needs: NEEDS,
            hint: "shared/written-by must hold the host name of the saved start, and the container must be gone",
            answer: Answer::Task { check: check_volume, perform: perform_volume },
        },
        Question {
            id: "diff_with_volume",
            text: "Before removing notes, what did `cvm diff notes` list?",
            needs: NEEDS,
            hint: "run it after the start; where did the write go?",
            answer: Answer::Choice {
                options: &[
                    "the file /notes/written-by: the container wrote it",
                    "only the folder /notes, the mount point cvm made in the container's layer: the file went to \
                     the host folder",
                    "nothing at all",
                ],
                correct: Correct::Measured(diff_with_volume),
            },
        },
        Question {
            id: "read_only_volume",
            text: "Run `cvm run --image notes:1.0 -v \"$PWD/shared:/notes:ro\" sh -c 'date > /notes/x'`. What does \
                   the shell say, and why?",
            needs: &[],
            hint: "read the error; what does :ro make of the mount?",
            answer: Answer::Words {
                groups: &[&["read-only", "read only", "readonly", "erofs"]],
                example: "Read-only file system: with :ro cvm remounts the volume read-only, so the kernel refuses \
                          every write there (EROFS).",
            },
        },
        Question {
            id: "why_volumes",
            text: "Why keep a database's files in a volume rather than in its container's own layer?",
            needs: &[],
            hint: "what happens to each when the container is removed and made again from a newer image?",
            answer: Answer::Words {
                groups: &[
                    &["rm", "remov*", "delet*", "replac*", "recreat*", "upgrad*", "new image", "newer image"],
                    &["keep*", "kept", "surviv*", "stay*", "outliv*", "persist*", "remain*", "lost", "lose*"],
                ],
                example: "The container's layer goes with `cvm rm` (and a new container of a newer image starts \
                          from the image again), while the volume's files stay on the host and are mounted into \
                          the next container: the data outlives the container.",
            },
        },
    ]
}

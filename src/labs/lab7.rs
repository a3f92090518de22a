//! Lab 7: the image and the container. Lecture 3.3 (an image is a read-only file system that
//! containers are created from) and 3.4 (a container's state changes; changing or deleting it
//! leaves the image as it was), with cvm's OCI images and containers that keep their state.
//!
//! The student works in a store of their own inside the workspace (`CVM_STORE=$PWD/store`), so
//! the checker can see what they built and changed; what it measures itself it does in a
//! scratch store of its own.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::image_steps::{cvm_in, digest_in, inspect_in, layers_in, short, Scratch};
use super::measure::{Band, Context};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;

pub static LAB: Lab = Lab {
    number: 7,
    title: "Image and container",
    minutes: 35,
    topics: &[
        "3.3 an image is a read-only file system; containers are created from it (hands-on)",
        "3.4 a container's state changes; changing or removing it leaves the image as it was (hands-on)",
    ],
    sheet: include_str!("../../labs/07-image-and-container/README.md"),
    questions,
};

/// What every step runs: busybox's `sh`, the image's only program.
const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "greeter:1.0";
const COMMITTED: &str = "greeter:2.0";
const CONTAINER: &str = "visits";
const VISIT: &str = "echo visit >> /log; wc -l < /log";

fn build_image(store: &Path) -> Result<()> {
    cvm_in(store, &["image", "build", "-t", IMAGE, "--binary", BUSYBOX, "--cmd", "echo", "--cmd", "hello"]).map(drop)
}

/// The lab's experiment in a scratch store: the digest of the image's layer (the same for the
/// same file, wherever and whenever it is built; the image's own digest also covers its
/// creation time), what two starts of a created container print, what a fresh container
/// prints, and the container's diff.
#[derive(Clone)]
struct Observed {
    layer: String,
    second_start: u64,
    fresh: u64,
    diff: String,
}

fn observe(context: &mut Context) -> Result<Observed> {
    context.once("lab7", |context| {
        let scratch = Scratch::new("lab7-store")?;
        let store = scratch.path();
        build_image(store)?;
        let layer = inspect_in(store, IMAGE)?["layers"][0]["digest"]
            .as_str()
            .map(str::to_string)
            .context("`cvm image inspect` shows no layer")?;
        cvm_in(store, &["create", "--name", CONTAINER, "--image", IMAGE, "sh", "-c", VISIT])?;
        cvm_in(store, &["start", CONTAINER])?;
        let second_start = count(&cvm_in(store, &["start", CONTAINER])?)?;
        let fresh = count(&cvm_in(store, &["run", "--image", IMAGE, "sh", "-c", VISIT])?)?;
        let diff = cvm_in(store, &["diff", CONTAINER])?.trim().to_string();
        cvm_in(store, &["rm", CONTAINER])?;
        context.note(format!("{IMAGE}'s layer {layer}; second start {second_start}, fresh {fresh}; diff {diff}"));
        Ok(Observed { layer, second_start, fresh, diff })
    })
}

fn count(output: &str) -> Result<u64> {
    output.trim().parse().with_context(|| format!("expected a line count, got '{}'", output.trim()))
}

fn layer_digest(context: &mut Context) -> Result<String> {
    Ok(observe(context)?.layer)
}

fn second_start(context: &mut Context) -> Result<Band> {
    Ok(Band::exact(observe(context)?.second_start as f64, 0.0))
}

fn fresh_container(context: &mut Context) -> Result<Band> {
    Ok(Band::exact(observe(context)?.fresh as f64, 0.0))
}

fn container_diff(context: &mut Context) -> Result<String> {
    Ok(observe(context)?.diff)
}

/// The digest a saved `cvm image inspect` shows.
fn saved_digest(task: &TaskCheck, name: &str) -> Result<Option<String>> {
    let Ok(text) = std::fs::read_to_string(task.evidence(name)) else { return Ok(None) };
    let inspect: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("evidence/{name} is not what `cvm image inspect` prints"))?;
    Ok(inspect["digest"].as_str().map(str::to_string))
}

fn check_kept_state(task: &mut TaskCheck) -> Result<Grade> {
    let (Some(before), Some(after)) =
        (saved_digest(task, "inspect-before.json")?, saved_digest(task, "inspect-after.json")?)
    else {
        return Ok(Grade::Unanswered);
    };
    let store = task.path("store");
    let now = digest_in(&store, IMAGE).context("the workspace's store has no greeter:1.0 (CVM_STORE=$PWD/store?)")?;
    if before != now || after != now {
        return Ok(Grade::Wrong(format!("the saved digests are not those of {IMAGE} in the workspace's store")));
    }
    let log = store.join("containers").join(CONTAINER).join("upper").join("log");
    let visits = std::fs::read_to_string(&log).map(|text| text.lines().count()).unwrap_or(0);
    if visits < 2 {
        return Ok(Grade::Wrong(format!(
            "the container {CONTAINER} in the workspace's store has not kept two visits in /log"
        )));
    }
    Ok(Grade::Passed(format!("{visits} visits kept in {CONTAINER}'s own layer; {IMAGE} still {}", short(&now))))
}

fn perform_kept_state(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let store = task.path("store");
    build_image(&store)?;
    std::fs::write(task.evidence("inspect-before.json"), cvm_in(&store, &["image", "inspect", IMAGE])?)?;
    cvm_in(&store, &["create", "--name", CONTAINER, "--image", IMAGE, "sh", "-c", VISIT])?;
    cvm_in(&store, &["start", CONTAINER])?;
    cvm_in(&store, &["start", CONTAINER])?;
    std::fs::write(task.evidence("inspect-after.json"), cvm_in(&store, &["image", "inspect", IMAGE])?)?;
    Ok(Some("done".into()))
}

fn check_commit(task: &mut TaskCheck) -> Result<Grade> {
    let Ok(saved) = std::fs::read_to_string(task.evidence("committed.txt")) else { return Ok(Grade::Unanswered) };
    let store = task.path("store");
    let (Ok(base), Ok(committed)) = (layers_in(&store, IMAGE), layers_in(&store, COMMITTED)) else {
        return Ok(Grade::Wrong(format!("the workspace's store lacks {IMAGE} or {COMMITTED}")));
    };
    if committed != base + 1 {
        return Ok(Grade::Wrong(format!("{COMMITTED} has {committed} layers, {IMAGE} {base}: a commit adds one")));
    }
    let log = cvm_in(&store, &["run", "--image", COMMITTED, "cat", "/log"])?;
    if log.trim().is_empty() || saved.trim() != log.trim() {
        return Ok(Grade::Wrong(format!("evidence/committed.txt is not what {COMMITTED}'s /log holds")));
    }
    Ok(Grade::Passed(format!("{COMMITTED}: {committed} layers, the container's /log in the top one")))
}

fn perform_commit(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let store = task.path("store");
    cvm_in(&store, &["commit", CONTAINER, COMMITTED])?;
    std::fs::write(task.evidence("committed.txt"), cvm_in(&store, &["run", "--image", COMMITTED, "cat", "/log"])?)?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    const NEEDS: &[Need] = &[Need::Containers, Need::Busybox];
    vec![
        Question {
            id: "layer_digest",
            text: "Build the image (step 1) and run `cvm image inspect greeter:1.0`. What is the digest of its \
                   one layer?",
            needs: &[Need::Busybox],
            hint: "the \"digest\" of the entry in \"layers\", sha256:..., not the image's own",
            answer: Answer::Text { measure: layer_digest },
        },
        Question {
            id: "built_again",
            text: "Build the same image again in another store (`CVM_STORE=/tmp/other cvm image build ...`, same \
                   arguments) a minute later and compare. Which digest is the same?",
            needs: &[],
            hint: "a layer is named by the digest of its bytes; what else does the image's config hold?",
            answer: Answer::Choice {
                options: &[
                    "both: the same program makes the same image",
                    "the layer's; the image's changes, because its config records when it was built",
                    "neither: every build is new",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "second_start",
            text: "Create the container `visits` (step 2) and start it twice. What does the second start print?",
            needs: NEEDS,
            hint: "run `cvm start visits` twice and read the second number",
            answer: Answer::Number { unit: "lines", measure: second_start },
        },
        Question {
            id: "fresh_container",
            text: "Now run the same command in a fresh container of the image: \
                   `cvm run --image greeter:1.0 sh -c 'echo visit >> /log; wc -l < /log'`. What does it print?",
            needs: NEEDS,
            hint: "a fresh container starts from the image, not from visits",
            answer: Answer::Number { unit: "lines", measure: fresh_container },
        },
        Question {
            id: "container_diff",
            text: "What does `cvm diff visits` print?",
            needs: NEEDS,
            hint: "one line: a letter and a path",
            answer: Answer::Text { measure: container_diff },
        },
        Question {
            id: "image_after_starts",
            text: "After the two starts, what does `cvm image inspect greeter:1.0` show?",
            needs: &[],
            hint: "compare the digest with the one you saved before creating the container",
            answer: Answer::Choice {
                options: &[
                    "a new digest: the container wrote /log into the image",
                    "the same digest: the write went to the container's own layer",
                    "no digest: the image is in use",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "why_image_unchanged",
            text: "Why can many containers be created from one image, each with its own changes, while the image \
                   never changes?",
            needs: &[],
            hint: "what is each container's writable part, and what are the image's layers to it?",
            answer: Answer::Words {
                groups: &[
                    &["layer*", "upper", "overlay*", "copy-on-write"],
                    &["read-only", "readonly", "lower", "never written", "not written", "immutable"],
                ],
                example: "Each container gets its own writable upper layer on top of the image's layers, which \
                          overlayfs stacks as read-only lower layers: writes go to the container's layer only.",
            },
        },
        Question {
            id: "kept_state",
            text: "Task: with CVM_STORE=$PWD/store, save `cvm image inspect greeter:1.0` to \
                   evidence/inspect-before.json before step 2 and to evidence/inspect-after.json after the two \
                   starts. Write done here.",
            needs: NEEDS,
            hint: "both files in evidence/, made with the store in this workspace, the container visits still there",
            answer: Answer::Task { check: check_kept_state, perform: perform_kept_state },
        },
        Question {
            id: "committed",
            text: "Task: turn the container's change into a new image, `cvm commit visits greeter:2.0`, then save \
                   `cvm run --image greeter:2.0 cat /log` to evidence/committed.txt. Write done here.",
            needs: NEEDS,
            hint: "commit the container visits of this workspace's store, then run the new image",
            answer: Answer::Task { check: check_commit, perform: perform_commit },
        },
    ]
}

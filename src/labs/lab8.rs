//! Lab 8: build once, ship, run. Lecture 3.1 (an image built on server A deploys on server B),
//! 3.2 (the registry stores images) and 1.1 (a container packages the application's code with
//! its libraries), with two cvm stores standing for two servers and a registry folder between
//! them, and a dynamically linked program that runs only once its loader and libraries are
//! layers of its image.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::image_steps::{cvm_in, cvm_said, digest_in, layers_in, ship, short, Scratch};
use super::measure::{Band, Context};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::record::RunRecord;

pub static LAB: Lab = Lab {
    number: 8,
    title: "Build once, ship, run",
    minutes: 35,
    topics: &[
        "1.1 a container packages the code with its libraries (hands-on)",
        "3.1 an image built on server A deploys on server B (hands-on)",
        "3.2 a registry stores images (hands-on and reasoning)",
    ],
    sheet: include_str!("../../labs/08-build-ship-run/README.md"),
    questions,
};

const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "shipped:1.0";
const GREETING: &str = "built on server A";
/// The dynamically linked program of the second half (glibc distributions).
const DYNAMIC: &str = "/bin/true";

fn build_shipped(store: &Path) -> Result<()> {
    cvm_in(store, &["image", "build", "-t", IMAGE, "--binary", BUSYBOX, "--cmd", "echo", "--cmd", GREETING]).map(drop)
}

/// How many blobs a push said it copied ("N blobs copied").
fn blobs_copied(said: &str) -> Result<u64> {
    said.split(':')
        .next_back()
        .and_then(|tail| tail.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("a push said no count of blobs copied: '{}'", said.trim()))
}

/// The checker's own two pushes of the same image to a fresh registry.
#[derive(Clone)]
struct Pushes {
    first: u64,
    second: u64,
}

fn pushes(context: &mut Context) -> Result<Pushes> {
    context.once("lab8-pushes", |context| {
        let scratch = Scratch::new("lab8")?;
        let (store, registry) = (scratch.path().join("server-a"), scratch.path().join("registry"));
        build_shipped(&store)?;
        let registry = registry.to_str().context("a registry path that is not UTF-8")?;
        let push = || cvm_said(&store, &["image", "push", IMAGE, registry]).and_then(|(_, said)| blobs_copied(&said));
        let first = push()?;
        let second = push()?;
        context.note(format!("first push copied {first} blobs, the second {second}"));
        Ok(Pushes { first, second })
    })
}

fn first_push(context: &mut Context) -> Result<Band> {
    Ok(Band::exact(pushes(context)?.first as f64, 0.0))
}

fn second_push(context: &mut Context) -> Result<Band> {
    Ok(Band::exact(pushes(context)?.second as f64, 0.0))
}

/// The loader the dynamic program names (PT_INTERP).
fn loader(_: &mut Context) -> Result<String> {
    let bytes = crate::program::read_regular_file(Path::new(DYNAMIC), 64 << 20)?;
    crate::elf::ElfFile::parse_any(&bytes)?.interpreter.context("/bin/true is not dynamically linked here")
}

fn check_shipped(task: &mut TaskCheck) -> Result<Grade> {
    let Ok(output) = std::fs::read_to_string(task.evidence("server-b.txt")) else { return Ok(Grade::Unanswered) };
    let (a, b) = (task.path("server-a"), task.path("server-b"));
    let (Ok(on_a), Ok(on_b)) = (digest_in(&a, IMAGE), digest_in(&b, IMAGE)) else {
        return Ok(Grade::Wrong(format!("{IMAGE} is not in both server-a/ and server-b/ of this workspace")));
    };
    if on_a != on_b {
        return Ok(Grade::Wrong(format!("server-b's {IMAGE} is not server-a's (another build, not a pull?)")));
    }
    let registry = task.path("registry").join("index.json");
    let index = std::fs::read_to_string(&registry).unwrap_or_default();
    if !index.contains(&on_a) {
        return Ok(Grade::Wrong("registry/ of this workspace does not hold the image".into()));
    }
    if output.trim() != GREETING {
        return Ok(Grade::Wrong("evidence/server-b.txt is not what the image prints".into()));
    }
    Ok(Grade::Passed(format!("{IMAGE} {} on both servers, shipped through registry/", short(&on_a))))
}

fn perform_shipped(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let (a, b) = (task.path("server-a"), task.path("server-b"));
    build_shipped(&a)?;
    ship(&a, &task.path("registry"), &b, IMAGE)?;
    std::fs::write(task.evidence("server-b.txt"), cvm_in(&b, &["run", "--image", IMAGE])?)?;
    Ok(Some("done".into()))
}

fn check_libraries(task: &mut TaskCheck) -> Result<Grade> {
    let Ok(text) = std::fs::read_to_string(task.evidence("with-libraries.json")) else {
        return Ok(Grade::Unanswered);
    };
    let record: RunRecord =
        serde_json::from_str(text.trim()).context("evidence/with-libraries.json is not one cvm run record")?;
    if !record.succeeded() || record.exit_code != 0 {
        return Ok(Grade::Wrong("the saved run did not end with exit status 0".into()));
    }
    let a = task.path("server-a");
    let (Ok(bare), Ok(full)) = (layers_in(&a, "true-only"), layers_in(&a, "true-with-libs")) else {
        return Ok(Grade::Wrong("server-a/ lacks true-only or true-with-libs".into()));
    };
    if record.workload != "true-with-libs:latest" || full < bare + 2 {
        return Ok(Grade::Wrong(format!(
            "the saved run is not of true-with-libs built --from true-only with the loader and a library added \
             ({full} layers against {bare})"
        )));
    }
    Ok(Grade::Passed(format!("true-with-libs ran: {full} layers, the program's {bare} and what it loads")))
}

fn perform_libraries(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let a = task.path("server-a");
    cvm_in(&a, &["image", "build", "-t", "true-only", "--binary", DYNAMIC])?;
    let mut args: Vec<String> =
        ["image", "build", "-t", "true-with-libs", "--from", "true-only"].map(String::from).into();
    for library in needed_files(DYNAMIC)? {
        let real = std::fs::canonicalize(&library).with_context(|| format!("resolving {library}"))?;
        args.extend(["--add".into(), format!("{}:{library}", real.display())]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cvm_in(&a, &args)?;
    std::fs::write(task.evidence("with-libraries.json"), cvm_in(&a, &["run", "--image", "true-with-libs", "--json"])?)?;
    Ok(Some("done".into()))
}

/// The loader and the libraries `ldd` lists for `program` (the key's way to find them; the
/// sheet asks the student to use `ldd` too).
fn needed_files(program: &str) -> Result<Vec<String>> {
    let out = std::process::Command::new("ldd").arg(program).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let files: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect();
    anyhow::ensure!(!files.is_empty(), "ldd lists nothing for {program}");
    Ok(files)
}

fn questions() -> Vec<Question> {
    const SHIP: &[Need] = &[Need::Containers, Need::Busybox];
    vec![
        Question {
            id: "first_push",
            text: "Push the image to the registry folder (step 2). How many blobs did the push copy?",
            needs: &[Need::Busybox],
            hint: "the number in \"N blobs copied\" of the first push",
            answer: Answer::Number { unit: "blobs", measure: first_push },
        },
        Question {
            id: "second_push",
            text: "Push it again. How many blobs does the second push copy?",
            needs: &[Need::Busybox],
            hint: "push the same image a second time and read the count again",
            answer: Answer::Number { unit: "blobs", measure: second_push },
        },
        Question {
            id: "registry_holds",
            text: "What does the registry folder hold after the push?",
            needs: &[],
            hint: "look into registry/ and registry/blobs/sha256/",
            answer: Answer::Choice {
                options: &[
                    "a copy of server A's containers and their state",
                    "the image's manifest, config and layer, each a file named by its digest, and an index naming \
                     the image",
                    "the program file only",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "shipped",
            text: "Task: pull the image into server B's store and run it there (steps 3 and 4), saving its output \
                   to evidence/server-b.txt. Write done here.",
            needs: SHIP,
            hint: "server-a/, registry/ and server-b/ all in this workspace; pull, do not build again on server B",
            answer: Answer::Task { check: check_shipped, perform: perform_shipped },
        },
        Question {
            id: "missing_loader",
            text:
                "Build an image from the dynamically linked /bin/true alone and run it (step 5). Which file does cvm \
                   say is missing from the image?",
            needs: &[Need::DynamicProgram],
            hint: "the path in the error line; `file /bin/true` names it too",
            answer: Answer::Text { measure: loader },
        },
        Question {
            id: "with_libraries",
            text:
                "Task: build true-with-libs --from true-only with the loader and the libraries `ldd /bin/true` lists \
                   added as layers, run it with --json and save the record to evidence/with-libraries.json. Write \
                   done here.",
            needs: &[Need::Containers, Need::DynamicProgram],
            hint: "one --add HOST_PATH:IMAGE_PATH per file ldd lists (follow symbolic links to the real file)",
            answer: Answer::Task { check: check_libraries, perform: perform_libraries },
        },
        Question {
            id: "why_libraries",
            text: "Why does an image carry its program's libraries instead of using the server's?",
            needs: &[],
            hint: "what would server B need to have installed otherwise, and in which version?",
            answer: Answer::Words {
                groups: &[
                    &["librar*", "loader", "libc", "dependenc*"],
                    &["server*", "host*", "machine*", "anywhere", "portab*", "every", "same", "version*"],
                ],
                example: "So that it runs the same on every server: the program finds the loader and libraries it \
                          was built against inside its image, whatever (and whichever version) the host has \
                          installed.",
            },
        },
        Question {
            id: "same_everywhere",
            text: "Server B pulled the image; server A built it. Why do both run it with the same result?",
            needs: &[],
            hint: "compare the digests on both servers",
            answer: Answer::Choice {
                options: &[
                    "server B rebuilt the image from the same command",
                    "both stores hold the same bytes: every blob was checked against its digest when pulled",
                    "the registry runs the image for both",
                ],
                correct: Correct::Fixed(1),
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_of_a_push() {
        let said = "cvm: pushed shipped:1.0 to /tmp/r: 3 blobs copied (1008.2 KiB), 0 already there\n";
        assert_eq!(blobs_copied(said).unwrap(), 3);
        assert!(blobs_copied("cvm: nothing").is_err());
    }
}

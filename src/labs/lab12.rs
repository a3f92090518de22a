//! Lab 12: why containers. Lecture 1.5 (deploying means building an environment, and every new
//! developer repeats it: build it once as an image, run it anywhere) and 2.4 (keep sensitive
//! data out), with an image that carries a program, its configuration file and its environment,
//! handed to a "new developer" through a registry.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::image_steps::{cvm_in, digest_in, layers_in, ship, short, Scratch};
use super::measure::{Band, Context};
use super::question::{Answer, Correct, Grade, Need, Question, TaskCheck};
use super::Lab;

pub static LAB: Lab = Lab {
    number: 12,
    title: "Why containers",
    minutes: 25,
    topics: &[
        "1.5 the environment built once as an image, run by every new developer (hands-on)",
        "2.4 keep sensitive data out of images (reasoning)",
    ],
    sheet: include_str!("../../labs/12-why-containers/README.md"),
    questions,
};

const IMAGE: &str = "team-app:1.0";
const CONFIG: &str = "greeting = hello from the team\n";
const SCRIPT: &str = "cat /etc/greeting.conf; echo mode=$APP_MODE";

/// The team's image, built in `store` from the configuration file `config`.
fn build_team_app(store: &Path, config: &Path) -> Result<()> {
    let add = format!("{}:/etc/greeting.conf", config.display());
    cvm_in(
        store,
        &[
            "image",
            "build",
            "-t",
            IMAGE,
            "--binary",
            "/bin/busybox",
            "--add",
            &add,
            "--env",
            "APP_MODE=production",
            "--entrypoint",
            "/bin/busybox",
            "--cmd",
            "sh",
            "--cmd",
            "-c",
            "--cmd",
            SCRIPT,
        ],
    )
    .map(drop)
}

/// What the checker sees when it builds the same image: its output and its layers.
#[derive(Clone)]
struct Observed {
    output: String,
    layers: usize,
}

fn observe(context: &mut Context) -> Result<Observed> {
    context.once("lab12", |context| {
        let scratch = Scratch::new("lab12")?;
        let config = scratch.path().join("greeting.conf");
        std::fs::write(&config, CONFIG)?;
        let store = scratch.path().join("store");
        build_team_app(&store, &config)?;
        let output = cvm_in(&store, &["run", "--image", IMAGE])?;
        let layers = layers_in(&store, IMAGE)?;
        context.note(format!("{IMAGE}: {layers} layers, prints {:?}", output.trim()));
        Ok(Observed { output, layers })
    })
}

fn second_line(context: &mut Context) -> Result<String> {
    let output = observe(context)?.output;
    output.lines().nth(1).map(str::to_string).context("the image printed fewer than two lines")
}

fn layers(context: &mut Context) -> Result<Band> {
    Ok(Band::exact(observe(context)?.layers as f64, 0.0))
}

fn check_new_developer(task: &mut TaskCheck) -> Result<Grade> {
    let Ok(saved) = std::fs::read_to_string(task.evidence("new-developer.txt")) else { return Ok(Grade::Unanswered) };
    let (team, newcomer) = (task.path("team"), task.path("newcomer"));
    let (Ok(built), Ok(pulled)) = (digest_in(&team, IMAGE), digest_in(&newcomer, IMAGE)) else {
        return Ok(Grade::Wrong(format!("{IMAGE} is not in both team/ and newcomer/ of this workspace")));
    };
    if built != pulled {
        return Ok(Grade::Wrong("the newcomer's image is not the team's: pull it, do not build it again".into()));
    }
    let runs = cvm_in(&newcomer, &["run", "--image", IMAGE])?;
    if saved.trim() != runs.trim() || !runs.contains("mode=production") {
        return Ok(Grade::Wrong("evidence/new-developer.txt is not what the newcomer's image prints".into()));
    }
    Ok(Grade::Passed(format!("the newcomer ran the team's {} without building anything", short(&built))))
}

fn perform_new_developer(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let (team, newcomer) = (task.path("team"), task.path("newcomer"));
    let config = task.path("greeting.conf");
    std::fs::write(&config, CONFIG)?;
    build_team_app(&team, &config)?;
    ship(&team, &task.path("registry"), &newcomer, IMAGE)?;
    std::fs::write(task.evidence("new-developer.txt"), cvm_in(&newcomer, &["run", "--image", IMAGE])?)?;
    Ok(Some("done".into()))
}

fn questions() -> Vec<Question> {
    const NEEDS: &[Need] = &[Need::Containers, Need::Busybox];
    vec![
        Question {
            id: "on_the_host",
            text: "Run the app's command directly on your machine (step 1): `sh -c 'cat /etc/greeting.conf; echo \
                   mode=$APP_MODE'`. What happens?",
            needs: &[],
            hint: "does your machine have the team's configuration file and environment?",
            answer: Answer::Choice {
                options: &[
                    "it prints the greeting and mode=production, as in the image",
                    "cat finds no /etc/greeting.conf and the mode is empty: the environment the app needs is not on \
                     this machine",
                    "sh refuses to run",
                ],
                correct: Correct::Fixed(1),
            },
        },
        Question {
            id: "image_layers",
            text: "Build the team's image (step 2). How many layers does `cvm image inspect team-app:1.0` list?",
            needs: &[Need::Busybox],
            hint: "one layer per --binary and per --add",
            answer: Answer::Number { unit: "layers", measure: layers },
        },
        Question {
            id: "second_line",
            text: "What does the second line of `cvm run --image team-app:1.0` say?",
            needs: NEEDS,
            hint: "the image's environment sets APP_MODE",
            answer: Answer::Text { measure: second_line },
        },
        Question {
            id: "new_developer",
            text: "Task: as the new developer, pull the team's image from registry/ into newcomer/ and run it, saving \
                   its output to evidence/new-developer.txt (steps 3 and 4). Write done here.",
            needs: NEEDS,
            hint: "team/, registry/ and newcomer/ in this workspace; the newcomer pulls, and builds nothing",
            answer: Answer::Task { check: check_new_developer, perform: perform_new_developer },
        },
        Question {
            id: "what_the_image_changes",
            text: "The lecture's story: every new developer rebuilds the environment (server, OS, tools, \
                   configuration). What does the image change?",
            needs: &[],
            hint: "how many times is the environment built, and what does each developer do instead?",
            answer: Answer::Words {
                groups: &[&["once", "one time", "single"], &["pull*", "run*", "every", "anywhere", "same", "ship*"]],
                example: "The environment is built once, as an image with the program, its libraries and \
                          configuration; every developer and server then pulls and runs that same image.",
            },
        },
        Question {
            id: "secrets",
            text: "The image carries configuration. Where should a database password go?",
            needs: &[],
            hint: "who can read an image's layers once it is pushed?",
            answer: Answer::Choice {
                options: &[
                    "in a layer of the image, next to the configuration",
                    "given to the container when it runs (its environment, a mounted file), never into an image that \
                     is pushed and shared",
                    "in the image's name",
                ],
                correct: Correct::Fixed(1),
            },
        },
    ]
}

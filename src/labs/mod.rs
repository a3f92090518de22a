//! Classroom labs, graded. A student runs `cvm lab start N` (a workspace with the lab sheet and
//! `answers.toml`), does the lab, writes the answers and runs `cvm lab check N`, which grades
//! each question: passed, wrong (with a hint that does not give the answer away), unanswered,
//! or skipped when this machine lacks what the question needs. `cvm lab key N` fills a workspace
//! the way a student who got everything right would (for teachers).
//!
//! Each lab is one file (`lab1.rs`, ...) listing its questions; [`question`] says how an answer
//! is graded and [`measure`] how the checker measures for itself without flipping on noise.

pub mod answers;
mod image_steps;
mod lab1;
mod lab10;
mod lab11;
mod lab12;
mod lab13;
mod lab14;
mod lab15;
mod lab2;
mod lab3;
mod lab4;
mod lab5;
mod lab6;
mod lab7;
mod lab8;
mod lab9;
pub mod measure;
pub mod question;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use measure::Context;
use question::{
    chosen, is_blank, letter, mentions_all, number, text, Answer, Correct, Grade, Need, Question, TaskCheck,
};

pub struct Lab {
    pub number: u32,
    pub title: &'static str,
    /// Roughly how long a student needs, in minutes.
    pub minutes: u32,
    /// The lecture topics it covers (../shared/brief/lecture.md numbering) and how.
    pub topics: &'static [&'static str],
    /// The lab sheet (its folder's README.md).
    pub sheet: &'static str,
    pub questions: fn() -> Vec<Question>,
}

pub static LABS: [&Lab; 15] = [
    &lab1::LAB,
    &lab2::LAB,
    &lab3::LAB,
    &lab4::LAB,
    &lab5::LAB,
    &lab6::LAB,
    &lab7::LAB,
    &lab8::LAB,
    &lab9::LAB,
    &lab10::LAB,
    &lab11::LAB,
    &lab12::LAB,
    &lab13::LAB,
    &lab14::LAB,
    &lab15::LAB,
];

pub fn find(number: u32) -> Result<&'static Lab> {
    match LABS.iter().find(|lab| lab.number == number) {
        Some(lab) => Ok(lab),
        None => bail!("there is no lab {number}: `cvm lab list` shows labs 1 to {}", LABS.len()),
    }
}

impl Lab {
    /// Everything the lab's questions need, each once.
    pub fn needs(&self) -> Vec<Need> {
        let mut needs: Vec<Need> = (self.questions)().iter().flat_map(|q| q.needs.iter().copied()).collect();
        needs.sort();
        needs.dedup();
        needs
    }
}

/// What this machine offers, found once.
pub struct Machine {
    missing: Vec<(Need, String)>,
}

impl Machine {
    pub fn detect() -> Machine {
        let mut missing = Vec::new();
        if let Err(err) = crate::runtime::container::host_can_run_containers() {
            missing.push((Need::Containers, format!("{err:#}")));
        }
        if let Err(err) = crate::vmm::builder::open_kvm() {
            missing.push((Need::Kvm, format!("{err:#}")));
        }
        if let Err(err) = cgroup_usable() {
            missing.push((Need::Cgroup, format!("{err:#}")));
        }
        if let Err(err) = static_busybox() {
            missing.push((Need::Busybox, format!("{err:#}")));
        }
        if let Err(err) = dynamic_true() {
            missing.push((Need::DynamicProgram, format!("{err:#}")));
        }
        if let Err(err) = crate::runtime::runtime(crate::record::RuntimeKind::Qemu).check_available() {
            missing.push((Need::Qemu, format!("{err:#}")));
        }
        Machine { missing }
    }

    /// Why `needs` cannot be met here, if they cannot.
    fn lacks(&self, needs: &[Need]) -> Option<String> {
        let why: Vec<String> = needs
            .iter()
            .filter_map(|need| {
                self.missing
                    .iter()
                    .find(|(n, _)| n == need)
                    .map(|(_, reason)| format!("{} ({reason})", need.describe()))
            })
            .collect();
        (!why.is_empty()).then(|| format!("needs {}", why.join("; ")))
    }
}

fn static_busybox() -> Result<()> {
    let bytes = crate::program::read_regular_file(Path::new("/bin/busybox"), 64 << 20)?;
    crate::program::check_static_elf(&bytes).context("/bin/busybox")
}

fn dynamic_true() -> Result<()> {
    let bytes = crate::program::read_regular_file(Path::new("/bin/true"), 64 << 20)?;
    let elf = crate::elf::ElfFile::parse_any(&bytes).context("/bin/true")?;
    anyhow::ensure!(elf.interpreter.is_some(), "/bin/true is statically linked here");
    let ldd = std::process::Command::new("ldd").arg("/bin/true").output().context("running ldd")?;
    anyhow::ensure!(ldd.status.success(), "ldd /bin/true failed");
    Ok(())
}

fn cgroup_usable() -> Result<()> {
    use crate::runtime::container::cgroup;
    let name = format!("cvm-lab-probe-{}", std::process::id());
    let limits = cgroup::Limits { memory_bytes: Some(64 << 20), ..Default::default() };
    cgroup::RunCgroup::create(cgroup::hierarchy(), &name, limits, &[])?.remove()
}

/// How one workspace did.
pub struct Report {
    pub rows: Vec<(usize, &'static str, Grade)>,
    pub unknown_keys: Vec<String>,
}

impl Report {
    pub fn count(&self, label: &str) -> usize {
        self.rows.iter().filter(|(_, _, grade)| grade.label() == label).count()
    }

    /// Every question that could be graded here passed.
    pub fn all_passed(&self) -> bool {
        self.rows.iter().all(|(_, _, grade)| matches!(grade, Grade::Passed(_) | Grade::Skipped(_)))
    }

    pub fn graded(&self) -> usize {
        self.rows.len() - self.count("skipped")
    }
}

/// Grades the workspace's answers.
pub fn grade(lab: &Lab, workspace: &Path, machine: &Machine, context: &mut Context) -> Result<Report> {
    let answers = answers::read(workspace)?;
    let mut rows = Vec::new();
    for (index, question) in (lab.questions)().into_iter().enumerate() {
        let grade = match machine.lacks(question.needs) {
            Some(why) => Grade::Skipped(why),
            None => grade_one(&question, answers.get(question.id), workspace, context),
        };
        rows.push((index + 1, question.id, grade));
    }
    Ok(Report { rows, unknown_keys: answers::unknown_keys(lab, &answers) })
}

fn grade_one(question: &Question, value: Option<&toml::Value>, workspace: &Path, context: &mut Context) -> Grade {
    if is_blank(value) && !matches!(question.answer, Answer::Task { .. }) {
        return Grade::Unanswered;
    }
    let given = value.map(text).unwrap_or_default();
    let wrong = |found: String| Grade::Wrong(format!("{found}; hint: {}", question.hint));
    let not_measured = |err: anyhow::Error| Grade::Wrong(format!("the checker could not measure this here: {err:#}"));
    match &question.answer {
        Answer::Choice { options, correct } => {
            let Some(choice) = chosen(options, &given) else {
                return wrong(format!("'{given}' is not one of the letters a to {}", letter(options.len() - 1)));
            };
            let accepted = match correct {
                Correct::Fixed(index) => vec![*index],
                Correct::Measured(decide) => match decide(context) {
                    Ok(decision) => {
                        context.note(&decision.because);
                        decision.accepted
                    }
                    Err(err) => return not_measured(err),
                },
            };
            if accepted.contains(&choice) {
                Grade::Passed(format!("({})", letter(choice)))
            } else {
                wrong(format!("({}) is not right", letter(choice)))
            }
        }
        Answer::Words { groups, .. } => {
            if mentions_all(&given, groups) {
                Grade::Passed("your explanation names what matters".into())
            } else {
                wrong("your explanation misses something essential".into())
            }
        }
        Answer::Number { unit, measure } => {
            let Some(answer) = value.and_then(number) else {
                return wrong(format!("'{given}' is not a number"));
            };
            match measure(context) {
                Ok(band) if !band.is_decisive() => Grade::Skipped(format!(
                    "this machine's runs spread too much right now to grade a number (from {} to {} {unit}); \
                     run the check again when it is quieter",
                    round(band.low.max(0.0)),
                    round(band.high)
                )),
                Ok(band) if band.contains(answer) => Grade::Passed(format!(
                    "you: {answer} {unit}; measured here: {} {unit} (accepted {} to {})",
                    round(band.measured),
                    round(band.low.max(0.0)),
                    round(band.high)
                )),
                Ok(_) => wrong(format!("you: {answer} {unit}, which is not what this machine measures")),
                Err(err) => not_measured(err),
            }
        }
        Answer::Text { measure } => match measure(context) {
            Ok(expected) if given.trim().to_lowercase().contains(&expected.trim().to_lowercase()) => {
                Grade::Passed(format!("'{}'", given.trim()))
            }
            Ok(_) => wrong(format!("'{}' is not what this machine shows", given.trim())),
            Err(err) => not_measured(err),
        },
        Answer::Task { check, .. } => {
            let mut task = TaskCheck { workspace, answer: value, context };
            match check(&mut task) {
                Ok(Grade::Wrong(found)) => wrong(found),
                Ok(grade) => grade,
                Err(err) => wrong(format!("{err:#}")),
            }
        }
    }
}

/// Three significant digits, for numbers shown and written.
pub fn round(value: f64) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let digits = 3 - value.abs().log10().floor() as i32 - 1;
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// `cvm lab start`: a workspace with the sheet, an empty answers file and an evidence folder.
pub fn start(lab: &Lab, workspace: &Path) -> Result<()> {
    let answers = workspace.join("answers.toml");
    if answers.exists() {
        bail!(
            "{} already exists: this workspace is started (check it with `cvm lab check {} --dir {}`)",
            answers.display(),
            lab.number,
            workspace.display()
        );
    }
    std::fs::create_dir_all(workspace.join("evidence"))
        .with_context(|| format!("cannot create the workspace {}", workspace.display()))?;
    std::fs::write(workspace.join("README.md"), lab.sheet)?;
    std::fs::write(&answers, answers::render(lab, &[]))?;
    Ok(())
}

/// How many more times the key measures a number that came out too noisy to grade.
const KEY_REMEASURES: usize = 2;

/// `cvm lab key`: the answers and evidence of a student who got everything right (what this
/// machine cannot measure is left blank).
pub fn key(lab: &Lab, workspace: &Path, machine: &Machine, context: &mut Context) -> Result<Vec<String>> {
    std::fs::create_dir_all(workspace.join("evidence"))
        .with_context(|| format!("cannot create the workspace {}", workspace.display()))?;
    std::fs::write(workspace.join("README.md"), lab.sheet)?;
    let mut values = Vec::new();
    let mut left_blank = Vec::new();
    for question in (lab.questions)() {
        if machine.lacks(question.needs).is_some() {
            left_blank.push(question.id.to_string());
            continue;
        }
        let value = match &question.answer {
            Answer::Choice { correct: Correct::Fixed(index), .. } => Some(letter(*index).to_string().into()),
            Answer::Choice { correct: Correct::Measured(decide), .. } => {
                Some(letter(decide(context)?.preferred).to_string().into())
            }
            Answer::Words { example, .. } => Some(example.to_string().into()),
            Answer::Number { measure, .. } => {
                // A measurement too noisy to grade would make a key the check cannot accept:
                // measure again (afresh) a couple of times while the machine is that noisy.
                let mut band = measure(context)?;
                for _ in 0..KEY_REMEASURES {
                    if band.is_decisive() {
                        break;
                    }
                    context.forget();
                    band = measure(context)?;
                }
                Some(toml::Value::Float(round(band.measured)))
            }
            Answer::Text { measure } => Some(measure(context)?.into()),
            Answer::Task { perform, .. } => {
                let mut task = TaskCheck { workspace, answer: None, context };
                perform(&mut task).with_context(|| format!("performing the task {}", question.id))?
            }
        };
        if let Some(value) = value {
            values.push((question.id, value));
        }
    }
    std::fs::write(workspace.join("answers.toml"), answers::render(lab, &values))?;
    Ok(left_blank)
}

/// The workspaces of a class: every folder below `dir` with an answers file.
pub fn class_workspaces(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the class folder {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("answers.toml").is_file())
        .collect();
    found.sort();
    Ok(found)
}

/// The default workspace of lab `number`.
pub fn default_workspace(number: u32) -> PathBuf {
    PathBuf::from(format!("cvm-lab-{number}"))
}

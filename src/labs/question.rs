//! A lab question and how one answer to it is graded. Three kinds, as the course needs them:
//! observations the student measures (graded against what the checker measures itself, within
//! a band derived from the spread it measured), reasoning (multiple choice or key words), and
//! tasks the student performs (graded on the evidence they leave in the workspace).

use std::path::Path;

use anyhow::Result;

use super::measure::{Band, Context, Decision};

/// What a question needs from the machine to be graded here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The container runtime: root, or unprivileged user namespaces.
    Containers,
    /// The vm runtime: a usable /dev/kvm.
    Kvm,
    /// A cgroup cvm may create and limit: root, or a delegated cgroup.
    Cgroup,
    /// A static busybox at /bin/busybox, the program of the labs' images (a shell and its tools).
    Busybox,
    /// A dynamically linked /bin/true (glibc distributions), with `ldd`.
    DynamicProgram,
    /// QEMU that boots cvm's guest kernel here (the peer `qemu`).
    Qemu,
}

impl Need {
    pub fn describe(self) -> &'static str {
        match self {
            Need::Containers => "the container runtime (root or user namespaces)",
            Need::Kvm => "the vm runtime (a readable and writable /dev/kvm)",
            Need::Cgroup => "a cgroup cvm may limit (root, or a delegated cgroup)",
            Need::Busybox => "a static busybox at /bin/busybox (Debian and Ubuntu: apt-get install busybox-static)",
            Need::DynamicProgram => "a dynamically linked /bin/true and ldd (Debian, Ubuntu, Fedora: already there)",
            Need::Qemu => "QEMU with KVM (Debian and Ubuntu: apt-get install qemu-system-x86)",
        }
    }
}

pub struct Question {
    /// The key in answers.toml.
    pub id: &'static str,
    /// The question, as the student reads it (in answers.toml and the sheet).
    pub text: &'static str,
    pub needs: &'static [Need],
    /// Said when the answer is wrong: points the way without giving the answer.
    pub hint: &'static str,
    pub answer: Answer,
}

/// How a question is answered and graded.
pub enum Answer {
    /// One of `options` (the student writes its letter, a, b, c, ...).
    Choice { options: &'static [&'static str], correct: Correct },
    /// A short explanation: it must mention a word of every group.
    Words { groups: &'static [&'static [&'static str]], example: &'static str },
    /// A number the student measured, graded against the checker's own measurement.
    Number { unit: &'static str, measure: fn(&mut Context) -> Result<Band> },
    /// A text the student observed (a kernel release), graded against the checker's.
    Text { measure: fn(&mut Context) -> Result<String> },
    /// Something the student does that leaves evidence in the workspace.
    Task { check: fn(&mut TaskCheck) -> Result<Grade>, perform: fn(&mut TaskCheck) -> Result<Option<toml::Value>> },
}

/// The right option of a choice: fixed, or decided by a measurement on this machine.
pub enum Correct {
    Fixed(usize),
    Measured(fn(&mut Context) -> Result<Decision>),
}

/// What a task's check and its key see: the workspace, the student's answer, the measurements.
pub struct TaskCheck<'a> {
    pub workspace: &'a Path,
    pub answer: Option<&'a toml::Value>,
    pub context: &'a mut Context,
}

impl TaskCheck<'_> {
    pub fn evidence(&self, name: &str) -> std::path::PathBuf {
        self.workspace.join("evidence").join(name)
    }

    /// `name` in the workspace (a store or registry folder the lab keeps there).
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.workspace.join(name)
    }

    /// The run record saved as evidence `name` (`cvm run --json ... > evidence/NAME`), or None
    /// when there is no such file.
    pub fn saved_record(&self, name: &str) -> Result<Option<crate::record::RunRecord>> {
        let Ok(text) = std::fs::read_to_string(self.evidence(name)) else { return Ok(None) };
        let record = serde_json::from_str(text.trim())
            .map_err(|_| anyhow::anyhow!("evidence/{name} is not one cvm run record"))?;
        Ok(Some(record))
    }

    /// Runs this cvm with `args` and saves what it printed on standard output as evidence
    /// `name`, whatever its exit status: the record of a run that failed is evidence too.
    pub fn save_cvm_output(&self, name: &str, args: &[&str]) -> Result<()> {
        let out = super::measure::cvm_command(args)?.stdout(std::process::Stdio::piped()).output()?;
        std::fs::write(self.evidence(name), out.stdout)?;
        Ok(())
    }
}

/// How one question was graded.
#[derive(Clone, Debug, PartialEq)]
pub enum Grade {
    Passed(String),
    /// Wrong, with what was found (never the right answer).
    Wrong(String),
    Unanswered,
    /// Not gradable on this machine: what is missing.
    Skipped(String),
}

impl Grade {
    pub fn label(&self) -> &'static str {
        match self {
            Grade::Passed(_) => "passed",
            Grade::Wrong(_) => "wrong",
            Grade::Unanswered => "unanswered",
            Grade::Skipped(_) => "skipped",
        }
    }
}

/// The letter of option `index`: a, b, c, ...
pub fn letter(index: usize) -> char {
    (b'a' + index as u8) as char
}

/// The option a choice answer names: its letter (`b`, `(b)`, `b)`) or its full text.
pub fn chosen(options: &[&str], answer: &str) -> Option<usize> {
    let cleaned = answer.trim().trim_start_matches('(').trim_end_matches([')', '.']).trim().to_lowercase();
    if cleaned.chars().count() == 1 {
        let index = cleaned.chars().next()? as usize;
        return (index >= 'a' as usize).then(|| index - 'a' as usize).filter(|&i| i < options.len());
    }
    options.iter().position(|option| option.to_lowercase() == cleaned)
}

/// True when `answer` mentions a word of every group (whole words, any case; a word ending in
/// `*` is a stem: `emulat*` matches "emulated" and "emulation").
pub fn mentions_all(answer: &str, groups: &[&[&str]]) -> bool {
    let text = format!(" {} ", answer.to_lowercase());
    let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric() && c != '-').filter(|w| !w.is_empty()).collect();
    groups.iter().all(|group| {
        group.iter().any(|wanted| {
            let wanted = wanted.to_lowercase();
            if let Some(stem) = wanted.strip_suffix('*') {
                words.iter().any(|w| w.starts_with(stem))
            } else if wanted.contains(' ') {
                text.contains(&wanted)
            } else {
                words.iter().any(|w| *w == wanted)
            }
        })
    })
}

/// A number from a TOML value: a number, or a string that starts with one ("4.5x", "540 KiB").
pub fn number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Integer(n) => Some(*n as f64),
        toml::Value::Float(x) => Some(*x),
        toml::Value::String(text) => {
            let text = text.trim();
            let end = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))
                .unwrap_or(text.len());
            text[..end].parse().ok()
        }
        _ => None,
    }
}

/// The answer as text ("" for a value that is not a string or a number).
pub fn text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => String::new(),
    }
}

/// True when the student left the answer empty.
pub fn is_blank(value: Option<&toml::Value>) -> bool {
    match value {
        None => true,
        Some(toml::Value::String(text)) => text.trim().is_empty(),
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_by_letter_or_text() {
        let options = ["the process", "the container", "the VM"];
        assert_eq!(chosen(&options, "b"), Some(1));
        assert_eq!(chosen(&options, " (C) "), Some(2));
        assert_eq!(chosen(&options, "a)"), Some(0));
        assert_eq!(chosen(&options, "The Container"), Some(1));
        assert_eq!(chosen(&options, "d"), None);
        assert_eq!(chosen(&options, "maybe"), None);
    }

    #[test]
    fn words_must_cover_every_group() {
        let groups: &[&[&str]] = &[&["share", "shares", "same"], &["kernel"]];
        assert!(mentions_all("Because containers share the host's kernel.", groups));
        assert!(mentions_all("the same Kernel answers", groups));
        assert!(!mentions_all("because of namespaces", groups));
        assert!(!mentions_all("kernelized", &[&["kernel"]]), "whole words only");
        assert!(mentions_all("it is emulated here", &[&["emulat*"]]));
    }

    #[test]
    fn numbers_with_or_without_units() {
        assert_eq!(number(&toml::Value::Float(4.5)), Some(4.5));
        assert_eq!(number(&toml::Value::Integer(540)), Some(540.0));
        assert_eq!(number(&toml::Value::String("4.5x".into())), Some(4.5));
        assert_eq!(number(&toml::Value::String(" 540 KiB".into())), Some(540.0));
        assert_eq!(number(&toml::Value::String("about five".into())), None);
    }
}

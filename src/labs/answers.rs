//! `answers.toml`: one key per question, the question above it as a comment. The student edits
//! the values; `cvm lab check` reads them; `cvm lab key` writes a correct set.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::question::{letter, Answer, Question};
use super::Lab;

/// The answers file with every value as given (empty strings for a new workspace).
pub fn render(lab: &Lab, values: &[(&'static str, toml::Value)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Lab {}: {} — your answers.", lab.number, lab.title);
    let _ = writeln!(out, "# Write each answer after its `=`, in quotes unless it is a number; then, in this folder:");
    let _ = writeln!(out, "#   cvm lab check {}", lab.number);
    let _ = writeln!(out, "# Tasks leave their evidence in evidence/ (the question says which file).");
    for (index, question) in (lab.questions)().iter().enumerate() {
        let _ = writeln!(out);
        for (n, line) in wrap(question.text, 92).iter().enumerate() {
            if n == 0 {
                let _ = writeln!(out, "# {}. {line}", index + 1);
            } else {
                let _ = writeln!(out, "#    {line}");
            }
        }
        match &question.answer {
            Answer::Choice { options, .. } => {
                for (i, option) in options.iter().enumerate() {
                    let _ = writeln!(out, "#    ({}) {option}", letter(i));
                }
                let _ = writeln!(out, "#    Answer with the letter.");
            }
            Answer::Number { unit, .. } if !unit.is_empty() => {
                let _ = writeln!(out, "#    A number, in {unit}.");
            }
            Answer::Number { .. } => {
                let _ = writeln!(out, "#    A number.");
            }
            Answer::Words { .. } => {
                let _ = writeln!(out, "#    A sentence or two in your own words.");
            }
            Answer::Text { .. } | Answer::Task { .. } => {}
        }
        let value = values.iter().find(|(id, _)| *id == question.id).map(|(_, v)| v.clone());
        let _ = writeln!(
            out,
            "{} = {}",
            question.id,
            literal(&value.unwrap_or_else(|| toml::Value::String(String::new())))
        );
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("at least one line");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// A value as TOML writes it (strings quoted and escaped).
fn literal(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => {
            let mut quoted = String::from('"');
            for c in text.chars() {
                match c {
                    '"' => quoted.push_str("\\\""),
                    '\\' => quoted.push_str("\\\\"),
                    '\n' => quoted.push_str("\\n"),
                    c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
                    c => quoted.push(c),
                }
            }
            quoted.push('"');
            quoted
        }
        toml::Value::Float(x) => format!("{x:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => "\"\"".to_string(),
    }
}

/// The answers of a workspace, by key.
pub fn read(workspace: &Path) -> Result<toml::Table> {
    let path = workspace.join("answers.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no answers file {} (`cvm lab start N` makes a workspace)", path.display()))?;
    text.parse::<toml::Table>().with_context(|| format!("{} is not valid TOML: fix the line it names", path.display()))
}

/// Keys of the file that are no question of the lab (likely typos).
pub fn unknown_keys(lab: &Lab, answers: &toml::Table) -> Vec<String> {
    let questions: Vec<Question> = (lab.questions)();
    answers.keys().filter(|key| !questions.iter().any(|q| q.id == key.as_str())).cloned().collect()
}

//! `cvm lab list | show | start | check | key`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::{LabAction, LabArgs};
use crate::labs::measure::Context;
use crate::labs::question::Grade;
use crate::labs::{self, Lab, Machine, Report, LABS};
use crate::output;

pub fn lab(args: LabArgs) -> Result<i32> {
    match args.action {
        LabAction::List => {
            let mut out = String::new();
            for lab in LABS {
                let needs: Vec<&str> = lab.needs().iter().map(|n| short_need(*n)).collect();
                out.push_str(&format!(
                    "{:>2}  {:<28} {:>3} min   needs: {}\n",
                    lab.number,
                    lab.title,
                    lab.minutes,
                    if needs.is_empty() { "nothing special".to_string() } else { needs.join(", ") }
                ));
            }
            out.push_str("\n`cvm lab start N` makes a workspace; `cvm lab check N` grades it; `cvm lab show N` prints a sheet.\n");
            output::emit(&out);
            Ok(0)
        }
        LabAction::Show { number } => {
            output::emit(labs::find(number)?.sheet);
            Ok(0)
        }
        LabAction::Start { number, dir } => {
            let lab = labs::find(number)?;
            let workspace = dir.unwrap_or_else(|| labs::default_workspace(number));
            labs::start(lab, &workspace)?;
            println!("{}", workspace.display());
            eprintln!(
                "cvm: lab {number} ({}) is ready in {}: read README.md, answer in answers.toml, then `cvm lab check {number}{}`",
                lab.title,
                workspace.display(),
                dir_option(&workspace, number)
            );
            Ok(0)
        }
        LabAction::Key { number, dir } => {
            let lab = labs::find(number)?;
            let workspace = dir.unwrap_or_else(|| labs::default_workspace(number));
            let machine = Machine::detect();
            let left_blank = labs::key(lab, &workspace, &machine, &mut Context::default())?;
            eprintln!("cvm: wrote the key of lab {number} into {}", workspace.display());
            if !left_blank.is_empty() {
                eprintln!("cvm: left blank (this machine cannot measure them): {}", left_blank.join(", "));
            }
            Ok(0)
        }
        LabAction::Check { number, dir, class: None } => {
            let lab = labs::find(number)?;
            let workspace = dir.unwrap_or_else(|| labs::default_workspace(number));
            let machine = Machine::detect();
            let mut context = Context::default();
            context.verbose = true;
            eprintln!("Lab {number}: {} — grading {}", lab.title, workspace.join("answers.toml").display());
            let report = labs::grade(lab, &workspace, &machine, &mut context)?;
            output::emit(&render(lab, &report));
            Ok(if report.all_passed() { 0 } else { 1 })
        }
        LabAction::Check { number, class: Some(class), .. } => grade_class(labs::find(number)?, &class),
    }
}

fn short_need(need: labs::question::Need) -> &'static str {
    match need {
        labs::question::Need::Containers => "containers (root)",
        labs::question::Need::Kvm => "/dev/kvm",
        labs::question::Need::Cgroup => "cgroups (root)",
        labs::question::Need::Busybox => "busybox-static",
        labs::question::Need::DynamicProgram => "a dynamic /bin/true",
        labs::question::Need::Qemu => "qemu-system-x86",
    }
}

fn dir_option(workspace: &Path, number: u32) -> String {
    if workspace == labs::default_workspace(number) {
        String::new()
    } else {
        format!(" --dir {}", workspace.display())
    }
}

/// One line per question, then the score.
fn render(lab: &Lab, report: &Report) -> String {
    let mut out = String::new();
    for (index, id, grade) in &report.rows {
        let detail = match grade {
            Grade::Passed(detail) | Grade::Wrong(detail) | Grade::Skipped(detail) => detail.as_str(),
            Grade::Unanswered => "no answer yet",
        };
        out.push_str(&format!("  {index:>2} {id:<26} {:<10} {detail}\n", grade.label()));
    }
    for key in &report.unknown_keys {
        out.push_str(&format!("  note: answers.toml has a key `{key}` that is no question of lab {}\n", lab.number));
    }
    let skipped = report.count("skipped");
    out.push_str(&format!(
        "Score: {} of {} graded questions passed{}.\n",
        report.count("passed"),
        report.graded(),
        if skipped > 0 { format!(" ({skipped} skipped on this machine)") } else { String::new() }
    ));
    out.push_str(if report.all_passed() {
        "PASSED\n"
    } else {
        "NOT YET: fix the answers marked wrong or unanswered\n"
    });
    out
}

/// Grades every workspace of a class folder with one set of measurements.
fn grade_class(lab: &Lab, class: &Path) -> Result<i32> {
    let workspaces: Vec<PathBuf> = labs::class_workspaces(class)?;
    if workspaces.is_empty() {
        anyhow::bail!("no workspace (a folder with answers.toml) in {}", class.display());
    }
    let machine = Machine::detect();
    let mut context = Context::default();
    let mut out =
        format!("Lab {}: {} — {} workspaces in {}\n", lab.number, lab.title, workspaces.len(), class.display());
    let mut all = 0;
    for workspace in &workspaces {
        let name = workspace.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match labs::grade(lab, workspace, &machine, &mut context) {
            Ok(report) => {
                if report.all_passed() {
                    all += 1;
                }
                let missed: Vec<&str> = report
                    .rows
                    .iter()
                    .filter(|(_, _, g)| matches!(g, Grade::Wrong(_) | Grade::Unanswered))
                    .map(|(_, id, _)| *id)
                    .collect();
                out.push_str(&format!(
                    "  {name:<24} {:>2}/{:<2} {}\n",
                    report.count("passed"),
                    report.graded(),
                    if missed.is_empty() { "all passed".to_string() } else { format!("missed: {}", missed.join(", ")) }
                ));
            }
            Err(err) => out.push_str(&format!("  {name:<24} not graded: {err:#}\n")),
        }
    }
    out.push_str(&format!("{all} of {} workspaces passed every gradable question.\n", workspaces.len()));
    output::emit(&out);
    Ok(0)
}

//! The report folder: `results.json` (every raw record), `results.csv`, `report.md`, a
//! self-contained `report.html` and the charts as SVG and PNG under `charts/`. Built only from
//! results files, so `cvm compare` and `cvm report` produce the same thing.

pub mod charts;
pub mod density;
pub mod document;
pub mod model;
pub mod peers;
pub mod reading;
pub mod scaling;
pub mod tables;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::results::{self, ResultsFile};
use document::Block;
use model::ReportModel;

/// Where the report's files were written.
pub struct ReportFiles {
    pub dir: PathBuf,
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub results: PathBuf,
    pub charts: Vec<PathBuf>,
}

impl ReportFiles {
    /// Where everything went, in two lines for the terminal.
    pub fn describe(&self) -> String {
        format!(
            "Report: {}\n        {} · {} · {} charts in {}\n",
            self.html.display(),
            self.markdown.display(),
            self.results.display(),
            self.charts.len() / 2,
            self.dir.join("charts").display()
        )
    }
}

pub fn write_report(dir: &Path, files: &[ResultsFile]) -> Result<ReportFiles> {
    let chart_dir = dir.join("charts");
    std::fs::create_dir_all(&chart_dir).with_context(|| format!("cannot create report folder {}", dir.display()))?;
    let model = ReportModel::from_results(files);

    let mut chart_files = Vec::new();
    let named: Vec<(String, crate::plot::Chart)> =
        charts::build_all(&model).into_iter().map(|named| (named.stem.to_string(), named.chart)).collect();
    let rendered = render_charts(&chart_dir, named, &mut chart_files)?;
    let peer_named: Vec<(String, crate::plot::Chart)> =
        peers::chart(&model).into_iter().map(|chart| ("peers".to_string(), chart)).collect();
    let peer_chart = render_charts(&chart_dir, peer_named, &mut chart_files)?.into_iter().next();
    // The density look `cvm compare` took, machine by machine.
    let mut density_blocks = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let Some(density) = &file.density else { continue };
        let suffix = if files.len() > 1 { format!("-{}", index + 1) } else { String::new() };
        let named =
            density::charts(density).into_iter().map(|(stem, chart)| (format!("{stem}{suffix}"), chart)).collect();
        let charts = render_charts(&chart_dir, named, &mut chart_files)?;
        if files.len() > 1 {
            density_blocks.push(Block::Heading(3, format!("On {}", file.environment.machine_label())));
        }
        density_blocks.extend(density::blocks(density, charts, 4));
    }

    let mut blocks = document_blocks(&model, rendered);
    let peer_blocks = peers::blocks(&model, peer_chart);
    if !peer_blocks.is_empty() {
        let at = blocks.iter().position(|b| matches!(b, Block::Heading(2, t) if t == "Memory")).unwrap_or(blocks.len());
        blocks.splice(at..at, peer_blocks);
    }
    if !density_blocks.is_empty() {
        // Before the environment and method sections at the end.
        let at =
            blocks.iter().position(|b| matches!(b, Block::Heading(2, t) if t == "Environment")).unwrap_or(blocks.len());
        let mut section = vec![
            Block::Heading(2, "Density: many instances at once".into()),
            Block::Paragraph(
                "A short look (a few instances, a few seconds); `cvm density` measures more counts with repetitions."
                    .into(),
            ),
        ];
        section.extend(density_blocks);
        blocks.splice(at..at, section);
    }
    let (markdown, html) = write_documents(dir, TITLE, &blocks)?;
    let results_path = dir.join("results.json");
    results::save(&results_path, files)?;
    crate::export::csv::write(&dir.join("results.csv"), files)?;
    Ok(ReportFiles { dir: dir.to_path_buf(), html, markdown, results: results_path, charts: chart_files })
}

/// The folder `cvm density` writes: `density.json`, `report.md`, `report.html` and the two charts.
pub fn write_density_report(dir: &Path, file: &crate::density::DensityFile) -> Result<ReportFiles> {
    let chart_dir = dir.join("charts");
    std::fs::create_dir_all(&chart_dir).with_context(|| format!("cannot create report folder {}", dir.display()))?;
    let mut chart_files = Vec::new();
    let named = density::charts(&file.density).into_iter().map(|(stem, chart)| (stem.to_string(), chart)).collect();
    let charts = render_charts(&chart_dir, named, &mut chart_files)?;
    let environment = &file.environment;
    let mut blocks = vec![
        Block::Heading(1, DENSITY_TITLE.into()),
        Block::Paragraph(format!(
            "Measured on {} ({}, {} of memory, {} CPUs). Every number below comes from the steps in `density.json`.",
            environment.machine_label(),
            environment.date_utc,
            crate::units::format_bytes(file.density.memory_total_bytes),
            environment.host.cpu_count
        )),
        Block::Code(environment.command_line.clone()),
        Block::Heading(2, "Reading".into()),
    ];
    blocks.extend(density::blocks(&file.density, charts, 2));
    let (markdown, html) = write_documents(dir, DENSITY_TITLE, &blocks)?;
    let results_path = dir.join("density.json");
    let text = serde_json::to_string_pretty(file).context("serializing the density results")?;
    std::fs::write(&results_path, text).with_context(|| format!("cannot write {}", results_path.display()))?;
    Ok(ReportFiles { dir: dir.to_path_buf(), html, markdown, results: results_path, charts: chart_files })
}

/// `report.md` and `report.html` in `dir`, saying the same thing.
fn write_documents(dir: &Path, title: &str, blocks: &[Block]) -> Result<(PathBuf, PathBuf)> {
    let markdown = dir.join("report.md");
    let html = dir.join("report.html");
    std::fs::write(&markdown, document::to_markdown(blocks))
        .with_context(|| format!("cannot write {}", markdown.display()))?;
    std::fs::write(&html, document::to_html(title, blocks))
        .with_context(|| format!("cannot write {}", html.display()))?;
    Ok((markdown, html))
}

const DENSITY_TITLE: &str = "cvm density: how many containers and micro-VMs fit on this machine";

/// Writes each chart as SVG and PNG under `chart_dir`; returns the blocks that show them.
pub fn render_charts(
    chart_dir: &Path,
    charts: Vec<(String, crate::plot::Chart)>,
    written: &mut Vec<PathBuf>,
) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    for (stem, chart) in charts {
        let svg = chart.to_svg()?;
        let svg_path = chart_dir.join(format!("{stem}.svg"));
        let png_path = chart_dir.join(format!("{stem}.png"));
        std::fs::write(&svg_path, &svg).with_context(|| format!("cannot write {}", svg_path.display()))?;
        chart.write_png(&png_path)?;
        written.extend([svg_path, png_path]);
        blocks.push(Block::Chart { stem, title: chart.title().to_string(), svg });
    }
    Ok(blocks)
}

const TITLE: &str = "cvm report: one program as a process, a container and a micro-VM";

fn document_blocks(model: &ReportModel, charts: Vec<Block>) -> Vec<Block> {
    let mut blocks = vec![Block::Heading(1, TITLE.into())];
    let machines: Vec<String> = model.machines.iter().map(|m| m.label.clone()).collect();
    let dates: Vec<String> =
        model.machines.iter().flat_map(|m| m.environments.iter().map(|e| e.date_utc.clone())).collect();
    blocks.push(Block::Paragraph(format!(
        "Measured on {} ({}). The same unmodified static program ran as a plain process (the baseline), in a \
         container (namespaces, cgroup, image root file system, host kernel) and in a KVM micro-VM (its own guest \
         kernel). Every number below is computed from the raw run records in `results.json`.",
        machines.join(", "),
        dates.join(", ")
    )));

    blocks.push(Block::Heading(2, "Reading".into()));
    let findings = reading::findings(model);
    if findings.is_empty() {
        blocks.push(Block::Paragraph("Not enough successful runs to say anything.".into()));
    } else {
        blocks.push(Block::Bullets(findings));
    }

    blocks.push(Block::Heading(2, "Overview".into()));
    blocks.push(Block::Paragraph(
        "Medians (the typical run); in brackets the ratio to the bare process's median on the same machine, ± the \
         propagated robust spread (1.4826·MAD per side). Above 1 means more time (for throughput: faster). The \
         per-workload tables below also give hyperfine's mean ± σ and the ratio of means."
            .into(),
    ));
    blocks.push(Block::Table(tables::overview_table(model)));

    if !charts.is_empty() {
        blocks.push(Block::Heading(2, "Charts".into()));
        blocks.extend(charts);
    }

    blocks.push(Block::Heading(2, "Results per workload".into()));
    for workload in &model.workloads {
        blocks.push(Block::Heading(3, format!("`{workload}`")));
        blocks.push(Block::Table(tables::timing_table(model, workload)));
        if Some(workload.as_str()) == model.startup_workload() {
            blocks.push(Block::Paragraph(format!(
                "Phases of `{workload}`: medians of each moment, measured from the start of the run:"
            )));
            blocks.push(Block::Table(tables::phases_table(model, workload)));
        }
    }

    blocks.push(Block::Heading(2, "Memory".into()));
    blocks.push(Block::Table(tables::memory_table(model)));

    if let Some(table) = tables::isolation_table(model) {
        blocks.push(Block::Heading(2, "Isolation: what the program saw".into()));
        blocks.push(Block::Paragraph(
            "Reported by the `probe` workload from inside each runtime (pid, hostname, processes and mounts as \
             the program's kernel shows them)."
                .into(),
        ));
        blocks.push(Block::Table(table));
    }

    let problems = problems(model);
    if !problems.is_empty() {
        blocks.push(Block::Heading(2, "Unavailable runtimes, failed runs and warnings".into()));
        blocks.push(Block::Bullets(problems));
    }

    blocks.push(Block::Heading(2, "Environment".into()));
    blocks.push(Block::Table(tables::environment_table(model)));

    blocks.push(Block::Heading(2, "Method".into()));
    blocks.push(Block::Bullets(method(model)));

    blocks.push(Block::Heading(2, "Raw data".into()));
    blocks.push(Block::Paragraph(
        "`results.json` holds every run record (all phases, memory, CPU time, the workload's own result, the \
         guest's exit and system-call counts) plus the environment; `results.csv` has one row per run. \
         Re-render this folder with `cvm report results.json`, or merge machines with `cvm report a.json b.json`."
            .into(),
    ));
    blocks
}

fn problems(model: &ReportModel) -> Vec<String> {
    let mut out = Vec::new();
    for machine in &model.machines {
        let on = if model.multi_machine() { format!("{}: ", machine.label) } else { String::new() };
        for (runtime, reason) in machine.unavailable() {
            out.push(format!("{on}**{runtime}** was not run: {reason}"));
        }
        for cell in machine.cells.iter().chain(&machine.peer_cells) {
            for failure in &cell.summary.failed {
                out.push(format!(
                    "{on}{} on {}: run {} failed ({}) and is excluded from the statistics",
                    cell.workload_label,
                    cell.runtime,
                    failure.index + 1,
                    failure.reason
                ));
            }
            for error in &cell.errors {
                out.push(format!(
                    "{on}{} on {}: the runtime stopped with an error: {error}",
                    cell.workload_label, cell.runtime
                ));
            }
            for warning in &cell.warmup_failures {
                out.push(format!("{on}{} on {}: {warning}", cell.workload_label, cell.runtime));
            }
            if cell.summary.total_outliers() > 0 {
                out.push(format!(
                    "{on}{} on {}: {} of {} runs are outliers by the modified z-score rule (|z| > 3.5); close other \
                     programs, add --warmup runs and more --runs",
                    cell.workload_label,
                    cell.runtime,
                    cell.summary.total_outliers(),
                    cell.summary.succeeded
                ));
            }
        }
    }
    out
}

fn method(model: &ReportModel) -> Vec<String> {
    let warmups: Vec<usize> = model.machines.iter().flat_map(|m| m.cells.iter().map(|c| c.warmup_runs)).collect();
    let warmup = match (warmups.iter().min(), warmups.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format!("{lo}"),
        (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
        _ => "no".into(),
    };
    vec![
        format!(
            "Each cell (one runtime × one workload) ran {warmup} unmeasured warm-up runs. The measured runs of a \
             workload were interleaved across the runtimes (process, container, vm, process, ...), so background \
             noise falls on every runtime alike."
        ),
        "Timestamps come from the host's monotonic clock, measured by cvm from the moment the run starts: \
         **setup** = the runtime is ready to start the program (process: fork/exec prepared; container: namespaces, \
         cgroup and root file system ready; vm: VM created, memory mapped, kernel and program loaded); **boot** = the \
         guest kernel handed control to the program (vm; equal to setup elsewhere); **first output** = the first byte \
         of the program's output reached the host; **exit** = the program ended; **teardown** = every resource was \
         released; **total** = the whole run as the user waits for it."
            .into(),
        "Statistics as hyperfine prints them: mean ± sample standard deviation, median, min … max and the 95th \
         percentile (linear interpolation). Failed runs (non-zero exit, crash, timeout) are listed and never \
         averaged in."
            .into(),
        "Outliers: modified z-score z = 0.6745·(x − median)/MAD (Iglewicz and Hoaglin), flagged when |z| > 3.5. \
         hyperfine uses the same score with a looser limit (about 10 on this scale)."
            .into(),
        "Ratios to the bare process: r = a/b with σ_r = r·√((σa/a)² + (σb/b)²) (first-order propagation, as in \
         hyperfine's \"N ± s times faster\"), once with means and standard deviations (hyperfine's way) and once \
         with medians and robust spreads 1.4826·MAD, which a few disturbed runs cannot move. On a busy machine the \
         two differ; the median ratio describes the typical run."
            .into(),
        "Memory, split by who pays it: **program's memory** = the program's peak RSS (process, container) or the \
         guest pages it touched, at or above the guest kernel's user base (vm); **runtime memory the run added** = \
         the private (anonymous) memory cvm's launcher, container supervisor or VMM allocated for the run, guest \
         RAM excluded (cvm runs every run of a comparison in one process, so its own baseline, about 0.35 MiB per \
         `cvm run`, is in the density section instead); **cvm's shared pages** = its file-backed pages (its code, \
         libraries), shared by every instance and the page cache, so they are shown but not added; **guest \
         kernel** = guest pages touched below the user base (vm); **cgroup peak** = what the container's cgroup \
         was charged, kernel memory and page cache included. The program's peak RSS comes from the kernel's \
         taskstats exit record of the program (as root); without it, from rusage, which for a program started \
         with vfork also holds cvm's own high-water mark, so a program below it gets no figure (\"not measured\") \
         rather than cvm's memory. CPU time is user and system time the host charged for the run."
            .into(),
        "Throughput is the workload's own figure (operations per second it timed itself, `ops_per_sec` in its \
         `CVM-RESULT` line), so it excludes start-up."
            .into(),
    ]
}

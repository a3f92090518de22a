//! The progress bar on stderr (indicatif); hidden when stderr is not a terminal, so logs and
//! pipes stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(total_runs: u64) -> Progress {
        Progress::counting(total_runs, "runs")
    }

    /// A bar counting `total` of `unit` ("runs", "steps").
    pub fn counting(total: u64, unit: &str) -> Progress {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let template = format!("{{spinner}} [{{bar:30}}] {{pos}}/{{len}} {unit} · {{elapsed}} · {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    /// A bar that never draws (tests, library use).
    pub fn hidden() -> Progress {
        Progress { bar: ProgressBar::hidden() }
    }

    pub fn step(&self, message: String) {
        self.bar.set_message(message);
    }

    pub fn advance(&self, runs: u64) {
        self.bar.inc(runs);
    }

    /// Prints a line above the bar (or plainly on stderr when the bar is hidden).
    pub fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

//! cvm: containers vs micro-VMs, measured.

mod cli;
mod commands;
mod embedded;
mod explain;
mod host;
mod interrupt;
mod program;
mod record;
mod runtime;
mod units;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    interrupt::install();
    match commands::dispatch(cli.command) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(error) => {
            // One line: the error and its causes, outermost first.
            eprintln!("cvm: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

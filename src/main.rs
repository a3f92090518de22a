//! The `cvm` binary: parse the command line, run the subcommand, report errors as one line.

use std::process::ExitCode;

use clap::Parser;
use cvm::{cli, commands, interrupt};

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

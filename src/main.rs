//! The `cvm` binary: parse the command line, run the subcommand, report errors as one line.

use std::process::ExitCode;

use clap::error::ErrorKind;
use cvm::{cli, commands, interrupt};

/// dlmalloc instead of musl's malloc (see `cvm::heap`).
#[global_allocator]
static HEAP: cvm::heap::Heap = cvm::heap::Heap;

fn main() -> ExitCode {
    cvm::runtime::note_process_start();
    let command = match cli::Cli::parse_command() {
        Ok(command) => command,
        Err(error) if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            return ExitCode::from(2);
        }
        Err(error) => {
            // clap's first line names the problem; the usage lines after it are noise here.
            let text = error.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            eprintln!("cvm: error: {} (see `cvm --help`)", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    interrupt::install();
    match commands::dispatch(command) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(error) => {
            // One line: the error and its causes, outermost first, with nothing in it that could
            // break the line or drive the terminal (text from a hostile file can end up here).
            let text: String = format!("{error:#}").chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            eprintln!("cvm: error: {text}");
            ExitCode::from(2)
        }
    }
}

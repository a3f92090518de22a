//! One module per subcommand; each returns the exit status cvm ends with.

pub mod doctor;
pub mod lab;
pub mod run;

use anyhow::{bail, Result};

use crate::cli::Command;

pub fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Compare(_) => bail!("`cvm compare` is not built yet"),
        Command::Bench(_) => bail!("`cvm bench` is not built yet"),
        Command::Report(_) => bail!("`cvm report` is not built yet"),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Lab(args) => lab::lab(args),
    }
}

//! One module per subcommand; each returns the exit status cvm ends with.

pub mod bench;
pub mod compare;
pub mod container;
pub mod density;
pub mod doctor;
pub mod image;
pub mod lab;
pub mod report;
pub mod run;

use anyhow::Result;

use crate::cli::Command;

pub fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => run::run(args),
        Command::Compare(args) => compare::compare(args),
        Command::Bench(args) => bench::bench(args),
        Command::Density(args) => density::density(args),
        Command::Report(args) => report::report(args),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Lab(args) => lab::lab(args),
        Command::Image(args) => image::image(args),
        Command::Create(args) => container::create(args),
        Command::Start(args) => container::start(args),
        Command::Ps(args) => container::ps(args),
        Command::Diff(args) => container::diff(args),
        Command::Rm(args) => container::rm(args),
        Command::Commit(args) => container::commit(args),
    }
}

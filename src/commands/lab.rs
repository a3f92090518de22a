//! `cvm lab list | show N | check N`.

use anyhow::Result;

use crate::cli::{LabAction, LabArgs};
use crate::labs::{self, LABS};

pub fn lab(args: LabArgs) -> Result<i32> {
    match args.action {
        LabAction::List => {
            for lab in &LABS {
                println!("{:>2}  {}", lab.number, lab.title);
            }
            println!("\n`cvm lab show N` to read one, `cvm lab check N` to verify it on this machine.");
            Ok(0)
        }
        LabAction::Show { number } => {
            print!("{}", labs::find(number)?.readme);
            Ok(0)
        }
        LabAction::Check { number } => {
            let lab = labs::find(number)?;
            println!("Lab {}: {}", lab.number, lab.title);
            match lab.check() {
                Ok(verdict) if verdict.passed => {
                    println!("PASSED: {}", verdict.reason);
                    Ok(0)
                }
                Ok(verdict) => {
                    println!("FAILED: {}", verdict.reason);
                    Ok(1)
                }
                Err(error) => {
                    println!("FAILED: the experiment could not run: {error:#}");
                    Ok(1)
                }
            }
        }
    }
}

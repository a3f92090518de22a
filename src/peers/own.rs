//! cvm's own runtimes in the peer view: `cvm run --runtime KIND --json ...` spawned as one
//! whole command, so cvm pays for its own start-up (exec, loading, argument parsing, the
//! record's printing) like every other tool. The record is the one the command printed, with
//! the whole-command measure added.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::whole_command::{self, last_error_line};
use crate::program::Program;
use crate::record::{RunRecord, RuntimeKind};
use crate::runtime::{RunSpec, Runtime};

/// How long a `cvm run` command gets to clean up after its timeout or a stop request.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub struct WholeCommandRuntime {
    kind: RuntimeKind,
    /// The cvm executable to spawn.
    exe: PathBuf,
}

impl WholeCommandRuntime {
    pub fn new(kind: RuntimeKind, exe: PathBuf) -> WholeCommandRuntime {
        assert!(!kind.is_peer(), "{kind} is a peer: it is always a whole command");
        WholeCommandRuntime { kind, exe }
    }

    fn command(&self, spec: &RunSpec) -> Result<Vec<String>> {
        let mut argv = vec![self.exe.display().to_string(), "run".into(), "--runtime".into(), self.kind.name().into()];
        argv.extend(["--json".into(), "--timeout".into(), format!("{}", spec.timeout.as_secs_f64())]);
        if let Some(bytes) = spec.memory_bytes {
            argv.extend(["--memory".into(), bytes.to_string()]);
        }
        if let Some(cpus) = spec.cpus {
            argv.extend(["--cpus".into(), cpus.to_string()]);
        }
        if let Some(pids) = spec.pids {
            argv.extend(["--pids".into(), pids.to_string()]);
        }
        if self.kind == RuntimeKind::Vm {
            argv.extend(["--kernel".into(), spec.kernel.label()]);
        }
        match &spec.program {
            Program::Workload { name } => argv.push(name.clone()),
            Program::Binary { path, .. } => argv.extend(["--binary".into(), path.display().to_string()]),
            Program::Image(image) => argv.extend(["--image".into(), image.reference.clone()]),
        }
        argv.extend(spec.args.iter().cloned());
        Ok(argv)
    }
}

impl Runtime for WholeCommandRuntime {
    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    fn check_available(&self) -> Result<()> {
        crate::runtime::runtime(self.kind).check_available()
    }

    fn run(&self, spec: &RunSpec) -> Result<RunRecord> {
        let argv = self.command(spec)?;
        // The command has the run's timeout itself and tears its run down when it ends or is
        // told to stop (SIGTERM): cvm waits a little longer and asks it first, and kills it
        // only if it does not stop.
        let kill = whole_command::KillScope::Politely { grace: STOP_GRACE };
        let finished = whole_command::run(&argv, spec, kill, spec.timeout + STOP_GRACE)?;
        let text = String::from_utf8_lossy(&finished.done.stdout.bytes);
        let Some(mut record) = text.lines().rev().find_map(|line| serde_json::from_str::<RunRecord>(line).ok()) else {
            if finished.done.stdout.dropped > 0 {
                bail!("cvm run printed a record too large to keep (the program's output is kept inside it)");
            }
            bail!("cvm run failed: {}", last_error_line(&finished.done));
        };
        record.notes.push(
            "whole command: `cvm run --json` spawned and timed from outside (cvm's exec, start-up and printing \
             included); the phases are the ones that command measured inside"
                .into(),
        );
        record.command = Some(finished.command);
        Ok(record)
    }
}

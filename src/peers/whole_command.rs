//! One run measured from outside, as a whole command: spawned, timed from just before the
//! spawn to its exit, reaped, as hyperfine does. The same measure for the peers and, in the
//! peer view, for cvm's own runtimes (then the command is `cvm run --json ...`).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::record::{RunRecord, RuntimeKind, WholeCommand};
use crate::runtime::spawn;
pub use crate::runtime::supervise::KillScope;
use crate::runtime::supervise::{pipe, supervise, Supervised, Watched};
use crate::runtime::RunSpec;

/// A finished command: what it printed and how it ended, and the whole-command measure.
pub struct Finished {
    pub done: Supervised,
    pub command: WholeCommand,
    started: Instant,
}

/// Runs `argv` (program path first) once with stdin from /dev/null and its output captured,
/// stopping it (`kill`) at `deadline` after the spawn or on Ctrl-C.
pub fn run(argv: &[String], spec: &RunSpec, kill: KillScope, deadline: std::time::Duration) -> Result<Finished> {
    let (program, args) = argv.split_first().context("an empty command")?;
    let (stdout, stdout_for_child) = pipe()?;
    let (stderr, stderr_for_child) = pipe()?;
    let stdin = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    let stdio = spawn::Stdio {
        stdin: stdin.as_raw_fd(),
        stdout: stdout_for_child.as_raw_fd(),
        stderr: stderr_for_child.as_raw_fd(),
    };
    let taskstats = crate::runtime::taskstats::ensure_listening();
    let start = Instant::now();
    let child = spawn::spawn(Path::new(program), args, stdio)?;
    drop((stdout_for_child, stderr_for_child, stdin));
    let done = supervise(Watched {
        pid: child.pid,
        pidfd: &child.pidfd,
        stdout,
        stderr,
        kill,
        deadline: start + deadline,
        echo: spec.echo_output,
    })?;
    // The kernel's exit record of the command's process has its own peak after exec;
    // ru_maxrss would hold cvm's, which the vfork-style spawn lends it until exec.
    let peak_rss_bytes = taskstats.then(|| crate::runtime::taskstats::peak_rss_of(child.pid)).flatten();
    let command = WholeCommand {
        argv: argv.to_vec(),
        wall_ns: done.exited_at.saturating_duration_since(start).as_nanos() as u64,
        peak_rss_bytes,
        user_ns: done.user_ns(),
        system_ns: done.system_ns(),
    };
    Ok(Finished { done, command, started: start })
}

/// The record of a peer's run: its output and end, and the whole command as every phase (a
/// peer tells nothing of its inside).
pub fn peer_record(kind: RuntimeKind, kernel: &str, spec: &RunSpec, finished: Finished) -> RunRecord {
    let Finished { done, command, started } = finished;
    let mut record = RunRecord::new(kind, kernel, &spec.program.label(), &spec.args);
    record.set_output(&done.stdout, &done.stderr);
    record.exit_code = done.exit_code();
    record.signal = done.signal;
    record.outcome = done.outcome();
    record.reason = done.reason(spec.timeout);
    let wall = command.wall_ns;
    record.phases_ns.exit = wall;
    record.phases_ns.teardown = wall;
    record.phases_ns.total = wall;
    record.phases_ns.first_output = done.first_output.map(|t| t.saturating_duration_since(started).as_nanos() as u64);
    record.cpu.user_ns = command.user_ns;
    record.cpu.system_ns = command.system_ns;
    record.command = Some(command);
    record
}

/// The directories of PATH, searched for a peer's program.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    // Only absolute directories: an empty entry would mean the current one.
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The first line of `program --version` (or `-version`), for `cvm doctor` and the report,
/// without control characters (a tool's output must not drive the terminal).
pub fn version_line(program: &Path, flag: &str) -> Option<String> {
    let (_, stdout) = run_briefly(program, &[flag], HELPER_LIMIT)?;
    let text = String::from_utf8_lossy(&stdout);
    let line = text.lines().map(str::trim).find(|line| !line.is_empty())?;
    Some(line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
}

/// How long a helper command (a version query, `runc delete`) may take before cvm gives up
/// on it and kills it.
pub const HELPER_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `program args` with no input and at most `limit` of time (less on Ctrl-C): its exit
/// status and the first 64 KiB of its stdout, or None when it could not start or was killed.
pub fn run_briefly(program: &Path, args: &[&str], limit: std::time::Duration) -> Option<(i32, Vec<u8>)> {
    use std::io::Read;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline && crate::interrupt::requested().is_none() => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            _ => break None,
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    let mut stdout = Vec::new();
    if let Some(pipe) = child.stdout.take() {
        let _ = pipe.take(64 << 10).read_to_end(&mut stdout);
    }
    Some((status.code().unwrap_or(-1), stdout))
}

/// The last non-empty line a failed command wrote on stderr (its one-line reason).
pub fn last_error_line(done: &Supervised) -> String {
    last_line(&String::from_utf8_lossy(&done.stderr.bytes)).unwrap_or("no message").to_string()
}

/// The last non-empty line of `text`, trimmed.
pub fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|line| !line.is_empty())
}

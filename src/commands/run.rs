//! `cvm run`: one program, once, in one runtime.

use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::RunArgs;
use crate::explain::Narrator;
use crate::image::reference::Reference;
use crate::image::store::Store;
use crate::program::{ImageProgram, Program};
use crate::record::{Outcome, RunRecord, RuntimeKind};
use crate::runtime::{self, relay, KernelChoice, RunSpec};
use crate::units::{check_count, format_bytes, format_ns, parse_size, parse_timeout, MAX_PIDS};

pub fn run(args: RunArgs) -> Result<i32> {
    let spec = spec_from_args(&args)?;
    let runtime = runtime::runtime(args.runtime);
    runtime.check_available()?;
    let deadline = Instant::now() + spec.timeout;
    let record = runtime.run(&spec)?;
    finish_run(&record, args.json, args.trace_syscalls, deadline, true)
}

/// Prints the record (`json`) or the summary, then waits for cvm's output to reach its reader.
/// Everything cvm prints goes through the relays, behind the program's own output: a reader
/// that stalls can hold cvm until the run's deadline, plus a second for these last lines.
pub fn finish_run(
    record: &RunRecord,
    json: bool,
    trace_syscalls: bool,
    deadline: Instant,
    summary_lines: bool,
) -> Result<i32> {
    if json {
        let json = serde_json::to_string(&record).context("serializing the run record")?;
        relay::stdout().push(format!("{json}\n").as_bytes());
    }
    let mut text = String::new();
    if !json && summary_lines {
        summary(record, &mut text);
    }
    if trace_syscalls {
        syscall_table(record, &mut text);
    }
    if let Some(reason) = &record.reason {
        let _ = writeln!(text, "cvm: {reason}");
    }
    relay::eprint(&text);
    // A reader that went away or never read loses the rest: the run is over either way. The
    // program's own output waits for its reader until the deadline; cvm's last lines (the
    // record, the summary) a little longer.
    let now = Instant::now();
    let (output_until, last) = if record.outcome == Outcome::Interrupted {
        // The user asked cvm to stop: only a short wait, for anything.
        (now + LAST_LINES_GRACE, now + LAST_LINES_GRACE)
    } else {
        (deadline, deadline.max(now + LAST_LINES_GRACE))
    };
    let _ = relay::stdout().drain(if json { last } else { output_until });
    let _ = relay::stderr().drain(last);
    Ok(record.exit_code)
}

/// `--timeout` of `cvm run` when none is given.
pub const RUN_TIMEOUT_SECS: f64 = 30.0;

/// How long cvm's last lines may wait for a stalled reader after the deadline.
const LAST_LINES_GRACE: Duration = Duration::from_secs(1);

/// `--memory`, `--cpus`, `--pids` and `--timeout`, checked.
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    pub timeout: Duration,
}

pub fn parse_limits(memory: Option<&str>, cpus: Option<f64>, pids: Option<u64>, timeout: f64) -> Result<Limits> {
    let timeout = parse_timeout(timeout)?;
    if let Some(cpus) = cpus {
        if !(cpus > 0.0 && cpus.is_finite()) {
            bail!("--cpus must be a positive number");
        }
    }
    if let Some(pids) = pids {
        check_count("--pids", pids, 1, MAX_PIDS)?;
    }
    let memory_bytes = memory.map(parse_size).transpose().context("--memory")?;
    Ok(Limits { memory_bytes, cpus, pids, timeout })
}

pub fn spec_from_args(args: &RunArgs) -> Result<RunSpec> {
    let given = &args.limits;
    let limits =
        parse_limits(given.memory.as_deref(), given.cpus, given.pids, given.timeout.unwrap_or(RUN_TIMEOUT_SECS))?;
    if args.protect_guest_kernel && (args.runtime != RuntimeKind::Vm || args.kernel != "builtin") {
        bail!("--protect-guest-kernel applies to --runtime vm with the builtin guest kernel");
    }
    let (program, user_args) = match (&args.binary, &args.image) {
        (Some(path), _) => (Program::binary(path)?, args.rest.clone()),
        (None, Some(image)) => {
            if args.runtime != RuntimeKind::Container {
                bail!("{}", crate::program::IMAGE_RUNTIME_ONLY);
            }
            let reference = Reference::parse(image)?;
            let program = ImageProgram::prepare(&Store::open()?, &reference, &args.rest)?;
            (Program::Image(program), args.rest.clone())
        }
        (None, None) => {
            let name = args.rest.first().map(String::as_str).unwrap_or("hello");
            (Program::workload(name)?, args.rest.iter().skip(1).cloned().collect())
        }
    };
    let mut spec = RunSpec::new(program, user_args);
    spec.started = runtime::process_start();
    spec.memory_bytes = limits.memory_bytes;
    spec.cpus = limits.cpus;
    spec.pids = limits.pids;
    spec.timeout = limits.timeout;
    spec.kernel = KernelChoice::from_arg(&args.kernel);
    spec.narrator = Narrator::new(args.explain);
    spec.trace_syscalls = args.trace_syscalls;
    spec.protect_guest_kernel = args.protect_guest_kernel;
    spec.echo_output = !args.json;
    spec.seccomp = given.seccomp;
    if !given.volume.is_empty() && args.runtime != RuntimeKind::Container {
        bail!("--volume applies to --runtime container (a process sees the host's folders already; a VM has no host folders)");
    }
    spec.volumes = crate::runtime::container::volumes::parse_all(&given.volume)?;
    Ok(spec)
}

/// A short human summary for stderr (stdout carried the program's own output).
fn summary(record: &RunRecord, out: &mut String) {
    let p = &record.phases_ns;
    let ms = |ns: u64| format_ns(ns as f64);
    let outcome = match record.outcome {
        Outcome::Exited => format!("exit status {}", record.exit_code),
        other => format!("{} (exit status {})", other.label(), record.exit_code),
    };
    let _ = writeln!(out, "── cvm run: {} · {} · kernel {} ──", record.runtime, record.workload, record.kernel);
    let _ = writeln!(out, "  ended     {outcome}");
    let first = p.first_output.map_or("none".to_string(), ms);
    if let Some(command) = record.command.as_ref().filter(|_| record.runtime.is_peer()) {
        // A peer is measured from outside only: the whole command is its one figure.
        let rss = command.peak_rss_bytes.map_or("not measured".into(), format_bytes);
        let _ = writeln!(
            out,
            "  command   {} from spawn to exit · first output {first} · peak RSS of its process {rss}",
            ms(command.wall_ns)
        );
    } else {
        let _ = writeln!(
            out,
            "  phases    setup {} · boot {} · first output {} · exit {} · teardown {} · total {} (from cvm's start; \
             its exec and loading before that are outside)",
            ms(p.setup),
            ms(p.boot),
            first,
            ms(p.exit),
            ms(p.teardown),
            ms(p.total)
        );
    }
    let m = &record.memory;
    let figures = [
        ("program", m.program_peak_rss_bytes),
        ("runtime private (USS)", m.runtime_private_bytes),
        ("of which this run added", m.runtime_added_bytes),
        ("runtime shared pages", m.runtime_shared_bytes),
        ("guest kernel", m.guest_kernel_bytes),
        ("guest RAM", m.guest_ram_bytes),
        ("cgroup peak", m.cgroup_peak_bytes),
    ];
    let memory: Vec<String> =
        figures.iter().filter_map(|(name, value)| value.map(|v| format!("{name} {}", format_bytes(v)))).collect();
    if !memory.is_empty() {
        let _ = writeln!(out, "  memory    {}", memory.join(" · "));
    }
    let _ = writeln!(out, "  cpu       user {} · system {}", ms(record.cpu.user_ns), ms(record.cpu.system_ns));
    for note in &record.notes {
        let _ = writeln!(out, "  note      {note}");
    }
}

/// `--trace-syscalls`: a `strace -c`-like table of the calls the guest kernel served.
fn syscall_table(record: &RunRecord, out: &mut String) {
    let Some(guest) = &record.guest else {
        let _ = writeln!(
            out,
            "cvm: --trace-syscalls counts the calls served by the guest kernel; it applies to --runtime vm"
        );
        return;
    };
    let mut rows: Vec<(&String, u64, u64)> = guest
        .syscalls
        .iter()
        .map(|(name, &calls)| (name, calls, guest.unsupported_syscalls.get(name).copied().unwrap_or(0)))
        .collect();
    for (name, &count) in &guest.unsupported_syscalls {
        if !guest.syscalls.contains_key(name) {
            rows.push((name, count, count));
        }
    }
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: u64 = rows.iter().map(|r| r.1).sum();
    let errors: u64 = rows.iter().map(|r| r.2).sum();
    let _ = writeln!(
        out,
        "{:>8} {:>9} {:>8}  syscall (served by the {} guest kernel)",
        "calls", "% calls", "ENOSYS", record.kernel
    );
    let _ = writeln!(out, "{:->8} {:->9} {:->8}  {:->24}", "", "", "", "");
    for (name, calls, unsupported) in rows {
        let share = 100.0 * calls as f64 / total.max(1) as f64;
        let unsupported = if unsupported > 0 { unsupported.to_string() } else { String::new() };
        let _ = writeln!(out, "{calls:>8} {share:>8.1}% {unsupported:>8}  {name}");
    }
    let _ = writeln!(out, "{:->8} {:->9} {:->8}  {:->24}", "", "", "", "");
    let _ = writeln!(out, "{total:>8} {:>8.1}% {errors:>8}  total", 100.0);
    if guest.kernel_open_to_program {
        let _ = writeln!(
            out,
            "(counted by the guest kernel in its own memory, which the program could reach on this host: reported, \
             not verified; --protect-guest-kernel closes it at a price per call)"
        );
    }
}

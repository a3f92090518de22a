//! Lab 15: CPUs, owned or shared. Lecture 2.3 (the guest holds memory and CPU exclusively; a VM
//! can slow a laptop down) and 1.4 (containers do not disturb each other): what a program sees
//! of the CPUs in a VM and in a container, that a VM's vCPUs are host threads the host schedules
//! like any other (so the claim "exclusively" does not hold for CPU here), and noisy neighbours:
//! a container that burns every CPU slows another one down, a `--cpus` quota gives the time
//! back, and `--pids` stops a container from starting processes past its limit.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::measure::{cvm_executable, Band, Context, Setup};
use super::question::{number, Answer, Grade, Need, Question, TaskCheck};
use super::Lab;
use crate::program::Program;
use crate::record::{RunRecord, RuntimeKind};
use crate::runtime::spawn::{spawn_with_death_signal, Stdio};
use crate::runtime::{self, RunSpec};

pub static LAB: Lab = Lab {
    number: 15,
    title: "CPUs: owned or shared",
    minutes: 35,
    topics: &[
        "2.3 a guest holds the CPU exclusively: a VM owns vCPUs, which are host threads (measured against the claim)",
        "1.4 containers do not disturb each other: a noisy neighbour, a --cpus quota, a --pids limit (hands-on)",
    ],
    sheet: include_str!("../../labs/15-cpus-owned-or-shared/README.md"),
    questions,
};

const BUSYBOX: &str = "/bin/busybox";

/// The vCPUs of the VM whose CPUs the student counts: more than a 2-CPU laptop has.
const VM_CPUS: &str = "3";

/// The quota of the container whose CPUs the student counts.
const QUOTA: &str = "0.5";

/// The quota of the tamed neighbour: a fifth of a CPU, little enough that the time it gives
/// back shows even when other programs load the machine.
const NEIGHBOUR_QUOTA: &str = "0.2";

/// Rounds of the noisy-neighbour experiment, each measuring every victim under every neighbour.
const ROUNDS: usize = 6;

/// Runs of a victim beside one neighbour, of which the fastest counts: the one the machine's
/// other programs disturbed least (as lab 4 takes a system call's fastest batch), so what is
/// left is the neighbour's doing.
const TRIES: usize = 2;

/// SHA-256 rounds per thread of a victim run: about 0.25 s alone on a 2-core machine, several
/// 100 ms periods of a quota, so where in a period a run starts hardly matters.
const VICTIM_ROUNDS: &str = "400000";

/// How long a started neighbour gets to be up and burning before a victim is timed.
const SETTLE: Duration = Duration::from_millis(300);

/// The shell of the `--pids` task: background sleeps, counted, until a fork is refused (the
/// bound keeps it finite without a limit).
const FORK_SCRIPT: &str = "i=0; while [ $i -lt 50 ]; do sleep 10 & i=$((i+1)); echo $i; done";

/// The CPUs the host lets this process use: the thread count of the container victim and of
/// the neighbours (the cpu workload runs at most 64 threads).
fn host_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(64)
}

/// The VM victim's vCPUs and threads: one per host CPU, at most the 8 vCPUs a VM may have.
fn vm_threads() -> usize {
    host_threads().min(cvm_guest_abi::MAX_CPUS)
}

/// Runs busybox with `args` in `kind` with `--cpus cpus`; the record of a run that ended well.
fn busybox(kind: RuntimeKind, cpus: f64, args: &[&str]) -> Result<RunRecord> {
    let runtime = runtime::runtime(kind);
    runtime.check_available()?;
    let mut spec = RunSpec::new(Program::binary(Path::new(BUSYBOX))?, args.iter().map(|a| a.to_string()).collect());
    spec.cpus = Some(cpus);
    let record = runtime.run(&spec)?;
    if !record.succeeded() {
        bail!("busybox {} in the {kind} runtime did not end normally", args.join(" "));
    }
    Ok(record)
}

/// The CPUs `nproc` counts (its affinity mask) in `kind` with `--cpus cpus`.
fn nproc(context: &mut Context, kind: RuntimeKind, cpus: &str) -> Result<Band> {
    let key = if kind == RuntimeKind::Vm { "lab15-vm-nproc" } else { "lab15-container-nproc" };
    context.once(key, |context| {
        let record = busybox(kind, cpus.parse()?, &["nproc"])?;
        let seen: u64 = record.stdout.trim().parse().with_context(|| format!("nproc printed {:?}", record.stdout))?;
        context.note(format!("nproc in the {kind} runtime with --cpus {cpus}: {seen}"));
        Ok(Band::exact(seen as f64, 0.0))
    })
}

fn vm_nproc(context: &mut Context) -> Result<Band> {
    nproc(context, RuntimeKind::Vm, VM_CPUS)
}

fn container_nproc(context: &mut Context) -> Result<Band> {
    nproc(context, RuntimeKind::Container, QUOTA)
}

/// A `cvm run` started in the background by the check (a noisy neighbour, a busy VM), always
/// stopped: by [`Background::stop`], when dropped (an error, an interrupted check), by its own
/// `--timeout`, and with SIGTERM if this cvm dies (a parent-death signal).
struct Background {
    pid: libc::pid_t,
    _pidfd: std::os::fd::OwnedFd,
    ended: bool,
}

impl Background {
    fn start(args: &[String]) -> Result<Background> {
        let exe = cvm_executable()?;
        let null = std::fs::File::options().read(true).write(true).open("/dev/null").context("opening /dev/null")?;
        let fd = null.as_raw_fd();
        let stdio = Stdio { stdin: fd, stdout: fd, stderr: fd };
        let child = spawn_with_death_signal(&exe, args, stdio, libc::SIGTERM)
            .with_context(|| format!("starting cvm {}", args.join(" ")))?;
        Ok(Background { pid: child.pid, _pidfd: child.pidfd, ended: false })
    }

    /// True while it runs; reaps it when it has ended.
    fn running(&mut self) -> bool {
        if self.ended {
            return false;
        }
        let mut status = 0;
        // SAFETY: polling our own unreaped child without blocking.
        let reaped = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if reaped != 0 {
            self.ended = true;
        }
        !self.ended
    }

    /// SIGTERM (it tears its container or VM down), then SIGKILL after 10 s.
    fn stop(&mut self) {
        if !self.running() {
            return;
        }
        // SAFETY: signalling our own unreaped child (its pid cannot have been reused).
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.running() {
            let mut status = 0;
            // SAFETY: as above; SIGKILL cannot be caught, and the blocking wait reaps it.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, &mut status, 0);
            }
            self.ended = true;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Who runs beside the victim.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Neighbour {
    Nobody,
    /// A container with a busy thread per host CPU.
    Unlimited,
    /// The same under `--cpus NEIGHBOUR_QUOTA`.
    Limited,
}

/// The neighbours of round `round`, forwards then backwards (A B C C B A ...), so a drift of
/// the machine's load hits every neighbour alike.
fn order(round: usize) -> [Neighbour; 3] {
    let forwards = [Neighbour::Nobody, Neighbour::Unlimited, Neighbour::Limited];
    if round.is_multiple_of(2) {
        forwards
    } else {
        [forwards[2], forwards[1], forwards[0]]
    }
}

impl Neighbour {
    fn index(self) -> usize {
        self as usize
    }

    fn start(self, threads: usize) -> Result<Option<Background>> {
        let mut args = strings(&["run", "--runtime", "container", "--timeout", "60"]);
        match self {
            Neighbour::Nobody => return Ok(None),
            Neighbour::Unlimited => {}
            Neighbour::Limited => args.extend(strings(&["--cpus", NEIGHBOUR_QUOTA])),
        }
        args.extend(strings(&["cpu", "4000000000", &threads.to_string()]));
        let neighbour = Background::start(&args)?;
        std::thread::sleep(SETTLE);
        Ok(Some(neighbour))
    }
}

/// Rounds/s of each victim per round: the container's beside each neighbour, the VM's (when
/// this machine has /dev/kvm) beside nobody and the unlimited neighbour.
#[derive(Clone, Default)]
struct Victims {
    container: Vec<[f64; 3]>,
    vm: Vec<[f64; 2]>,
}

/// The fastest of [`TRIES`] runs of `setup`, in rounds/s.
fn speed(setup: &Setup) -> Result<f64> {
    let mut fastest = 0.0f64;
    for _ in 0..TRIES {
        let record = setup.run_ok()?;
        match record.result.as_ref().and_then(|r| r.get("ops_per_sec")).and_then(|v| v.as_f64()) {
            Some(speed) if speed.is_finite() && speed > 0.0 => fastest = fastest.max(speed),
            _ => bail!("the {} run of cpu printed no rounds/s", setup.runtime),
        }
    }
    Ok(fastest)
}

fn victims(context: &mut Context) -> Result<Victims> {
    context.once("lab15-neighbours", |context| {
        let threads = host_threads();
        let t = threads.to_string();
        let container = Setup::new(RuntimeKind::Container, "cpu", &[VICTIM_ROUNDS, t.as_str()]);
        let vm_t = vm_threads().to_string();
        let mut vm = Setup::new(RuntimeKind::Vm, "cpu", &[VICTIM_ROUNDS, vm_t.as_str()]);
        vm.cpus = Some(vm_threads() as f64);
        let with_vm = crate::vmm::builder::open_kvm().is_ok();
        let mut measured = Victims::default();
        for round in 0..ROUNDS {
            let (mut c, mut v) = ([0.0; 3], [0.0; 2]);
            for neighbour in order(round) {
                if let Some(signal) = crate::interrupt::requested() {
                    bail!("the check was interrupted by signal {signal}");
                }
                let mut running = neighbour.start(threads)?;
                let i = neighbour.index();
                let vm_too = with_vm && neighbour != Neighbour::Limited;
                if vm_too && !round.is_multiple_of(2) {
                    v[i] = speed(&vm)?;
                }
                c[i] = speed(&container)?;
                if vm_too && round.is_multiple_of(2) {
                    v[i] = speed(&vm)?;
                }
                if let Some(running) = running.as_mut() {
                    if !running.running() {
                        bail!("the neighbour container ended before the victims did");
                    }
                    running.stop();
                }
            }
            measured.container.push(c);
            if with_vm {
                measured.vm.push(v);
            }
        }
        let show = |rows: Vec<Vec<f64>>| -> String {
            rows.iter()
                .map(|r| r.iter().map(|x| format!("{:.2}", x / 1e6)).collect::<Vec<_>>().join("/"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        context.note(format!(
            "container victim ({threads} threads), M rounds/s beside nobody/unlimited/--cpus {NEIGHBOUR_QUOTA}: {}",
            show(measured.container.iter().map(|r| r.to_vec()).collect())
        ));
        if with_vm {
            context.note(format!(
                "VM victim ({vm_t} vCPUs), M rounds/s beside nobody/unlimited: {}",
                show(measured.vm.iter().map(|r| r.to_vec()).collect())
            ));
        }
        Ok(measured)
    })
}

/// The container victim's speed beside neighbour `with` over its speed alone, per round.
fn container_ratios(context: &mut Context, with: Neighbour) -> Result<Vec<f64>> {
    Ok(victims(context)?.container.iter().map(|r| r[with.index()] / r[Neighbour::Nobody.index()]).collect())
}

/// What a neighbour leaves the victim depends on what else loads the machine (on a 2-core
/// machine beside two busy loops, 0.7 instead of 0.45): a right answer measured a few minutes
/// before the check, under another load, must still pass, so the band is at least ±30%.
fn neighbour_slowdown(context: &mut Context) -> Result<Band> {
    Ok(Band::from_ratios(&container_ratios(context, Neighbour::Unlimited)?, 0.02).at_least(0.3))
}

fn neighbour_with_quota(context: &mut Context) -> Result<Band> {
    Ok(Band::from_ratios(&container_ratios(context, Neighbour::Limited)?, 0.02).at_least(0.3))
}

fn vm_with_neighbour(context: &mut Context) -> Result<Band> {
    let victims = victims(context)?;
    if victims.vm.is_empty() {
        bail!("this machine has no /dev/kvm to run the VM");
    }
    let ratios: Vec<f64> = victims.vm.iter().map(|r| r[1] / r[0]).collect();
    Ok(Band::from_ratios(&ratios, 0.02).at_least(0.3))
}

/// The last count the fork loop printed: how many background sleeps it started.
fn last_count(stdout: &str) -> Option<u64> {
    stdout.lines().rev().find_map(|line| line.trim().parse().ok())
}

fn check_pids(task: &mut TaskCheck) -> Result<Grade> {
    let Some(record) = task.saved_record("pids.json")? else { return Ok(Grade::Unanswered) };
    let Some(answer) = task.answer.and_then(number) else {
        return Ok(Grade::Wrong("write how many sleeps the shell started as the answer".into()));
    };
    if record.runtime != RuntimeKind::Container
        || record.workload != "busybox"
        || record.args.first().map(String::as_str) != Some("sh")
    {
        return Ok(Grade::Wrong("the saved record must be a run of busybox sh in the container runtime".into()));
    }
    let Some(limit) = record.container.as_ref().and_then(|c| c.pids_limit) else {
        return Ok(Grade::Wrong("in the saved record the container had no --pids limit".into()));
    };
    let refused = record.stderr.contains("can't fork") || record.stderr.contains("Resource temporarily unavailable");
    let Some(started) = last_count(&record.stdout).filter(|_| refused) else {
        return Ok(Grade::Wrong("in the saved record no fork was refused: the loop never reached the limit".into()));
    };
    if answer.round() as u64 != started || answer < 0.0 {
        return Ok(Grade::Wrong(format!("{answer} is not the count the saved record shows")));
    }
    Ok(Grade::Passed(format!(
        "{started} sleeps and the shell itself made {} processes of the {limit} allowed; the next fork was refused",
        started + 1
    )))
}

fn perform_pids(task: &mut TaskCheck) -> Result<Option<toml::Value>> {
    let args = ["run", "--runtime", "container", "--pids", "8", "--json", "--binary", BUSYBOX, "sh", "-c", FORK_SCRIPT];
    task.save_cvm_output("pids.json", &args)?;
    let record = task.saved_record("pids.json")?.context("cvm saved no record")?;
    let started = last_count(&record.stdout).context("the shell printed no count")?;
    Ok(Some(toml::Value::Integer(started as i64)))
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "vm_nproc",
            text: "`cvm run --runtime vm --cpus 3 --binary /bin/busybox nproc`: how many CPUs does the program in the \
                   VM see?",
            needs: &[Need::Kvm, Need::Busybox],
            hint: "run it; nproc counts the CPUs its kernel lets it run on",
            answer: Answer::Number { unit: "CPUs", measure: vm_nproc },
        },
        Question {
            id: "container_nproc",
            text: "`cvm run --runtime container --cpus 0.5 --binary /bin/busybox nproc`: how many CPUs does the \
                   program in the container see?",
            needs: &[Need::Containers, Need::Cgroup, Need::Busybox],
            hint: "run it, and compare with `nproc` on the host: a quota is an amount of time, not a set of CPUs",
            answer: Answer::Number { unit: "CPUs", measure: container_nproc },
        },
        Question {
            id: "neighbour_slowdown",
            text: "Run a victim `cvm run --runtime container cpu 400000 T` (T = the host's CPUs) alone and while a \
                   neighbour `cvm run --runtime container cpu 4000000000 T` burns every CPU, alternating. The \
                   victim's rounds/s beside the neighbour as a fraction of alone (1.0 = no slower)?",
            needs: &[Need::Containers, Need::Cgroup],
            hint:
                "take the median of several alternating pairs, each with the neighbour started fresh and stopped after",
            answer: Answer::Number { unit: "", measure: neighbour_slowdown },
        },
        Question {
            id: "neighbour_with_quota",
            text: "The same with the neighbour limited: `cvm run --runtime container --cpus 0.2 cpu 4000000000 T`. \
                   The victim's rounds/s beside it as a fraction of alone?",
            needs: &[Need::Containers, Need::Cgroup],
            hint: "the same alternating pairs as before, only the neighbour's command changes",
            answer: Answer::Number { unit: "", measure: neighbour_with_quota },
        },
        Question {
            id: "vm_with_neighbour",
            text: "Now the victim is a VM: `cvm run --runtime vm --cpus T cpu 400000 T`, alone and beside the \
                   unlimited neighbour, alternating. The VM's rounds/s beside the neighbour as a fraction of alone?",
            needs: &[Need::Kvm, Need::Containers, Need::Cgroup],
            hint: "the same alternating pairs as for the container victim, with the VM as the victim",
            answer: Answer::Number { unit: "", measure: vm_with_neighbour },
        },
        Question {
            id: "why_not_exclusive",
            text: "The lecture says a guest holds the CPU exclusively. Why did the neighbour slow the VM down all the \
                   same, in a sentence? (Look at the VM's process with `ps -L` while it computes.)",
            needs: &[],
            hint: "what is a vCPU to the host's scheduler, and did anything set host CPUs aside for it?",
            answer: Answer::Words {
                groups: &[&["thread", "threads"], &["share*", "schedul*", "compet*", "pin*", "reserv*", "same"]],
                example:
                    "Each vCPU is just a thread of cvm's process on the host; the host's scheduler shares the CPUs \
                          between those threads and the neighbour's, and nothing pins or reserves a core for them.",
            },
        },
        Question {
            id: "pids_limit",
            text: "Task: `cvm run --runtime container --pids 8 --json --binary /bin/busybox sh -c 'i=0; while [ $i \
                   -lt 50 ]; do sleep 10 & i=$((i+1)); echo $i; done' > evidence/pids.json`. How many background \
                   sleeps did the shell start before a fork was refused?",
            needs: &[Need::Containers, Need::Cgroup, Need::Busybox],
            hint:
                "the last number the shell printed, in the record's stdout; remember what else in the container is a \
                   process",
            answer: Answer::Task { check: check_pids, perform: perform_pids },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_alternate_forwards_and_backwards() {
        assert_eq!(order(0), [Neighbour::Nobody, Neighbour::Unlimited, Neighbour::Limited]);
        assert_eq!(order(1), [Neighbour::Limited, Neighbour::Unlimited, Neighbour::Nobody]);
        assert_eq!(order(2), order(0));
    }

    #[test]
    fn the_fork_loop_count() {
        assert_eq!(last_count("1\n2\n3\n7\n"), Some(7));
        assert_eq!(last_count("1\n2\nsh: can't fork\n"), Some(2));
        assert_eq!(last_count(""), None);
    }
}

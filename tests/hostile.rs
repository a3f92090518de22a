//! Regression tests for what a hostile program did to cvm in a security review: two ways out of
//! the container (inherited descriptors, the caller's terminal) and several ways to stall or
//! grow the host-side cvm. Each test names the hole it keeps closed. They need root, /dev/kvm,
//! Debian's busybox-static and musl-tools, and util-linux's `script`; CI provides all of them.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{busybox, c_program, cvm, require_kvm, require_root, run_cvm, run_json_in};

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn json(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("not one JSON record ({e}): {}", String::from_utf8_lossy(stdout)))
}

/// Hole 1: the container's first process kept every descriptor the caller left open without
/// close-on-exec; through an open directory of the host the program read /etc/shadow.
#[test]
fn inherited_descriptors_never_reach_the_program_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let script = "if [ -e /proc/self/fd/7 ]; then echo LEAKED; fi; ls /proc/self/fd";
    for runtime in ["process", "container"] {
        let mut command = cvm();
        command.args(["run", "--json", "--runtime", runtime, "--binary", busybox, "sh", "-c", script]);
        // SAFETY: between fork and exec the test child only opens a directory and dup2s it to
        // descriptor 7 without close-on-exec, as a careless caller of cvm would leave it.
        unsafe {
            command.pre_exec(|| {
                let fd = libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                if fd < 0 || libc::dup2(fd, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let record = json(&command.output().unwrap().stdout);
        let stdout = record["stdout"].as_str().unwrap();
        assert!(!stdout.contains("LEAKED"), "{runtime}: descriptor 7 reached the program: {stdout}");
        let listed: Vec<&str> = stdout.split_whitespace().collect();
        // 0, 1, 2 and the directory `ls` itself opened to list them.
        assert_eq!(listed, ["0", "1", "2", "3"], "{runtime}: {stdout}");
    }
}

fn in_a_terminal(command: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("running script (util-linux)");
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

/// Hole 2: the container shared the caller's session, so it could open the caller's terminal
/// and type a command into the root shell that started cvm (TIOCSTI).
#[test]
fn the_container_has_no_terminal_to_type_into_as_root() {
    if !require_root() {
        return;
    }
    if !common::debian_package("bsdutils", || common::command_runs("script", "--version")) {
        return;
    }
    let Some(tiocsti) = c_program("tiocsti") else { return };
    let _serial = one_at_a_time();
    let cvm = env!("CARGO_BIN_EXE_cvm");
    // The pseudo-terminal is there: the unconfined baseline (a plain process) can open it.
    let baseline = in_a_terminal(&format!("{cvm} run --runtime process probe"));
    assert!(baseline.contains("terminal:   1"), "the test's terminal is missing: {baseline}");
    let legacy_tiocsti = std::fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti").map_or(true, |v| v.trim() == "1");
    if legacy_tiocsti {
        let injected = in_a_terminal(&format!("{cvm} run --runtime process --binary {}", tiocsti.display()));
        assert!(!injected.contains("injected 0 bytes"), "TIOCSTI works on this host: {injected}");
    }
    // The container has no controlling terminal, and none of its descriptors is one.
    let probe = in_a_terminal(&format!("{cvm} run --runtime container probe"));
    assert!(probe.contains("terminal:   refused (ENXIO)"), "{probe}");
    let attack = in_a_terminal(&format!("{cvm} run --runtime container --binary {}", tiocsti.display()));
    assert!(attack.contains("injected 0 bytes"), "the container typed into the caller's terminal: {attack}");
}

/// Spawns `cvm ARGS`, reads its stdout to the end, and returns (stdout, cvm's peak RSS in KiB).
fn run_measuring_rss(args: &[&str]) -> (Vec<u8>, i64) {
    let mut child = cvm().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        stdout.read_to_end(&mut all).unwrap();
        all
    });
    let (mut status, pid) = (0, child.id() as libc::pid_t);
    // SAFETY: a zeroed rusage is valid output space; wait4 reaps our own child.
    let rusage = unsafe {
        let mut rusage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(pid, &mut status, 0, &mut rusage), pid);
        rusage
    };
    std::mem::forget(child);
    (reader.join().unwrap(), rusage.ru_maxrss)
}

/// Hole 3: output was kept whole in memory and copied again into the record: `cat /dev/zero`
/// grew cvm by 700 MB/s, a VM program's console by 1.27 GB in a second.
#[test]
fn endless_output_keeps_cvm_small_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(flood) = c_program("flood") else { return };
    let _serial = one_at_a_time();
    for runtime in ["process", "container", "vm"] {
        let args = ["run", "--json", "--runtime", runtime, "--timeout", "2", "--binary", flood.to_str().unwrap()];
        let (stdout, peak_kib) = run_measuring_rss(&args);
        let record = json(&stdout);
        assert_eq!(record["outcome"], "timed_out", "{runtime}");
        let written = record["output"]["stdout_bytes"].as_u64().unwrap();
        assert!(written > 50 << 20, "{runtime}: the flood wrote only {written} bytes");
        assert_eq!(record["output"]["stdout_dropped_bytes"].as_u64().unwrap(), written - (128 << 10), "{runtime}");
        assert_eq!(record["stdout"].as_str().unwrap().len(), 128 << 10, "{runtime}");
        assert!(peak_kib < 96 << 10, "{runtime}: cvm grew to {peak_kib} KiB while the program wrote {written} bytes");
    }
}

/// Waits up to `limit` for `child`; true when it ended.
fn ended_within(child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Hole 4: with the live echo blocked on a reader that never reads (`| sleep 12`), --timeout
/// did not hold.
#[test]
fn a_reader_that_never_reads_cannot_stall_the_timeout_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(flood) = c_program("flood") else { return };
    let _serial = one_at_a_time();
    for runtime in ["process", "container", "vm"] {
        let mut child = cvm()
            .args(["run", "--runtime", runtime, "--timeout", "2", "--binary", flood.to_str().unwrap()])
            .stdout(Stdio::piped()) // never read
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        assert!(ended_within(&mut child, Duration::from_secs(8)), "{runtime}: cvm was still running after 8 s");
        assert!(started.elapsed() < Duration::from_millis(3500), "{runtime}: took {:?}", started.elapsed());
    }
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> usize {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| std::fs::read(entry.path().join("cmdline")).is_ok_and(|line| line == wanted))
        .count()
}

/// Hole 5: the process runtime killed only the program's pid (a shell's background children
/// survived a timeout), and the program outlived a SIGKILLed cvm 33 times in 40.
#[test]
fn the_process_runtime_leaves_no_descendants_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let record = run_json_in("process", &["--timeout", "1", "--binary", busybox, "sh", "-c", "sleep 987 & sleep 986"]);
    assert_eq!(record["outcome"], "timed_out");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_running(&["sleep", "987"]), 0, "a background child survived the timeout");
    assert_eq!(processes_running(&["sleep", "986"]), 0);

    for attempt in 0..10 {
        let mut child = cvm()
            .args(["run", "--runtime", "process", "--binary", busybox, "sleep", "985"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while processes_running(&[busybox, "sleep", "985"]) + processes_running(&["sleep", "985"]) == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "the program never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(attempt * 3));
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = Instant::now();
        while processes_running(&[busybox, "sleep", "985"]) + processes_running(&["sleep", "985"]) > 0 {
            assert!(killed.elapsed() < Duration::from_secs(2), "attempt {attempt}: the program outlived cvm");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// An ET_EXEC ELF with a real segment at 0x400000 and a second, empty one ending within a
/// page of 2^64: rounding its end up wrapped to 0 and put the heap over the boot data.
fn elf_with_a_segment_at_the_top() -> tempfile::TempPath {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 2 * 56;
    let code = [0xb0u8, 0, 0xe6, 0xf4, 0xeb, 0xfe];
    let total = HEADERS + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes());
    elf.extend_from_slice(&62u16.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes());
    elf.extend_from_slice(&64u64.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 2, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    for (vaddr, file, memory) in [(BASE, total, total), (u64::MAX - 0x20, 0, 0x10)] {
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&5u32.to_le_bytes());
        for word in [0, vaddr, vaddr, file, memory, 0x1000] {
            elf.extend_from_slice(&word.to_le_bytes());
        }
    }
    elf.extend_from_slice(&code);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &elf).unwrap();
    file.into_temp_path()
}

/// Hole 6: the VM loader's layout planning wrapped past 2^64.
#[test]
fn a_segment_at_the_top_of_the_address_space_is_refused_with_kvm() {
    if !require_kvm() {
        return;
    }
    let _serial = one_at_a_time();
    let program = elf_with_a_segment_at_the_top();
    let out = run_cvm(&["run", "--runtime", "vm", "--binary", program.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("guest RAM") || stderr.contains("overflow"), "{stderr}");
}

/// Hole 7: `--timeout 1e20` panicked (Duration and Instant overflow); `--cpus 1e-9` became 0.01.
#[test]
fn huge_and_tiny_numbers_are_one_clear_error() {
    let _serial = one_at_a_time();
    let cases: &[&[&str]] = &[
        &["run", "--runtime", "process", "--timeout", "1e20", "hello"],
        &["run", "--runtime", "process", "--timeout", "1e19", "hello"],
        &["run", "--runtime", "process", "--timeout", "-1", "hello"],
        &["run", "--runtime", "process", "--timeout", "NaN", "hello"],
        &["bench", "--runtimes", "process", "--timeout", "1e20"],
        &["bench", "--runtimes", "process", "--runs", "0"],
        &["bench", "--runtimes", "process", "--runs", "99999999999"],
        &["compare", "--runtimes", "process", "--runs", "1000000000"],
        &["run", "--runtime", "container", "--cpus", "1e-9", "hello"],
        &["run", "--runtime", "container", "--cpus", "1e9", "hello"],
        &["run", "--runtime", "container", "--pids", "0", "hello"],
        &["run", "--runtime", "container", "--memory", "99999999999999999999", "hello"],
        &["run", "--runtime", "nope", "hello"],
    ];
    for args in cases {
        let out = run_cvm(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line expected:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// Part 8: what runc's defaults give a container, checked from inside: a seccomp filter, a
/// keyring of its own, runc's open-files limit, and only its own devices.
#[test]
fn the_container_is_hardened_like_runc_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let filtered = run_json_in("container", &["probe"]);
    let result = &filtered["result"];
    assert_eq!(result["seccomp"], "filter", "{result}");
    assert_eq!(result["no_new_privs"], "1");
    assert_eq!(result["session_keyring_error"], "EPERM", "keyctl is refused by the filter: {result}");
    assert_eq!(filtered["container"]["seccomp"], "default");

    let unconfined = run_json_in("container", &["--seccomp", "unconfined", "probe"]);
    let host = run_json_in("process", &["probe"]);
    assert_eq!(unconfined["result"]["seccomp"], "disabled");
    let (inside, outside) = (&unconfined["result"]["session_keyring"], &host["result"]["session_keyring"]);
    assert!(inside.is_u64() && outside.is_u64(), "{inside} {outside}");
    assert_ne!(inside, outside, "the container must not share the caller's session keyring");

    let limit = run_json_in("container", &["--binary", busybox, "sh", "-c", "ulimit -n; ulimit -Hn"]);
    assert_eq!(limit["stdout"], "1024\n1024\n");

    // A namespace flag on clone is refused; a plain thread-style clone is not.
    let unshare = run_json_in("container", &["--binary", busybox, "unshare", "-n", "true"]);
    assert_ne!(unshare["exit_code"], 0, "{unshare}");

    let ignored = run_json_in("process", &["--memory", "16M", "--pids", "4", "hello"]);
    let notes = ignored["notes"].to_string();
    assert!(notes.contains("--memory, --pids not applied"), "{notes}");
}

/// Part 8: the device rule of the run's cgroup (v1 on hybrid hosts: its devices.list while the
/// container runs).
#[test]
fn the_container_cgroup_allows_only_its_own_devices_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    let hierarchy = cvm::runtime::container::cgroup::hierarchy();
    let cvm::runtime::container::cgroup::Hierarchy::V1(trees) = hierarchy else {
        eprintln!("not a v1 devices host: the v2 program is tested by the_v2_device_filter_refuses_other_devices");
        return;
    };
    let Some(parent) = trees.dir("devices").map(Path::to_path_buf) else {
        panic!("this v1 host has no devices controller");
    };
    let before: Vec<_> = std::fs::read_dir(&parent).unwrap().flatten().map(|e| e.path()).collect();
    let mut child = cvm()
        .args(["run", "--runtime", "container", "--binary", busybox, "sleep", "3"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (dir, list) = loop {
        let found = std::fs::read_dir(&parent)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("cvm-") && !before.contains(&e.path()))
            .find_map(|e| std::fs::read_to_string(e.path().join("devices.list")).ok().map(|list| (e.path(), list)));
        if let Some(found) = found {
            break found;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no run cgroup appeared in {}", parent.display());
        std::thread::sleep(Duration::from_millis(10));
    };
    // Ctrl-C, not SIGKILL: a killed cvm cannot remove its cgroup, and every CI run left one.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    child.wait().unwrap();
    assert!(!dir.exists(), "the run's cgroup {} was left behind", dir.display());
    let mut rules: Vec<&str> = list.lines().collect();
    rules.sort();
    assert!(rules.contains(&"c 1:3 rwm"), "/dev/null must be allowed: {rules:?}");
    assert!(!rules.iter().any(|r| r.starts_with("a ")), "everything else must be denied: {rules:?}");
    assert!(rules.len() <= 6, "{rules:?}");
}

/// Part 8, v2 hosts: the BPF device program, attached to a cgroup2 directory of this host.
#[test]
fn the_v2_device_filter_refuses_other_devices_as_root() {
    if !require_root() {
        return;
    }
    let _serial = one_at_a_time();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = cvm::runtime::container::cgroup::mounts(&mountinfo).find(|(_, fstype, _)| *fstype == "cgroup2");
    let Some((root, _, _)) = mount else { panic!("no cgroup2 mount on this host") };
    let dir = root.join(format!("cvm-test-devices-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let devices = cvm::runtime::container::cgroup::devices::allowed_devices(&["null"]);
    cvm::runtime::container::cgroup::devices::attach_v2(&dir, &devices).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && (true < /dev/null && echo null-ok); (true < /dev/zero && echo zero-ok) 2>&1",
        dir.display()
    );
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let _ = std::fs::remove_dir(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("null-ok"), "{text}");
    assert!(!text.contains("zero-ok") && text.contains("Operation not permitted"), "{text}");
}

/// Part 8: a program that asks to be traced by its parent (cvm) must not hang the run.
#[test]
fn ptrace_traceme_does_not_hang_a_run_as_root() {
    if !require_root() {
        return;
    }
    let Some(traceme) = c_program("traceme") else { return };
    let _serial = one_at_a_time();
    for runtime in ["process", "container"] {
        let started = Instant::now();
        let record = run_json_in(runtime, &["--timeout", "10", "--binary", traceme.to_str().unwrap()]);
        assert_eq!(record["outcome"], "exited", "{runtime}: {record}");
        let stdout = record["stdout"].as_str().unwrap();
        assert!(stdout.contains("PTRACE_TRACEME returned 0"), "{runtime}: {stdout}");
        assert!(stdout.contains("signal after PTRACE_TRACEME ok"), "{runtime}: {stdout}");
        assert!(stdout.contains("exec after PTRACE_TRACEME ok"), "{runtime}: {stdout}");
        assert!(started.elapsed() < Duration::from_secs(5), "{runtime}: {:?}", started.elapsed());
    }
}

/// Part 9: the same exit status after Ctrl-C in every runtime.
#[test]
fn sigint_gives_the_same_exit_status_in_every_runtime_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let _serial = one_at_a_time();
    for runtime in ["process", "container", "vm"] {
        let child = cvm()
            .args(["run", "--runtime", runtime, "--json", "--timeout", "60", "cpu", "100000000000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        // SAFETY: sending SIGINT to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        let record = json(&out.stdout);
        assert_eq!(record["outcome"], "interrupted", "{runtime}");
        assert_eq!(record["exit_code"], 130, "{runtime}");
        assert_eq!(out.status.code(), Some(130), "{runtime}");
    }
}

/// Part 9: bytes that are not UTF-8 are kept losslessly beside the text.
#[test]
fn output_that_is_not_utf8_is_kept_losslessly_as_root() {
    if !require_root() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let _serial = one_at_a_time();
    for runtime in ["process", "container"] {
        let record = run_json_in(runtime, &["--binary", busybox, "printf", "\\377\\376ok\\n"]);
        use base64::Engine;
        let encoded = record["stdout_base64"].as_str().unwrap_or_else(|| panic!("{runtime}: {record}"));
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        assert_eq!(bytes, b"\xff\xfeok\n", "{runtime}");
    }
}

/// Part 9: an export into a folder that does not exist is refused before any run.
#[test]
fn bench_refuses_an_export_into_a_missing_folder() {
    let started = Instant::now();
    let out = run_cvm(&["bench", "--runtimes", "process", "--export-json", "/nonexistent-cvm-folder/r.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!Path::new("/nonexistent-cvm-folder").exists());
    assert!(started.elapsed() < Duration::from_secs(2), "no benchmark should have run");
}

/// Second review, H1 and M1: children that outlive the program and keep the pipe full held cvm
/// past --timeout (in the process runtime its memory grew without limit with a live echo; with
/// --json the read loop never looked at the clock again).
#[test]
fn writers_left_behind_cannot_hold_the_timeout_or_grow_cvm_as_root() {
    if !require_root() {
        return;
    }
    let Some(writers) = c_program("writers") else { return };
    let _serial = one_at_a_time();
    let program = writers.to_str().unwrap();
    for (runtime, json) in [("process", false), ("process", true), ("container", true), ("container", false)] {
        let mut args = vec!["run", "--runtime", runtime, "--timeout", "1"];
        if json {
            args.push("--json");
        }
        args.extend(["--binary", program, "16", "100"]);
        let mut child = cvm().args(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        // The reader never reads (live echo) or reads everything (--json).
        let reader = json.then(|| {
            let mut stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let _ = stdout.read_to_end(&mut all);
                all.len()
            })
        });
        let started = Instant::now();
        let mut peak_kib = 0;
        while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(10) {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak_kib = peak_kib.max(rss.unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        let ended = ended_within(&mut child, Duration::from_millis(100));
        assert!(ended, "{runtime} json={json}: cvm still ran {:?} after a 1 s timeout", started.elapsed());
        assert!(started.elapsed() < Duration::from_millis(4500), "{runtime} json={json}: {:?}", started.elapsed());
        assert!(peak_kib < 96 << 10, "{runtime} json={json}: cvm grew to {peak_kib} KiB");
        if let Some(reader) = reader {
            assert!(reader.join().unwrap() < 1 << 20, "{runtime}: the record keeps at most 2 x 64 KiB");
        }
    }
}

/// Second review, M4: --explain wrote its narration straight to stderr; with a stalled reader
/// cvm hung, even through Ctrl-C.
#[test]
fn explain_with_a_stalled_stderr_cannot_hang_cvm_as_root_with_kvm() {
    if !require_root() || !require_kvm() {
        return;
    }
    let Some(flood) = c_program("flood") else { return };
    let _serial = one_at_a_time();
    for runtime in ["container", "vm"] {
        let mut child = cvm()
            .args(["run", "--runtime", runtime, "--explain", "--timeout", "2", "--binary", flood.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()) // never read
            .spawn()
            .unwrap();
        let started = Instant::now();
        assert!(ended_within(&mut child, Duration::from_secs(8)), "{runtime}: cvm still ran after 8 s");
        assert!(started.elapsed() < Duration::from_millis(4500), "{runtime}: {:?}", started.elapsed());
    }
}

/// Second review, M2 and L5: io_uring bypassed the filter (IORING_OP_SOCKET opened an AF_VSOCK
/// socket); calls newer than the profile got EPERM, which C libraries do not fall back on.
#[test]
fn the_filter_refuses_io_uring_and_answers_newer_calls_enosys_as_root() {
    if !require_root() {
        return;
    }
    let Some(syscalls) = c_program("syscalls") else { return };
    let _serial = one_at_a_time();
    let record = run_json_in("container", &["--binary", syscalls.to_str().unwrap()]);
    assert_eq!(record["stdout"], "io_uring_setup EPERM\nsyscall_451 ENOSYS\n", "{record}");
}

/// Second review, L4: a program that had made cvm its tracer and stopped itself stayed stopped
/// until the timeout (cvm passed the SIGSTOP on when it let go).
#[test]
fn a_traced_program_that_stops_itself_does_not_stall_the_run_as_root() {
    if !require_root() {
        return;
    }
    let Some(traceme) = c_program("traceme") else { return };
    let _serial = one_at_a_time();
    for runtime in ["process", "container"] {
        let started = Instant::now();
        let record = run_json_in(runtime, &["--timeout", "10", "--binary", traceme.to_str().unwrap(), "stop"]);
        assert_eq!(record["outcome"], "exited", "{runtime}: {record}");
        assert!(record["stdout"].as_str().unwrap().contains("did not stop the run"), "{runtime}: {record}");
        assert!(started.elapsed() < Duration::from_secs(5), "{runtime}");
    }
}

/// Second review, L2: --kernel read a FIFO (blocking for ever, through Ctrl-C) or /dev/zero
/// (until memory ran out).
#[test]
fn a_kernel_image_that_is_not_a_regular_file_is_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    for kernel in [fifo.to_str().unwrap(), "/dev/zero"] {
        let started = Instant::now();
        let out = run_cvm(&["run", "--runtime", "vm", "--timeout", "1", "--kernel", kernel, "hello"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kernel}: {stderr}");
        assert!(stderr.contains("not a regular file") || stderr.contains("kvm"), "{kernel}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(3), "{kernel}");
    }
}

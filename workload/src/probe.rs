//! `probe`: what the program can see of the system it runs on. Every fact comes from a system
//! call or a file the kernel provides; a fact the kernel does not provide is reported as null
//! ("not visible"), never guessed.

use std::ffi::CStr;
use std::fs;

use crate::json::JsonObject;

pub fn probe() -> JsonObject {
    let uts = uname();
    let pid = std::process::id();
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let processes = visible_processes();
    let mounts = read_lines("/proc/self/mounts").map(|lines| lines.len() as u64);
    let interfaces = network_interfaces();
    let cap_eff = status_field("CapEff");
    let cgroup = read_lines("/proc/self/cgroup").map(|lines| lines.join(";"));
    let seccomp = status_field("Seccomp").map(|mode| seccomp_mode(&mode));
    let no_new_privs = status_field("NoNewPrivs");
    let keyring = session_keyring();
    let terminal = controlling_terminal();

    let show = |v: Option<u64>| v.map_or("not visible".to_string(), |v| v.to_string());
    let (sysname, release, nodename) = match &uts {
        Some((s, r, n, _)) => (s.as_str(), r.as_str(), n.as_str()),
        None => ("?", "?", "?"),
    };
    println!("kernel:     {sysname} {release}");
    println!("hostname:   {nodename}");
    println!("pid:        {pid}  (parent {})", std::os::unix::process::parent_id());
    println!("uid/gid:    {uid}/{gid}");
    println!("processes:  {}", show(processes));
    println!("mounts:     {}", show(mounts));
    match &interfaces {
        Some(list) => println!("interfaces: {}", list.join(", ")),
        None => println!("interfaces: not visible"),
    }
    println!("CapEff:     {}", cap_eff.as_deref().unwrap_or("not visible"));
    println!("seccomp:    {}", seccomp.unwrap_or("not visible"));
    println!("keyring:    {}", keyring.describe());
    println!("terminal:   {}", terminal.describe());

    let mut result = JsonObject::new("probe");
    result.opt_str("kernel_name", uts.as_ref().map(|u| u.0.as_str()));
    result.opt_str("kernel_release", uts.as_ref().map(|u| u.1.as_str()));
    result.opt_str("kernel_version", uts.as_ref().map(|u| u.3.as_str()));
    result.opt_str("hostname", uts.as_ref().map(|u| u.2.as_str()));
    result.int("pid", u64::from(pid));
    result.int("ppid", u64::from(std::os::unix::process::parent_id()));
    result.int("uid", u64::from(uid));
    result.int("gid", u64::from(gid));
    result.opt_int("visible_processes", processes);
    result.opt_int("mounts", mounts);
    match &interfaces {
        Some(list) => result.str_list("network_interfaces", list),
        None => result.opt_str("network_interfaces", None),
    }
    result.opt_str("cap_eff", cap_eff.as_deref());
    result.opt_int("cap_eff_count", cap_eff.as_deref().and_then(count_capabilities));
    result.opt_str("cgroup", cgroup.as_deref());
    result.opt_str("seccomp", seccomp);
    result.opt_str("no_new_privs", no_new_privs.as_deref());
    match keyring {
        Answer::Value(id) => result.int("session_keyring", id),
        Answer::Refused(errno) => result.str("session_keyring_error", errno_name(errno)),
    }
    match terminal {
        Answer::Value(_) => result.str("controlling_terminal", "yes"),
        Answer::Refused(errno) => result.str("controlling_terminal_error", errno_name(errno)),
    }
    result
}

/// What the kernel answered: a value, or an error number.
enum Answer {
    Value(u64),
    Refused(i32),
}

impl Answer {
    fn describe(&self) -> String {
        match self {
            Answer::Value(value) => format!("{value}"),
            Answer::Refused(errno) => format!("refused ({})", errno_name(*errno)),
        }
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The serial number of this process's session keyring (a host-wide kernel object: two
/// programs that print the same number share keys).
fn session_keyring() -> Answer {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: keyctl with integer arguments only; 0 = do not create one.
    let id = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) };
    if id < 0 {
        Answer::Refused(last_errno())
    } else {
        Answer::Value(id as u64)
    }
}

/// Whether this process has a controlling terminal it could read from or type into.
fn controlling_terminal() -> Answer {
    // SAFETY: open/close of a constant path.
    let fd = unsafe { libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Answer::Refused(last_errno());
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    Answer::Value(1)
}

fn seccomp_mode(field: &str) -> &'static str {
    match field {
        "0" => "disabled",
        "1" => "strict",
        "2" => "filter",
        _ => "unknown",
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::ENOENT => "ENOENT",
        libc::ENXIO => "ENXIO",
        libc::EACCES => "EACCES",
        libc::ENOKEY => "ENOKEY",
        _ => "error",
    }
}

/// (sysname, release, nodename, version) from the uname system call.
fn uname() -> Option<(String, String, String, String)> {
    // SAFETY: utsname is plain old data; uname fills it or fails without touching it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    let field = |raw: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates every utsname field within its array.
        unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned()
    };
    Some((field(&uts.sysname), field(&uts.release), field(&uts.nodename), field(&uts.version)))
}

fn visible_processes() -> Option<u64> {
    let entries = fs::read_dir("/proc").ok()?;
    let count = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .count();
    Some(count as u64)
}

fn network_interfaces() -> Option<Vec<String>> {
    let lines = read_lines("/proc/net/dev")?;
    Some(lines.iter().skip(2).filter_map(|line| line.split(':').next()).map(|name| name.trim().to_string()).collect())
}

fn status_field(name: &str) -> Option<String> {
    let lines = read_lines("/proc/self/status")?;
    lines.iter().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(|value| value.trim().to_string())
}

fn count_capabilities(hex: &str) -> Option<u64> {
    u64::from_str_radix(hex, 16).ok().map(|mask| u64::from(mask.count_ones()))
}

fn read_lines(path: &str) -> Option<Vec<String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

//! Namespaces: each gives the container its own copy of one kind of kernel resource (process
//! numbers, mounts, host name, IPC objects, network, cgroup view, user ids). They are created
//! all at once, in one `clone3` call that also starts the container's first process.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context, Result};

use crate::runtime::child::errno;

/// One namespace the container gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: &'static str,
    pub flag: libc::c_int,
    /// What it isolates, for `--explain`.
    pub isolates: &'static str,
}

/// In youki's order of entry: user, pid, uts, ipc, net, cgroup, mount.
pub const ALL: [Namespace; 7] = [
    Namespace {
        name: "user",
        flag: libc::CLONE_NEWUSER,
        isolates: "user and group ids: your user is root inside, nobody special outside",
    },
    Namespace {
        name: "pid",
        flag: libc::CLONE_NEWPID,
        isolates: "process numbers: the program is pid 1 and sees no host process",
    },
    Namespace { name: "uts", flag: libc::CLONE_NEWUTS, isolates: "the host name" },
    Namespace { name: "ipc", flag: libc::CLONE_NEWIPC, isolates: "System V IPC and POSIX message queues" },
    Namespace {
        name: "net",
        flag: libc::CLONE_NEWNET,
        isolates: "network devices, addresses, ports and routes: it gets only a loopback device",
    },
    Namespace {
        name: "cgroup",
        flag: libc::CLONE_NEWCGROUP,
        isolates: "the cgroup tree: the run's cgroup looks like the root",
    },
    Namespace {
        name: "mount",
        flag: libc::CLONE_NEWNS,
        isolates: "the mount table: mounts made inside vanish with the container",
    },
];

/// The namespaces of a run: all of them, without `user` when cvm runs as root (like runc).
pub fn for_run(as_root: bool) -> Vec<Namespace> {
    ALL.into_iter().filter(|ns| !(as_root && ns.name == "user")).collect()
}

/// The clone flags for the namespaces created with the process. The cgroup namespace is left
/// out: the child enters it after cvm moved it into its cgroup, so that cgroup becomes its root.
pub fn clone_flags(namespaces: &[Namespace]) -> u64 {
    namespaces.iter().filter(|ns| ns.name != "cgroup").fold(0u64, |flags, ns| flags | ns.flag as u64)
}

pub fn names(namespaces: &[Namespace]) -> Vec<String> {
    namespaces.iter().map(|ns| ns.name.to_string()).collect()
}

/// `struct clone_args` of linux/sched.h (version 2, with the cgroup field).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Which side of [`clone_into_namespaces`] we are on.
pub enum Cloned {
    /// In the new process, inside the new namespaces. It must only make system calls (no
    /// allocation: another thread of cvm may have held the allocator's lock) and end in
    /// `execve` or `_exit`.
    Child,
    Parent {
        pid: libc::pid_t,
        pidfd: OwnedFd,
    },
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Starts a copy of this process inside new namespaces (`flags`), like fork; with `cgroup`
/// (a cgroup v2 directory, Linux >= 5.7) it starts inside that cgroup.
pub fn clone_into_namespaces(flags: u64, cgroup: Option<RawFd>) -> Result<Cloned> {
    let result = match cgroup {
        Some(fd) => clone3(flags | CLONE_INTO_CGROUP, fd as u64),
        None => clone3(flags, 0),
    };
    result.map_err(clone_error)
}

fn clone3(flags: u64, cgroup: u64) -> std::io::Result<Cloned> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork: the child gets a
    // copy of our memory and continues here with return value 0. `args` is valid for the call.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    match pid {
        0 => Ok(Cloned::Child),
        pid if pid > 0 => {
            // SAFETY: CLONE_PIDFD stored a new descriptor owned by nobody else.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Cloned::Parent { pid: pid as libc::pid_t, pidfd })
        }
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn clone_error(err: std::io::Error) -> anyhow::Error {
    let hint = match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "; creating namespaces needs root or unprivileged user namespaces (see `cvm doctor`)"
        }
        Some(libc::ENOSPC) | Some(libc::EUSERS) => "; the namespace limit (/proc/sys/user/max_*_namespaces) is reached",
        Some(libc::ENOSYS) => "; clone3 needs Linux 5.3 or newer",
        _ => "",
    };
    anyhow::Error::new(err).context(format!("creating the container's namespaces with clone3{hint}"))
}

/// Maps the caller's user and group to root inside the new user namespace of `pid`
/// (`setgroups` is denied first, as an unprivileged writer must).
pub fn map_caller_to_root(pid: libc::pid_t) -> Result<()> {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let proc = format!("/proc/{pid}");
    let write = |file: &str, text: String| {
        std::fs::write(format!("{proc}/{file}"), &text)
            .with_context(|| format!("writing '{}' to {proc}/{file}", text.trim()))
    };
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("setgroups", "deny\n".into())?;
    write("gid_map", format!("0 {gid} 1\n"))?;
    Ok(())
}

/// Can this host give an unprivileged user a user namespace? Ok, or why not and the fix.
pub fn user_namespaces_usable() -> Result<()> {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    match read("/proc/sys/user/max_user_namespaces").as_deref() {
        None => bail!("this kernel has no user namespaces (no /proc/sys/user/max_user_namespaces); run cvm as root"),
        Some("0") => bail!(
            "user namespaces are disabled (user.max_user_namespaces = 0); run as root or `sudo sysctl -w user.max_user_namespaces=15000`"
        ),
        _ => {}
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        bail!("unprivileged user namespaces are disabled; run as root or `sudo sysctl -w kernel.unprivileged_userns_clone=1`");
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        bail!(
            "AppArmor restricts unprivileged user namespaces; run as root or \
             `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`"
        );
    }
    Ok(())
}

/// Brings the loopback device of the (new, empty) network namespace up. Child side: system
/// calls only. Returns the errno of the failing call.
pub fn loopback_up() -> Result<(), i32> {
    // SAFETY: socket with constant arguments.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(errno());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    let result = unsafe {
        if libc::ioctl(socket, libc::SIOCGIFFLAGS as _, &mut request) != 0 {
            Err(errno())
        } else {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(socket, libc::SIOCSIFFLAGS as _, &request) != 0 {
                Err(errno())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(socket) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_gets_no_user_namespace() {
        assert!(!names(&for_run(true)).contains(&"user".to_string()));
        assert_eq!(names(&for_run(false))[0], "user");
        let flags = clone_flags(&for_run(true));
        assert_eq!(flags & libc::CLONE_NEWUSER as u64, 0);
        assert_eq!(flags & libc::CLONE_NEWCGROUP as u64, 0);
        assert_ne!(flags & libc::CLONE_NEWPID as u64, 0);
    }
}

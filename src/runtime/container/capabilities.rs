//! Capabilities: root's powers split into ~41 separate privileges. A container keeps only the
//! three runc and youki keep by default; everything else (mounting, loading modules, changing
//! the clock, tracing other processes, ...) is dropped before the program starts.

use crate::runtime::child::errno;

/// CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE (numbers from linux/capability.h).
pub const KEPT: [(u32, &str); 3] = [(5, "CAP_KILL"), (10, "CAP_NET_BIND_SERVICE"), (29, "CAP_AUDIT_WRITE")];

/// The kept capabilities as a bit mask.
pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |mask, (bit, _)| mask | (1u64 << bit))
}

pub fn kept_names() -> Vec<&'static str> {
    KEPT.iter().map(|(_, name)| *name).collect()
}

/// The highest capability number this kernel knows.
pub fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Reduces this process to `keep`: bounding set, then effective, permitted and inheritable,
/// then ambient cleared. Runs in the container's first process before exec, so it only
/// makes system calls (no allocation). Returns the errno of the failing call.
pub fn reduce_to(keep: u64, last_capability: u32) -> Result<(), i32> {
    for cap in 0..=last_capability.min(63) {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let errno = errno();
            // A capability this kernel does not know is not in the set anyway.
            if errno != libc::EINVAL {
                return Err(errno);
            }
        }
    }
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let low = keep as u32;
    let high = (keep >> 32) as u32;
    let data = [
        CapData { effective: low, permitted: low, inheritable: low },
        CapData { effective: high, permitted: high, inheritable: high },
    ];
    // SAFETY: header and a two-element data array, as capset with version 3 expects.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } != 0 {
        return Err(errno());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) } != 0 {
        let errno = errno();
        // Kernels before 4.3 have no ambient set: nothing to clear.
        if errno != libc::EINVAL {
            return Err(errno);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_three_capabilities() {
        assert_eq!(kept_mask().count_ones(), 3);
        assert_eq!(kept_mask(), (1 << 5) | (1 << 10) | (1 << 29));
        assert_eq!(kept_names(), ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]);
    }
}

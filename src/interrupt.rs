//! SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM (every signal whose default
//! action would end cvm and that can be caught) become a flag that every waiting loop checks, so
//! a run is torn down in order (child killed, mounts, cgroup, VM released) instead of cvm dying
//! mid-way. Only SIGKILL cannot be caught: see docs/architecture.md for what it leaves.

use std::sync::atomic::{AtomicI32, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    SIGNAL.store(signal, Ordering::SeqCst);
}

/// The signals that ask cvm to stop.
pub const STOPPING: [libc::c_int; 7] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM];

/// Installs the handlers (without SA_RESTART, so blocking calls return EINTR).
pub fn install() {
    for signal in STOPPING {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that asked cvm to stop, if one did.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The exit status cvm should end with after being interrupted by `signal`.
pub fn exit_status(signal: i32) -> i32 {
    128 + signal
}

//! Before each step: does the host have room for N more instances? Memory (MemAvailable, with a
//! reserve kept free), tasks (pid_max, threads-max, this cgroup's pids.max) and this process's
//! descriptors. When it does not, `cvm density` stops with the reason instead of pushing the
//! machine into the OOM killer or a fork failure half-way through a step.

use crate::record::RuntimeKind;
use crate::units::format_bytes;

use super::{sample, Step};

/// Threads one instance may use (cvm's main and helper threads, the program): a generous guess.
const TASKS_PER_INSTANCE: u64 = 6;
/// Descriptors this process holds per instance: two pipes and a pidfd.
const DESCRIPTORS_PER_INSTANCE: u64 = 3;

/// A guess of one instance's memory before anything was measured, on the safe side.
fn first_guess(runtime: RuntimeKind) -> f64 {
    match runtime.family() {
        RuntimeKind::Vm => 4.0 * 1048576.0,
        _ => 2.0 * 1048576.0,
    }
}

/// Ok when the host has room for `count` instances of `runtime`; otherwise why not.
pub fn room_for(runtime: RuntimeKind, count: usize, measured: &[Step]) -> Result<(), String> {
    let count = count as u64;
    // Memory: the most one instance cost so far (by either measure), with half again on top.
    let per_instance = measured
        .iter()
        .filter(|s| s.runtime == runtime)
        .map(|s| s.marginal_bytes().max(s.uss_bytes as f64 / s.instances as f64))
        .fold(first_guess(runtime), f64::max);
    let need = (per_instance * 1.5 * count as f64) as u64;
    let total = sample::total_memory_bytes().unwrap_or(0);
    let reserve = (total / 20).max(256 << 20);
    if let Some(available) = sample::available_memory_bytes() {
        if available < need + reserve {
            return Err(format!(
                "the host is out of memory for them: {} available, and they need about {} ({} each, as measured \
                 here, with half again for safety) while {} stays free for the rest of the machine",
                format_bytes(available),
                format_bytes(need),
                format_bytes(per_instance as u64),
                format_bytes(reserve)
            ));
        }
    }
    // Tasks: the kernel's limits and this cgroup's.
    let tasks = count * TASKS_PER_INSTANCE;
    if let (Some(now), Some(limit)) = (sample::task_count(), sample::task_limit()) {
        if now + tasks > limit * 9 / 10 {
            return Err(format!(
                "the host is out of tasks for them: {now} running, about {tasks} more needed, the kernel allows {limit} \
                 (pid_max, threads-max)"
            ));
        }
    }
    if let Some((current, max)) = own_cgroup_pids() {
        if current + tasks > max {
            return Err(format!(
                "this cgroup's pids.max is {max} with {current} in use, and they need about {tasks} more"
            ));
        }
    }
    let descriptors = count * DESCRIPTORS_PER_INSTANCE + 64;
    let limit = descriptor_limit();
    if descriptors > limit {
        return Err(format!(
            "cvm would need {descriptors} open descriptors to watch them and may open {limit} (ulimit -n)"
        ));
    }
    Ok(())
}

/// pids.current and pids.max of the cgroup (v2) this process is in, when it has a limit.
fn own_cgroup_pids() -> Option<(u64, u64)> {
    let dir = sample::memory_cgroup_of(std::process::id() as libc::pid_t)?;
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let max: u64 = read("pids.max")?.trim().parse().ok()?;
    let current: u64 = read("pids.current")?.trim().parse().ok()?;
    Some((current, max))
}

fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Raises this process's descriptor limit to its hard limit: watching N instances takes 3N.
pub fn raise_descriptor_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_instances_fit_and_a_billion_do_not() {
        assert!(room_for(RuntimeKind::Container, 2, &[]).is_ok());
        let err = room_for(RuntimeKind::Vm, 1_000_000_000, &[]).unwrap_err();
        assert!(err.contains("out of memory"), "{err}");
    }
}

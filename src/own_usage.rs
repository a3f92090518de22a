//! What cvm's own process costs, read from /proc and getrusage: its resident memory and peak
//! (the VMM's footprint; the bound on what a vfork-started child inherits) and the CPU time of
//! the calling thread (the vCPU thread: guest time is charged to it).

/// Resets the process's peak-RSS mark (VmHWM), so the next reading covers this run only.
pub fn reset_peak_rss() {
    // Writing 5 to clear_refs resets the peak; failure only makes the peak cover more time.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident set size since the last reset, in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The process's resident memory now, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Resident {
    /// Everything resident (RSS).
    pub total: u64,
    /// The part backed by files: cvm's code and data, shared libraries (shared with the page cache).
    pub file_backed: u64,
}

pub fn resident() -> Option<Resident> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().skip(1).map(|field| field.parse::<u64>().ok());
    let page = crate::vmm::memory::host_page_size();
    let total = fields.next()??;
    let file_backed = fields.next()??;
    Some(Resident { total: total * page, file_backed: file_backed * page })
}

/// User and system CPU time of the calling thread, in ns.
pub fn thread_cpu_ns() -> (u64, u64) {
    // SAFETY: a zeroed rusage is valid output space for getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer; it cannot fail for the calling thread.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    (timeval_ns(&usage.ru_utime), timeval_ns(&usage.ru_stime))
}

/// A rusage time as nanoseconds.
pub fn timeval_ns(tv: &libc::timeval) -> u64 {
    (tv.tv_sec.max(0) as u64) * 1_000_000_000 + (tv.tv_usec.max(0) as u64) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible() {
        reset_peak_rss();
        let rss = resident().unwrap().total;
        let peak = peak_rss_bytes().unwrap();
        assert!(rss > 0 && peak > 0);
        let (user, system) = thread_cpu_ns();
        assert!(user + system > 0 || rss > 0);
    }
}

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
    kib_field(&crate::host::read_kernel_file("/proc/self/status").ok()?, "VmHWM:")
}

/// A "Name:   1234 kB" line of a /proc file (status, meminfo, smaps_rollup), in bytes.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    let kib: u64 =
        text.lines().find_map(|line| line.strip_prefix(name))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The process's resident memory now, in bytes, split the way it is shared.
#[derive(Clone, Copy, Debug)]
pub struct Resident {
    /// Everything resident (RSS).
    pub total: u64,
    /// Anonymous pages: heap, stacks, guest RAM the guest touched. Private to this process: a
    /// second instance pays them again (with `shmem`, this is the process's USS here).
    pub anonymous: u64,
    /// Pages backed by files: cvm's code and data, shared libraries. They are shared with the
    /// page cache and with every other cvm process, so a second instance costs none of them.
    pub file_backed: u64,
    /// Shared-memory pages (memfd, tmpfs): none in cvm today; kept so the parts add up.
    pub shmem: u64,
}

impl Resident {
    /// Private memory: what one more instance of this process would cost (its USS).
    pub fn private(&self) -> u64 {
        self.anonymous + self.shmem
    }
}

/// The calling process's resident memory now.
pub fn resident() -> Option<Resident> {
    let status = crate::host::read_kernel_file("/proc/self/status").ok()?;
    resident_from_status(&status)
}

/// The calling process's resident memory now and its peak since the last reset, from one read
/// of /proc/self/status.
pub fn resident_and_peak() -> (Option<Resident>, Option<u64>) {
    let Ok(status) = crate::host::read_kernel_file("/proc/self/status") else { return (None, None) };
    (resident_from_status(&status), kib_field(&status, "VmHWM:"))
}

/// Reads RssAnon, RssFile, RssShmem from a /proc/PID/status text.
pub fn resident_from_status(status: &str) -> Option<Resident> {
    let field = |name: &str| kib_field(status, name);
    let anonymous = field("RssAnon:")?;
    let file_backed = field("RssFile:")?;
    let shmem = field("RssShmem:").unwrap_or(0);
    Some(Resident { total: anonymous + file_backed + shmem, anonymous, file_backed, shmem })
}

/// Resident pages of this process's mappings that lie inside [start, end) (host addresses), from
/// /proc/self/smaps: (all resident pages, the anonymous ones). Guest RAM is such a range: its
/// anonymous pages are the guest's private memory, its file pages the shared program image.
pub fn mapped_in(start: u64, end: u64) -> Option<(u64, u64)> {
    let smaps = crate::host::read_kernel_file("/proc/self/smaps").ok()?;
    Some(mapped_in_smaps(&smaps, start, end))
}

pub fn mapped_in_smaps(smaps: &str, start: u64, end: u64) -> (u64, u64) {
    let (mut rss, mut anonymous, mut inside) = (0, 0, false);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((low, high)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let parse = |hex: &str| u64::from_str_radix(hex, 16).ok();
            inside = matches!((parse(low), parse(high)), (Some(l), Some(h)) if l >= start && h <= end);
            continue;
        }
        if !inside {
            continue;
        }
        let kib = |rest: &str| rest.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0) * 1024;
        if let Some(rest) = line.strip_prefix("Rss:") {
            rss += kib(rest);
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            anonymous += kib(rest);
        }
    }
    (rss, anonymous)
}

/// Gives back what set-up used and no longer needs, once a run's set-up is done and cvm only
/// waits: the heap's free pages (image and ELF parsing, the run plan) and the main thread's
/// stack pages below where it is now. Otherwise they stay resident for the whole run, in every
/// instance (about 100 KiB each; `cvm density` counts them).
pub fn release_setup_memory() {
    crate::heap::trim();
    release_stack_below_here();
}

/// Zero-fills (MADV_DONTNEED) the main thread's stack pages more than 16 KiB below the current
/// frame: nothing lives below the stack pointer, and a page touched again later simply comes
/// back as a zero page. Threads other than the main one keep their stacks.
#[inline(never)]
fn release_stack_below_here() {
    const MARGIN: usize = 16 << 10;
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    let Ok(maps) = crate::host::read_kernel_file("/proc/self/maps") else { return };
    let Some(line) = maps.lines().find(|line| line.ends_with("[stack]")) else { return };
    let Some((low, high)) = line.split_whitespace().next().and_then(|range| range.split_once('-')) else { return };
    let (Ok(low), Ok(high)) = (usize::from_str_radix(low, 16), usize::from_str_radix(high, 16)) else { return };
    if here < low || here >= high {
        return; // not on the main thread's stack
    }
    let page = crate::vmm::memory::host_page_size() as usize;
    let end = here.saturating_sub(MARGIN) / page * page;
    if end > low {
        // SAFETY: [low, end) is the part of this thread's own stack mapping more than 16 KiB
        // below the live frames; no live data is there, and MADV_DONTNEED only makes its pages
        // read as zero when touched again.
        unsafe { libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED) };
    }
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
    fn status_fields_are_split() {
        let status =
            "Name:\tcvm\nVmRSS:\t    5000 kB\nRssAnon:\t    1000 kB\nRssFile:\t    3996 kB\nRssShmem:\t       4 kB\n";
        let resident = resident_from_status(status).unwrap();
        assert_eq!(resident.total, 5000 * 1024);
        assert_eq!(resident.private(), 1004 * 1024);
        assert!(resident_from_status("Name: cvm\n").is_none());
    }

    #[test]
    fn smaps_ranges_are_summed() {
        let smaps = "1000-3000 rw-p 00000000 00:00 0\nRss:  8 kB\nAnonymous: 8 kB\n\
                     3000-5000 rw-p 00000000 08:01 42 /cache/program\nRss:  4 kB\nAnonymous: 0 kB\n\
                     9000-a000 rw-p 00000000 00:00 0\nRss:  4 kB\nAnonymous: 4 kB\n";
        assert_eq!(mapped_in_smaps(smaps, 0x1000, 0x5000), (12 << 10, 8 << 10));
    }

    #[test]
    fn readings_are_plausible() {
        reset_peak_rss();
        let resident = resident().unwrap();
        assert!(resident.anonymous > 0 && resident.file_backed > 0);
        let rss = resident.total;
        let peak = peak_rss_bytes().unwrap();
        assert!(rss > 0 && peak > 0);
        let (user, system) = thread_cpu_ns();
        assert!(user + system > 0 || rss > 0);
    }
}

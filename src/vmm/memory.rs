//! Guest RAM: one anonymous mapping at guest-physical 0 (vm-memory), and what it costs the host.
//!
//! The mapping is private, anonymous and `MAP_NORESERVE`: it starts as zero pages that the host
//! kernel only allocates when someone (the VMM while loading, or the guest) first touches
//! them. So the VMM never clears it, and [`GuestRam::resident_bytes`] (`mincore`) tells how much
//! of the configured RAM the guest really used.

use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

pub struct GuestRam {
    memory: GuestMemoryMmap,
    size: u64,
    /// Ranges mapped from a file and copied at start, until they are given back.
    copied_file_ranges: Mutex<Vec<FileRange>>,
}

/// Guest RAM `[addr, addr + len)` mapped from `file` at `offset` (see [`GuestRam::map_file`]).
struct FileRange {
    addr: u64,
    len: u64,
    offset: u64,
    file: std::fs::File,
}

impl GuestRam {
    /// Maps `size` bytes of guest RAM (a multiple of the page size).
    pub fn new(size: u64) -> Result<GuestRam> {
        let length = usize::try_from(size).context("guest RAM size does not fit this host")?;
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), length)])
            .with_context(|| format!("mapping {} MiB of guest RAM", size >> 20))?;
        Ok(GuestRam { memory, size, copied_file_ranges: Mutex::new(Vec::new()) })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host virtual address of guest-physical 0 (for `KVM_SET_USER_MEMORY_REGION`).
    pub fn host_address(&self) -> Result<u64> {
        let pointer = self.memory.get_host_address(GuestAddress(0)).context("guest RAM has no host mapping")?;
        Ok(pointer as u64)
    }

    /// True when [addr, addr + len) lies inside guest RAM.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len).is_some_and(|end| end <= self.size)
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        if !self.contains(addr, bytes.len() as u64) {
            bail!("guest write of {} bytes at {addr:#x} is outside guest RAM", bytes.len());
        }
        self.memory.write_slice(bytes, GuestAddress(addr)).with_context(|| format!("writing guest RAM at {addr:#x}"))
    }

    /// Populates [addr, addr + len) in one system call instead of one page fault per page
    /// (MADV_POPULATE_WRITE, Linux 5.14+). Only an optimization: failures are ignored.
    pub fn populate(&self, addr: u64, len: u64) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        let page = host_page_size();
        let start = addr & !(page - 1);
        let end = addr.saturating_add(len).div_ceil(page).saturating_mul(page).min(self.size);
        let Ok(base) = self.host_address() else { return };
        if start >= end {
            return;
        }
        // SAFETY: [start, end) lies inside the guest RAM mapping owned by `self.memory`;
        // populating pages does not change their contents.
        unsafe {
            libc::madvise((base + start) as *mut libc::c_void, (end - start) as usize, MADV_POPULATE_WRITE);
        }
    }

    /// Maps `len` bytes of `file` from `offset` over guest RAM at `addr` (all page aligned),
    /// private and copy-on-write, and copies the pages at once.
    ///
    /// Why copy what is mapped: on a host without VT-x/AMD-V (shadow paging) KVM maps guest
    /// pages one fault at a time (30-45 µs each here), except that a fault also maps up to
    /// eight neighbours the host already holds *writable*; a file page not yet copied is
    /// read-only, so each of the program's first touches was its own fault (41 for hello,
    /// about 1.5 ms). Copied, they come eight at a time. The copies cost private memory only
    /// while the VM is busy: when every vCPU first parks for a while,
    /// [`GuestRam::give_back_unchanged_file_pages`] drops the copies still equal to the file,
    /// and the guest then reads the file's page-cache pages, shared by every VM and process
    /// mapping the same file. The caller guarantees the file holds at least `offset + len`
    /// bytes and is not changed while the VM runs (a cache file of cvm's own).
    pub fn map_file(&self, addr: u64, len: u64, file: &std::fs::File, offset: u64) -> Result<()> {
        use std::os::fd::AsRawFd;
        let page = host_page_size();
        let aligned = addr.is_multiple_of(page) && len.is_multiple_of(page) && offset.is_multiple_of(page);
        if !aligned || len == 0 || !self.contains(addr, len) {
            bail!("cannot map {len:#x} bytes of a file at guest {addr:#x} (offset {offset:#x}): not page aligned or outside guest RAM");
        }
        let target = self.host_address()? + addr;
        // SAFETY: [target, target + len) lies inside the guest RAM mapping owned by
        // `self.memory` (checked above); MAP_FIXED replaces those pages with the file's, which
        // vm-memory reads and writes like any other pages and unmaps with the rest on drop.
        let mapped = unsafe {
            libc::mmap(
                target as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if mapped == libc::MAP_FAILED || mapped as u64 != target {
            return Err(std::io::Error::last_os_error()).context("mapping the program file into guest RAM");
        }
        self.populate(addr, len);
        let file = file.try_clone().context("keeping the program file to give its pages back")?;
        lock(&self.copied_file_ranges).push(FileRange { addr, len, offset, file });
        Ok(())
    }

    /// Drops the copies [`GuestRam::map_file`] made of pages that still hold the file's bytes,
    /// once: the guest reads the shared page-cache page from then on. Returns the bytes given
    /// back. Only call it while no vCPU runs: a page the guest wrote between the comparison and
    /// the drop would lose that write.
    pub fn give_back_unchanged_file_pages(&self) -> Result<u64> {
        use std::os::unix::fs::FileExt;
        let ranges = std::mem::take(&mut *lock(&self.copied_file_ranges));
        let page = host_page_size() as usize;
        let base = self.host_address()?;
        let mut given_back = 0;
        let (mut in_file, mut in_guest) = (vec![0u8; page], vec![0u8; page]);
        for range in ranges {
            let mut run: Option<(u64, u64)> = None;
            for at in (0..range.len).step_by(page) {
                range.file.read_exact_at(&mut in_file, range.offset + at).context("reading the program file")?;
                self.read(range.addr + at, &mut in_guest)?;
                if in_file == in_guest {
                    let (_, len) = run.get_or_insert((range.addr + at, 0));
                    *len += page as u64;
                    continue;
                }
                given_back += drop_pages(base, run.take());
            }
            given_back += drop_pages(base, run.take());
        }
        Ok(given_back)
    }

    pub fn read(&self, addr: u64, buffer: &mut [u8]) -> Result<()> {
        if !self.contains(addr, buffer.len() as u64) {
            bail!("guest read of {} bytes at {addr:#x} is outside guest RAM", buffer.len());
        }
        self.memory.read_slice(buffer, GuestAddress(addr)).with_context(|| format!("reading guest RAM at {addr:#x}"))
    }

    pub fn read_vec(&self, addr: u64, len: u64) -> Result<Vec<u8>> {
        let mut buffer = vec![0u8; usize::try_from(len).context("read too large")?];
        self.read(addr, &mut buffer)?;
        Ok(buffer)
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64> {
        let mut bytes = [0u8; 8];
        self.read(addr, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Bytes of guest RAM the host has actually populated (touched by the VMM or the guest).
    pub fn resident_bytes(&self) -> Result<u64> {
        let (below, above) = self.resident_split(0)?;
        Ok(below + above)
    }

    /// Populated bytes of guest RAM below and at-or-above the guest-physical address `boundary`.
    pub fn resident_split(&self, boundary: u64) -> Result<(u64, u64)> {
        let page = host_page_size();
        let residency = self.mincore()?;
        let split = (boundary.div_ceil(page) as usize).min(residency.len());
        let count = |flags: &[u8]| flags.iter().filter(|&&flag| flag & 1 != 0).count() as u64 * page;
        Ok((count(&residency[..split]), count(&residency[split..])))
    }

    /// mincore over guest RAM: one byte per page, bit 0 set when the page is in memory (for
    /// pages mapped from a file: in the page cache, whether or not this mapping touched it).
    fn mincore(&self) -> Result<Vec<u8>> {
        let pages = self.size.div_ceil(host_page_size()) as usize;
        let mut residency = vec![0u8; pages];
        let start = self.host_address()?;
        // SAFETY: [start, start + size) is the live mapping owned by `self.memory`, page aligned
        // (mmap result), and `residency` has one byte per page of it.
        let status = unsafe { libc::mincore(start as *mut libc::c_void, self.size as usize, residency.as_mut_ptr()) };
        if status != 0 {
            return Err(std::io::Error::last_os_error()).context("mincore over guest RAM");
        }
        Ok(residency)
    }
}

/// Guest RAM's pages mapped in cvm's page tables, from /proc/self/pagemap: what the VMM's
/// loading and the guest touched (a file page the guest never read is not counted, unlike
/// mincore, which sees the page cache).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Residency {
    /// Bytes below the boundary address, and at or above it.
    pub below: u64,
    pub above: u64,
    /// Bytes of private anonymous pages among them (the rest are the shared program file's).
    pub anonymous: u64,
}

impl GuestRam {
    /// The pagemap entries (8 bytes a page) of the pages mincore finds in memory, a read per
    /// run of them: a VM touches a few hundred of the default 64 MiB's 16 000 pages, and
    /// reading every entry took 0.2 ms of each run's teardown. Far cheaper than parsing
    /// /proc/self/smaps either way. mincore sees every page present in the page tables (and
    /// page-cache pages besides), so no mapped page is missed; a page swapped out is not
    /// resident and not counted.
    pub fn residency(&self, boundary: u64) -> Result<Residency> {
        use std::os::unix::fs::FileExt;
        let page = host_page_size();
        let start = self.host_address()?;
        let in_memory = self.mincore()?;
        let pagemap = std::fs::File::open("/proc/self/pagemap").context("opening /proc/self/pagemap")?;
        let split = (boundary.div_ceil(page) as usize).min(in_memory.len());
        let mut residency = Residency::default();
        let mut entries = Vec::new();
        for (first, count) in runs(&in_memory) {
            entries.resize(count * 8, 0);
            pagemap
                .read_exact_at(&mut entries, (start / page + first as u64) * 8)
                .context("reading /proc/self/pagemap")?;
            residency.add(&entries, first, split, page);
        }
        Ok(residency)
    }
}

/// The runs of pages whose mincore byte has bit 0 set, as (first page, page count).
fn runs(flags: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (index, _) in flags.iter().enumerate().filter(|(_, &flag)| flag & 1 != 0) {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == index => *count += 1,
            _ => runs.push((index, 1)),
        }
    }
    runs
}

impl Residency {
    /// Counts the pagemap `entries` of the pages from `first` on (`split`: the first page at
    /// or above the boundary).
    fn add(&mut self, entries: &[u8], first: usize, split: usize, page: u64) {
        const PRESENT: u64 = 1 << 63;
        const FILE_OR_SHARED: u64 = 1 << 61;
        for (offset, bytes) in entries.chunks_exact(8).enumerate() {
            let entry = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
            if entry & PRESENT == 0 {
                continue;
            }
            if first + offset < split {
                self.below += page;
            } else {
                self.above += page;
            }
            if entry & FILE_OR_SHARED == 0 {
                self.anonymous += page;
            }
        }
    }
}

/// Drops a run of copied file pages (`(guest address, bytes)`) inside the guest RAM mapping at
/// host address `base`; returns the bytes dropped.
fn drop_pages(base: u64, run: Option<(u64, u64)>) -> u64 {
    let Some((addr, len)) = run else { return 0 };
    // SAFETY: the run lies inside a range `map_file` mapped privately from a file within guest
    // RAM; each of its pages holds the file's bytes, so after MADV_DONTNEED the next access
    // reads the very same bytes from the file.
    let status = unsafe { libc::madvise((base + addr) as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) };
    if status == 0 {
        len
    } else {
        0
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn host_page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_pages_in_memory() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[0, 1, 1, 0, 3, 0, 0, 1]), vec![(1, 2), (4, 1), (7, 1)]);
        assert_eq!(runs(&[2, 1]), vec![(1, 1)], "only bit 0 counts");
    }

    #[test]
    fn residency_counts_scattered_pages_on_both_sides_of_the_boundary() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let page = host_page_size();
        for addr in [0, page, 5 * page, 0x20_0000, 0x20_0000 + 9 * page] {
            ram.write(addr, &[1]).unwrap();
        }
        let residency = ram.residency(0x20_0000).unwrap();
        assert_eq!(residency, Residency { below: 3 * page, above: 2 * page, anonymous: 5 * page });
    }

    #[test]
    fn fresh_ram_is_untouched_and_counts_writes() {
        let ram = GuestRam::new(8 << 20).unwrap();
        assert_eq!(ram.resident_bytes().unwrap(), 0);
        ram.write(0x1000, b"hello").unwrap();
        ram.write(0x30_0000, &[1; 5000]).unwrap();
        assert_eq!(ram.resident_bytes().unwrap(), 3 * host_page_size());
        assert_eq!(ram.resident_split(0x20_0000).unwrap(), (host_page_size(), 2 * host_page_size()));
        let page = host_page_size();
        let residency = ram.residency(0x20_0000).unwrap();
        assert_eq!(residency, Residency { below: page, above: 2 * page, anonymous: 3 * page });
        let mut back = [0u8; 5];
        ram.read(0x1000, &mut back).unwrap();
        assert_eq!(&back, b"hello");
    }

    #[test]
    fn out_of_range_access_is_an_error() {
        let ram = GuestRam::new(8 << 20).unwrap();
        assert!(ram.write((8 << 20) - 2, b"abc").is_err());
        assert!(ram.read(u64::MAX - 1, &mut [0; 4]).is_err());
        assert!(!ram.contains(u64::MAX, 2));
    }

    #[test]
    fn file_pages_are_copied_then_the_unchanged_ones_given_back() {
        use std::io::Write;
        let page = host_page_size();
        let contents: Vec<u8> = (0..4 * page).map(|i| (i / page) as u8 + 1).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&contents).unwrap();
        let ram = GuestRam::new(8 << 20).unwrap();
        ram.map_file(0x10_0000, 4 * page, &file, 0).unwrap();
        let copied = ram.residency(0).unwrap();
        assert_eq!((copied.above, copied.anonymous), (4 * page, 4 * page), "all four pages copied at once");
        ram.write(0x10_0000 + 2 * page, b"changed").unwrap();
        assert_eq!(ram.give_back_unchanged_file_pages().unwrap(), 3 * page);
        assert_eq!(ram.give_back_unchanged_file_pages().unwrap(), 0, "only once");
        let mut back = vec![0u8; 4 * page as usize];
        ram.read(0x10_0000, &mut back).unwrap();
        assert_eq!(&back[..2 * page as usize], &contents[..2 * page as usize]);
        assert_eq!(&back[2 * page as usize..2 * page as usize + 7], b"changed");
        assert_eq!(&back[3 * page as usize..], &contents[3 * page as usize..]);
        let after = ram.residency(0).unwrap();
        assert_eq!(after.anonymous, page, "only the changed page stays private");
    }
}

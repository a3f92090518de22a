//! The program's own peak RSS from the kernel's taskstats exit records.
//!
//! `ru_maxrss` of a child started with vfork includes the high-water mark of the address space
//! that called exec (cvm's). Linux's taskstats sends, for every task exiting on the CPUs a
//! listener registered for, a record taken in `do_exit` *before* the task drops its memory:
//! its `hiwater_rss` is the peak of the program's own address space after exec. Registering
//! needs CAP_NET_ADMIN; without it [`ensure_listening`] returns false and callers keep rusage.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};

// Netlink and generic netlink (linux/netlink.h, linux/genetlink.h).
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

// linux/taskstats.h
const TASKSTATS_CMD_GET: u8 = 1;
const TASKSTATS_CMD_NEW: u8 = 2;
const TASKSTATS_TYPE_PID: u16 = 1;
const TASKSTATS_TYPE_STATS: u16 = 3;
const TASKSTATS_TYPE_AGGR_PID: u16 = 4;
const TASKSTATS_CMD_ATTR_REGISTER_CPUMASK: u16 = 3;

/// Offsets in `struct taskstats`, from the header's layout: `version` (u16) at 0,
/// `ac_exitcode` 4, `ac_flag`/`ac_nice` 8–9, seven u64 from `cpu_count` (aligned(8)) at 16 to
/// `cpu_run_virtual_total` at 72, `ac_comm[32]` at 80, `ac_sched` (aligned(8)) at 112 with
/// `ac_pad[3]`, `ac_uid` (aligned(8)) at 120, `ac_gid` 124, `ac_pid` 128, `ac_ppid` 132,
/// `ac_btime` 136, then u64s from `ac_etime` (aligned(8)) at 144: `ac_utime` 152, `ac_stime`
/// 160, `ac_minflt` 168, `ac_majflt` 176, `coremem` 184, `virtmem` 192, `hiwater_rss` 200.
/// These fields have been at these places since version 1; later versions only append.
const TS_VERSION: usize = 0;
const TS_AC_PID: usize = 128;
const TS_HIWATER_RSS: usize = 200;
const TS_MIN_LEN: usize = TS_HIWATER_RSS + 8;

/// A netlink socket registered for the exit records of every online CPU.
struct Listener {
    fd: OwnedFd,
    family: u16,
    /// Receive buffer for one datagram.
    buffer: super::lazy_buffer::LazyBuffer,
}

fn listener() -> &'static Mutex<Option<Listener>> {
    static LISTENER: OnceLock<Mutex<Option<Listener>>> = OnceLock::new();
    LISTENER.get_or_init(|| Mutex::new(Listener::open().ok()))
}

/// Opens the listener once per process (later calls only drop the records that piled up since
/// the last run). Call before starting the child; false when taskstats is not available here.
pub fn ensure_listening() -> bool {
    let mut guard = listener().lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_mut() {
        Some(listener) => {
            listener.drain(|_| false);
            true
        }
        None => false,
    }
}

/// The peak RSS (bytes) of the exited task `pid` (a pid of cvm's pid namespace, the initial
/// one), from its exit record. Call after the child was reaped: the record is queued before
/// the parent is notified. None when there is no listener or the record was lost.
pub fn peak_rss_of(pid: libc::pid_t) -> Option<u64> {
    let mut guard = listener().lock().unwrap_or_else(|e| e.into_inner());
    let listener = guard.as_mut()?;
    let family = listener.family;
    let mut found = None;
    listener.drain(|message| match parse_exit_record(message, family) {
        Some((record_pid, peak)) if record_pid == pid as u32 => {
            found = Some(peak);
            true
        }
        _ => false,
    });
    found
}

impl Listener {
    fn open() -> std::io::Result<Listener> {
        // SAFETY: plain socket(2) call; the returned descriptor is owned below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_GENERIC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size: libc::c_int = 1 << 20;
        // SAFETY: SO_RCVBUF takes a c_int; the pointer and length describe `size`.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let buffer = super::lazy_buffer::LazyBuffer::new(64 << 10).map_err(std::io::Error::other)?;
        let mut listener = Listener { fd, family: 0, buffer };
        listener.family = listener.resolve_family()?;
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
        let mut mask = cpus.trim().as_bytes().to_vec();
        mask.push(0);
        let mut attrs = Vec::new();
        put_attr(&mut attrs, TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, &mask);
        listener.send(listener.family, TASKSTATS_CMD_GET, 1, NLM_F_ACK, &attrs)?;
        listener.expect_ack()?;
        // SAFETY: fcntl on our own descriptor.
        let ok = unsafe { libc::fcntl(listener.fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        if ok < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(listener)
    }

    fn resolve_family(&mut self) -> std::io::Result<u16> {
        let mut attrs = Vec::new();
        put_attr(&mut attrs, CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0");
        self.send(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 2, 0, &attrs)?;
        let len = self.recv()?;
        let message = &self.buffer[..len];
        check_error(message)?;
        let attrs = message.get(NLMSG_HDRLEN + GENL_HDRLEN..).unwrap_or_default();
        attributes(attrs)
            .find(|(kind, _)| *kind == CTRL_ATTR_FAMILY_ID)
            .and_then(|(_, value)| Some(u16::from_ne_bytes(value.get(..2)?.try_into().ok()?)))
            .ok_or_else(|| std::io::Error::other("no TASKSTATS generic netlink family"))
    }

    /// Waits for the acknowledgement of the last request (exit records may arrive before it).
    fn expect_ack(&mut self) -> std::io::Result<()> {
        loop {
            let len = self.recv()?;
            let datagram = &self.buffer[..len];
            if let Some(ack) = messages(datagram).find(|m| read_u16(m, 4) == Some(NLMSG_ERROR)) {
                return check_error(ack);
            }
        }
    }

    fn send(&self, family: u16, cmd: u8, version: u8, flags: u16, attrs: &[u8]) -> std::io::Result<()> {
        let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
        let mut message = Vec::with_capacity(len);
        message.extend_from_slice(&(len as u32).to_ne_bytes());
        message.extend_from_slice(&family.to_ne_bytes());
        message.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        message.extend_from_slice(&[cmd, version, 0, 0]);
        message.extend_from_slice(attrs);
        // SAFETY: sockaddr_nl is plain data; all-zero is "the kernel".
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram into `self.buffer`; its length.
    fn recv(&mut self) -> std::io::Result<usize> {
        loop {
            // SAFETY: the buffer is valid for writes of its whole length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), self.buffer.as_mut_ptr().cast(), self.buffer.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Reads every queued datagram (the socket is non-blocking), handing each netlink message to
    /// `wanted` until it returns true. A receive-buffer overflow (ENOBUFS) lost some records:
    /// reading goes on, and a record that was lost is simply not found.
    fn drain(&mut self, mut wanted: impl FnMut(&[u8]) -> bool) {
        loop {
            let len = match self.recv() {
                Ok(len) => len,
                Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(_) => return,
            };
            if messages(&self.buffer[..len]).any(&mut wanted) {
                return;
            }
        }
    }
}

/// Appends one netlink attribute, padded to 4 bytes.
fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align4(out.len()), 0);
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// An NLMSG_ERROR message with a non-zero error is that error; anything else is fine.
fn check_error(message: &[u8]) -> std::io::Result<()> {
    if read_u16(message, 4) == Some(NLMSG_ERROR) {
        let errno = read_u32(message, NLMSG_HDRLEN).map_or(0, |e| e as i32);
        if errno != 0 {
            return Err(std::io::Error::from_raw_os_error(-errno));
        }
    }
    Ok(())
}

/// The netlink messages of one datagram.
fn messages(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = read_u32(rest, 0)? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let message = &rest[..len];
        rest = rest.get(align4(len)..).unwrap_or_default();
        Some(message)
    })
}

/// (type, payload) of each attribute in `data`; stops at the first malformed one.
fn attributes(data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let len = read_u16(rest, 0)? as usize;
        let kind = read_u16(rest, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            return None;
        }
        let value = &rest[NLA_HDRLEN..len];
        rest = rest.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// (pid, peak RSS in bytes) of a TASKSTATS_CMD_NEW exit record of family `family`.
fn parse_exit_record(message: &[u8], family: u16) -> Option<(u32, u64)> {
    if read_u16(message, 4)? != family || *message.get(NLMSG_HDRLEN)? != TASKSTATS_CMD_NEW {
        return None;
    }
    let (_, aggregate) =
        attributes(message.get(NLMSG_HDRLEN + GENL_HDRLEN..)?).find(|(kind, _)| *kind == TASKSTATS_TYPE_AGGR_PID)?;
    let mut pid = None;
    let mut stats = None;
    for (kind, value) in attributes(aggregate) {
        match kind {
            TASKSTATS_TYPE_PID => pid = read_u32(value, 0),
            TASKSTATS_TYPE_STATS => stats = Some(value),
            _ => {}
        }
    }
    let (pid, stats) = (pid?, stats?);
    if stats.len() < TS_MIN_LEN || read_u16(stats, TS_VERSION)? == 0 || read_u32(stats, TS_AC_PID)? != pid {
        return None;
    }
    Some((pid, read_u64(stats, TS_HIWATER_RSS)? * 1024))
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exit record as the kernel builds it: nlmsghdr, genlmsghdr, AGGR_PID { PID, STATS }.
    fn exit_record(family: u16, pid: u32, ac_pid: u32, hiwater_kib: u64) -> Vec<u8> {
        let mut stats = vec![0u8; 416];
        stats[TS_VERSION..TS_VERSION + 2].copy_from_slice(&13u16.to_ne_bytes());
        stats[TS_AC_PID..TS_AC_PID + 4].copy_from_slice(&ac_pid.to_ne_bytes());
        stats[TS_HIWATER_RSS..TS_HIWATER_RSS + 8].copy_from_slice(&hiwater_kib.to_ne_bytes());
        let mut inner = Vec::new();
        put_attr(&mut inner, TASKSTATS_TYPE_PID, &pid.to_ne_bytes());
        put_attr(&mut inner, TASKSTATS_TYPE_STATS, &stats);
        let mut attrs = Vec::new();
        put_attr(&mut attrs, TASKSTATS_TYPE_AGGR_PID | 0x8000, &inner);
        let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs.len();
        let mut message = Vec::new();
        message.extend_from_slice(&(len as u32).to_ne_bytes());
        message.extend_from_slice(&family.to_ne_bytes());
        message.extend_from_slice(&[0; 10]);
        message.extend_from_slice(&[TASKSTATS_CMD_NEW, 1, 0, 0]);
        message.extend_from_slice(&attrs);
        message
    }

    #[test]
    fn parses_the_pid_and_peak_of_an_exit_record() {
        let message = exit_record(27, 4242, 4242, 444);
        assert_eq!(parse_exit_record(&message, 27), Some((4242, 444 * 1024)));
    }

    #[test]
    fn ignores_other_families_mismatched_pids_and_short_records() {
        assert_eq!(parse_exit_record(&exit_record(27, 1, 1, 8), 28), None);
        assert_eq!(parse_exit_record(&exit_record(27, 1, 2, 8), 27), None);
        let mut short = exit_record(27, 1, 1, 8);
        short.truncate(100);
        assert_eq!(parse_exit_record(&short, 27), None);
    }

    #[test]
    fn splits_a_datagram_into_its_messages() {
        let mut datagram = exit_record(27, 1, 1, 8);
        datagram.extend(exit_record(27, 2, 2, 16));
        let found: Vec<_> = messages(&datagram).filter_map(|m| parse_exit_record(m, 27)).collect();
        assert_eq!(found, vec![(1, 8 * 1024), (2, 16 * 1024)]);
    }

    #[test]
    fn reads_an_error_ack() {
        let mut ack = vec![0u8; NLMSG_HDRLEN + 4];
        let len = ack.len() as u32;
        ack[..4].copy_from_slice(&len.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[NLMSG_HDRLEN..].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(check_error(&ack).unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}

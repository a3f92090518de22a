//! Port 0x500, the ConsoleWrite hypercall: the guest kernel writes the guest-physical address
//! of a `ConsoleWrite { fd, len, addr }` and the VMM copies `len` bytes from guest RAM to the
//! program's stdout or stderr. One exit per `write()` of the program, instead of one per byte
//! on a serial port.

use std::time::Instant;

use cvm_guest_abi::ConsoleWrite;

use crate::runtime::capture::BoundedCapture;
use crate::runtime::relay::{self, Relay, Stalled};
use crate::vmm::memory::GuestRam;

/// Largest single write accepted (a program's write() is at most this much per call).
const MAX_WRITE: u64 = cvm_guest_abi::CONSOLE_WRITE_MAX;
/// A write is copied out of guest RAM in pieces of this size, so cvm never holds a whole
/// 16 MiB write, only what the record keeps and what the live relay queues.
const PIECE: usize = 64 << 10;

pub struct ProgramConsole {
    echo: bool,
    /// The run's deadline: a live echo waiting on a stalled reader gives up then.
    deadline: Instant,
    pub stdout: BoundedCapture,
    pub stderr: BoundedCapture,
    /// When the first byte of the program's stdout reached the host.
    pub first_output: Option<Instant>,
    pub writes: u64,
    piece: Vec<u8>,
}

/// Why a ConsoleWrite did not complete.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// The request itself was invalid (a guest kernel bug).
    Invalid(String),
    /// The live echo could not hand the bytes over before the deadline or an interruption.
    Stalled(Stalled),
}

impl ProgramConsole {
    pub fn new(echo: bool, deadline: Instant) -> ProgramConsole {
        ProgramConsole {
            echo,
            deadline,
            stdout: BoundedCapture::new(),
            stderr: BoundedCapture::new(),
            first_output: None,
            writes: 0,
            piece: Vec::new(),
        }
    }

    /// Serves one hypercall.
    pub fn write(&mut self, request_address: u64, ram: &GuestRam, now: Instant) -> Result<(), ConsoleError> {
        let request = read_request(request_address, ram).map_err(ConsoleError::Invalid)?;
        let len = u64::from(request.len);
        if len > MAX_WRITE {
            return Err(ConsoleError::Invalid(format!(
                "the guest kernel asked to print {len} bytes in one ConsoleWrite, more than the {} MiB one may carry",
                MAX_WRITE >> 20
            )));
        }
        if !ram.contains(request.addr, len) {
            return Err(ConsoleError::Invalid(format!(
                "the guest kernel asked to print {len} bytes at {:#x}, outside guest RAM (ConsoleWrite at {request_address:#x})",
                request.addr
            )));
        }
        let (capture, relay): (&mut BoundedCapture, &'static Relay) = match request.fd {
            1 => (&mut self.stdout, relay::stdout()),
            2 => (&mut self.stderr, relay::stderr()),
            fd => {
                return Err(ConsoleError::Invalid(format!(
                    "the guest kernel sent a ConsoleWrite for fd {fd}; only 1 and 2 exist"
                )))
            }
        };
        self.writes += 1;
        if request.fd == 1 && self.first_output.is_none() && len > 0 {
            self.first_output = Some(now);
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(PIECE as u64) as usize;
            // Grown to what the writes need, not PIECE at once: zeroing 64 KiB for hello's 69
            // bytes faulted in 16 pages of cvm's heap.
            if self.piece.len() < n {
                self.piece.resize(n, 0);
            }
            let piece = &mut self.piece[..n];
            ram.read(request.addr + done, piece).map_err(|e| ConsoleError::Invalid(e.to_string()))?;
            capture.push(piece);
            if self.echo {
                relay.send(piece, self.deadline).map_err(ConsoleError::Stalled)?;
            }
            done += n as u64;
        }
        Ok(())
    }
}

fn read_request(address: u64, ram: &GuestRam) -> Result<ConsoleWrite, String> {
    let mut raw = [0u8; std::mem::size_of::<ConsoleWrite>()];
    ram.read(address, &mut raw)
        .map_err(|_| format!("the guest kernel's ConsoleWrite address {address:#x} is outside guest RAM"))?;
    let word = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    Ok(ConsoleWrite { fd: word(0), len: word(4), addr: u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ram: &GuestRam, at: u64, fd: u32, len: u32, addr: u64) {
        let mut raw = Vec::new();
        raw.extend_from_slice(&fd.to_le_bytes());
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(&addr.to_le_bytes());
        ram.write(at, &raw).unwrap();
    }

    #[test]
    fn copies_stdout_and_timestamps_the_first_byte() {
        let ram = GuestRam::new(8 << 20).unwrap();
        ram.write(0x50_0000, b"hi there\n").unwrap();
        request(&ram, 0x3000, 1, 9, 0x50_0000);
        let mut console = ProgramConsole::new(false, Instant::now());
        console.write(0x3000, &ram, Instant::now()).unwrap();
        assert_eq!(std::mem::take(&mut console.stdout).finish().bytes, b"hi there\n");
        assert!(console.first_output.is_some());
    }

    #[test]
    fn a_huge_write_keeps_only_both_ends() {
        let ram = GuestRam::new(32 << 20).unwrap();
        let len = 12u32 << 20;
        ram.write(0x50_0000, &vec![b'z'; len as usize]).unwrap();
        request(&ram, 0x3000, 1, len, 0x50_0000);
        let mut console = ProgramConsole::new(false, Instant::now());
        console.write(0x3000, &ram, Instant::now()).unwrap();
        let kept = std::mem::take(&mut console.stdout).finish();
        assert_eq!(kept.total, u64::from(len));
        assert_eq!(kept.bytes.len(), 2 * crate::runtime::capture::KEEP_EACH);
    }

    #[test]
    fn bad_requests_are_refused() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let mut console = ProgramConsole::new(false, Instant::now());
        let invalid = |result: Result<(), ConsoleError>| match result {
            Err(ConsoleError::Invalid(reason)) => reason,
            other => panic!("expected an invalid request, got {other:?}"),
        };
        request(&ram, 0x3000, 1, 100, (8 << 20) - 10);
        assert!(invalid(console.write(0x3000, &ram, Instant::now())).contains("outside guest RAM"));
        request(&ram, 0x3000, 7, 1, 0x50_0000);
        assert!(invalid(console.write(0x3000, &ram, Instant::now())).contains("fd 7"));
        assert!(console.write(u64::MAX - 4, &ram, Instant::now()).is_err());
    }
}

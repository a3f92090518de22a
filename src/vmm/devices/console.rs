//! Port 0x500, the ConsoleWrite hypercall: the guest kernel writes the guest-physical address
//! of a `ConsoleWrite { fd, len, addr }` and the VMM copies `len` bytes from guest RAM to the
//! program's stdout or stderr. One exit per `write()` of the program, instead of one per byte
//! on a serial port.

use std::io::Write;
use std::time::Instant;

use cvm_guest_abi::ConsoleWrite;

use crate::vmm::memory::GuestRam;

/// Largest single write accepted (a program's write() is at most this much per call).
const MAX_WRITE: u64 = 16 << 20;

pub struct ProgramConsole {
    echo: bool,
    pub stdout: Vec<u8>,
    pub stderr_bytes: u64,
    /// When the first byte of the program's stdout reached the host.
    pub first_output: Option<Instant>,
    pub writes: u64,
}

impl ProgramConsole {
    pub fn new(echo: bool) -> ProgramConsole {
        ProgramConsole { echo, stdout: Vec::new(), stderr_bytes: 0, first_output: None, writes: 0 }
    }

    /// Serves one hypercall; `Err` is why the request was invalid (a guest kernel bug).
    pub fn write(&mut self, request_address: u64, ram: &GuestRam, now: Instant) -> Result<(), String> {
        let request = read_request(request_address, ram)?;
        let len = u64::from(request.len);
        if len > MAX_WRITE || !ram.contains(request.addr, len) {
            return Err(format!(
                "the guest kernel asked to print {len} bytes at {:#x}, outside guest RAM (ConsoleWrite at {request_address:#x})",
                request.addr
            ));
        }
        let bytes = ram.read_vec(request.addr, len).map_err(|e| e.to_string())?;
        self.writes += 1;
        match request.fd {
            1 => {
                if self.first_output.is_none() && !bytes.is_empty() {
                    self.first_output = Some(now);
                }
                self.stdout.extend_from_slice(&bytes);
                if self.echo {
                    let mut stdout = std::io::stdout().lock();
                    let _ = stdout.write_all(&bytes);
                    let _ = stdout.flush();
                }
            }
            2 => {
                self.stderr_bytes += len;
                // Like the other runtimes, the program's stderr is cvm's stderr.
                let _ = std::io::stderr().lock().write_all(&bytes);
            }
            fd => return Err(format!("the guest kernel sent a ConsoleWrite for fd {fd}; only 1 and 2 exist")),
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
        let mut console = ProgramConsole::new(false);
        console.write(0x3000, &ram, Instant::now()).unwrap();
        assert_eq!(console.stdout, b"hi there\n");
        assert!(console.first_output.is_some());
    }

    #[test]
    fn bad_requests_are_refused() {
        let ram = GuestRam::new(8 << 20).unwrap();
        let mut console = ProgramConsole::new(false);
        request(&ram, 0x3000, 1, 100, (8 << 20) - 10);
        assert!(console.write(0x3000, &ram, Instant::now()).unwrap_err().contains("outside guest RAM"));
        request(&ram, 0x3000, 7, 1, 0x50_0000);
        assert!(console.write(0x3000, &ram, Instant::now()).unwrap_err().contains("fd 7"));
        assert!(console.write(u64::MAX - 4, &ram, Instant::now()).is_err());
    }
}

//! COM1, a 16550 UART at port 0x3f8 (vm-superio's emulation): the guest kernel's diagnostic
//! console. Each byte costs a VM exit, so programs print through the ConsoleWrite hypercall
//! instead; the serial line is for the kernel's own messages.
//!
//! The text goes to cvm's stderr as it arrives (line by line, unless quiet) and is kept, so the
//! run record can carry it.

use std::convert::Infallible;
use std::io::Write;

use cvm_guest_abi::port::SERIAL_COM1;
use vm_superio::{Serial, Trigger};

/// At most this much console text is kept for the record.
const KEPT_BYTES: usize = 64 << 10;
pub const REGISTERS: u16 = 8;

/// No interrupt controller in this VM, so the UART's interrupt line goes nowhere.
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = Infallible;
    fn trigger(&self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// Where the UART's output goes.
pub struct ConsoleLog {
    echo: bool,
    deadline: std::time::Instant,
    first_byte: Option<std::time::Instant>,
    line: Vec<u8>,
    kept: Vec<u8>,
    total: u64,
}

impl Write for ConsoleLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.total += bytes.len() as u64;
        if self.first_byte.is_none() && !bytes.is_empty() {
            self.first_byte = Some(std::time::Instant::now());
        }
        let room = KEPT_BYTES.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if self.echo {
            self.line.extend_from_slice(bytes);
            if self.line.ends_with(b"\n") || self.line.len() >= 4096 {
                self.flush()?;
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            // Through the relay: a stalled reader of cvm's stderr cannot hold the vCPU. A line
            // that cannot be handed over by the deadline is only dropped from the live view
            // (the run loop stops the VM at the deadline anyway).
            let _ = crate::runtime::relay::stderr().send(&self.line, self.deadline);
            self.line.clear();
        }
        Ok(())
    }
}

pub struct SerialConsole {
    uart: Serial<NoInterrupt, vm_superio::serial::NoEvents, ConsoleLog>,
}

impl SerialConsole {
    pub fn new(echo: bool, deadline: std::time::Instant) -> SerialConsole {
        let log = ConsoleLog { echo, deadline, first_byte: None, line: Vec::new(), kept: Vec::new(), total: 0 };
        SerialConsole { uart: Serial::new(NoInterrupt, log) }
    }

    pub fn owns(port: u16) -> bool {
        (SERIAL_COM1..SERIAL_COM1 + REGISTERS).contains(&port)
    }

    pub fn write(&mut self, port: u16, value: u8) {
        // The only error is the interrupt trigger's, which cannot fail.
        let _ = self.uart.write((port - SERIAL_COM1) as u8, value);
    }

    pub fn read(&mut self, port: u16) -> u8 {
        self.uart.read((port - SERIAL_COM1) as u8)
    }

    /// When the first byte reached the UART.
    pub fn first_output(&self) -> Option<std::time::Instant> {
        self.uart.writer().first_byte
    }

    /// Everything the guest printed on the serial console (the first 64 KiB), echo flushed.
    pub fn finish(&mut self) -> (String, u64) {
        let log = self.uart.writer_mut();
        let _ = log.flush();
        (String::from_utf8_lossy(&log.kept).into_owned(), log.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_to_the_data_register_are_kept() {
        let mut serial = SerialConsole::new(false, std::time::Instant::now());
        for byte in b"boot ok\n" {
            serial.write(SERIAL_COM1, *byte);
        }
        // Line status register: transmitter empty, so a polling guest proceeds.
        assert_ne!(serial.read(SERIAL_COM1 + 5) & 0x20, 0);
        assert_eq!(serial.finish(), ("boot ok\n".to_string(), 8));
        assert!(SerialConsole::owns(0x3ff) && !SerialConsole::owns(0x400));
    }
}

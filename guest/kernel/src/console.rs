//! The program's stdout/stderr, and the kernel's own diagnostics.
//!
//! Under cvm's VMM a write is one hypercall: the kernel fills a [`ConsoleWrite`] and does a
//! single `out` of its address to port 0x500; the VMM copies the bytes out of guest memory.
//! (One exit per write, not per byte: each exit costs tens of microseconds on PVM hosts.)
//! When booted by QEMU through PVH there is no such port and the 16550 serial port is used.

use crate::cpu::{out32, out8};
use crate::global::Global;
use cvm_guest_abi::{port, ConsoleWrite, CONSOLE_WRITE_MAX};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// cvm's VMM: the ConsoleWrite hypercall.
    Hypercall,
    /// QEMU (PVH boot): bytes to COM1.
    Serial,
}

#[link_section = ".data.hot"]
static BACKEND: Global<Backend> = Global::new(Backend::Hypercall);

pub fn init(backend: Backend) {
    BACKEND.set(backend);
}

/// Sends `bytes` to the host's stdout (fd 1) or stderr (fd 2).
pub fn write(fd: u32, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    match BACKEND.get() {
        Backend::Hypercall if crate::highmem::contains(bytes.as_ptr() as u64, bytes.as_ptr() as u64) => {
            // Above guest RAM the address is not the physical one the VMM reads: copy through
            // a buffer on this vCPU's stack (which is 1:1), a page at a time.
            let mut bounce = [0u8; 4096];
            for chunk in bytes.chunks(bounce.len()) {
                bounce[..chunk.len()].copy_from_slice(chunk);
                send(fd, &bounce[..chunk.len()]);
            }
        }
        Backend::Hypercall => {
            // A write larger than one request may carry goes in pieces.
            for chunk in bytes.chunks(CONSOLE_WRITE_MAX as usize) {
                send(fd, chunk);
            }
        }
        Backend::Serial => serial_write(bytes),
    }
}

/// One ConsoleWrite of `chunk`, which lies in the 1:1-mapped part of memory.
fn send(fd: u32, chunk: &[u8]) {
    // On this vCPU's stack: several vCPUs may write at once.
    let request = ConsoleWrite { fd, len: chunk.len() as u32, addr: chunk.as_ptr() as u64 };
    // Guest RAM is identity-mapped and the kernel's stacks live below 4 GiB, so the request's
    // address is its guest-physical address and fits the port value.
    out32(port::CONSOLE_WRITE, &request as *const ConsoleWrite as u64 as u32);
}

/// True under cvm's VMM, which answers the hypercall ports (ConsoleWrite, Sleep); false under
/// QEMU, where the kernel was entered through PVH and writes to the serial line.
pub fn hypercalls() -> bool {
    matches!(BACKEND.get(), Backend::Hypercall)
}

/// Kernel diagnostics on COM1, byte by byte. Used only on the way to a fault report, never
/// in a normal run (each `out` is an exit). The transmitter is not polled: the VMM and QEMU
/// both accept bytes at any time, and a missing UART must not hang the kernel.
pub fn serial_write(bytes: &[u8]) {
    for &byte in bytes {
        if byte == b'\n' {
            out8(port::SERIAL_COM1, b'\r');
        }
        out8(port::SERIAL_COM1, byte);
    }
}

/// Small formatting helper for diagnostics: `value` in hex.
pub fn serial_hex(value: u64) {
    let mut text = *b"0x0000000000000000";
    for (i, slot) in text[2..].iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * i)) & 0xf;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
    serial_write(&text);
}

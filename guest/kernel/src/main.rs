//! Placeholder of the builtin guest kernel: reports "kernel entered" and exits with status 127.
//! Replaced by the real kernel (issue 3).
#![no_std]
#![no_main]

use cvm_guest_abi::{boot_code, port};

#[no_mangle]
#[link_section = ".text.entry"]
pub extern "C" fn _start() -> ! {
    // SAFETY: port I/O to the VMM's boot-timer and exit ports; no memory is touched.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port::BOOT_TIMER, in("al") boot_code::KERNEL_ENTERED);
        core::arch::asm!("out dx, eax", in("dx") port::EXIT, in("eax") 127u32);
    }
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

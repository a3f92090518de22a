//! `threads`: what a Rust program does with threads and signals, through std and libc: workers
//! adding under a `Mutex`, a hand-over through a `Condvar`, a sleep, a handler for a signal the
//! program raises itself, and a write to a read-only page that a SIGSEGV handler lets through
//! (it makes the page writable again and returns, so the write runs once more and succeeds).
//! Prints the same lines wherever it runs; the result says whether each part worked.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::json::JsonObject;

const WORKERS: u64 = 4;
const ROUNDS: u64 = 10_000;
const PAGE: usize = 4096;

static SIGNALS_SEEN: AtomicU64 = AtomicU64::new(0);
static FAULTS_SEEN: AtomicU64 = AtomicU64::new(0);
/// The read-only page, for the SIGSEGV handler.
static PAGE_ADDRESS: AtomicUsize = AtomicUsize::new(0);

pub fn threads() -> JsonObject {
    let counter = Arc::new(Mutex::new(0u64));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    *counter.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    let total = *counter.lock().unwrap_or_else(|p| p.into_inner());
    println!("mutex: {WORKERS} threads added {total}");

    let mailbox = Arc::new((Mutex::new(None::<u64>), Condvar::new()));
    let consumer = {
        let mailbox = Arc::clone(&mailbox);
        std::thread::spawn(move || {
            let (lock, changed) = &*mailbox;
            let mut sum = 0;
            for _ in 0..100 {
                let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
                while slot.is_none() {
                    slot = changed.wait(slot).unwrap_or_else(|p| p.into_inner());
                }
                sum += slot.take().unwrap_or(0);
                changed.notify_all();
            }
            sum
        })
    };
    {
        let (lock, changed) = &*mailbox;
        for item in 1..=100 {
            let mut slot = lock.lock().unwrap_or_else(|p| p.into_inner());
            while slot.is_some() {
                slot = changed.wait(slot).unwrap_or_else(|p| p.into_inner());
            }
            *slot = Some(item);
            changed.notify_all();
        }
    }
    let sum = consumer.join().unwrap_or(0);
    println!("condvar: 100 items handed over, sum {sum}");

    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    let slept = started.elapsed() >= Duration::from_millis(20);
    println!("sleep: 20 ms took at least 20 ms: {slept}");

    install(libc::SIGUSR1, on_signal as *const () as usize);
    // SAFETY: raise only sends a signal to this thread; the handler above is async-signal-safe.
    unsafe { libc::raise(libc::SIGUSR1) };
    let signals = SIGNALS_SEEN.load(Ordering::SeqCst);
    println!("signal: the handler ran {signals} time(s)");

    let faults = read_only_page_write();
    println!("read-only page: the write faulted {faults} time(s), then went through");

    let mut result = JsonObject::new("threads");
    result.int("mutex_total", total);
    result.int("condvar_sum", sum);
    result.int("signals", signals);
    result.int("faults", faults);
    result.str(
        "ok",
        if total == WORKERS * ROUNDS && sum == 5050 && slept && signals == 1 && faults == 1 { "yes" } else { "no" },
    );
    result
}

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst);
}

/// Makes the faulting page writable again: the write is retried when the handler returns.
extern "C" fn on_segv(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let page = PAGE_ADDRESS.load(Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let address = unsafe { (*info).si_addr() } as usize;
    if page == 0 || address & !(PAGE - 1) != page {
        // Not our page: a real crash. Back to the default action, and the fault repeats.
        install(libc::SIGSEGV, libc::SIG_DFL);
        return;
    }
    FAULTS_SEEN.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the page is our own mapping; mprotect is async-signal-safe.
    unsafe { libc::mprotect(page as *mut libc::c_void, PAGE, libc::PROT_READ | libc::PROT_WRITE) };
}

fn read_only_page_write() -> u64 {
    // SAFETY: an anonymous private mapping of one page, checked below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return 0;
    }
    PAGE_ADDRESS.store(page as usize, Ordering::SeqCst);
    install_siginfo(libc::SIGSEGV, on_segv as *const () as usize);
    // SAFETY: our page; making it read-only is the point.
    unsafe { libc::mprotect(page, PAGE, libc::PROT_READ) };
    // SAFETY: a volatile write into our own page: it faults once, the handler reopens it.
    unsafe { std::ptr::write_volatile(page.cast::<u8>(), 7) };
    install(libc::SIGSEGV, libc::SIG_DFL);
    FAULTS_SEEN.load(Ordering::SeqCst)
}

fn install(signal: libc::c_int, handler: usize) {
    set_action(signal, handler, 0);
}

fn install_siginfo(signal: libc::c_int, handler: usize) {
    set_action(signal, handler, libc::SA_SIGINFO);
}

fn set_action(signal: libc::c_int, handler: usize, flags: libc::c_int) {
    // SAFETY: a zeroed sigaction is valid; the handlers are async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = flags;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

//! The cvm workload: one small static program, run unmodified as a process, in a container and
//! in the micro-VM. Each subcommand prints its human output, then one last line
//! `CVM-RESULT {json}` with its own figures.
//!
//! Single-threaded and limited to ordinary system calls on purpose: the builtin guest kernel
//! serves the same file.

mod json;
mod probe;
mod sha256;

use std::time::Instant;

use json::JsonObject;

const USAGE: &str = "usage: cvm-workload hello | cpu [ROUNDS] | mem [MIB] | syscall [COUNT] | idle [SECONDS] | probe";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("hello");
    let number = |default: u64| -> u64 {
        match args.get(1) {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| fail(&format!("not a number: {text}"))),
        }
    };
    let result = match name {
        "hello" => hello(),
        "cpu" => cpu(number(200_000)),
        "mem" => mem(number(32)),
        "syscall" => syscall(number(20_000)),
        "idle" => idle(number(10)),
        "probe" => probe::probe(),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return;
        }
        other => fail(&format!("unknown workload '{other}'")),
    };
    println!("CVM-RESULT {}", result.finish());
}

fn fail(message: &str) -> ! {
    eprintln!("cvm-workload: {message}\n{USAGE}");
    std::process::exit(2)
}

fn hello() -> JsonObject {
    println!("Hello from the cvm workload!");
    let mut result = JsonObject::new("hello");
    result.int("pid", u64::from(std::process::id()));
    result
}

/// Fixed CPU-bound work: SHA-256 over a 64-byte block, `rounds` times, each round hashing the
/// previous digest. No system calls inside the timed loop.
fn cpu(rounds: u64) -> JsonObject {
    let start = Instant::now();
    let mut block = [0u8; 64];
    for round in 0..rounds {
        let digest = sha256::digest(&block);
        block[..32].copy_from_slice(&digest);
        block[32..40].copy_from_slice(&round.to_le_bytes());
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let per_second = rounds as f64 * 1e9 / elapsed_ns.max(1) as f64;
    println!("cpu: {rounds} SHA-256 rounds in {:.3} ms ({per_second:.0} rounds/s)", ms(elapsed_ns));
    let mut result = JsonObject::new("cpu");
    result.int("iterations", rounds);
    result.int("elapsed_ns", elapsed_ns);
    result.float("ops_per_sec", per_second);
    result.str("checksum", &hex(&block[..8]));
    result
}

/// Allocates `mib` MiB and writes one byte in every 4 KiB page, so each page is faulted in.
fn mem(mib: u64) -> JsonObject {
    const PAGE: usize = 4096;
    let bytes = (mib as usize) << 20;
    let start = Instant::now();
    // Not zeroed on purpose: each page is touched by exactly one write below.
    let mut buffer: Vec<u8> = Vec::with_capacity(bytes);
    let pages_memory = &mut buffer.spare_capacity_mut()[..bytes];
    let mut offset = 0;
    while offset < bytes {
        pages_memory[offset].write((offset / PAGE) as u8 | 1);
        offset += PAGE;
    }
    let touched_ns = start.elapsed().as_nanos() as u64;
    let sum: u64 = pages_memory
        .iter()
        .step_by(PAGE)
        // SAFETY: exactly these bytes (one per page, at multiples of PAGE) were written above.
        .map(|byte| u64::from(unsafe { byte.assume_init() }))
        .sum();
    let pages = (bytes / PAGE) as u64;
    let per_page = touched_ns as f64 / pages.max(1) as f64;
    println!("mem: touched {mib} MiB ({pages} pages) in {:.3} ms ({per_page:.0} ns per page)", ms(touched_ns));
    let mut result = JsonObject::new("mem");
    result.int("mib", mib);
    result.int("pages", pages);
    result.int("elapsed_ns", touched_ns);
    result.float("ns_per_page", per_page);
    result.float("ops_per_sec", pages as f64 * 1e9 / touched_ns.max(1) as f64);
    result.int("checksum", sum);
    drop(buffer);
    result
}

/// Says it is ready, sleeps `seconds`, and reports how long the sleep really took: what an
/// instance costs while it waits (density).
fn idle(seconds: u64) -> JsonObject {
    use std::io::Write;
    println!("idle: ready, sleeping {seconds} s");
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    let slept_ns = start.elapsed().as_nanos() as u64;
    let requested_ns = seconds.saturating_mul(1_000_000_000);
    println!("idle: woke after {:.3} ms ({:+.3} ms late)", ms(slept_ns), ms(slept_ns) - ms(requested_ns));
    let mut result = JsonObject::new("idle");
    result.int("requested_ns", requested_ns);
    result.int("slept_ns", slept_ns);
    result.float("late_ms", ms(slept_ns) - ms(requested_ns));
    result
}

/// Calls per timed batch of `syscall`: long enough that reading the clock is a small part of
/// it, short enough that some batches run without being preempted on a busy machine.
const SYSCALL_BATCH: u64 = 50;

/// `count` cheap system calls (getppid), timed as a whole and in batches.
fn syscall(count: u64) -> JsonObject {
    let mut sum = 0u64;
    let mut fastest_batch = f64::INFINITY;
    let start = Instant::now();
    let mut done = 0;
    while done < count {
        let batch = SYSCALL_BATCH.min(count - done);
        let batch_start = Instant::now();
        for _ in 0..batch {
            sum = sum.wrapping_add(u64::from(std::os::unix::process::parent_id()));
        }
        let per_call = batch_start.elapsed().as_nanos() as f64 / batch as f64;
        fastest_batch = fastest_batch.min(per_call);
        done += batch;
    }
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let per_call = elapsed_ns as f64 / count.max(1) as f64;
    let fastest_batch = if fastest_batch.is_finite() { fastest_batch } else { 0.0 };
    println!(
        "syscall: {count} getppid() calls in {:.3} ms ({per_call:.0} ns per call; fastest batch of \
         {SYSCALL_BATCH}: {fastest_batch:.0} ns per call)",
        ms(elapsed_ns)
    );
    let mut result = JsonObject::new("syscall");
    result.int("iterations", count);
    result.int("elapsed_ns", elapsed_ns);
    result.float("ns_per_call", per_call);
    result.float("fastest_batch_ns_per_call", fastest_batch);
    result.float("ops_per_sec", count as f64 * 1e9 / elapsed_ns.max(1) as f64);
    result.int("checksum", sum);
    result
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

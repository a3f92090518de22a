//! The cvm workload: one small static program, run unmodified as a process, in a container and
//! in the micro-VM. Each subcommand prints its human output, then one last line
//! `CVM-RESULT {json}` with its own figures.
//!
//! Limited to ordinary system calls on purpose: the builtin guest kernel serves the same file.
//! Only `cpu N T` with T > 1 and `threads` start threads (std::thread: clone, futex, mmap'd
//! stacks); `threads` also handles signals and a fault.

mod json;
mod probe;
mod sha256;
mod threads;

use std::time::Instant;

use json::JsonObject;

const USAGE: &str =
    "usage: cvm-workload hello | cpu [ROUNDS [THREADS]] | mem [MIB] | syscall [COUNT] | idle [SECONDS] | probe | threads";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("hello");
    let nth = |index: usize, default: u64| -> u64 {
        match args.get(index) {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| fail(&format!("not a number: {text}"))),
        }
    };
    let number = |default: u64| nth(1, default);
    let result = match name {
        "hello" => hello(),
        "cpu" => cpu(number(200_000), nth(2, 1)),
        "mem" => mem(number(32)),
        "syscall" => syscall(number(20_000)),
        "idle" => idle(number(10)),
        "probe" => probe::probe(),
        "threads" => threads::threads(),
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
/// previous digest, on each of `threads` threads at once (thread i starts from block [i, 0, ...],
/// so every thread does different work of the same size). No system calls inside the timed
/// loop; throughput counts the rounds of all threads.
fn cpu(rounds: u64, threads: u64) -> JsonObject {
    const MAX_THREADS: u64 = 64;
    if !(1..=MAX_THREADS).contains(&threads) {
        fail(&format!("cpu: THREADS must be 1 to {MAX_THREADS}, not {threads}"));
    }
    let start = Instant::now();
    let chains: Vec<[u8; 64]> = if threads == 1 {
        vec![hash_chain(0, rounds)]
    } else {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|index| {
                    std::thread::Builder::new()
                        .stack_size(64 << 10)
                        .spawn_scoped(scope, move || hash_chain(index as u8, rounds))
                        .unwrap_or_else(|error| fail(&format!("cpu: cannot start a thread: {error}")))
                })
                .collect();
            workers.into_iter().map(|worker| worker.join().unwrap_or_else(|_| fail("cpu: a thread failed"))).collect()
        })
    };
    let elapsed_ns = start.elapsed().as_nanos() as u64;
    let total = rounds * threads;
    let per_second = total as f64 * 1e9 / elapsed_ns.max(1) as f64;
    let mut checksum = [0u8; 8];
    for chain in &chains {
        for (sum, byte) in checksum.iter_mut().zip(chain) {
            *sum ^= byte;
        }
    }
    let on = if threads == 1 { String::new() } else { format!(" on {threads} threads") };
    println!("cpu: {total} SHA-256 rounds{on} in {:.3} ms ({per_second:.0} rounds/s)", ms(elapsed_ns));
    let mut result = JsonObject::new("cpu");
    result.int("iterations", total);
    result.int("threads", threads);
    result.int("elapsed_ns", elapsed_ns);
    result.float("ops_per_sec", per_second);
    result.str("checksum", &hex(&checksum));
    result
}

/// `rounds` chained SHA-256 rounds starting from a block whose first byte is `seed`.
fn hash_chain(seed: u8, rounds: u64) -> [u8; 64] {
    let mut block = [0u8; 64];
    block[0] = seed;
    for round in 0..rounds {
        let digest = sha256::digest(&block);
        block[..32].copy_from_slice(&digest);
        block[32..40].copy_from_slice(&round.to_le_bytes());
    }
    block
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

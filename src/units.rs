//! Parsing and printing sizes and durations the way people write them.

use anyhow::{bail, Result};

/// "64M", "64MiB", "1G", "512k", "4096" (bytes) → bytes. Units are binary (1K = 1024).
pub fn parse_size(text: &str) -> Result<u64> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let Ok(value) = digits.parse::<u64>() else {
        bail!("invalid size '{text}': write a number with an optional unit, for example 64M or 1G");
    };
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => bail!("invalid size unit in '{text}': use K, M or G"),
    };
    match value.checked_mul(1u64 << shift) {
        Some(bytes) if bytes > 0 => Ok(bytes),
        Some(_) => bail!("invalid size '{text}': must be more than zero"),
        None => bail!("size '{text}' is too large"),
    }
}

/// The longest `--timeout` accepted: a week. Anything longer is a typo, and keeping the deadline
/// far below `Instant`'s range means no arithmetic on it can overflow.
pub const MAX_TIMEOUT_SECS: f64 = 7.0 * 24.0 * 3600.0;

/// The shortest `--timeout` accepted: one millisecond (the deadline's resolution).
pub const MIN_TIMEOUT_SECS: f64 = 0.001;

/// `--timeout` seconds → a duration; zero, negative, non-finite, tiny and huge values are refused.
pub fn parse_timeout(seconds: f64) -> Result<std::time::Duration> {
    if !(seconds.is_finite() && (MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&seconds)) {
        bail!(
            "--timeout {} is out of range: give a number of seconds from {MIN_TIMEOUT_SECS} to {MAX_TIMEOUT_SECS} (a week)",
            short_number(seconds)
        );
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// The most processes `--pids` can allow: Linux's PID_MAX_LIMIT.
pub const MAX_PIDS: u64 = 4 << 20;
/// The most measured runs per cell (`--runs`) and warm-up runs (`--warmup`).
pub const MAX_RUNS: u64 = 100_000;
pub const MAX_WARMUP: u64 = 10_000;

/// A number as a person would write it back: plain when it is of everyday size, in scientific
/// notation when it is huge or tiny (so `--timeout 1e308` is not echoed with 300 digits).
pub fn short_number(value: f64) -> String {
    if value != 0.0 && value.is_finite() && !(1e-3..1e6).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// Checks a count option (`--runs`, `--pids`, ...) against its range, naming it in the error.
pub fn check_count(option: &str, value: u64, min: u64, max: u64) -> Result<u64> {
    if !(min..=max).contains(&value) {
        bail!("{option} {value} is out of range: give a whole number from {min} to {max}");
    }
    Ok(value)
}

/// 1536 → "1.5 KiB".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Nanoseconds → "812 µs", "3.21 ms", "1.52 s".
pub fn format_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184G").is_err());
    }

    #[test]
    fn timeouts_are_bounded() {
        assert_eq!(parse_timeout(2.5).unwrap(), std::time::Duration::from_millis(2500));
        for bad in [0.0, -1.0, 1e-9, 1e19, 1e20, f64::NAN, f64::INFINITY, MAX_TIMEOUT_SECS + 1.0] {
            let err = parse_timeout(bad).unwrap_err().to_string();
            assert!(err.contains("out of range"), "{bad}: {err}");
        }
    }

    #[test]
    fn huge_and_tiny_numbers_are_written_short() {
        assert_eq!(short_number(2.5), "2.5");
        assert_eq!(short_number(1e308), "1e308");
        assert_eq!(short_number(1e-320), "1e-320");
        let err = parse_timeout(1e308).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn counts_are_bounded() {
        assert_eq!(check_count("--runs", 5, 1, 10).unwrap(), 5);
        assert!(check_count("--runs", 0, 1, 10).unwrap_err().to_string().contains("--runs 0"));
        assert!(check_count("--runs", 11, 1, 10).is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_ns(812_000.0), "812.0 µs");
        assert_eq!(format_ns(3_210_000.0), "3.21 ms");
    }
}

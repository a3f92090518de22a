//! Value axes: the unit shown (ms, MiB, ...) picked from the data's magnitude, "nice" tick
//! positions, and logarithmic axes done by hand (log10 of the values on a linear axis) so
//! every chart has the same coordinate type.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

use crate::units::format_bytes;

/// A linear f64 axis whose grid lines and labels sit exactly at the given ticks (plotters'
/// own f64 axis picks its ticks itself). Category axes use it with one tick per row.
#[derive(Clone, Debug)]
pub struct TickedAxis {
    low: f64,
    high: f64,
    ticks: Vec<f64>,
}

impl TickedAxis {
    pub fn new(range: Range<f64>, ticks: Vec<f64>) -> TickedAxis {
        let (low, high) = (range.start, range.end);
        let high = if high > low { high } else { low + 1.0 };
        TickedAxis { low, high, ticks: ticks.into_iter().filter(|t| *t >= low - 1e-9 && *t <= high + 1e-9).collect() }
    }
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.low) / (self.high - self.low);
        let fraction = if fraction.is_finite() { fraction.clamp(-10.0, 10.0) } else { 0.0 };
        limit.0 + ((limit.1 - limit.0) as f64 * fraction).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.low..self.high
    }
}

/// What the numbers of a chart measure; raw values are ns, bytes or a plain number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    Nanoseconds,
    Bytes,
    /// A dimensionless number such as a ratio.
    Plain,
}

/// The display unit of an axis: values are divided by `divisor` and suffixed with `name`.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisUnit {
    pub divisor: f64,
    pub name: &'static str,
}

impl AxisUnit {
    /// The largest unit in which `max` is at least 1.
    pub fn for_values(quantity: Quantity, max: f64) -> AxisUnit {
        let steps: &[(f64, &'static str)] = match quantity {
            Quantity::Nanoseconds => &[(1e9, "s"), (1e6, "ms"), (1e3, "µs"), (1.0, "ns")],
            Quantity::Bytes => &[(1073741824.0, "GiB"), (1048576.0, "MiB"), (1024.0, "KiB"), (1.0, "bytes")],
            Quantity::Plain => &[(1.0, "")],
        };
        let (divisor, name) = steps.iter().copied().find(|(d, _)| max >= *d).unwrap_or(steps[steps.len() - 1]);
        AxisUnit { divisor, name }
    }

    /// A value in this unit, with about three significant digits.
    pub fn format(&self, raw: f64) -> String {
        let scaled = raw / self.divisor;
        let text = significant(scaled);
        if self.name.is_empty() {
            text
        } else {
            format!("{text} {}", self.name)
        }
    }
}

/// 0.01234 → "0.0123", 12.345 → "12.3", 1234.5 → "1235".
pub fn significant(value: f64) -> String {
    let magnitude = value.abs();
    let decimals = if magnitude == 0.0 || magnitude >= 100.0 {
        0
    } else if magnitude >= 10.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else {
        (2 - magnitude.log10().floor() as i32).clamp(2, 6) as usize
    };
    format!("{value:.decimals$}")
}

/// A tick label: the shortest exact form of a round number ("0.2", "10", "2.5").
pub fn tick_text(value: f64) -> String {
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}

/// "0.98 ± 0.03": the value to the precision of its uncertainty (at least two decimals).
pub fn value_with_uncertainty(value: f64, uncertainty: Option<f64>) -> String {
    match uncertainty.filter(|u| *u > 0.0 && u.is_finite()) {
        Some(u) => {
            let decimals = (-u.log10().floor() as i32).clamp(2, 4) as usize;
            format!("{value:.decimals$} ± {u:.decimals$}")
        }
        None => format!("{value:.2}"),
    }
}

/// A human byte count for annotations ("12.3 MiB").
pub fn format_raw(quantity: Quantity, raw: f64) -> String {
    match quantity {
        Quantity::Bytes => format_bytes(raw.max(0.0).round() as u64),
        _ => AxisUnit::for_values(quantity, raw.abs()).format(raw),
    }
}

/// Tick positions from 0 to at least `max` with a 1-2-2.5-5 step: about `target` ticks.
pub fn linear_ticks(max: f64, target: usize) -> (Vec<f64>, f64) {
    let max = if max > 0.0 && max.is_finite() { max } else { 1.0 };
    let rough = max / target.max(1) as f64;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * power).find(|s| *s >= rough).unwrap_or(10.0 * power);
    let count = (max / step).ceil() as usize;
    let ticks = (0..=count).map(|i| i as f64 * step).collect();
    (ticks, count as f64 * step)
}

/// A log10 axis covering [min, max]: (ticks in log10 space at 1-2-5 per decade, low, high).
pub fn log_ticks(min: f64, max: f64) -> (Vec<f64>, f64, f64) {
    let low = min.max(f64::MIN_POSITIVE).log10().floor();
    let high = max.max(min * 10.0).log10().ceil().max(low + 1.0);
    let mut ticks = Vec::new();
    let mut decade = low;
    while decade <= high {
        for mantissa in [1.0f64, 2.0, 5.0] {
            let tick = decade + mantissa.log10();
            if tick <= high + 1e-9 {
                ticks.push(tick);
            }
        }
        decade += 1.0;
    }
    // Trim the empty decades around the data, keeping one tick beyond each end.
    let (lo_data, hi_data) = (min.log10(), max.log10());
    let first = ticks.iter().rposition(|t| *t <= lo_data + 1e-9).unwrap_or(0);
    let last = ticks.iter().position(|t| *t >= hi_data - 1e-9).unwrap_or(ticks.len() - 1);
    let kept = ticks[first..=last.max(first)].to_vec();
    let (lo, hi) = (kept[0], *kept.last().unwrap_or(&high));
    (kept, lo, if hi > lo { hi } else { lo + 1.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_magnitude() {
        assert_eq!(AxisUnit::for_values(Quantity::Nanoseconds, 2.5e6).name, "ms");
        assert_eq!(AxisUnit::for_values(Quantity::Nanoseconds, 900.0).name, "ns");
        assert_eq!(AxisUnit::for_values(Quantity::Bytes, 3.0 * 1048576.0).name, "MiB");
        assert_eq!(AxisUnit::for_values(Quantity::Nanoseconds, 2.5e6).format(1.5e6), "1.50 ms");
    }

    #[test]
    fn nice_ticks() {
        let (ticks, top) = linear_ticks(9.3, 5);
        assert_eq!(ticks, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(top, 10.0);
        let (ticks, lo, hi) = log_ticks(3e5, 4e7);
        assert!(lo <= 3e5f64.log10() && hi >= 4e7f64.log10());
        assert!(ticks.len() >= 6);
        assert_eq!(tick_text(0.6000000001), "0.6");
        assert_eq!(tick_text(10.0), "10");
        assert_eq!(value_with_uncertainty(0.98, Some(0.031)), "0.98 ± 0.03");
        assert_eq!(value_with_uncertainty(1.0, Some(0.0042)), "1.000 ± 0.004");
    }
}

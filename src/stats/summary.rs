//! Descriptive statistics of one sample: the numbers hyperfine prints, computed without NaN or
//! panics for any input (empty samples have no summary; n = 1 has no spread).

use serde::{Deserialize, Serialize};

use super::outliers;

/// Mean, spread and order statistics of one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator); None when n < 2.
    pub std_dev: Option<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles and the 95th percentile (linear interpolation between order
    /// statistics, like numpy's default).
    pub q1: f64,
    pub q3: f64,
    pub p95: f64,
    /// Median absolute deviation from the median (unscaled).
    pub mad: f64,
    /// Positions (in the input order) of the values flagged by the modified z-score rule.
    pub outliers: Vec<usize>,
}

impl Summary {
    /// The summary of the finite values in `values`; None when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return None;
        }
        let mut sorted = finite.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = finite.iter().sum::<f64>() / n as f64;
        let median = percentile_of_sorted(&sorted, 0.5);
        Some(Summary {
            n,
            mean,
            std_dev: std_dev(&finite, mean),
            median,
            min: sorted[0],
            max: sorted[n - 1],
            q1: percentile_of_sorted(&sorted, 0.25),
            q3: percentile_of_sorted(&sorted, 0.75),
            p95: percentile_of_sorted(&sorted, 0.95),
            mad: median_absolute_deviation(&finite, median),
            outliers: outliers::outlier_positions(&finite),
        })
    }

    /// Standard deviation relative to the mean (0 when the mean is 0 or there is no spread).
    pub fn relative_std_dev(&self) -> f64 {
        match self.std_dev {
            Some(sd) if self.mean != 0.0 => (sd / self.mean).abs(),
            _ => 0.0,
        }
    }

    /// A standard deviation estimated from the MAD (1.4826·MAD), which a few disturbed runs
    /// cannot inflate; None when n < 2.
    pub fn robust_std_dev(&self) -> Option<f64> {
        (self.n >= 2).then_some(1.4826 * self.mad)
    }

    pub fn interquartile_range(&self) -> f64 {
        self.q3 - self.q1
    }
}

/// Sample standard deviation; None for fewer than two values.
pub fn std_dev(values: &[f64], mean: f64) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    Some((squares / (values.len() - 1) as f64).sqrt())
}

/// The median of any finite values; None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(percentile_of_sorted(&sorted, 0.5))
}

/// median(|x − median|).
pub fn median_absolute_deviation(values: &[f64], median_value: f64) -> f64 {
    let deviations: Vec<f64> = values.iter().map(|v| (v - median_value).abs()).collect();
    median(&deviations).unwrap_or(0.0)
}

/// The `fraction` quantile (0..=1) of ascending, non-empty `sorted`, interpolating linearly
/// between the two nearest order statistics.
pub fn percentile_of_sorted(sorted: &[f64], fraction: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    let position = fraction.clamp(0.0, 1.0) * last as f64;
    let lower = position.floor() as usize;
    let upper = (lower + 1).min(last);
    let weight = position - lower as f64;
    sorted[lower] + weight * (sorted[upper] - sorted[lower])
}

/// The five numbers of a Tukey box plot: quartiles, and whiskers at the furthest values still
/// within 1.5 interquartile ranges of the box.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TukeyBox {
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub whisker_low: f64,
    pub whisker_high: f64,
}

impl TukeyBox {
    pub fn of(values: &[f64]) -> Option<TukeyBox> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let q1 = percentile_of_sorted(&sorted, 0.25);
        let q3 = percentile_of_sorted(&sorted, 0.75);
        let reach = 1.5 * (q3 - q1);
        let whisker_low = sorted.iter().copied().find(|v| *v >= q1 - reach).unwrap_or(q1);
        let whisker_high = sorted.iter().rev().copied().find(|v| *v <= q3 + reach).unwrap_or(q3);
        Some(TukeyBox { q1, median: percentile_of_sorted(&sorted, 0.5), q3, whisker_low, whisker_high })
    }
}

//! A ratio of two means with its uncertainty, propagated to first order like hyperfine's
//! "N ± s times faster": for r = a / b,
//!
//!   σ_r = r · sqrt((σa / a)² + (σb / b)²) = sqrt((σa / b)² + (a · σb / b²)²)
//!
//! (the second form is used: it stays defined when a = 0).

use serde::{Deserialize, Serialize};

use super::summary::Summary;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub value: f64,
    /// None when either side has no spread estimate (fewer than two values).
    pub uncertainty: Option<f64>,
}

impl Ratio {
    /// a / b with σ propagated; None when b is 0 or a value is not finite.
    pub fn of(a: f64, sigma_a: Option<f64>, b: f64, sigma_b: Option<f64>) -> Option<Ratio> {
        if b == 0.0 || !a.is_finite() || !b.is_finite() {
            return None;
        }
        let value = a / b;
        let uncertainty = match (sigma_a, sigma_b) {
            (Some(sa), Some(sb)) => Some(((sa / b).powi(2) + (a * sb / (b * b)).powi(2)).sqrt()),
            _ => None,
        };
        Some(Ratio { value, uncertainty: uncertainty.filter(|u| u.is_finite()) })
    }

    /// The ratio of the means of two summaries.
    pub fn of_means(numerator: &Summary, denominator: &Summary) -> Option<Ratio> {
        Ratio::of(numerator.mean, numerator.std_dev, denominator.mean, denominator.std_dev)
    }

    /// The ratio of the medians, with the robust spread (1.4826·MAD) of each side propagated
    /// the same way: the typical run against the typical run, unmoved by a few disturbed runs.
    pub fn of_medians(numerator: &Summary, denominator: &Summary) -> Option<Ratio> {
        Ratio::of(numerator.median, numerator.robust_std_dev(), denominator.median, denominator.robust_std_dev())
    }

    /// "1.42 ± 0.08" (or "1.42" without an uncertainty).
    pub fn display(&self) -> String {
        let digits = if self.value.abs() >= 100.0 {
            0
        } else if self.value.abs() >= 10.0 {
            1
        } else {
            2
        };
        match self.uncertainty {
            Some(u) => format!("{:.*} ± {:.*}", digits, self.value, digits, u),
            None => format!("{:.*}", digits, self.value),
        }
    }
}

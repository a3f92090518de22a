//! Outliers by the modified z-score of Iglewicz and Hoaglin (1993):
//!
//!   z = 0.6745 · (x − median) / MAD, and x is an outlier when |z| > 3.5.
//!
//! 0.6745 makes the MAD comparable to a standard deviation for normal data, so 3.5 means "about
//! 3.5 standard deviations away, judged robustly". hyperfine computes (x − median) / MAD and
//! flags values beyond 14.826 on that scale, i.e. |z| > 10 on this one: it only warns about
//! gross outliers. cvm uses the textbook 3.5 because start-up times of runtimes are exactly where
//! a student should notice a disturbed run.
//!
//! When more than half of the values are identical the MAD is 0; then the mean absolute
//! deviation stands in (z = (x − median) / (1.253314 · meanAD), the rule's published fallback),
//! and a constant sample has no outliers.

/// The Iglewicz–Hoaglin threshold on |modified z-score|.
pub const MODIFIED_Z_THRESHOLD: f64 = 3.5;
/// Makes the MAD estimate a standard deviation for normally distributed data.
const MAD_TO_SIGMA: f64 = 0.6745;
/// Makes the mean absolute deviation estimate a standard deviation (fallback when MAD = 0).
const MEAN_AD_TO_SIGMA: f64 = 1.253314;

/// Modified z-scores of `values` (finite values assumed); all 0 for constant samples.
pub fn modified_z_scores(values: &[f64]) -> Vec<f64> {
    let Some(median) = super::summary::median(values) else {
        return Vec::new();
    };
    let mad = super::summary::median_absolute_deviation(values, median);
    let scale = if mad > 0.0 {
        mad / MAD_TO_SIGMA
    } else {
        let mean_ad = values.iter().map(|v| (v - median).abs()).sum::<f64>() / values.len() as f64;
        MEAN_AD_TO_SIGMA * mean_ad
    };
    values.iter().map(|v| if scale > 0.0 { (v - median) / scale } else { 0.0 }).collect()
}

/// Positions of the values whose |modified z-score| exceeds [`MODIFIED_Z_THRESHOLD`].
pub fn outlier_positions(values: &[f64]) -> Vec<usize> {
    modified_z_scores(values)
        .iter()
        .enumerate()
        .filter(|(_, z)| z.abs() > MODIFIED_Z_THRESHOLD)
        .map(|(index, _)| index)
        .collect()
}

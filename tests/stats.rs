//! Statistics against values computed by hand, including the awkward samples (n = 1, n = 2,
//! constant, empty, non-finite) that must give numbers, never NaN or a panic.

use cvm::record::{Outcome, RunRecord, RuntimeKind};
use cvm::stats::outliers::{modified_z_scores, outlier_positions};
use cvm::stats::summary::{median, median_absolute_deviation};
use cvm::stats::{CellSummary, Metric, Ratio, Summary, TukeyBox};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[test]
fn summary_of_a_sample_with_one_outlier() {
    // [1, 2, 3, 4, 100]: mean 22; median 3; |x − 3| = 2,1,0,1,97 → MAD 1;
    // z(100) = 0.6745·97/1 = 65.4 → outlier; z(1) = 1.35 → not.
    // s² = (441 + 400 + 361 + 324 + 6084) / 4 = 1902.5 → s = 43.6176...
    let s = Summary::of(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
    assert_eq!(s.n, 5);
    assert!(close(s.mean, 22.0));
    assert!(close(s.median, 3.0));
    assert!(close(s.mad, 1.0));
    assert!(close(s.std_dev.unwrap(), 1902.5f64.sqrt()));
    assert_eq!((s.min, s.max), (1.0, 100.0));
    // Linear interpolation: Q1 at position 1 → 2, Q3 at 3 → 4, p95 at 3.8 → 4 + 0.8·96.
    assert!(close(s.q1, 2.0));
    assert!(close(s.q3, 4.0));
    assert!(close(s.p95, 80.8));
    assert_eq!(s.outliers, vec![4]);
}

#[test]
fn median_of_even_and_odd_samples() {
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
    assert_eq!(median(&[]), None);
    assert!(close(median_absolute_deviation(&[1.0, 2.0, 4.0, 8.0], 3.0), 1.5));
}

#[test]
fn modified_z_scores_by_hand() {
    // median 3, MAD 1: z = 0.6745·(x − 3).
    let z = modified_z_scores(&[1.0, 2.0, 3.0, 4.0, 100.0]);
    assert!(close(z[0], -1.349));
    assert!(close(z[4], 0.6745 * 97.0));
    // Just inside and just outside the 3.5 limit: x − 3 = 5 → z 3.37; x − 3 = 6 → z 4.05.
    assert!(outlier_positions(&[2.0, 3.0, 3.0, 4.0, 8.0]).is_empty());
    assert_eq!(outlier_positions(&[2.0, 3.0, 3.0, 4.0, 9.0]), vec![4]);
}

#[test]
fn zero_mad_falls_back_to_the_mean_absolute_deviation() {
    // median 5, MAD 0; mean |x − 5| = 4/7; z(9) = 4 / (1.253314 · 4/7) = 5.585 → outlier.
    let values = [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 9.0];
    let z = modified_z_scores(&values);
    assert!(close(z[6], 4.0 / (1.253314 * 4.0 / 7.0)));
    assert_eq!(outlier_positions(&values), vec![6]);
}

#[test]
fn tiny_and_constant_samples_give_numbers() {
    let one = Summary::of(&[5.0]).unwrap();
    assert_eq!((one.n, one.mean, one.median, one.p95, one.mad), (1, 5.0, 5.0, 5.0, 0.0));
    assert_eq!(one.std_dev, None);
    assert!(one.outliers.is_empty());
    assert_eq!(one.relative_std_dev(), 0.0);

    let two = Summary::of(&[1.0, 3.0]).unwrap();
    assert!(close(two.median, 2.0));
    assert!(close(two.std_dev.unwrap(), 2f64.sqrt()));
    assert!(two.outliers.is_empty(), "two values can never be outliers of each other");

    let constant = Summary::of(&[7.0; 6]).unwrap();
    assert_eq!(constant.std_dev, Some(0.0));
    assert_eq!(constant.mad, 0.0);
    assert!(constant.outliers.is_empty());

    assert_eq!(Summary::of(&[]), None);
    let with_nan = Summary::of(&[1.0, f64::NAN, 3.0, f64::INFINITY]).unwrap();
    assert_eq!(with_nan.n, 2);
    for value in [with_nan.mean, with_nan.median, with_nan.q1, with_nan.q3, with_nan.p95, with_nan.mad] {
        assert!(value.is_finite());
    }
}

#[test]
fn ratio_uncertainty_is_propagated() {
    // r = 10/5 = 2; σ_r = 2·√((1/10)² + (0.5/5)²) = 2·√0.02 = 0.28284...
    let r = Ratio::of(10.0, Some(1.0), 5.0, Some(0.5)).unwrap();
    assert!(close(r.value, 2.0));
    assert!(close(r.uncertainty.unwrap(), 2.0 * 0.02f64.sqrt()));
    assert_eq!(r.display(), "2.00 ± 0.28");
    // a = 0 stays defined: σ_r = σa / b.
    let zero = Ratio::of(0.0, Some(1.0), 4.0, Some(1.0)).unwrap();
    assert!(close(zero.uncertainty.unwrap(), 0.25));
    assert_eq!(Ratio::of(1.0, Some(0.1), 0.0, Some(0.1)), None);
    assert_eq!(Ratio::of(3.0, None, 1.5, Some(0.1)).unwrap().uncertainty, None);
}

#[test]
fn tukey_box_whiskers_stop_at_data() {
    // Q1 2, Q3 4, IQR 2: whiskers reach data within [−1, 7], so 100 lies beyond.
    let b = TukeyBox::of(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
    assert_eq!((b.q1, b.median, b.q3, b.whisker_low, b.whisker_high), (2.0, 3.0, 4.0, 1.0, 4.0));
    let single = TukeyBox::of(&[3.0]).unwrap();
    assert_eq!((single.whisker_low, single.whisker_high), (3.0, 3.0));
    assert!(TukeyBox::of(&[]).is_none());
}

fn record(total_ms: u64, exit_code: i32) -> RunRecord {
    let mut r = RunRecord::new(RuntimeKind::Process, "host", "hello", &[]);
    r.exit_code = exit_code;
    r.phases_ns.setup = 100_000;
    r.phases_ns.boot = 100_000;
    r.phases_ns.first_output = Some(400_000);
    r.phases_ns.exit = total_ms * 1_000_000 - 100_000;
    r.phases_ns.teardown = total_ms * 1_000_000;
    r.phases_ns.total = total_ms * 1_000_000;
    r
}

#[test]
fn failed_runs_are_listed_not_averaged() {
    let mut crashed = record(50, 139);
    crashed.outcome = Outcome::Signaled;
    crashed.reason = Some("the program was killed by signal 11 (SIGSEGV)".into());
    let records = vec![record(1, 0), record(3, 0), record(2, 1), crashed];
    let cell = CellSummary::of(&records);
    assert_eq!((cell.runs, cell.succeeded, cell.failed.len()), (4, 2, 2));
    assert_eq!(cell.failed[0].index, 2);
    assert_eq!(cell.failed[0].reason, "exit status 1");
    assert!(cell.failed[1].reason.contains("SIGSEGV"));
    let total = cell.metric(Metric::Total).unwrap();
    assert_eq!(total.n, 2);
    assert!(close(total.mean, 2e6));
    // Mean phase segments add up to the mean teardown: 0.1 + 0 + 0.3 + (1.9 − 0.4) + 0.1 ms.
    let segments = cell.phase_segments_ns.unwrap();
    assert!(close(segments.iter().sum::<f64>(), 2e6));
    assert!(close(segments[2], 300_000.0));
}

#[test]
fn a_cell_without_successful_runs_has_no_metrics() {
    let cell = CellSummary::of(&[record(1, 2)]);
    assert!(cell.metrics.is_empty());
    assert_eq!(cell.phase_segments_ns, None);
    assert_eq!(CellSummary::of(&[]).runs, 0);
}

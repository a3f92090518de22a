//! Statistics: pure functions from run records to numbers. Nothing here runs, prints or draws.

pub mod cell;
pub mod metric;
pub mod outliers;
pub mod ratio;
pub mod summary;

pub use cell::CellSummary;
pub use metric::{Metric, Unit};
pub use ratio::Ratio;
pub use summary::{Summary, TukeyBox};

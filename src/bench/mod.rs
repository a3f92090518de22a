//! Running the matrix: which cells, warm-up and measured runs, progress. Produces raw run
//! records in [`crate::results::CellResult`]s; it neither computes statistics nor prints them.

pub mod plan;
pub mod progress;
pub mod runner;

pub use plan::{BenchPlan, CellPlan, WorkloadChoice};
pub use progress::Progress;
pub use runner::{run_plan, BenchOutcome};

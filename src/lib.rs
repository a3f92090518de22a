//! cvm: containers vs micro-VMs, measured.
//!
//! Layers, bottom up (see docs/architecture.md):
//! - [`program`], [`embedded`]: what runs (the embedded workload or a static `--binary`);
//! - [`runtime`]: process, container and vm behind one interface returning a [`record::RunRecord`];
//! - measurement above it only consumes records;
//! - [`commands`]: one module per subcommand.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod containers;
pub mod density;
pub mod elf;
pub mod embedded;
pub mod explain;
pub mod export;
pub mod heap;
pub mod host;
pub mod image;
pub mod interrupt;
pub mod labs;
pub mod output;
pub mod own_usage;
pub mod peers;
pub mod plot;
pub mod program;
pub mod program_check;
pub mod record;
pub mod report;
pub mod results;
pub mod runtime;
pub mod stats;
pub mod units;
pub mod vmm;

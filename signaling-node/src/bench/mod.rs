//! `signaling-node bench`: the load generator (join latency, co-host flows, open-loop relay
//! traffic), its statistics, and the baseline relay it is compared with.

pub mod baseline;
pub mod conn;
pub mod pair;
pub mod peers;
pub mod recorder;
pub mod runner;
pub mod stats;
pub mod sys;

pub use runner::{BaselineMode, BenchConfig, BenchError, BenchResult, TargetKind, run};

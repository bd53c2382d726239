//! The load generator behind `signaling-node bench` (join latency, co-host flows, open-loop
//! relay traffic), its statistics, and the baseline relay it is compared with.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod centrifugo;
pub mod cli;
pub mod conn;
pub mod pair;
pub mod recorder;
pub mod runner;
pub mod stats;
pub mod stress;
pub mod sys;
pub mod target;
pub mod tcp;

pub use runner::{BaselineMode, BenchConfig, BenchError, BenchResult, TargetKind, run};

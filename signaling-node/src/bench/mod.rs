//! `signaling-node bench`: the load generator (join latency, co-host flows, open-loop relay
//! traffic), its statistics, and the baseline relay it is compared with.

pub mod baseline;
pub mod stats;
pub mod sys;

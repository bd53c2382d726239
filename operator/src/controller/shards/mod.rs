//! The shard manager: one task per SignalingCluster that keeps every room shard owned by a
//! live node (CLUSTER-CONTRACT.md), split into a pure decision core and an I/O shell.

pub mod core;
pub mod handoff;
pub mod health;
pub mod plan;
pub mod state;
pub mod status;

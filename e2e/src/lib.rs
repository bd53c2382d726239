//! Switchboard end-to-end harness: local control plane helpers, pod runner and scenarios.
#![forbid(unsafe_code)]

pub mod bench_report;
pub mod call_events;
pub mod cluster;
pub mod failover_bench;
pub mod json_lines;
pub mod otel;
pub mod outside;
pub mod outside_bench;
pub mod pod_runner;
pub mod real_node;
pub mod soak;

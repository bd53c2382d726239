//! Switchboard operator: CRDs, placement, reconcilers and the process runtime around them
//! (Kubernetes client, etcd clients, leader election, admin HTTP server, metrics).
#![forbid(unsafe_code)]

pub mod client;
pub mod controller;
pub mod crd;
pub mod etcd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod placement;
pub mod plugin;
pub mod runtime;

pub use controller::{Error, Result};

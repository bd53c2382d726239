//! Switchboard operator: CRDs, placement and reconcilers.
#![forbid(unsafe_code)]

pub mod controller;
pub mod crd;
pub mod etcd;
pub mod placement;

pub use controller::{Error, Result};

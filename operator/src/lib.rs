//! Switchboard operator: CRDs, placement and reconcilers.
#![forbid(unsafe_code)]

pub mod crd;

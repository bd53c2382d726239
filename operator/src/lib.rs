//! Switchboard operator: CRDs, placement and reconcilers.
#![forbid(unsafe_code)]

pub mod crd;
pub mod placement;

//! Reconcilers, one module per custom resource, each split into a pure core (desired objects,
//! status) and the I/O that applies it.

pub mod cluster;
pub mod conditions;
pub mod error;
pub mod labels;
pub mod policy;
pub mod rollout;
pub mod scope;
pub mod shards;

pub use error::{Error, Result};
pub use scope::WatchScope;

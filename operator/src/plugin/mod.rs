//! The `kubectl switchboard` plugin: pure decisions and formatting ([`weights`], [`report`])
//! separated from the Kubernetes API calls ([`api`]); errors users see are [`PluginError`].
//!
//! The plugin talks to the API server only: drains and moves are requests (annotations) the
//! operator's shard manager carries out with two-phase handoffs; the plugin waits for the
//! result the operator writes to RoomShard statuses.

pub mod api;
pub mod error;
pub mod report;
pub mod weights;

pub use error::PluginError;

/// Field manager of every write the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-switchboard";

//! Cluster mode: the etcd contract of DESIGN §5 and §6 — keyspace, membership lease,
//! shard ownership, fenced group-committed room snapshots, takeover, config and rollout watch.
//!
//! Every background loop reconnects with capped exponential backoff and reports into one
//! [`health::Health`] flag, which is false while etcd is unreachable.

pub mod args;
pub mod backoff;
pub mod config_watch;
pub mod health;
pub mod keys;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod ownership;
pub mod store;
pub mod takeover;
pub mod watcher;

pub use args::ClusterArgs;
pub use node::{ClusterNode, ClusterNodeConfig};

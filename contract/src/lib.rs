//! What a Switchboard node and the operator must agree on, in one small crate with no
//! transport dependencies: room → shard hashing ([`shard`]), the etcd keyspace and its JSON
//! values ([`keys`]), the typed node settings the operator publishes ([`settings`]), and the
//! resilient etcd watch loop both sides run ([`watch`], with [`backoff`]).
//!
//! docs/architecture.md describes the keyspace and the sequences built on it.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod keys;
pub mod liveness;
pub mod settings;
pub mod shard;
pub mod watch;

pub use settings::ClusterSettings;
pub use shard::ShardId;

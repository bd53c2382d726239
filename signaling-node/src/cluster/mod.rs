//! Cluster mode, the node's side of the etcd contract (docs/architecture.md): membership
//! lease, shard ownership, fenced group-committed room snapshots, takeover, config and rollout
//! watch.
//!
//! Start with [`node::ClusterNode`], which wires every part together; [`args::ClusterArgs`]
//! holds the `serve` flags. Each module documents its own rules; the decisions that span
//! modules are:
//!
//! - **Fencing** compares the exact bytes of `assignments/<shard>` seen by this node (not the
//!   key's `mod_revision`), so an idempotent re-put by the operator does not fence a healthy
//!   owner; an equivalent value spelled differently is re-checked by parsing ([`store`]).
//! - **Group commit** puts every queued room of every shard in one transaction; a failed
//!   compare refuses only the fenced shards' commits and retries the rest at once ([`store`]).
//! - **Lease loss** fences the whole node at once: the ownership cache holds nothing, every
//!   shard is released, commits fail `Fenced`. The node registers again under a new lease
//!   and re-adopts (restores from etcd) whatever is still assigned to it ([`membership`]).
//! - **Restore gating**: a shard answers `Local` only after its snapshots were restored for the
//!   current epoch, so no join can create a room that a restore would overwrite ([`ownership`],
//!   [`takeover`]). An epoch change is a release followed by a fresh restore.
//! - **Acks** live under the node's lease like its registration, so a dead node leaves no stale
//!   ack behind; they are rewritten after every re-registration ([`membership`]). One task
//!   owns the ack value and merges revisions, `released` and `serving` into it ([`ack`]).
//! - **Handoff** (`handoff_to` set on a held shard): every node routes the shard to its
//!   destination ([`ownership`]); the old owner releases it — rooms finish their commits,
//!   members get `Migrate` to the destination — flushes the store and acknowledges
//!   `released[shard] = epoch` ([`takeover`], [`node`]).
//! - **Config**: an invalid or deleted `config`/`rollout` keeps the last good value
//!   ([`config_watch`]).
//! - **Health** is false while any running component (lease keepalive, ownership watch,
//!   config watch) cannot reach etcd; every loop reconnects with capped exponential backoff
//!   ([`health`], `switchboard_contract::backoff`). The store never retries behind a caller: an unreachable etcd is
//!   `StoreError::Unavailable` (the room answers 1010).

pub mod ack;
pub mod args;
pub mod config_watch;
pub mod health;
pub mod lease;
pub mod liveness;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod ownership;
pub mod store;
pub mod takeover;
pub mod watch;

pub use args::ClusterArgs;
pub use node::{ClusterNode, ClusterNodeConfig};

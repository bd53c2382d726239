//! The shard manager's inputs and its mirror of the cluster's etcd keys (plain data, no I/O).

use std::collections::BTreeMap;

use switchboard_contract::keys::{Ack, Assignment, RolloutValue};

use super::health::{NodeObs, PodObs, Reason};
use crate::crd::RoomShardStatus;
use crate::placement::ShardId;

/// A value with the mod revision of its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracked<T> {
    /// The decoded value.
    pub value: T,
    /// The key's mod revision (compared in every write).
    pub mod_revision: i64,
}

/// One change of a watched key, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `nodes/<pod>` written.
    Node(String, NodeObs),
    /// `nodes/<pod>` deleted (lease expired or revoked, or the node left).
    NodeGone(String),
    /// `assignments/<shard>` written; `None` when the value does not decode.
    Assignment(ShardId, Option<Assignment>, i64),
    /// `assignments/<shard>` deleted (at this revision).
    AssignmentGone(ShardId, i64),
    /// `acks/<pod>` written.
    Ack(String, Tracked<Ack>),
    /// `acks/<pod>` deleted.
    AckGone(String),
    /// `rollout` written.
    Rollout(RolloutValue),
    /// `rollout` deleted.
    RolloutGone,
}

/// Everything the manager reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A fresh read of every watched key (start, or after a watch failure).
    Reset(Vec<Change>),
    /// Changes from the watch, in order.
    Changes(Vec<Change>),
    /// The full list of Pods (watch start or restart).
    PodsReset(Vec<(String, PodObs)>),
    /// A Pod was created or changed.
    Pod(String, PodObs),
    /// A Pod was deleted.
    PodGone(String),
    /// Rooms stored per shard (shards without rooms are absent).
    Rooms(BTreeMap<ShardId, u64>),
    /// The RoomShard statuses stored in Kubernetes (read once at start).
    StoredStatuses(BTreeMap<ShardId, RoomShardStatus>),
    /// Every move requested through RoomShard annotations now (the full set).
    MoveRequests(BTreeMap<ShardId, MoveRequest>),
    /// The failure detector declared a node's process (registered incarnation) dead.
    Detected {
        /// The node (pod name).
        node: String,
        /// The incarnation of its registration that died.
        incarnation: u64,
        /// The lease of that registration.
        lease: i64,
        /// Why.
        reason: Reason,
    },
}

/// A move of one shard requested through its RoomShard's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRequest {
    /// The `switchboard.dev/move-requested` value (a new value is a new request).
    pub id: String,
    /// The `switchboard.dev/move-to` node, if named.
    pub to: Option<String>,
}

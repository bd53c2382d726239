//! The `RoomShard` custom resource: one shard of a signaling cluster's room hash space, its
//! owner and its failover history. Created by the operator, one per shard, owned by the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One shard of a signaling cluster: the rooms whose id hashes into `[hashStart, hashEnd)`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "RoomShard",
    namespaced,
    shortname = "rshard",
    category = "switchboard",
    status = "RoomShardStatus",
    derive = "PartialEq",
    doc = "One room shard of a SignalingCluster: hash range, owner node, epoch and failover history.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(
        name = "Index",
        type_ = "integer",
        json_path = ".spec.index",
        priority = 1
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Rooms", type_ = "integer", json_path = ".status.rooms"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.hashStart < self.hashEnd").message("hashStart must be below hashEnd"),
    validation = Rule::new("self == oldSelf").message("a RoomShard's spec is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct RoomShardSpec {
    /// Name of the SignalingCluster (same namespace) this shard belongs to.
    #[schemars(length(max = 40))]
    pub cluster: String,

    /// Index of the shard within its cluster (0-based).
    #[x_kube(validation = Rule::new("self >= 0 && self < 4096").message("index must be in 0..4096"))]
    pub index: i32,

    /// First 32-bit room hash (FNV-1a of the room id) in this shard, inclusive.
    #[x_kube(validation = Rule::new("self >= 0").message("hashStart must not be negative"))]
    pub hash_start: i64,

    /// End of the shard's hash range, exclusive (at most 2^32).
    #[x_kube(validation = Rule::new("self <= 4294967296").message("hashEnd must be at most 2^32"))]
    pub hash_end: i64,
}

/// Lifecycle phase of a shard's ownership.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ShardPhase {
    /// Owned by a live node that serves its rooms.
    Assigned,
    /// Moving from a live owner to another node (drain, scale-down, weight change).
    HandingOff,
    /// Its owner died; a new owner is loading the rooms' snapshots.
    Recovering,
    /// No owner (no ready node in the shard's version pool).
    #[default]
    Unassigned,
}

/// Observed ownership of a shard.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RoomShardStatus {
    /// Pod name of the node that owns the shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// Ownership epoch; incremented on every reassignment and used to fence stale owners.
    #[serde(default)]
    pub epoch: i64,

    /// Version pool (ProtocolRollout version name) the shard is served by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Assigned, HandingOff, Recovering or Unassigned.
    #[serde(default)]
    pub phase: ShardPhase,

    /// Rooms currently stored in the shard.
    #[serde(default)]
    pub rooms: i64,

    /// The most recent failover of this shard (owner lost without a handoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<Failover>,

    /// The answer to the most recent move request (annotation
    /// `switchboard.dev/move-requested`, set by `kubectl switchboard failover`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_move_request: Option<MoveRequestStatus>,

    /// The most recent change of owner, failover or handoff, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_move: Option<ShardMove>,
}

/// One change of a shard's owner.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShardMove {
    /// Pod name of the previous owner.
    pub from: String,

    /// Pod name of the new owner.
    pub to: String,

    /// Why: a failover's reason (`Crashed`, `Unresponsive`, `LeaseExpired`, `PodNotReady`,
    /// `PodDeleted`, `ProcessExited`) or a handoff's kind (`Drain`, `Rebalance`,
    /// `VersionMove`, `Requested`).
    pub reason: String,

    /// `Failover` (the owner was lost) or `Handoff` (the owner released it, or its handoff
    /// deadline passed).
    pub kind: String,

    /// The epoch the new owner holds the shard under.
    pub epoch: i64,

    /// When the operator wrote the new owner.
    pub at: Time,
}

/// Progress of a requested move.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum MovePhase {
    /// The two-phase handoff to the new owner is under way.
    #[default]
    Moving,
    /// The new owner owns the shard.
    Completed,
    /// The request could not be carried out (see `message`).
    Rejected,
    /// The owner failed during the handoff; the shard failed over instead.
    Failed,
}

/// The operator's answer to one move request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MoveRequestStatus {
    /// The value of the `switchboard.dev/move-requested` annotation this answers.
    pub id: String,

    /// Moving, Completed, Rejected or Failed.
    pub phase: MovePhase,

    /// Pod name of the owner when the request was taken up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,

    /// Pod name of the node the shard is moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,

    /// Why a request was rejected or failed; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,

    /// When the operator answered (or last changed the phase).
    pub at: Time,
}

/// Record of one failover: who lost the shard, who took it and how long it took.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    /// Pod name of the node that lost the shard.
    pub from: String,

    /// Pod name of the node that took the shard over (empty when none was available).
    #[serde(default)]
    pub to: String,

    /// Why the failover happened, e.g. `LeaseExpired`, `PodNotReady`, `PodDeleted`.
    pub reason: String,

    /// Milliseconds from the failure signal (lease expiry or pod status change) to the
    /// operator's decision to reassign.
    pub detected_ms: i64,

    /// Milliseconds from the failure signal until the new owner reported the shard served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_ms: Option<i64>,

    /// When the operator reassigned the shard.
    pub at: Time,
}

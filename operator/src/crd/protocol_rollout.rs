//! The `ProtocolRollout` custom resource: weighted version pools of one signaling cluster
//! (gray release of a node image / protocol version, shard by shard).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Weighted versions of a signaling cluster and how shards move between them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "ProtocolRollout",
    namespaced,
    shortname = "prollout",
    category = "switchboard",
    status = "ProtocolRolloutStatus",
    derive = "PartialEq",
    doc = "Weighted node versions (images and protocol versions) of one SignalingCluster.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef"),
    printcolumn(
        name = "Weights",
        type_ = "string",
        json_path = ".status.weights",
        description = "Applied weights, e.g. v1=90,v2=10"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        json_path = ".spec.paused",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolRolloutSpec {
    /// Name of the SignalingCluster (same namespace) whose nodes this rollout splits into
    /// version pools. Immutable.
    #[schemars(length(max = 40))]
    #[x_kube(
        validation = Rule::new("self != ''").message("clusterRef must name a SignalingCluster"),
        validation = Rule::new("self == oldSelf").message("clusterRef is immutable")
    )]
    pub cluster_ref: String,

    /// The versions and their weights (percent of nodes and of shards). At least one; names
    /// unique; weights sum to 100. Rooms stay on their version while their shard stays put;
    /// changing weights moves the fewest shards needed.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(
        merge_strategy = ListMerge::Map(vec!["name".into()]),
        validation = Rule::new("self.all(v, self.exists_one(w, w.name == v.name))")
            .message("version names must be unique"),
        validation = Rule::new("self.map(v, v.weight).sum() == 100")
            .message("version weights must sum to 100")
    )]
    pub versions: Vec<RolloutVersion>,

    /// How fast shards move between versions and when to roll back.
    #[serde(default)]
    pub strategy: RolloutStrategy,

    /// When true, no shard moves between versions and pools keep their size; failover still
    /// happens.
    #[serde(default)]
    pub paused: bool,
}

/// One version pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutVersion {
    /// Version name (a DNS label of at most 15 characters, e.g. `v2` or `canary`); part of
    /// pod names `<cluster>-<version>-<n>` and of the `switchboard.dev/version` label.
    #[schemars(length(max = 15))]
    #[x_kube(
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
            .message("version name must be a DNS label: lowercase letters, digits and '-'"),
        validation = Rule::new("size(self) <= 15").message("version name must be at most 15 characters")
    )]
    pub name: String,

    /// Container image of this version's nodes; the cluster's image when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Wire-protocol versions this version's nodes accept (the node negotiates the highest
    /// common one with each client).
    #[serde(default = "default_protocols")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub protocols: Vec<ProtocolVersion>,

    /// Percent (0..=100) of nodes and shards for this version.
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("weight must be between 0 and 100"))]
    pub weight: i32,
}

/// A wire-protocol version.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum ProtocolVersion {
    /// Protocol v1.
    #[serde(rename = "v1")]
    V1,
    /// Protocol v2: v1 plus batched ICE and compact room events.
    #[serde(rename = "v2")]
    V2,
}

impl ProtocolVersion {
    /// The name used on the wire and in manifests (`v1`, `v2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

/// Pace of a rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStrategy {
    /// Maximum shards handing off between versions at the same time.
    #[serde(default = "default_max_shards_moving")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxShardsMoving must be at least 1"))]
    pub max_shards_moving: i32,

    /// Seconds to wait after a batch of moved shards is served before moving the next batch.
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub pause_between_steps_seconds: i32,

    /// Automatic rollback to the last stable weights when a version's error rate is too high.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackPolicy>,
}

impl Default for RolloutStrategy {
    fn default() -> Self {
        Self {
            max_shards_moving: default_max_shards_moving(),
            pause_between_steps_seconds: 0,
            rollback: None,
        }
    }
}

/// When to roll back automatically.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Error rate (0.0..=1.0: failed joins, negotiation timeouts and failed resumes over all
    /// attempts) above which a version is rolled back.
    #[x_kube(
        validation = Rule::new("self >= 0.0 && self <= 1.0").message("maxErrorRate must be between 0 and 1")
    )]
    pub max_error_rate: f64,

    /// Length of the sliding window, in seconds, over which the error rate is measured.
    #[serde(default = "default_window")]
    #[schemars(range(min = 10, max = 86400))]
    pub window_seconds: i32,
}

/// Phase of a rollout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RolloutPhase {
    /// Shards are moving toward the spec's weights.
    #[default]
    Progressing,
    /// `spec.paused` is set: nothing moves.
    Paused,
    /// Every version serves its target share of shards.
    Completed,
    /// The error rate crossed the threshold; weights went back to `lastStableWeights`.
    RolledBack,
}

/// Observed state of a rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolRolloutStatus {
    /// Progressing, Paused, Completed or RolledBack.
    #[serde(default)]
    pub phase: RolloutPhase,

    /// Per-version observed state, in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,

    /// Applied weights as text, e.g. `v1=90,v2=10` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,

    /// Standard conditions (Available, Progressing, RolledBack).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Weights of the last completed rollout; an automatic rollback returns to these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_stable_weights: BTreeMap<String, i32>,
}

/// Observed state of one version pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    /// Version name.
    pub name: String,

    /// Weight currently applied (moves toward the spec weight step by step).
    #[serde(default)]
    pub weight: i32,

    /// Shards currently served by this version's nodes.
    #[serde(default)]
    pub shards: i32,

    /// Ready nodes in this version's pool.
    #[serde(default)]
    pub ready_nodes: i32,

    /// Error rate over the rollback window (0.0..=1.0), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
}

fn default_protocols() -> Vec<ProtocolVersion> {
    vec![ProtocolVersion::V1, ProtocolVersion::V2]
}
fn default_max_shards_moving() -> i32 {
    1
}
fn default_window() -> i32 {
    300
}

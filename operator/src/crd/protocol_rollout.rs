//! The `ProtocolRollout` custom resource: weighted version pools of one signaling cluster
//! (gray release of a node image / protocol version, shard by shard).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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
    /// happens. To pause without editing the manifest (GitOps), use the request annotation
    /// `switchboard.dev/rollout-request` (`kubectl switchboard rollout pause`).
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
///
/// The analysis runs while a version gains weight over the last stable weights. It samples
/// every version's error rate every `sampleIntervalSeconds` and keeps the samples' running
/// mean in the rollout's status (so an operator restart or a new leader carries on). It
/// judges once `windowSeconds` passed and every watched version has `minSamples` samples: a
/// watched version rolls back when its mean is above `maxErrorRate` and, with
/// `maxIncreaseOverStable`, also above the stable versions' mean by more than that.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Error rate (0.0..=1.0: failed joins, negotiation timeouts and failed resumes over all
    /// attempts) above which a version is rolled back.
    #[x_kube(
        validation = Rule::new("self >= 0.0 && self <= 1.0").message("maxErrorRate must be between 0 and 1")
    )]
    pub max_error_rate: f64,

    /// Seconds the analysis runs at least before it judges.
    #[serde(default = "default_window")]
    #[schemars(range(min = 10, max = 86400))]
    pub window_seconds: i32,

    /// Samples each watched version needs before it is judged.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_samples: i32,

    /// Seconds between two samples.
    #[serde(default = "default_sample_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub sample_interval_seconds: i32,

    /// When set, a version rolls back only if its mean error rate is also this much above the
    /// stable versions' mean (a problem every version shares, such as an etcd outage, is not
    /// the new version's fault). Without samples of a stable version the absolute limit
    /// alone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self >= 0.0 && self <= 1.0").message("maxIncreaseOverStable must be between 0 and 1")
    )]
    pub max_increase_over_stable: Option<f64>,

    /// Take the error rates from a Prometheus query instead of the nodes' own reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusQuery>,
}

/// A Prometheus instant query that gives one version's error rate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusQuery {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(max = 512))]
    #[x_kube(
        validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
            .message("prometheus.url must start with http:// or https://")
    )]
    pub url: String,

    /// PromQL whose first sample is the error rate (0.0..=1.0); `$version` is replaced by the
    /// version's name, e.g. `sum(rate(switchboard_join_failures_total{version="$version"}[2m]))
    /// / sum(rate(switchboard_joins_total{version="$version"}[2m]))`. A query that returns no
    /// sample gives no sample for that version.
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new("self != ''").message("prometheus.query must not be empty"))]
    pub query: String,
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
    /// An abort request sent the weights back to `lastStableWeights` until the spec changes.
    Aborted,
}

/// What a rollout request asks for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestAction {
    /// Stop moving shards until a resume (or a spec change).
    Pause,
    /// Undo a pause request.
    Resume,
    /// All weight to one version until the spec changes.
    Promote,
    /// Weights back to `lastStableWeights` until the spec changes.
    Abort,
}

impl RequestAction {
    /// The lowercase name (`pause`, `resume`, `promote`, `abort`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
        }
    }
}

/// A rollout request as the annotation `switchboard.dev/rollout-request` carries it (JSON),
/// e.g. `{"id":"1733","action":"promote","version":"v2"}`. Requests are annotations so a Git
/// controller that owns the spec (Argo CD self-heal, Flux) does not revert them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutRequest {
    /// A new id per request (the answer in status names it).
    pub id: String,
    /// What to do.
    pub action: RequestAction,
    /// For promote: the version (default: the last one in the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The operator's answer to a request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RequestOutcome {
    /// Carried out; its effect is in `status.control`.
    Accepted,
    /// Not carried out; the message says why.
    Rejected,
}

/// The last request the operator answered.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// The request's id.
    #[schemars(length(max = 128))]
    pub id: String,
    /// The action asked for (`pause`, `resume`, `promote`, `abort`), or the annotation's text
    /// when it did not parse.
    #[schemars(length(max = 256))]
    pub action: String,
    /// Accepted or Rejected.
    pub outcome: RequestOutcome,
    /// What was done, or why not.
    #[schemars(length(max = 1024))]
    pub message: String,
    /// When it was answered.
    pub time: Time,
}

/// What accepted requests hold in force, for one `metadata.generation`: a spec change (a new
/// commit in Git) clears it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutControl {
    /// The generation the requests were made against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Paused by request.
    #[serde(default)]
    pub paused: bool,
    /// Aborted by request: the weights are `lastStableWeights`.
    #[serde(default)]
    pub aborted: bool,
    /// Promoted by request: all weight to this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub promoted: Option<String>,
}

/// The rollback analysis, kept in status so it survives operator restarts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// The generation analysed (a new one starts over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When the analysis started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the last sample was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sample_at: Option<Time>,
    /// Where the rates come from: `nodes` or `prometheus`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 16))]
    pub source: String,
    /// Per version: samples and their mean.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub versions: Vec<VersionSamples>,
    /// The verdict so far, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// Error-rate samples of one version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VersionSamples {
    /// Version name.
    #[schemars(length(max = 15))]
    pub name: String,
    /// Whether the version gains weight (is judged) or is stable (the comparison).
    #[serde(default)]
    pub watched: bool,
    /// Samples taken.
    #[serde(default)]
    pub samples: i32,
    /// Mean error rate of the samples.
    #[serde(default)]
    pub mean_error_rate: f64,
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

    /// The last rollout request answered (annotation `switchboard.dev/rollout-request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<RequestStatus>,

    /// What accepted requests hold in force until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<RolloutControl>,

    /// The rollback analysis of the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,

    /// The weights shards are moving toward: the spec's, or what a promote, an abort or a
    /// rollback put in force (pools are sized by them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_weights: BTreeMap<String, i32>,
}

impl ProtocolRollout {
    /// Each spec version's target weight, in spec order: `status.targetWeights` when the
    /// status describes the current generation, else the spec weights.
    pub fn target_weights(&self) -> Vec<(String, i32)> {
        let current = self
            .status
            .as_ref()
            .filter(|s| s.observed_generation == self.metadata.generation)
            .filter(|s| !s.target_weights.is_empty());
        self.spec
            .versions
            .iter()
            .map(|v| {
                let weight = match current {
                    Some(status) => status.target_weights.get(&v.name).copied().unwrap_or(0),
                    None => v.weight,
                };
                (v.name.clone(), weight)
            })
            .collect()
    }

    /// Whether shards are frozen where they are: paused (spec or request), rolled back or
    /// aborted.
    pub fn is_frozen(&self) -> bool {
        self.spec.paused
            || self.status.as_ref().is_some_and(|s| {
                matches!(
                    s.phase,
                    RolloutPhase::Paused | RolloutPhase::RolledBack | RolloutPhase::Aborted
                )
            })
    }
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
fn default_min_samples() -> i32 {
    5
}
fn default_sample_interval() -> i32 {
    10
}

//! The `SignalingCluster` custom resource: one fleet of signaling-node pods sharing an etcd
//! prefix, a shard count and a node configuration.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext,
    ResourceRequirements, SecurityContext, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::client_access::ClientAccess;

/// Port of every node's admin endpoint (/metrics, /healthz, /readyz); `spec.port` must differ.
pub const ADMIN_PORT: i32 = 9100;

/// Desired state of a fleet of signaling nodes.

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "SignalingCluster",
    namespaced,
    shortname = "sigc",
    category = "switchboard",
    status = "SignalingClusterStatus",
    derive = "PartialEq",
    doc = "A fleet of Switchboard signaling nodes: pods, room shards and node configuration.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Requested number of signaling nodes"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Signaling-node pods that pass their readiness probe"
    ),
    printcolumn(
        name = "Shards",
        type_ = "integer",
        json_path = ".spec.shards",
        description = "Number of room shards"
    ),
    printcolumn(
        name = "Assigned",
        type_ = "integer",
        json_path = ".status.shardsAssigned",
        description = "Shards with a live owner"
    ),
    printcolumn(
        name = "Config",
        type_ = "integer",
        json_path = ".status.configRevision",
        description = "Node configuration revision written to etcd"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition"
    ),
    printcolumn(
        name = "Entry",
        type_ = "string",
        json_path = ".status.entryUrl",
        description = "The URL clients start from",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40")
        .message("metadata.name must be at most 40 characters (pod names are <cluster>-<version>-<n>)")
)]
#[x_kube(
    validation = Rule::new("self.drainTimeoutSeconds < self.terminationGracePeriodSeconds")
        .message("drainTimeoutSeconds must be shorter than terminationGracePeriodSeconds")
        .field_path(".drainTimeoutSeconds")
)]
#[serde(rename_all = "camelCase")]
pub struct SignalingClusterSpec {
    /// Number of signaling-node pods across all version pools (the scale subresource's
    /// replicas). Zero stops every node; shards stay in etcd and are served again on scale-up.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 0").message("replicas must not be negative"))]
    pub replicas: i32,

    /// Container image of the signaling node (its entrypoint must be the `signaling-node`
    /// binary). A ProtocolRollout referring to this cluster may run other images per version.
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self != ''").message("image must not be empty"))]
    pub image: String,

    /// TCP port of the signaling WebSocket (path `/ws`). Port 9100 is reserved for the
    /// admin endpoint (/metrics, /healthz, /readyz).
    #[serde(default = "default_port")]
    #[x_kube(
        validation = Rule::new("self >= 1 && self <= 65535").message("port must be between 1 and 65535"),
        validation = Rule::new("self != 9100").message("port 9100 is reserved for the admin endpoint")
    )]
    pub port: i32,

    /// Number of room shards (1..=4096). Rooms hash into shards; a shard is served by one node
    /// at a time. Immutable: changing it would move every room. To reshard, create a new
    /// SignalingCluster with the new count and move clients to it.
    #[serde(default = "default_shards")]
    #[x_kube(
        validation = Rule::new("self > 0 && self <= 4096").message("shards must be between 1 and 4096"),
        validation = Rule::new("self == oldSelf")
            .message("shards is immutable; to reshard, create a new SignalingCluster")
    )]
    pub shards: i32,

    /// The etcd cluster that holds membership, shard assignments, room state and config.
    pub etcd: EtcdSpec,

    /// Name of the Secret (same namespace) holding the join-token keys: `secret` (one HS256
    /// key, for tokens without `kid`) and/or `keys.json` (a JWK set of HS256 keys named by
    /// `kid`, each with an optional `exp`), so a key rotates without a flag day. It is mounted
    /// read-only at /etc/switchboard/auth; nodes reload it without a restart.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self != ''").message("authSecret must name a Secret"))]
    pub auth_secret: String,

    /// Hot-reloadable node configuration, written to etcd with a new revision on every change;
    /// nodes apply it without restart and acknowledge the revision.
    #[serde(default)]
    pub config: NodeConfig,

    /// How clients outside the cluster reach the fleet: the entry URL, each node's URL, the
    /// Services and Ingress objects behind them, and TLS. Unset: nodes advertise their pod IP
    /// and only clients inside the cluster can follow redirects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_access: Option<ClientAccess>,

    /// Overrides applied to every signaling-node pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodOverrides>,

    /// Seconds Kubernetes waits after SIGTERM before killing a node. A node drains on SIGTERM
    /// (hands its shards off, tells clients to migrate), so no preStop hook is needed.
    #[serde(default = "default_termination_grace")]
    #[x_kube(
        validation = Rule::new("self >= 1").message("terminationGracePeriodSeconds must be at least 1")
    )]
    pub termination_grace_period_seconds: i64,

    /// Seconds a draining node may spend handing its shards off before it exits anyway; must
    /// be shorter than terminationGracePeriodSeconds.
    #[serde(default = "default_drain_timeout")]
    #[x_kube(validation = Rule::new("self >= 1").message("drainTimeoutSeconds must be at least 1"))]
    pub drain_timeout_seconds: i64,

    /// The PodDisruptionBudgets the operator keeps, one per version pool (on by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudgetSpec>,
}

/// Voluntary disruptions (evictions, `kubectl drain`) allowed per version pool.
///
/// Each pool gets a PodDisruptionBudget `<cluster>-<version>` with an integer `minAvailable`
/// of the pool's size minus `maxUnavailable`, which the operator keeps in step with the pool
/// size: the disruption controller needs no scale subresource lookup, so the budget is right
/// from the first minute.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Create the budgets. When false the operator deletes them and evictions are unlimited.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Nodes of a pool that may be evicted at once (each drains its shards first).
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = Rule::new("self >= 1").message("maxUnavailable must be at least 1"))]
    pub max_unavailable: i32,
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// Where the etcd cluster is and how to reach it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    /// etcd client URLs, e.g. `http://etcd.switchboard.svc:2379`. A single-label host
    /// (`http://etcd:2379`) is a Service in this cluster's namespace, for the nodes and the
    /// operator alike (the operator connects to `etcd.<namespace>.svc`; a TLS certificate must
    /// name that too).
    #[x_kube(validation = Rule::new("size(self) > 0").message("at least one etcd endpoint is required"))]
    #[schemars(length(max = 16), inner(length(max = 512)))]
    pub endpoints: Vec<String>,

    /// Name of a Secret (same namespace) with `ca.crt`, `tls.crt` and `tls.key` for TLS to
    /// etcd; mounted read-only at /etc/switchboard/etcd-tls. Plain connections when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_secret: Option<String>,
}

/// Node configuration (hot-reloadable through etcd).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("self.idleTimeoutSeconds > self.heartbeatSeconds")
        .message("idleTimeoutSeconds must be longer than heartbeatSeconds")
        .field_path(".idleTimeoutSeconds")
)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    /// Seconds between application-level Ping frames.
    #[serde(default = "default_heartbeat")]
    #[schemars(range(min = 1, max = 3600))]
    pub heartbeat_seconds: i32,

    /// A connection silent for longer than this many seconds is evicted.
    #[serde(default = "default_idle_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub idle_timeout_seconds: i32,

    /// Seconds an invite may ring before it times out (error 1002).
    #[serde(default = "default_invite_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub invite_timeout_seconds: i32,

    /// Seconds an offer/answer/ICE negotiation may take before it times out (error 1002).
    #[serde(default = "default_negotiation_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub negotiation_timeout_seconds: i32,

    /// Maximum concurrent WebSocket connections per node; beyond it new clients get 1010.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_connections: i32,

    /// Maximum rooms a node serves at once; beyond it joins that would create a room get 1010.
    #[serde(default = "default_max_rooms")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_rooms: i32,

    /// Maximum members per room; beyond it joins get 1005 (room full).
    #[serde(default = "default_room_size")]
    #[schemars(range(min = 2, max = 10_000))]
    pub room_size: i32,

    /// Messages per second a single connection may send before it is rate limited (1007).
    #[serde(default = "default_messages_per_second")]
    #[schemars(range(min = 1, max = 100_000))]
    pub messages_per_second: i32,

    /// Seconds a disconnected session stays resumable (session token + last seen seq).
    #[serde(default = "default_resume_window")]
    #[schemars(range(min = 0, max = 86400))]
    pub resume_window_seconds: i32,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            heartbeat_seconds: default_heartbeat(),
            idle_timeout_seconds: default_idle_timeout(),
            invite_timeout_seconds: default_invite_timeout(),
            negotiation_timeout_seconds: default_negotiation_timeout(),
            max_connections: default_max_connections(),
            max_rooms: default_max_rooms(),
            room_size: default_room_size(),
            messages_per_second: default_messages_per_second(),
            resume_window_seconds: default_resume_window(),
        }
    }
}

/// Pod-level overrides for signaling-node pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Compute resources of the signaling-node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Node labels a signaling-node pod must match to be scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of signaling-node pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Affinity rules of signaling-node pods. When unset, a preferred pod anti-affinity on
    /// `kubernetes.io/hostname` spreads the cluster's nodes over machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Topology spread constraints of signaling-node pods (e.g. across zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// PriorityClass of signaling-node pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,

    /// ServiceAccount of signaling-node pods (default: the namespace's `default`). Nodes never
    /// call the Kubernetes API, so no token is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,

    /// Secrets for pulling the node images from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// Extra labels on signaling-node pods; labels under `switchboard.dev/` and
    /// `app.kubernetes.io/` are set by the operator and win over these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,

    /// Extra annotations on signaling-node pods (e.g. for scraping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Extra environment variables of the signaling-node container (e.g. `SWITCHBOARD_DEMO`,
    /// `RUST_LOG`); the variables the operator sets (`POD_*`, `SWITCHBOARD_VERSION`,
    /// `SWITCHBOARD_PROTOCOLS`, drain and etcd TLS settings) win over these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,

    /// ConfigMaps and Secrets whose keys become environment variables of the signaling-node
    /// container; `env` and the operator's variables win over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,

    /// Security context of signaling-node pods; replaces the default, which meets the
    /// `restricted` Pod Security Standard (non-root as uid/gid 65532, RuntimeDefault seccomp).
    /// A pod the namespace's Pod Security admission refuses is reported in the cluster's
    /// Degraded condition and a Warning Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,

    /// Security context of the signaling-node container; replaces the default (no privilege
    /// escalation, read-only root file system, every capability dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// Observed state of a signaling cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SignalingClusterStatus {
    /// Ready (serving), Progressing (pods or shards changing), Degraded (shards without a
    /// live owner or nodes missing), ConfigApplied (every ready node acked the config
    /// revision) and, with spec.clientAccess, ClientAccessReady (its objects exist and its
    /// certificate is valid; the reason says what is wrong otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Signaling-node pods that exist and are not terminating, ready or not (the scale
    /// subresource's replicas, as for a Deployment).
    #[serde(default)]
    pub replicas: i32,

    /// Signaling-node pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Nodes registered in etcd as ready (live lease, not draining).
    #[serde(default)]
    pub ready_nodes: i32,

    /// Shards that have a live owner.
    #[serde(default)]
    pub shards_assigned: i32,

    /// The URL clients start from (`spec.clientAccess.entryUrl`, once its objects exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_url: Option<String>,

    /// Revision of the node configuration last written to etcd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_revision: Option<i64>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Label selector of this cluster's pods, for the scale subresource (HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_max_unavailable() -> i32 {
    1
}
fn default_replicas() -> i32 {
    3
}
fn default_port() -> i32 {
    7000
}
fn default_shards() -> i32 {
    64
}
fn default_termination_grace() -> i64 {
    60
}
fn default_drain_timeout() -> i64 {
    30
}
fn default_heartbeat() -> i32 {
    30
}
fn default_idle_timeout() -> i32 {
    300
}
fn default_invite_timeout() -> i32 {
    30
}
fn default_negotiation_timeout() -> i32 {
    15
}
fn default_max_connections() -> i32 {
    100_000
}
fn default_max_rooms() -> i32 {
    50_000
}
fn default_room_size() -> i32 {
    16
}
fn default_messages_per_second() -> i32 {
    50
}
fn default_resume_window() -> i32 {
    60
}

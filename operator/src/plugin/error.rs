//! Errors of the kubectl plugin, each with the message a user should read.

/// What went wrong, in the user's terms.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The switchboard.dev CRDs are not served by this API server.
    #[error(
        "the switchboard.dev CRDs are not installed in this cluster; install them with helm (charts/switchboard) or `kubectl apply -f crds/`"
    )]
    CrdsMissing,
    /// The named SignalingCluster does not exist.
    #[error("SignalingCluster {name:?} not found in namespace {namespace}; {}", existing_clusters(.existing))]
    ClusterNotFound {
        /// Namespace searched.
        namespace: String,
        /// The name asked for.
        name: String,
        /// Clusters that do exist there.
        existing: Vec<String>,
    },
    /// The namespace has no SignalingCluster at all.
    #[error("no SignalingCluster in namespace {0} (pick another namespace with -n)")]
    NoClusters(String),
    /// No cluster named and the namespace has several.
    #[error("name a SignalingCluster with --cluster; namespace {namespace} has {}", existing_clusters(.existing))]
    ClusterAmbiguous {
        /// Namespace searched.
        namespace: String,
        /// Clusters that exist there.
        existing: Vec<String>,
    },
    /// No ProtocolRollout refers to the cluster.
    #[error("no ProtocolRollout in namespace {namespace} refers to SignalingCluster {cluster}")]
    NoRollout {
        /// Namespace.
        namespace: String,
        /// Cluster.
        cluster: String,
    },
    /// A version name the rollout does not have.
    #[error("unknown version {version:?}; the rollout has {}", .known.join(", "))]
    UnknownVersion {
        /// The name given.
        version: String,
        /// The rollout's versions.
        known: Vec<String>,
    },
    /// A `VERSION=WEIGHT` argument that does not parse.
    #[error("invalid weight {0:?}: expected VERSION=WEIGHT with WEIGHT a whole number in 0..=100")]
    BadWeight(String),
    /// Weights that do not sum to 100 (checked before anything is sent).
    #[error("weights must sum to 100; {weights} sums to {sum}")]
    WeightSum {
        /// The weights as `v1=60,v2=30`.
        weights: String,
        /// Their sum.
        sum: i64,
    },
    /// `abort` without recorded stable weights.
    #[error(
        "the rollout has no last stable weights in its status yet; set weights with `rollout set-weight` instead"
    )]
    NoStableWeights,
    /// A shard index out of range.
    #[error("shard {shard} does not exist; SignalingCluster {cluster} has shards 0..{count}")]
    UnknownShard {
        /// The index given.
        shard: i64,
        /// Cluster.
        cluster: String,
        /// Its shard count.
        count: i32,
    },
    /// A pod that is not a signaling node of the cluster.
    #[error("{node} is not a signaling-node pod of SignalingCluster {cluster}; its pods are {}", list_or_none(.pods))]
    UnknownNode {
        /// The name given.
        node: String,
        /// Cluster.
        cluster: String,
        /// The cluster's pods.
        pods: Vec<String>,
    },
    /// The operator refused or could not finish a requested move.
    #[error("move of shard {shard} {outcome}: {message}")]
    MoveNotDone {
        /// The shard.
        shard: u32,
        /// `was rejected` or `failed`.
        outcome: &'static str,
        /// The operator's reason.
        message: String,
    },
    /// The operator rejected a rollout request.
    #[error("{action} was rejected: {message}")]
    RequestRejected {
        /// The action.
        action: String,
        /// The operator's reason.
        message: String,
    },
    /// Waiting ran out of time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// Seconds waited.
        seconds: u64,
        /// What did not happen.
        what: String,
    },
    /// The kubeconfig could not be loaded.
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API server at {url}: {reason}")]
    Unreachable {
        /// Its URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The API server answered with an error.
    #[error("the Kubernetes API refused {action}: {message}")]
    Api {
        /// What was attempted.
        action: String,
        /// Its message.
        message: String,
    },
}

fn existing_clusters(existing: &[String]) -> String {
    if existing.is_empty() {
        "no SignalingClusters exist there".to_string()
    } else {
        format!("existing: {}", existing.join(", "))
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

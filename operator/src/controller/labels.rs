//! Label, annotation and name conventions shared by every reconciler.

use std::collections::BTreeMap;

/// Label naming the SignalingCluster an object belongs to.
pub const CLUSTER: &str = "switchboard.dev/cluster";
/// Label naming a pod's version pool.
pub const VERSION: &str = "switchboard.dev/version";
/// Label holding a RoomShard's index.
pub const SHARD: &str = "switchboard.dev/shard";
/// Label naming the pod a per-node object (and the pod itself) belongs to; per-node Services
/// select their pod by it.
pub const POD: &str = "switchboard.dev/pod";
/// Pod annotation: the node port its URL names (its Service pins it when re-created).
pub const NODE_PORT: &str = "switchboard.dev/node-port";
/// Annotation with the hash of what the operator applied to a client-access object; an object
/// that still carries the hash of the desired one is not applied again.
pub const APPLIED_HASH: &str = "switchboard.dev/applied-hash";
/// Annotation with the hash of the pod template a pod was built from.
pub const TEMPLATE_HASH: &str = "switchboard.dev/pod-template-hash";

/// Pod annotation naming the failed pod of its pool this pod was created to replace (see
/// `controller::cluster::pod_plan`); the failed pod is deleted once this one is ready.
pub const REPLACES: &str = "switchboard.dev/replaces";

/// `app.kubernetes.io/name` of signaling-node pods.
pub const APP_NAME: &str = "signaling-node";
/// Field manager of every server-side apply the operator makes; never change it.
pub const FIELD_MANAGER: &str = "switchboard-operator";
/// Finalizer that removes the cluster's etcd prefix before the cluster goes away.
pub const FINALIZER: &str = "switchboard.dev/cleanup";

/// Pod annotation (`"true"`) that drains a node: its shards are handed off and it gets no new
/// ones until the annotation is removed (`kubectl switchboard drain [--undo]`).
pub const DRAIN: &str = "switchboard.dev/drain";

/// RoomShard annotation whose value (any new nonce) requests a move of the shard now
/// (`kubectl switchboard failover`); answered in the status's `lastMoveRequest`.
pub const MOVE_REQUESTED: &str = "switchboard.dev/move-requested";

/// ProtocolRollout annotation carrying a request (JSON [`crate::crd::RolloutRequest`]:
/// pause, resume, promote, abort), answered in `status.lastRequest`. An annotation, so a Git
/// controller that owns the spec does not revert it.
pub const ROLLOUT_REQUEST: &str = "switchboard.dev/rollout-request";

/// RoomShard annotation naming the node a requested move should go to (optional).
pub const MOVE_TO: &str = "switchboard.dev/move-to";

/// Labels every object of `cluster` carries (and the selector of its pods).
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        (CLUSTER.to_string(), cluster.to_string()),
    ])
}

/// Full label set of an object of `cluster` with role `component`.
pub fn common_labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert("app.kubernetes.io/instance".into(), cluster.to_string());
    labels.insert("app.kubernetes.io/component".into(), component.to_string());
    labels.insert("app.kubernetes.io/part-of".into(), "switchboard".into());
    labels.insert("app.kubernetes.io/managed-by".into(), FIELD_MANAGER.into());
    labels
}

/// FNV-1a (64 bit) of `bytes` as 16 hex digits: stable across operator restarts and
/// platforms, for "did what we want change" annotations.
pub fn fnv1a(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A label selector string (`k=v,k=v`) for `labels`, as the scale subresource wants it.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_is_a_subset_of_the_common_labels() {
        let common = common_labels("demo", "node");
        for (key, value) in selector_labels("demo") {
            assert_eq!(common.get(&key), Some(&value));
        }
        assert_eq!(
            selector_string(&selector_labels("demo")),
            "app.kubernetes.io/name=signaling-node,switchboard.dev/cluster=demo"
        );
    }
}

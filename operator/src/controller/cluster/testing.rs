//! Fixtures for the cluster reconciler's tests.

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::{
    EtcdSpec, NodeConfig, ProtocolRollout, ProtocolRolloutSpec, ProtocolVersion, RolloutStrategy,
    RolloutVersion, SignalingCluster, SignalingClusterSpec,
};

/// A stored-looking cluster `demo` in namespace `live`.
pub fn cluster(replicas: i32, shards: i32) -> SignalingCluster {
    let mut cluster = SignalingCluster::new(
        "demo",
        SignalingClusterSpec {
            replicas,
            image: "switchboard/signaling-node:1".into(),
            port: 7000,
            shards,
            etcd: EtcdSpec {
                endpoints: vec!["http://etcd-0:2379".into(), "http://etcd-1:2379".into()],
                tls_secret: None,
            },
            auth_secret: "demo-auth".into(),
            config: NodeConfig::default(),
            client_access: None,
            pod_template: None,
            termination_grace_period_seconds: 60,
            drain_timeout_seconds: 30,
            disruption_budget: None,
        },
    );
    cluster.metadata.namespace = Some("live".into());
    cluster.metadata.uid = Some("uid-1".into());
    cluster.metadata.generation = Some(3);
    cluster
}

/// A rollout of `demo` with the given versions; every version but `v1` has its own image.
pub fn rollout(versions: &[(&str, i32)]) -> ProtocolRollout {
    let mut rollout = ProtocolRollout::new(
        "demo",
        ProtocolRolloutSpec {
            cluster_ref: "demo".into(),
            versions: versions
                .iter()
                .map(|(name, weight)| RolloutVersion {
                    name: (*name).into(),
                    image: (*name != "v1").then(|| format!("switchboard/signaling-node:{name}")),
                    protocols: vec![ProtocolVersion::V1, ProtocolVersion::V2],
                    weight: *weight,
                })
                .collect(),
            strategy: RolloutStrategy::default(),
            paused: false,
        },
    );
    rollout.metadata.namespace = Some("live".into());
    rollout
}

/// Marks `pod` ready or not (as the kubelet reports it).
pub fn set_ready(pod: &mut Pod, ready: bool) {
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
}

/// Marks `pod` as being deleted.
pub fn set_terminating(pod: &mut Pod) {
    pod.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
}

/// A fixed point in time.
pub fn now() -> Time {
    Time(Timestamp::from_second(1_750_000_000).unwrap_or(Timestamp::UNIX_EPOCH))
}

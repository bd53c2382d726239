//! The SignalingCluster reconciler. Its pure core turns a cluster (and its ProtocolRollout,
//! if any) plus the existing pods into the desired children — version-pool pods, the client
//! and headless Services, one PodDisruptionBudget per version pool, one RoomShard per shard
//! and, with `spec.clientAccess`, the objects outside clients need (`access`) — and computes
//! the status from what was observed. Its etcd side writes the node config and reads
//! membership and acks (`config` pure, `store`/`etcd_sync`/`triggers` I/O).

pub mod access;
pub mod budgets;
pub mod config;
pub mod context;
pub mod etcd_sync;
pub mod pod_plan;
pub mod pods;
pub mod pools;
pub mod reconcile;
pub mod services;
pub mod shards;
pub mod status;
pub mod store;
pub mod triggers;

#[cfg(test)]
mod testing;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use crate::controller::{Error, Result};
use crate::crd::{ProtocolRollout, RoomShard, SignalingCluster};

pub use pod_plan::{PodPlan, PoolSummary, plan_pods};
pub use pools::{DEFAULT_VERSION, VersionPool, version_pools};

/// Everything the reconciler should make true in one pass.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The validated `spec.clientAccess`, if set.
    pub access: Option<access::AccessPlan>,
    /// The version pools.
    pub pools: Vec<VersionPool>,
    /// Pods to create and delete.
    pub pods: PodPlan,
    /// The client Service `<cluster>`.
    pub client_service: Service,
    /// The headless Service `<cluster>-nodes`.
    pub headless_service: Service,
    /// One PodDisruptionBudget per version pool (none when disabled).
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    /// One RoomShard per shard.
    pub room_shards: Vec<RoomShard>,
}

/// The cluster's name, namespace and the controller owner reference its children carry.
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) owner: OwnerReference,
}

/// Reads the cluster's identity; an object without name, namespace or uid is refused.
pub(crate) fn identity(cluster: &SignalingCluster) -> Result<Identity> {
    Ok(Identity {
        name: cluster
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingObjectKey("name"))?,
        namespace: cluster
            .metadata
            .namespace
            .clone()
            .ok_or(Error::MissingObjectKey("namespace"))?,
        owner: cluster
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("uid"))?,
    })
}

/// Validates the cluster and builds every desired child from it, its rollout and the pods
/// that exist `now`.
pub fn desired(
    cluster: &SignalingCluster,
    rollout: Option<&ProtocolRollout>,
    existing: &[Pod],
    now: Timestamp,
) -> Result<Desired> {
    let access = access::AccessPlan::of(cluster).map_err(Error::ClientAccess)?;
    let pools = version_pools(cluster, rollout)?;
    let pods = plan_pods(cluster, &pools, existing, now)?;
    let disruption_budgets = budgets::disruption_budgets(cluster, &pods.pools)?;
    Ok(Desired {
        pods,
        client_service: services::client_service(cluster, access.as_ref())?,
        access,
        headless_service: services::headless_service(cluster)?,
        disruption_budgets,
        room_shards: shards::room_shards(cluster)?,
        pools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::Error;
    use crate::controller::cluster::testing::{cluster, rollout};

    #[test]
    fn a_new_cluster_wants_everything() {
        let c = cluster(4, 8);
        let r = rollout(&[("v1", 50), ("v2", 50)]);
        let d = desired(&c, Some(&r), &[], Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(d.pools.len(), 2);
        assert_eq!(d.pods.create.len(), 4);
        assert_eq!(d.room_shards.len(), 8);
        assert_eq!(d.client_service.metadata.name.as_deref(), Some("demo"));
        assert_eq!(
            d.headless_service.metadata.name.as_deref(),
            Some("demo-nodes")
        );
        let budgets: Vec<_> = d
            .disruption_budgets
            .iter()
            .map(|b| b.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(budgets, ["demo-v1", "demo-v2"]);
    }

    #[test]
    fn an_invalid_cluster_builds_nothing() {
        let mut c = cluster(4, 8);
        c.spec.replicas = -1;
        assert!(matches!(
            desired(&c, None, &[], Timestamp::UNIX_EPOCH),
            Err(Error::InvalidSpec(_))
        ));
    }
}

//! The etcd half of one SignalingCluster reconcile: connect to the cluster's etcd, keep the
//! shard manager and the member watch running, write `spec.config` to the `config` key when
//! the settings changed, and read `nodes/` + `acks/` to see how far the config got.
//!
//! The `config` write is a compare-and-set on the key's mod revision; losing it (someone
//! else wrote in between) fails the reconcile, which retries with the usual backoff.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use super::config::{
    ConfigPlan, ConfigProgress, config_progress, live_nodes, node_settings, plan_config, pod_views,
    recheck_after,
};
use super::context::Context;
use super::store::ClusterStore;
use crate::controller::{Error, Result};
use crate::crd::SignalingCluster;
use crate::etcd::EtcdError;

/// What the etcd side of the cluster looks like after the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdView {
    /// The config revision in etcd.
    pub config_revision: u64,
    /// Its rollout over the live nodes.
    pub progress: ConfigProgress,
    /// When to reconcile again because the config is not applied yet.
    pub recheck: Option<Duration>,
}

/// Syncs `cluster`'s etcd state; `pods` are its Pods as listed in this reconcile.
pub async fn sync(cluster: &SignalingCluster, pods: &[Pod], ctx: &Context) -> Result<EtcdView> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("name"))?;
    let services = &ctx.services;
    let (client, identity) = services.etcd.connection(cluster).await?;
    let mut store = ClusterStore::new(
        client.clone(),
        &namespace,
        &name,
        &cluster.spec.etcd,
        services.etcd.timeout(),
    )?;

    services
        .shards
        .ensure_with_identity(cluster, client.clone(), &identity);
    ctx.triggers.ensure(
        ObjectRef::new(&name).within(&namespace),
        store.keys().clone(),
        client,
        identity,
    );

    let (stored, mod_revision) = store.read_config().await?;
    let previous = cluster.status.as_ref().and_then(|s| s.config_revision);
    let plan = plan_config(&stored, previous, node_settings(&cluster.spec.config)?);
    if let ConfigPlan::Write(value) = &plan {
        if !store.write_config(value, mod_revision).await? {
            return Err(EtcdError::Conflict("config").into());
        }
        services
            .metrics
            .etcd_writes
            .with_label_values(&["config"])
            .inc();
        tracing::info!(revision = value.revision, "wrote node config");
        ctx.publish(
            cluster,
            EventType::Normal,
            "ConfigWritten",
            "Configure",
            format!("wrote node config revision {} to etcd", value.revision),
            None,
        )
        .await;
    }
    let revision = plan.revision();

    let members = store.members().await?;
    let live = live_nodes(&members.nodes, &pod_views(pods));
    let key = ObjectRef::from_obj(cluster);
    let first = config_progress(revision, &live, &members.acks, Duration::ZERO);
    let pending_for = ctx.pending_for(&key, revision, first.applied());
    let progress = config_progress(revision, &live, &members.acks, pending_for);
    services
        .metrics
        .config_revision_lag
        .with_label_values(&[namespace.as_str(), name.as_str()])
        .set(i64::try_from(progress.lag).unwrap_or(i64::MAX));
    Ok(EtcdView {
        config_revision: revision,
        recheck: recheck_after(&progress, pending_for),
        progress,
    })
}

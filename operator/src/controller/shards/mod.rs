//! The shard manager: one task per SignalingCluster that keeps every room shard owned by a
//! live node (docs/architecture.md, "Failover" and "Handoff") — initial placement, crash failover (lease
//! revoked first, `epoch + 1`, batched conditional writes), two-phase handoffs for drain,
//! scale-down, rebalancing and version moves (throttled by `maxShardsMoving`), RoomShard
//! status, Events and metrics.
//!
//! Layout: [`health`], [`detector`], [`plan`], [`handoff`], [`core`] and [`status`] are the
//! pure decision core (unit-tested with injected time); [`etcd_io`], [`kube_io`],
//! [`detector_io`] and [`manager`] are the I/O shell; [`ShardManagers`] is the registry the
//! SignalingCluster reconciler calls.
//!
//! Decisions written down here:
//! - A Pod that has never been Ready is a node still starting, not a failure; only Ready →
//!   NotReady of the same process triggers a `PodNotReady` failover. A draining node's Pod
//!   turning NotReady is expected and stays a handoff.
//! - A terminating Pod (scale-down, rolling replacement) is a handoff, not a crash: the node
//!   drains on SIGTERM. The crash path starts when its process exits or the Pod is removed.
//! - Failover goes to the shard's current version pool when it has an eligible node, else
//!   to the pool the rollout wants; version moves then follow as throttled handoffs.
//! - Shards never placed wait until their pool has its expected number of eligible nodes or
//!   3 s after its first one, so the first node of a new cluster does not get every shard.
//! - A node with a liveness endpoint is also judged by the failure detector ([`detector`]):
//!   its verdict (`Crashed`, `Unresponsive`) fails the node over without waiting for the
//!   kubelet or the lease.
//! - `recoveredMs` is measured from the failure signal to the new owner's `serving` ack;
//!   `detectedMs` from the signal to the new assignment's commit. The
//!   signal time is when the operator observed it (detector verdict, etcd delete event or Pod
//!   update).

pub mod core;
pub mod detector;
pub mod detector_io;
pub mod etcd_io;
pub mod handoff;
pub mod health;
pub mod kube_io;
pub mod manager;
pub mod metrics;
pub mod plan;
pub mod state;
pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt;

use crate::crd::SignalingCluster;
pub use manager::{ManagerHandle, ManagerOptions};
pub use metrics::ShardMetrics;

struct Managed {
    uid: Option<String>,
    endpoints: Vec<String>,
    identity: String,
    handle: ManagerHandle,
}

struct Inner {
    client: kube::Client,
    metrics: ShardMetrics,
    options: ManagerOptions,
    managers: Mutex<HashMap<(String, String), Managed>>,
    starts: AtomicU64,
}

/// The shard managers of every SignalingCluster this operator runs (cheap to clone).
#[derive(Clone)]
pub struct ShardManagers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShardManagers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardManagers").finish_non_exhaustive()
    }
}

impl ShardManagers {
    /// A registry whose managers use `client` and register their metrics in `registry`.
    pub fn new(client: kube::Client, registry: &prometheus::Registry) -> Self {
        Self::with_options(client, registry, ManagerOptions::default())
    }

    /// Like [`ShardManagers::new`] with non-default manager options (tests).
    pub fn with_options(
        client: kube::Client,
        registry: &prometheus::Registry,
        options: ManagerOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                metrics: ShardMetrics::register(registry),
                options,
                managers: Mutex::default(),
                starts: AtomicU64::new(0),
            }),
        }
    }

    fn managers(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Managed>> {
        self.inner
            .managers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts or updates the shard manager of this cluster (idempotent; called on every
    /// reconcile). A manager is restarted when its etcd endpoints or the cluster's uid change,
    /// or when its task ended.
    pub fn ensure(&self, cluster: &SignalingCluster, etcd: etcd_client::Client) {
        self.ensure_with_identity(cluster, etcd, "");
    }

    /// Like [`ShardManagers::ensure`]; `identity` names the etcd connection
    /// ([`crate::etcd::EtcdClients::connection`]): a manager also restarts, on the new
    /// client, when it changes (other TLS credentials), and only then.
    pub fn ensure_with_identity(
        &self,
        cluster: &SignalingCluster,
        etcd: etcd_client::Client,
        identity: &str,
    ) {
        let (Some(namespace), Some(name)) = (cluster.namespace(), cluster.metadata.name.clone())
        else {
            tracing::warn!("SignalingCluster without namespace or name; no shard manager");
            return;
        };
        let key = (namespace, name);
        let endpoints = cluster.spec.etcd.endpoints.clone();
        let uid = cluster.metadata.uid.clone();
        let mut managers = self.managers();
        if let Some(managed) = managers.get(&key)
            && managed.handle.is_running()
            && managed.endpoints == endpoints
            && managed.identity == identity
            && managed.uid == uid
        {
            managed.handle.update(cluster);
            return;
        }
        match manager::spawn(
            cluster,
            etcd,
            Some(self.inner.client.clone()),
            self.inner.metrics.clone(),
            self.inner.options.clone(),
        ) {
            Ok(handle) => {
                self.inner.starts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(namespace = %key.0, cluster = %key.1, "shard manager started");
                managers.insert(
                    key,
                    Managed {
                        uid,
                        endpoints,
                        identity: identity.to_string(),
                        handle,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(namespace = %key.0, cluster = %key.1, %error, "shard manager not started");
            }
        }
    }

    /// Stops the manager of a deleted cluster.
    pub fn stop(&self, namespace: &str, name: &str) {
        let removed = self
            .managers()
            .remove(&(namespace.to_string(), name.to_string()));
        if removed.is_some() {
            self.inner.metrics.forget(namespace, name);
            tracing::info!(%namespace, cluster = %name, "shard manager stopped");
        }
    }

    /// How many managers were started (restarts included) since this registry was made.
    pub fn starts(&self) -> u64 {
        self.inner.starts.load(Ordering::Relaxed)
    }

    /// Clusters with a running manager, as (namespace, name).
    pub fn running(&self) -> Vec<(String, String)> {
        self.managers()
            .iter()
            .filter(|(_, m)| m.handle.is_running())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

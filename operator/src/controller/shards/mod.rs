//! Placeholder of the per-cluster shard manager (replaced by branch `shard-manager` at merge).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

/// The shard managers of every cluster (placeholder: records which clusters are managed).
#[derive(Clone)]
pub struct ShardManagers {
    managed: Arc<Mutex<BTreeSet<(String, String)>>>,
}

impl ShardManagers {
    /// No manager running yet.
    pub fn new(_client: kube::Client, _registry: &prometheus::Registry) -> Self {
        Self {
            managed: Arc::default(),
        }
    }

    /// Starts or updates the shard manager of this cluster (idempotent; call on every reconcile).
    pub fn ensure(&self, cluster: &crate::crd::SignalingCluster, _etcd: etcd_client::Client) {
        let key = (cluster.namespace().unwrap_or_default(), cluster.name_any());
        let mut managed = self.managed.lock().unwrap_or_else(|e| e.into_inner());
        if managed.insert(key) {
            tracing::info!("shard manager placeholder: would start managing shards");
        }
    }

    /// Stops the manager of a deleted cluster.
    pub fn stop(&self, namespace: &str, name: &str) {
        let mut managed = self.managed.lock().unwrap_or_else(|e| e.into_inner());
        if managed.remove(&(namespace.to_string(), name.to_string())) {
            tracing::info!(namespace, name, "shard manager placeholder: stopped");
        }
    }
}

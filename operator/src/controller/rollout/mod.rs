//! Placeholder of the ProtocolRollout controller (replaced by branch `shard-manager` at merge).

use std::future::Future;

/// The ProtocolRollout controller (placeholder: waits for shutdown).
pub async fn run(
    _client: kube::Client,
    _etcd: crate::etcd::EtcdClients,
    _registry: &prometheus::Registry,
    shutdown: impl Future<Output = ()>,
) {
    tracing::info!("rollout controller placeholder: running until shutdown");
    shutdown.await;
}

//! The ProtocolRollout reconciler: turns a rollout's weights into the `rollout` etcd key
//! (version weights and the shard → version map) that the shard manager follows — gated on
//! pool readiness, frozen when paused, rolled back automatically on a sustained error rate —
//! and reports progress in the rollout's status.
//!
//! [`analysis`], [`requests`] and [`plan`] are pure; [`reconcile`] and [`prometheus`] do the
//! I/O. The shard manager moves the
//! shards (`maxShardsMoving` handoffs at a time, only onto Ready nodes of the target pool);
//! this reconciler decides where they should be.

pub mod analysis;
pub mod plan;
pub mod prometheus;
pub mod reconcile;
pub mod requests;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;

use crate::controller::WatchScope;
use crate::crd::ProtocolRollout;
use crate::etcd::EtcdClients;
use crate::metrics::Metrics;
pub use reconcile::{Context, RolloutMetrics};

/// Runs the ProtocolRollout controller over the namespaces of `scope` until `shutdown`
/// resolves.
///
/// The rollout metrics are registered in `metrics`' registry when this is called; the
/// returned future borrows nothing, so it can be awaited or spawned.
pub fn run<S>(
    client: kube::Client,
    etcd: EtcdClients,
    metrics: &Metrics,
    scope: WatchScope,
    shutdown: S,
) -> impl Future<Output = ()> + use<S>
where
    S: Future<Output = ()>,
{
    let rollout_metrics = RolloutMetrics::register(metrics.registry());
    let metrics = metrics.clone();
    async move {
        let ctx = Arc::new(Context::new(client.clone(), etcd, rollout_metrics, metrics));
        let controller = Controller::new(
            scope.api::<DeserializeGuard<ProtocolRollout>>(client),
            watcher::Config::default(),
        )
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "rollout reconciled"),
                Err(error) => tracing::debug!(%error, "rollout reconcile failed"),
            }
        });
        tokio::select! {
            () = controller => {}
            () = shutdown => tracing::info!("rollout controller stopped"),
        }
    }
}

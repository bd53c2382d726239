//! Cluster mode around a [`Node`]: the etcd side ([`ClusterNode`]) supplies the room store and
//! the ownership view, takeover restores shards into the room registry, the operator's
//! `config` is applied as the settings' remote layer and acknowledged, readiness is held
//! false while etcd is unreachable, and the node's load is published in its registration.
//!
//! Shutdown order: stop taking joins (readiness 503, joins get 1010) → mark the node draining
//! in etcd and wait (at most half the drain timeout) until no assignment names this node while
//! the operator hands its shards off two-phase (`handoff_to`: release, flush, `Migrate` with
//! the new owner's URL, `released` ack; then the reassignment) → the server's own
//! drain (anything left gets `Migrate` with an empty URL, then every connection close 1001)
//! → revoke the lease.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::liveness::{self, Liveness};
use crate::cluster::metrics::ClusterMetrics;
use crate::cluster::node::{ClusterError, ClusterNode, ClusterNodeConfig};
use crate::cluster::{ClusterArgs, args::ArgsError};
use crate::config::{ConfigHandle, SettingsPatch};
use crate::metrics::{Health, Metrics};
use switchboard_contract::keys::{Load, NodeInfo, NodeState};

use super::{Listeners, Node, ServerError};

/// How often the node's load is published.
const LOAD_EVERY: Duration = Duration::from_secs(2);
/// Retry delay for a config ack that could not be written.
const ACK_RETRY: Duration = Duration::from_secs(2);

/// Why cluster mode could not run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterModeError {
    /// The etcd flags are incomplete or invalid.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// The etcd side could not start.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The cluster metrics could not be registered.
    #[error("registering cluster metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Runs a cluster-mode node until `shutdown` resolves, then hands off and drains.
pub async fn serve_cluster(
    args: &ClusterArgs,
    config: ConfigHandle,
    metrics: Metrics,
    mut listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ClusterModeError> {
    let settings = config.current();
    let identity = args.identity(&settings.node_name, &settings.advertise_url)?;
    let client = args.connect().await?;
    let cluster_metrics = ClusterMetrics::register(metrics.registry())?;
    let incarnation: u64 = rand::random();
    // The operator's failure detector holds this stream open (docs/architecture.md).
    let live_endpoint = listeners
        .admin
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .and_then(|admin| liveness::endpoint(&identity.advertise_url, admin.port(), incarnation));
    let info = NodeInfo {
        url: identity.advertise_url.clone(),
        version: settings.pool_version.clone(),
        protocols: settings
            .protocols
            .iter()
            .map(|v| v.subprotocol().to_owned())
            .collect(),
        state: NodeState::Ready,
        load: Load::default(),
        error_rate: 0.0,
        started_at_ms: switchboard_protocol::auth::unix_now().saturating_mul(1000),
        liveness: live_endpoint.clone(),
    };
    let cluster_config = ClusterNodeConfig::new(
        identity.keys.clone(),
        settings.shard_count,
        identity.node_name.clone(),
        info,
    );
    let mut cluster = ClusterNode::start(client, cluster_config, cluster_metrics)?;
    let live = Liveness::new(
        identity.node_name.clone(),
        incarnation,
        Arc::clone(cluster.ownership()),
    );
    if live_endpoint.is_some() {
        listeners.admin_routes = Some(match listeners.admin_routes.take() {
            Some(routes) => routes.merge(live.router()),
            None => live.router(),
        });
    }
    let node = Node::new(
        config.subscribe(),
        cluster.room_store(),
        cluster.ownership_view(),
        metrics.clone(),
    );
    cluster.start_takeover(Arc::new(node.registry().clone()));
    tracing::info!(
        prefix = identity.keys.prefix(),
        node = identity.node_name,
        "cluster mode"
    );

    let handoff_budget = settings.drain_timeout / 2;
    let health = node.health().clone();
    let cluster_ref = &cluster;
    let live_stop = live.clone();
    let shutdown_and_handoff = async move {
        shutdown.await;
        // The liveness stream says goodbye: from here on the node's end is no crash, and its
        // shards are handed off.
        live_stop.stop();
        health.set_draining();
        match cluster_ref.drain(handoff_budget).await {
            Ok(held) if held.is_empty() => tracing::info!("every shard handed off"),
            Ok(held) => tracing::warn!(?held, "handoff deadline passed; draining anyway"),
            Err(e) => tracing::warn!(error = %e, "could not mark the node draining in etcd"),
        }
    };
    let side_tasks = async {
        tokio::join!(
            hold_readiness_while_unhealthy(cluster_ref, node.health().clone()),
            apply_cluster_config(cluster_ref, &config, &metrics),
            publish_load(cluster_ref, &node),
        );
    };
    let result = tokio::select! {
        result = node.clone().serve(listeners, shutdown_and_handoff) => result,
        () = side_tasks => Ok(()),
    };
    cluster.shutdown().await;
    result.map_err(ClusterModeError::from)
}

/// Readiness is false while any etcd component is unhealthy.
async fn hold_readiness_while_unhealthy(cluster: &ClusterNode, health: Health) {
    let mut healthy = cluster.healthy();
    let mut hold = None;
    loop {
        if *healthy.borrow_and_update() {
            hold = None;
        } else if hold.is_none() {
            hold = Some(health.hold());
        }
        if healthy.changed().await.is_err() {
            // The cluster side stopped; stay as we are until the node stops.
            std::future::pending::<()>().await;
        }
    }
}

/// Applies every new `config` as the settings' remote layer and acknowledges the applied
/// config revision and the seen rollout revision. An invalid config is counted and not
/// acknowledged; the last good settings stay.
async fn apply_cluster_config(cluster: &ClusterNode, config: &ConfigHandle, metrics: &Metrics) {
    let mut config_rx = cluster.config().config();
    let mut rollout_rx = cluster.config().rollout();
    let mut applied: u64 = 0;
    let mut acked: Option<(u64, u64)> = None;
    loop {
        let value = config_rx.borrow_and_update().clone();
        if let Some(value) = value
            && value.revision != applied
        {
            let result = SettingsPatch::from_cluster_settings(&value.settings)
                .and_then(|patch| config.set_remote(Some(patch)));
            match result {
                Ok(()) => {
                    tracing::info!(revision = value.revision, "cluster config applied");
                    applied = value.revision;
                }
                Err(e) => {
                    metrics.config_reload_errors.inc();
                    tracing::error!(revision = value.revision, error = %e, "cluster config refused; keeping the last good settings");
                }
            }
        }
        let rollout = rollout_rx
            .borrow_and_update()
            .as_ref()
            .map_or(0, |r| r.revision);
        let want = (applied, rollout);
        let mut retry = false;
        if acked != Some(want) && want != (0, 0) {
            match cluster.config().ack(want.0, want.1).await {
                Ok(()) => acked = Some(want),
                Err(e) => {
                    tracing::warn!(error = %e, "config ack failed; retrying");
                    retry = true;
                }
            }
        }
        tokio::select! {
            changed = config_rx.changed() => if changed.is_err() { std::future::pending::<()>().await },
            changed = rollout_rx.changed() => if changed.is_err() { std::future::pending::<()>().await },
            () = tokio::time::sleep(ACK_RETRY), if retry => {}
        }
    }
}

/// Publishes connections, rooms and the recent error rate in the node's registration.
async fn publish_load(cluster: &ClusterNode, node: &Node) {
    let mut tick = tokio::time::interval(LOAD_EVERY);
    let mut last = node.metrics().error_rate_totals();
    loop {
        tick.tick().await;
        let now = node.metrics().error_rate_totals();
        let errors = now.0.saturating_sub(last.0);
        let frames = now.1.saturating_sub(last.1);
        last = now;
        let error_rate = if frames == 0 {
            0.0
        } else {
            errors as f64 / frames as f64
        };
        let load = Load {
            connections: u64::try_from(node.metrics().connections.get()).unwrap_or(0),
            rooms: node.registry().room_count() as u64,
        };
        cluster.membership().set_load(load, error_rate);
    }
}

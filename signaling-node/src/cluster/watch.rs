//! The node's side of the contract's etcd watch loop: the context every background etcd loop
//! of the node shares, and [`run_watch`], which reports a watch's state to [`Health`] (one
//! [`Component`] each) and counts its resyncs.

use etcd_client::Client;
use switchboard_contract::watch::{self, EtcdTiming, Update, WatchObserver, WatchRange, WatchSpec};
use tokio_util::sync::CancellationToken;

use super::health::{Component, Health};
use super::metrics::ClusterMetrics;

/// What every background etcd loop shares: the client, health, metrics, timing and the
/// shutdown signal.
#[derive(Clone)]
pub struct EtcdContext {
    /// The etcd client (one multiplexed connection).
    pub client: Client,
    /// Where the loop reports whether it reaches etcd.
    pub health: Health,
    /// Metrics to update.
    pub metrics: ClusterMetrics,
    /// Request timeout and backoff.
    pub timing: EtcdTiming,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for EtcdContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdContext")
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// Runs the watch of `ranges` until `ctx.shutdown` is cancelled, calling `sink` for every
/// update.
///
/// `sink` runs on the watch task and must not block. `component` is reported down to
/// `ctx.health` whenever the watch is not established, and `name` labels the resync metric.
pub async fn run_watch(
    ctx: EtcdContext,
    ranges: Vec<WatchRange>,
    name: &'static str,
    component: Component,
    sink: impl FnMut(Update) + Send,
) {
    let EtcdContext {
        client,
        health,
        metrics,
        timing,
        shutdown,
    } = ctx;
    health.register(component);
    let observer = NodeObserver {
        health: &health,
        metrics: &metrics,
        component,
        name,
        sink,
    };
    let spec = WatchSpec {
        client,
        timing,
        shutdown,
        name,
    };
    watch::run_watch(spec, ranges, observer).await;
    health.unregister(component);
}

struct NodeObserver<'a, F> {
    health: &'a Health,
    metrics: &'a ClusterMetrics,
    component: Component,
    name: &'static str,
    sink: F,
}

impl<F: FnMut(Update) + Send> WatchObserver for NodeObserver<'_, F> {
    fn update(&mut self, update: Update) {
        (self.sink)(update);
    }

    fn connected(&mut self, up: bool) {
        self.health.set(self.component, up);
    }

    fn resyncing(&mut self) {
        self.metrics
            .watch_resyncs
            .with_label_values(&[self.name])
            .inc();
    }
}

//! The operator's Prometheus metrics: one registry shared by every controller (the shard
//! manager and the rollout controller register theirs in it too) and served on `/metrics`.
//!
//! Label values are low-cardinality: `kind` is a resource kind, `error` an error's
//! `metric_label()`, `namespace`/`signaling_cluster` name a SignalingCluster (removed when it
//! is deleted). The label is not `cluster`: Thanos, Mimir and most multi-cluster Prometheus
//! setups put an external label of that name on every series.
//!
//! The registry also holds `switchboard_operator_build_info{version}` and the standard
//! `process_*` metrics (open and max file descriptors, CPU, memory).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Metrics of the operator process and its controllers (`kind` SignalingCluster or
/// ProtocolRollout).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started, by resource kind.
    pub reconciliations: IntCounterVec,
    /// Failed reconciles, by kind and error label.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile duration in seconds, by kind.
    pub reconcile_duration: HistogramVec,
    /// Status writes, by kind (a steady object should see none).
    pub status_writes: IntCounterVec,
    /// Writes to etcd, by what was written (`config`, `cleanup`).
    pub etcd_writes: IntCounterVec,
    /// Config revisions the slowest ready node is behind, per cluster.
    pub config_revision_lag: IntGaugeVec,
    /// 1 while this process holds the leader Lease (or runs without leader election).
    pub leader: IntGauge,
    /// Times this process became the leader.
    pub leader_acquisitions: IntCounter,
    /// Build information (value 1, label `version`).
    pub build_info: IntGaugeVec,
}

/// The label naming a SignalingCluster on every per-cluster series.
pub const CLUSTER_LABEL: &str = "signaling_cluster";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics in a fresh registry.
    pub fn new() -> Self {
        // Registering distinct, valid names in an empty registry cannot fail.
        Self::register(Registry::new()).unwrap_or_else(|error| {
            unreachable!("operator metrics collide in a fresh registry: {error}")
        })
    }

    /// Metrics registered in `registry`; fails when a name is taken.
    pub fn register(registry: Registry) -> Result<Self, prometheus::Error> {
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_reconciliations_total",
                "Reconciles started, by resource kind",
            ),
            &["kind"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_reconcile_errors_total",
                "Failed reconciles, by resource kind and error label",
            ),
            &["kind", "error"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_operator_reconcile_duration_seconds",
                "Duration of one reconcile, by resource kind",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["kind"],
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_status_writes_total",
                "Status subresource writes, by resource kind",
            ),
            &["kind"],
        )?;
        let etcd_writes = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_etcd_writes_total",
                "Writes the operator made to etcd, by what was written",
            ),
            &["key"],
        )?;
        let config_revision_lag = IntGaugeVec::new(
            Opts::new(
                "switchboard_operator_config_revision_lag",
                "Config revisions the slowest ready node of a cluster is behind (0: applied)",
            ),
            &["namespace", CLUSTER_LABEL],
        )?;
        let leader = IntGauge::new(
            "switchboard_operator_leader",
            "1 while this process holds the leader Lease",
        )?;
        let leader_acquisitions = IntCounter::new(
            "switchboard_operator_leader_acquisitions_total",
            "Times this process became the leader",
        )?;
        registry.register(Box::new(reconciliations.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(etcd_writes.clone()))?;
        registry.register(Box::new(config_revision_lag.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(leader_acquisitions.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "switchboard_operator_build_info",
                "Build information (value 1)",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            status_writes,
            etcd_writes,
            config_revision_lag,
            leader,
            leader_acquisitions,
            build_info,
        })
    }

    /// The registry, for other components to register their metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Forgets the per-cluster series of a deleted cluster.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str) {
        // Absent series are not an error worth reporting.
        let _ = self
            .config_revision_lag
            .remove_label_values(&[namespace, cluster]);
    }

    /// Everything in the registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_encoded_with_their_labels() {
        let metrics = Metrics::new();
        metrics
            .reconciliations
            .with_label_values(&["SignalingCluster"])
            .inc();
        metrics
            .reconcile_errors
            .with_label_values(&["SignalingCluster", "etcd"])
            .inc();
        metrics
            .config_revision_lag
            .with_label_values(&["live", "demo"])
            .set(2);
        metrics.leader.set(1);
        let text = metrics.encode();
        assert!(
            text.contains(
                "switchboard_operator_reconciliations_total{kind=\"SignalingCluster\"} 1"
            )
        );
        assert!(text.contains(
            "switchboard_operator_reconcile_errors_total{error=\"etcd\",kind=\"SignalingCluster\"} 1"
        ));
        assert!(text.contains(
            "switchboard_operator_config_revision_lag{namespace=\"live\",signaling_cluster=\"demo\"} 2"
        ));
        assert!(text.contains("switchboard_operator_leader 1"));
        assert!(text.contains("switchboard_operator_build_info{version="));
        assert!(text.contains("process_open_fds "));
        metrics.forget_cluster("live", "demo");
        assert!(!metrics.encode().contains("cluster=\"demo\""));
    }

    #[test]
    fn a_second_registration_in_one_registry_fails() {
        let metrics = Metrics::new();
        assert!(Metrics::register(metrics.registry().clone()).is_err());
    }
}

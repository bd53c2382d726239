//! Prometheus metrics of the shard managers (one set shared by every cluster, labelled by
//! namespace and cluster).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::metrics::CLUSTER_LABEL;

/// Shard manager metrics.
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    /// `switchboard_operator_failovers_total{namespace,cluster,reason}`.
    pub failovers: IntCounterVec,
    /// `switchboard_operator_failover_duration_seconds{namespace,cluster}`: failure signal →
    /// new owner serving.
    pub failover_duration: HistogramVec,
    /// `switchboard_operator_unassigned_shards{namespace,cluster}`.
    pub unassigned: IntGaugeVec,
    /// `switchboard_operator_handoffs_total{namespace,cluster,kind,outcome}`; kind Drain,
    /// Rebalance or VersionMove; outcome `released` or `deadline`.
    pub handoffs: IntCounterVec,
    /// `switchboard_operator_detector_findings_total{namespace,cluster,finding}`: the failure
    /// detector's verdicts (`Crashed`, `Unresponsive`) and what led to none (`Suspected`,
    /// `Vetoed`, `Cleared`, `Flapped`, `Starved`).
    pub detector: IntCounterVec,
}

impl ShardMetrics {
    /// Builds the metrics and registers them in `registry`. A metric that cannot be
    /// registered (already registered by another instance) is still counted, only not
    /// exported through this registry.
    pub fn register(registry: &Registry) -> Self {
        let metrics = Self::build();
        let collectors: [Box<dyn prometheus::core::Collector>; 5] = [
            Box::new(metrics.failovers.clone()),
            Box::new(metrics.failover_duration.clone()),
            Box::new(metrics.unassigned.clone()),
            Box::new(metrics.handoffs.clone()),
            Box::new(metrics.detector.clone()),
        ];
        for collector in collectors {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "shard manager metric not registered");
            }
        }
        metrics
    }

    fn build() -> Self {
        // The names and label sets are constants: building cannot fail.
        let failovers = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_failovers_total",
                "Shards failed over away from a dead node",
            ),
            &["namespace", CLUSTER_LABEL, "reason"],
        )
        .unwrap_or_else(|e| unreachable_metric(e));
        let failover_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchboard_operator_failover_duration_seconds",
                "Failure signal to the new owner serving the shard",
            )
            .buckets(vec![0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            &["namespace", CLUSTER_LABEL],
        )
        .unwrap_or_else(|e| unreachable_metric(e));
        let unassigned = IntGaugeVec::new(
            Opts::new(
                "switchboard_operator_unassigned_shards",
                "Shards without a live owner",
            ),
            &["namespace", CLUSTER_LABEL],
        )
        .unwrap_or_else(|e| unreachable_metric(e));
        let handoffs = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_handoffs_total",
                "Completed shard handoffs",
            ),
            &["namespace", CLUSTER_LABEL, "kind", "outcome"],
        )
        .unwrap_or_else(|e| unreachable_metric(e));
        let detector = IntCounterVec::new(
            Opts::new(
                "switchboard_operator_detector_findings_total",
                "Failure detector findings: verdicts and suspicions that led to none",
            ),
            &["namespace", "cluster", "finding"],
        )
        .unwrap_or_else(|e| unreachable_metric(e));
        Self {
            failovers,
            failover_duration,
            unassigned,
            handoffs,
            detector,
        }
    }

    /// Drops the series of a deleted cluster.
    pub fn forget(&self, namespace: &str, cluster: &str) {
        let _ = self.unassigned.remove_label_values(&[namespace, cluster]);
    }
}

#[track_caller]
fn unreachable_metric(error: prometheus::Error) -> ! {
    panic!("static metric definition is invalid: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_and_tolerates_a_second_registration() {
        let registry = Registry::new();
        let first = ShardMetrics::register(&registry);
        first
            .failovers
            .with_label_values(&["ns", "c", "LeaseExpired"])
            .inc();
        let _second = ShardMetrics::register(&registry);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(names.contains(&"switchboard_operator_failovers_total".to_string()));
    }
}

//! Prometheus metrics of cluster mode: group commit, fencing, takeover, lease and config.
//!
//! Metrics are plain prometheus handles (atomics inside); tests read them with `.get()`.
//! [`ClusterMetrics::register`] adds them to the node's registry; [`ClusterMetrics::default`]
//! leaves them unregistered (tests, tools).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Outcome label values of `switchboard_store_txns_total`.
pub mod outcome {
    /// The transaction committed.
    pub const COMMITTED: &str = "committed";
    /// A shard's fencing compare failed; the fenced shards' commits were refused.
    pub const FENCED: &str = "fenced";
    /// etcd could not be reached (error or timeout).
    pub const UNAVAILABLE: &str = "unavailable";
}

/// Every metric of the cluster module.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// Snapshot writes and removals requested by room actors.
    pub store_commits: IntCounter,
    /// etcd transactions issued by the group committer, by outcome.
    pub store_txns: IntCounterVec,
    /// Number of room writes carried by one transaction.
    pub store_batch_size: Histogram,
    /// Seconds from a commit request to its result.
    pub store_commit_seconds: Histogram,
    /// Seconds a commit waits in the queue before its transaction is sent.
    pub store_queue_seconds: Histogram,
    /// Seconds of one etcd transaction: the round trip, etcd's raft and WAL fsync included.
    pub store_txn_seconds: Histogram,
    /// Commits refused because the shard is no longer held by this node.
    pub store_fenced: IntCounter,
    /// Seconds to load and restore one shard taken over by this node.
    pub shard_restore_seconds: Histogram,
    /// Shards restored after being assigned to this node.
    pub shards_restored: IntCounter,
    /// Shards released after being taken away from this node.
    pub shards_released: IntCounter,
    /// Leases this node lost (keepalive failed past the TTL, or revoked): fencing events.
    pub lease_lost: IntCounter,
    /// Leases presumed lost that etcd still held when it answered again: kept, not replaced.
    pub lease_revived: IntCounter,
    /// Invalid `config` / `rollout` values seen (the last good value was kept), by key.
    pub config_invalid: IntCounterVec,
    /// Watch streams (re)established after an error or compaction, by watched range.
    pub watch_resyncs: IntCounterVec,
    /// 1 while etcd is reachable by every component, else 0.
    pub etcd_healthy: IntGauge,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        // The names and label sets below are static and valid, so construction cannot fail.
        Self::build().unwrap_or_else(|e| unreachable!("static metric definitions: {e}"))
    }
}

impl ClusterMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::build()?;
        registry.register(Box::new(metrics.store_commits.clone()))?;
        registry.register(Box::new(metrics.store_txns.clone()))?;
        registry.register(Box::new(metrics.store_batch_size.clone()))?;
        registry.register(Box::new(metrics.store_commit_seconds.clone()))?;
        registry.register(Box::new(metrics.store_queue_seconds.clone()))?;
        registry.register(Box::new(metrics.store_txn_seconds.clone()))?;
        registry.register(Box::new(metrics.store_fenced.clone()))?;
        registry.register(Box::new(metrics.shard_restore_seconds.clone()))?;
        registry.register(Box::new(metrics.shards_restored.clone()))?;
        registry.register(Box::new(metrics.shards_released.clone()))?;
        registry.register(Box::new(metrics.lease_lost.clone()))?;
        registry.register(Box::new(metrics.lease_revived.clone()))?;
        registry.register(Box::new(metrics.config_invalid.clone()))?;
        registry.register(Box::new(metrics.watch_resyncs.clone()))?;
        registry.register(Box::new(metrics.etcd_healthy.clone()))?;
        Ok(metrics)
    }

    fn build() -> Result<Self, prometheus::Error> {
        let batch_buckets = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
        let latency_buckets = vec![
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        // Commits take milliseconds: finer steps where join latency's P99 is read from.
        let commit_buckets = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01,
            0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        Ok(Self {
            store_commits: IntCounter::new(
                "switchboard_store_commits_total",
                "Room snapshot writes and removals requested",
            )?,
            store_txns: IntCounterVec::new(
                Opts::new(
                    "switchboard_store_txns_total",
                    "etcd transactions issued by the group committer",
                ),
                &["outcome"],
            )?,
            store_batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "switchboard_store_batch_size",
                    "Room writes per etcd transaction",
                )
                .buckets(batch_buckets),
            )?,
            store_commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "switchboard_store_commit_seconds",
                    "Time from a commit request to its result",
                )
                .buckets(commit_buckets.clone()),
            )?,
            store_queue_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "switchboard_store_queue_seconds",
                    "Time a commit waits in the queue before its transaction is sent",
                )
                .buckets(commit_buckets.clone()),
            )?,
            store_txn_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "switchboard_store_txn_seconds",
                    "Time of one etcd transaction (round trip, raft and WAL fsync included)",
                )
                .buckets(commit_buckets),
            )?,
            store_fenced: IntCounter::new(
                "switchboard_store_fenced_total",
                "Commits refused because this node no longer holds the shard",
            )?,
            shard_restore_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "switchboard_shard_restore_seconds",
                    "Time to load and restore a shard taken over by this node",
                )
                .buckets(latency_buckets),
            )?,
            shards_restored: IntCounter::new(
                "switchboard_shards_restored_total",
                "Shards restored after being assigned to this node",
            )?,
            shards_released: IntCounter::new(
                "switchboard_shards_released_total",
                "Shards released after being taken away from this node",
            )?,
            lease_lost: IntCounter::new(
                "switchboard_lease_lost_total",
                "Node leases lost (fencing events)",
            )?,
            lease_revived: IntCounter::new(
                "switchboard_lease_revived_total",
                "Leases presumed lost that etcd still held when it answered again (kept)",
            )?,
            config_invalid: IntCounterVec::new(
                Opts::new(
                    "switchboard_config_invalid_total",
                    "Invalid config or rollout values rejected (last good value kept)",
                ),
                &["key"],
            )?,
            watch_resyncs: IntCounterVec::new(
                Opts::new(
                    "switchboard_etcd_watch_resyncs_total",
                    "etcd watches re-established with a full read",
                ),
                &["range"],
            )?,
            etcd_healthy: IntGauge::new(
                "switchboard_etcd_healthy",
                "1 while every cluster component reaches etcd",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_per_registry() {
        let registry = Registry::new();
        let metrics = ClusterMetrics::register(&registry).unwrap();
        metrics.store_commits.inc();
        metrics
            .store_txns
            .with_label_values(&[outcome::COMMITTED])
            .inc();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&"switchboard_store_commits_total".to_owned()));
        assert!(ClusterMetrics::register(&registry).is_err());
    }
}

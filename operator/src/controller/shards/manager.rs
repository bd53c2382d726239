//! The I/O shell of one cluster's shard manager: a task that owns the [`Core`], feeds it from
//! the etcd watch, the Pod and ProtocolRollout watches and the room counter, executes its
//! decisions (revoke, then batched conditional writes) and publishes RoomShard statuses,
//! Events and metrics.
//!
//! Inputs arrive on one bounded channel; the loop drains whatever is queued before deciding,
//! so a burst of watch events costs one plan. Decisions are re-made after every write round
//! (at most [`MAX_ROUNDS`] per wake-up) until nothing is left to do. A failed etcd request
//! backs off (100 ms doubling to 5 s) without losing state: decisions are recomputed from the
//! view, and the view is refreshed by the watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use switchboard_contract::keys::{KeyError, Keyspace};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::core::{Core, Decision, Notice, Settings};
use super::detector::Timing;
use super::detector_io;
use super::etcd_io::{self, Outcome};
use super::kube_io::{self, ShardEvent, StatusQueue};
use super::metrics::ShardMetrics;
use super::plan::ANY_POOL;
use super::state::Input;
use super::status;
use crate::crd::{ProtocolRollout, RoomShardStatus, SignalingCluster};
use crate::placement::{ShardId, pool_sizes};

/// Most decide → execute rounds per wake-up.
pub const MAX_ROUNDS: usize = 16;

/// Capacity of the input channel (watch tasks wait when it is full).
pub const INPUT_CAPACITY: usize = 256;

/// Most inputs folded in before deciding (all that is queued, up to this).
pub const MAX_BURST: usize = INPUT_CAPACITY;

/// Capacity of the Event queue (Events beyond it are dropped and logged).
pub const EVENT_CAPACITY: usize = 256;

/// How a manager runs.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Assignment writes per etcd transaction (1 = one transaction per shard).
    pub txn_batch: usize,
    /// Transactions in flight at once.
    pub txn_concurrency: usize,
    /// How often rooms are counted.
    pub rooms_interval: Duration,
    /// Timing knobs (shard count, pools and throttle come from the cluster and rollout).
    pub base: Settings,
    /// Receives a copy of every notice (benchmarks, tests); dropped when full.
    pub observer: Option<mpsc::Sender<Notice>>,
    /// The failure detector's timing; `None` turns it off (the lease and the Pod judge alone).
    pub detector: Option<Timing>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            txn_batch: etcd_io::MAX_TXN_OPS,
            txn_concurrency: 4,
            rooms_interval: Duration::from_secs(15),
            base: Settings::default(),
            observer: None,
            detector: Some(Timing::default()),
        }
    }
}

/// Why a manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The cluster object has no namespace or name.
    #[error("the SignalingCluster has no {0}")]
    MissingKey(&'static str),
    /// Its namespace or name cannot be an etcd key segment.
    #[error("invalid keyspace: {0}")]
    Keyspace(#[from] KeyError),
    /// Not called inside a tokio runtime.
    #[error("no tokio runtime to run the manager on")]
    NoRuntime,
}

/// The settings of a cluster's manager: shard count from the cluster, throttle and version
/// pools from its ProtocolRollout (if any), timing from `base`.
pub fn settings_for(
    cluster: &SignalingCluster,
    rollout: Option<&ProtocolRollout>,
    base: &Settings,
) -> Settings {
    let replicas = u32::try_from(cluster.spec.replicas).unwrap_or(0);
    let strategy = rollout.map(|r| r.spec.strategy.clone()).unwrap_or_default();
    // Pool sizes by the target weights: where the pools are heading. A pool above its size is
    // about to shrink (no balancing inside it); a pool that reached it opens for placement.
    let expected_pools: BTreeMap<String, u32> = match rollout {
        Some(rollout) => {
            // After a rollback or an abort the pools follow the applied (last stable)
            // weights; otherwise the target weights (the spec's, or a promote in force).
            let frozen_back = rollout.status.as_ref().filter(|s| {
                matches!(
                    s.phase,
                    crate::crd::RolloutPhase::RolledBack | crate::crd::RolloutPhase::Aborted
                ) && !s.versions.is_empty()
            });
            let targets = rollout.target_weights();
            let weights: Vec<u32> = targets
                .iter()
                .map(|(name, target)| {
                    let weight = match frozen_back {
                        Some(status) => status
                            .versions
                            .iter()
                            .find(|s| &s.name == name)
                            .map_or(0, |s| s.weight),
                        None => *target,
                    };
                    u32::try_from(weight.clamp(0, 100)).unwrap_or(0)
                })
                .collect();
            rollout
                .spec
                .versions
                .iter()
                .map(|v| v.name.clone())
                .zip(pool_sizes(replicas, &weights))
                .collect()
        }
        None => BTreeMap::from([(ANY_POOL.to_string(), replicas)]),
    };
    Settings {
        shard_count: u32::try_from(cluster.spec.shards).unwrap_or(0),
        max_moving: usize::try_from(strategy.max_shards_moving.max(1)).unwrap_or(1),
        expected_pools,
        expect_rollout: rollout.is_some(),
        ..base.clone()
    }
}

/// A running manager; dropping it stops the manager and every task it started.
#[derive(Debug)]
pub struct ManagerHandle {
    cluster: watch::Sender<Arc<SignalingCluster>>,
    task: JoinHandle<()>,
}

impl ManagerHandle {
    /// Hands the manager a newer version of its cluster (no-op when unchanged).
    pub fn update(&self, cluster: &SignalingCluster) {
        self.cluster.send_if_modified(|current| {
            let changed = **current != *cluster;
            if changed {
                *current = Arc::new(cluster.clone());
            }
            changed
        });
    }

    /// Whether the manager task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for ManagerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the manager of `cluster`. Without a Kubernetes client it works from etcd alone:
/// no Pod signals, no RoomShard statuses, no Events (benchmarks, etcd-only tests).
pub fn spawn(
    cluster: &SignalingCluster,
    etcd: Client,
    kube: Option<kube::Client>,
    metrics: ShardMetrics,
    options: ManagerOptions,
) -> Result<ManagerHandle, SpawnError> {
    let namespace = cluster
        .namespace()
        .ok_or(SpawnError::MissingKey("namespace"))?;
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or(SpawnError::MissingKey("name"))?;
    let keys = Keyspace::new(&namespace, &name)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;

    let (cluster_tx, cluster_rx) = watch::channel(Arc::new(cluster.clone()));
    let (inputs_tx, inputs) = mpsc::channel(INPUT_CAPACITY);
    let (rollout_tx, rollout_rx) = watch::channel(None);
    let (endpoints_tx, endpoints_rx) = watch::channel(BTreeMap::new());
    let mut tasks = JoinSet::new();
    if let Some(timing) = options.detector {
        let sinks = detector_io::Sinks {
            inputs: inputs_tx.clone(),
            metrics: metrics.clone(),
            labels: [namespace.clone(), name.clone()],
        };
        tasks.spawn_on(detector_io::run(endpoints_rx, timing, sinks), &runtime);
    }
    tasks.spawn_on(
        etcd_io::watch_loop(etcd.clone(), keys.clone(), inputs_tx.clone()),
        &runtime,
    );
    tasks.spawn_on(
        count_rooms_loop(
            etcd.clone(),
            keys.clone(),
            options.rooms_interval,
            inputs_tx.clone(),
        ),
        &runtime,
    );
    let mut sink = None;
    let mut events = None;
    if let Some(client) = kube {
        let (ns, n) = (namespace.clone(), name.clone());
        tasks.spawn_on(
            kube_io::watch_pods(client.clone(), ns.clone(), n.clone(), inputs_tx.clone()),
            &runtime,
        );
        tasks.spawn_on(
            kube_io::watch_rollout(client.clone(), ns.clone(), n.clone(), rollout_tx.clone()),
            &runtime,
        );
        tasks.spawn_on(
            kube_io::watch_move_requests(client.clone(), ns.clone(), n.clone(), inputs_tx.clone()),
            &runtime,
        );
        tasks.spawn_on(
            kube_io::load_statuses(client.clone(), ns.clone(), n.clone(), inputs_tx.clone()),
            &runtime,
        );
        let queue = Arc::new(StatusQueue::default());
        tasks.spawn_on(
            kube_io::write_statuses(client.clone(), ns.clone(), n.clone(), queue.clone()),
            &runtime,
        );
        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        tasks.spawn_on(kube_io::publish_events(client, ns, n, events_rx), &runtime);
        sink = Some(StatusSink {
            queue,
            sent: BTreeMap::new(),
            seeded: false,
        });
        events = Some(events_tx);
    }
    drop(inputs_tx);

    let settings = settings_for(cluster, None, &options.base);
    let shell = Shell {
        namespace,
        name,
        keys,
        core: Core::new(settings),
        etcd,
        metrics,
        options,
        sink,
        events,
        retry_at: None,
        failures: 0,
        rollout: None,
        _rollout_tx: rollout_tx,
        endpoints: endpoints_tx,
    };
    let task = runtime.spawn(shell.run(inputs, cluster_rx, rollout_rx, tasks));
    Ok(ManagerHandle {
        cluster: cluster_tx,
        task,
    })
}

async fn count_rooms_loop(
    client: Client,
    keys: Keyspace,
    interval: Duration,
    inputs: mpsc::Sender<Input>,
) {
    loop {
        match etcd_io::count_rooms(&client, &keys, 2_000).await {
            Ok(counts) => {
                if inputs.send(Input::Rooms(counts)).await.is_err() {
                    return;
                }
            }
            Err(error) => tracing::debug!(prefix = keys.prefix(), %error, "counting rooms failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

struct StatusSink {
    queue: Arc<StatusQueue>,
    sent: BTreeMap<ShardId, RoomShardStatus>,
    seeded: bool,
}

struct Shell {
    namespace: String,
    name: String,
    keys: Keyspace,
    core: Core,
    etcd: Client,
    metrics: ShardMetrics,
    options: ManagerOptions,
    sink: Option<StatusSink>,
    events: Option<mpsc::Sender<ShardEvent>>,
    retry_at: Option<Instant>,
    failures: u32,
    rollout: Option<ProtocolRollout>,
    // Keeps the rollout channel open when no Kubernetes watch feeds it.
    _rollout_tx: watch::Sender<Option<ProtocolRollout>>,
    // The registered nodes' liveness endpoints and leases, for the failure detector.
    endpoints: watch::Sender<BTreeMap<String, detector_io::Target>>,
}

fn wall() -> Time {
    Time(Timestamp::now())
}

impl Shell {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut cluster: watch::Receiver<Arc<SignalingCluster>>,
        mut rollout: watch::Receiver<Option<ProtocolRollout>>,
        _tasks: JoinSet<()>,
    ) {
        let initial = cluster.borrow_and_update().clone();
        self.update_settings(&initial);
        loop {
            let now = Instant::now();
            let wake = [self.core.wake_at(now), self.retry_at]
                .into_iter()
                .flatten()
                .min();
            let far = now + Duration::from_secs(3600);
            tokio::select! {
                input = inputs.recv() => {
                    let Some(input) = input else { return };
                    let mut burst = vec![input];
                    while burst.len() < MAX_BURST {
                        match inputs.try_recv() {
                            Ok(input) => burst.push(input),
                            Err(_) => break,
                        }
                    }
                    self.apply(burst);
                }
                changed = cluster.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = cluster.borrow_and_update().clone();
                    self.update_settings(&current);
                }
                changed = rollout.changed() => {
                    if changed.is_ok() {
                        self.rollout = rollout.borrow_and_update().clone();
                        let current = cluster.borrow().clone();
                        self.update_settings(&current);
                    }
                }
                () = tokio::time::sleep_until(wake.unwrap_or(far)) => {
                    self.core.tick(Instant::now());
                    if self.retry_at.is_some_and(|t| t <= Instant::now()) {
                        self.retry_at = None;
                    }
                }
            }
            if self.retry_at.is_none() {
                self.act().await;
            }
            self.publish();
            let endpoints = self.core.liveness_endpoints();
            self.endpoints.send_if_modified(|current| {
                let changed = *current != endpoints;
                if changed {
                    *current = endpoints;
                }
                changed
            });
        }
    }

    fn update_settings(&mut self, cluster: &SignalingCluster) {
        let settings = settings_for(cluster, self.rollout.as_ref(), &self.options.base);
        if settings != *self.core.settings() {
            self.core.set_settings(settings, Instant::now());
        }
    }

    fn apply(&mut self, burst: Vec<Input>) {
        for input in &burst {
            if let (Input::StoredStatuses(stored), Some(sink)) = (input, self.sink.as_mut()) {
                sink.sent = stored.clone();
                sink.seeded = true;
            }
        }
        let notices = self.core.apply_all(burst, Instant::now());
        self.notify(notices);
    }

    async fn act(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let decision = self.core.decide(Instant::now());
            if decision.is_empty() {
                self.failures = 0;
                return;
            }
            // One span per round: a failover shows as revoked leases and written assignments.
            let span = tracing::info_span!(
                "placement",
                cluster = %self.name,
                revoked = decision.revoke.len(),
                writes = decision.writes.len(),
                rejected = decision.rejections.len(),
            );
            if self.carry_out(decision).instrument(span).await {
                self.failures = self.failures.saturating_add(1);
                let delay = Duration::from_millis(100u64 << self.failures.min(6))
                    .min(Duration::from_secs(5));
                self.retry_at = Some(Instant::now() + delay);
                return;
            }
        }
    }

    /// Carries out one round's decision; true when a step failed (the round is retried).
    async fn carry_out(&mut self, decision: Decision) -> bool {
        let mut failed = false;
        if !decision.rejections.is_empty() {
            for r in &decision.rejections {
                tracing::info!(cluster = %self.name, shard = r.shard, id = %r.id, message = %r.message, "move request rejected");
                self.send_event(ShardEvent {
                    shard: r.shard,
                    warning: true,
                    reason: "MoveRejected",
                    note: r.message.clone(),
                });
            }
            self.core.rejected(decision.rejections, &wall());
        }
        let revokes = decision.revoke.iter().map(|(node, lease)| {
            let etcd = self.etcd.clone();
            async move { (node, *lease, etcd_io::revoke(&etcd, *lease).await) }
        });
        for (node, lease, result) in futures::future::join_all(revokes).await {
            match result {
                Ok(()) => {
                    tracing::info!(cluster = %self.name, %node, lease, "revoked the lease of a failed node");
                    self.core.revoked(lease, Instant::now());
                }
                Err(error) => {
                    tracing::warn!(cluster = %self.name, %node, %error, "revoking a lease failed");
                    failed = true;
                }
            }
        }
        if !failed && !decision.writes.is_empty() {
            let outcomes = etcd_io::commit(
                &self.etcd,
                &self.keys,
                decision.writes,
                self.options.txn_batch,
                self.options.txn_concurrency,
            )
            .await;
            for outcome in outcomes {
                match outcome {
                    Outcome::Written(writes, revision) => {
                        let notices = self.core.written(writes, revision, Instant::now(), &wall());
                        self.notify(notices);
                    }
                    Outcome::Conflict(writes, current) => {
                        tracing::debug!(cluster = %self.name, shards = writes.len(), "assignment changed under us; re-planning");
                        self.core.conflicted(current, Instant::now());
                    }
                    Outcome::Failed(writes, error) => {
                        tracing::warn!(cluster = %self.name, shards = writes.len(), %error, "assignment write failed");
                        failed = true;
                    }
                }
            }
        }
        for (pod, revision) in &decision.delete_acks {
            match etcd_io::delete_ack(&self.etcd, &self.keys, pod, *revision).await {
                Ok(()) => self.core.ack_deleted(pod, Instant::now()),
                Err(error) => {
                    tracing::debug!(cluster = %self.name, %pod, %error, "deleting an ack failed");
                    failed = true;
                }
            }
        }
        failed
    }

    fn notify(&self, notices: Vec<Notice>) {
        let labels = [self.namespace.as_str(), self.name.as_str()];
        for notice in notices {
            let event = match &notice {
                Notice::Failover {
                    shard,
                    from,
                    to,
                    reason,
                    detected,
                } => {
                    self.metrics
                        .failovers
                        .with_label_values(&[labels[0], labels[1], reason.as_str()])
                        .inc();
                    tracing::info!(cluster = %self.name, shard, %from, %to, reason = reason.as_str(), detected_ms = detected.as_millis(), "failed over");
                    ShardEvent {
                        shard: *shard,
                        warning: true,
                        reason: "Failover",
                        note: format!(
                            "{from} lost ({}); shard reassigned to {to} {} ms after the signal",
                            reason.as_str(),
                            detected.as_millis()
                        ),
                    }
                }
                Notice::Recovered { shard, to, total } => {
                    self.metrics
                        .failover_duration
                        .with_label_values(&labels)
                        .observe(total.as_secs_f64());
                    ShardEvent {
                        shard: *shard,
                        warning: false,
                        reason: "Recovered",
                        note: format!(
                            "{to} serves the shard {} ms after the failure signal",
                            total.as_millis()
                        ),
                    }
                }
                Notice::HandoffStarted {
                    shard,
                    from,
                    to,
                    kind,
                } => ShardEvent {
                    shard: *shard,
                    warning: false,
                    reason: "HandoffStarted",
                    note: format!("{} handoff from {from} to {to}", kind.as_str()),
                },
                Notice::HandoffFinished {
                    shard,
                    from,
                    to,
                    kind,
                    released,
                } => {
                    let outcome = if *released { "released" } else { "deadline" };
                    self.metrics
                        .handoffs
                        .with_label_values(&[labels[0], labels[1], kind.as_str(), outcome])
                        .inc();
                    ShardEvent {
                        shard: *shard,
                        warning: !released,
                        reason: "HandedOff",
                        note: if *released {
                            format!("{from} released the shard; {to} owns it now")
                        } else {
                            format!(
                                "{from} did not release the shard in time; {to} owns it now (fenced by epoch)"
                            )
                        },
                    }
                }
            };
            self.send_event(event);
            if let Some(observer) = &self.options.observer {
                let _ = observer.try_send(notice);
            }
        }
    }

    fn send_event(&self, event: ShardEvent) {
        if let Some(events) = &self.events
            && events.try_send(event).is_err()
        {
            tracing::debug!(cluster = %self.name, "event queue full; event dropped");
        }
    }

    fn publish(&mut self) {
        if !self.core.synced() {
            return;
        }
        let unassigned = i64::try_from(status::unassigned(&self.core)).unwrap_or(i64::MAX);
        self.metrics
            .unassigned
            .with_label_values(&[self.namespace.as_str(), self.name.as_str()])
            .set(unassigned);
        let Some(sink) = self.sink.as_mut().filter(|s| s.seeded) else {
            return;
        };
        for (shard, status) in status::statuses(&self.core, Instant::now()) {
            if sink.sent.get(&shard) != Some(&status) {
                sink.queue.push(shard, status.clone());
                sink.sent.insert(shard, status);
            }
        }
    }
}

//! I/O of the ProtocolRollout reconciler: read the cluster it refers to and the cluster's
//! etcd state, run the pure core ([`super::plan`]), write the `rollout` key (compared on its
//! mod revision), apply the status (server-side apply, only when changed), publish Events and
//! metrics.
//!
//! Requeue policy: 2 s while progressing (shards move and error rates are sampled), 30 s
//! otherwise; failures follow the controllers' one policy ([`crate::controller::policy`]).

/// Kind label of this controller's metrics.
pub const KIND: &str = "ProtocolRollout";

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use ::prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use switchboard_contract::keys::{
    Assignment, Key, Keyspace, NodeInfo, NodeState, RolloutValue, Value,
};

use super::plan::{self, Observed, PoolObs};
use super::prometheus;
use crate::controller::cluster::pools::version_pools;
use crate::controller::conditions::{self, Status};
use crate::controller::labels::FIELD_MANAGER;
use crate::controller::policy::{self, Failures};
use crate::controller::{Error, Result};
use crate::crd::{
    EtcdSpec, ProtocolRollout, ProtocolRolloutStatus, RequestOutcome, RolloutPhase,
    SignalingCluster,
};
use crate::etcd::{EtcdClients, EtcdError, bounded};
use crate::metrics::{CLUSTER_LABEL, Metrics};
use crate::placement::ShardId;

/// Rollout metrics.
#[derive(Debug, Clone)]
pub struct RolloutMetrics {
    /// `switchboard_operator_rollout_weight{namespace,signaling_cluster,version}`: applied weight.
    pub weight: IntGaugeVec,
    /// `switchboard_operator_version_error_rate{namespace,signaling_cluster,version}`: pool mean.
    pub error_rate: GaugeVec,
    /// `switchboard_operator_rollout_phase{namespace,signaling_cluster,rollout,phase}`: 1 for
    /// the rollout's phase, 0 for the others (alerts on RolledBack and Aborted).
    pub phase: IntGaugeVec,
}

/// Every phase, for [`RolloutMetrics::phase`].
const PHASES: [RolloutPhase; 5] = [
    RolloutPhase::Progressing,
    RolloutPhase::Paused,
    RolloutPhase::Completed,
    RolloutPhase::RolledBack,
    RolloutPhase::Aborted,
];

impl RolloutMetrics {
    /// Builds and registers the metrics (a failed registration is logged).
    pub fn register(registry: &Registry) -> Self {
        let labels = &["namespace", CLUSTER_LABEL, "version"];
        let weight = IntGaugeVec::new(
            Opts::new(
                "switchboard_operator_rollout_weight",
                "Weight (percent) applied to a version pool",
            ),
            labels,
        );
        let error_rate = GaugeVec::new(
            Opts::new(
                "switchboard_operator_version_error_rate",
                "Mean error rate reported by a version pool's nodes",
            ),
            labels,
        );
        let phase = IntGaugeVec::new(
            Opts::new(
                "switchboard_operator_rollout_phase",
                "1 for a rollout's current phase, 0 for the others",
            ),
            &["namespace", CLUSTER_LABEL, "rollout", "phase"],
        );
        let (Ok(weight), Ok(error_rate), Ok(phase)) = (weight, error_rate, phase) else {
            unreachable!("static metric definitions are valid")
        };
        for collector in [
            Box::new(weight.clone()) as Box<dyn ::prometheus::core::Collector>,
            Box::new(error_rate.clone()),
            Box::new(phase.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "rollout metric not registered");
            }
        }
        Self {
            weight,
            error_rate,
            phase,
        }
    }

    /// Records `current` as the phase of `rollout`.
    pub fn set_phase(&self, namespace: &str, cluster: &str, rollout: &str, current: RolloutPhase) {
        for phase in PHASES {
            let name = format!("{phase:?}");
            self.phase
                .with_label_values(&[namespace, cluster, rollout, name.as_str()])
                .set(i64::from(phase == current));
        }
    }
}

/// Shared state of the rollout controller.
pub struct Context {
    client: Client,
    etcd: EtcdClients,
    recorder: Recorder,
    metrics: RolloutMetrics,
    operator_metrics: Metrics,
    failures: Failures<ObjectRef<ProtocolRollout>>,
}

impl Context {
    /// A context publishing Events as `switchboard-operator`, counting reconciles and errors
    /// in `operator_metrics`.
    pub fn new(
        client: Client,
        etcd: EtcdClients,
        metrics: RolloutMetrics,
        operator_metrics: Metrics,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            etcd,
            metrics,
            operator_metrics,
            failures: Failures::default(),
        }
    }
}

fn now_time() -> Time {
    Time(Timestamp::now())
}

/// Reads nodes, assignments and the `rollout` key (value if it decodes, and its mod revision,
/// 0 when absent) at one revision.
async fn read_etcd(
    etcd: &etcd_client::Client,
    endpoints: &EtcdSpec,
    keys: &Keyspace,
) -> Result<(
    Vec<(String, NodeInfo)>,
    BTreeMap<ShardId, Assignment>,
    (Option<RolloutValue>, i64),
)> {
    let prefix = || Some(GetOptions::new().with_prefix());
    let txn = Txn::new().and_then(vec![
        TxnOp::get(keys.nodes_prefix(), prefix()),
        TxnOp::get(keys.assignments_prefix(), prefix()),
        TxnOp::get(keys.rollout(), None),
    ]);
    let response = bounded(
        endpoints,
        Duration::from_secs(5),
        "read the rollout state",
        etcd.kv_client().txn(txn),
    )
    .await?;
    let mut nodes: BTreeMap<String, NodeInfo> = BTreeMap::new();
    let mut assignments = BTreeMap::new();
    let mut rollout = (None, 0);
    for op in response.op_responses() {
        let TxnOpResponse::Get(get) = op else {
            continue;
        };
        for kv in get.kvs() {
            match keys.parse(kv.key()) {
                Ok(Key::Node(name)) => {
                    if let Ok(info) = NodeInfo::decode(kv.value()) {
                        nodes.insert(name, info);
                    }
                }
                Ok(Key::Assignment(shard)) => {
                    if let Ok(a) = Assignment::decode(kv.value()) {
                        assignments.insert(shard, a);
                    }
                }
                Ok(Key::Rollout) => {
                    // An unreadable value is replaced (compared on its revision).
                    let value = RolloutValue::decode(kv.value())
                        .inspect_err(
                            |error| tracing::warn!(%error, "stored rollout value does not decode"),
                        )
                        .ok();
                    rollout = (value, kv.mod_revision());
                }
                _ => {}
            }
        }
    }
    Ok((nodes.into_iter().collect(), assignments, rollout))
}

/// Builds the core's view from etcd data: a shard in a handoff counts as on its target's
/// version; pools are grouped by the version nodes register with.
pub fn observe(
    shard_count: u32,
    nodes: &[(String, NodeInfo)],
    assignments: &BTreeMap<ShardId, Assignment>,
    pool_sizes: BTreeMap<String, u32>,
    previous: Option<RolloutValue>,
) -> Observed {
    let version_of: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|(name, info)| (name.as_str(), info.version.as_str()))
        .collect();
    let current = (0..shard_count)
        .map(|shard| {
            let a = assignments.get(&shard)?;
            let moving_to = a
                .handoff_to
                .as_deref()
                .and_then(|t| version_of.get(t).copied());
            Some(moving_to.unwrap_or(&a.version).to_string())
        })
        .collect();
    let mut grouped: BTreeMap<String, (u32, Vec<f64>)> = BTreeMap::new();
    for (_, info) in nodes {
        let entry = grouped.entry(info.version.clone()).or_default();
        if info.state == NodeState::Ready {
            entry.0 += 1;
        }
        entry.1.push(info.error_rate);
    }
    let pools = grouped
        .into_iter()
        .map(|(version, (ready, rates))| {
            let mean = (!rates.is_empty())
                .then(|| rates.iter().sum::<f64>() / rates.len() as f64)
                // Four decimals: enough to read, and the status does not churn on noise.
                .map(|r| (r * 10_000.0).round() / 10_000.0);
            (
                version,
                PoolObs {
                    ready,
                    error_rate: mean,
                },
            )
        })
        .collect();
    Observed {
        shard_count,
        current,
        pools,
        pool_sizes,
        previous,
        external_rates: None,
    }
}

/// One reconcile of one rollout.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<ProtocolRollout>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let rollout = match &guard.0 {
        Ok(rollout) => rollout,
        Err(invalid) => {
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error, "unreadable ProtocolRollout");
            return Ok(Action::await_change());
        }
    };
    let metrics = &ctx.operator_metrics;
    metrics.reconciliations.with_label_values(&[KIND]).inc();
    let timer = metrics
        .reconcile_duration
        .with_label_values(&[KIND])
        .start_timer();
    let span = tracing::info_span!(
        "rollout",
        namespace = rollout.metadata.namespace.as_deref().unwrap_or_default(),
        rollout = rollout.metadata.name.as_deref().unwrap_or_default(),
    );
    let result = reconcile_one(rollout, &ctx).instrument(span).await;
    timer.observe_duration();
    if result.is_ok() {
        ctx.failures.reset(&ObjectRef::from_obj(rollout));
    }
    result
}

async fn reconcile_one(rollout: &ProtocolRollout, ctx: &Context) -> Result<Action> {
    let namespace = rollout
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = rollout.name_any();
    let wall = now_time();
    let clusters: Api<SignalingCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(cluster) = clusters.get_opt(&rollout.spec.cluster_ref).await? else {
        let status = waiting_status(
            rollout,
            "ClusterNotFound",
            format!(
                "SignalingCluster {:?} does not exist",
                rollout.spec.cluster_ref
            ),
            &wall,
        );
        write_status(ctx, rollout, status).await?;
        return Ok(Action::requeue(plan::IDLE_REQUEUE));
    };
    if let Some(older) = older_rollout(ctx, rollout, &namespace).await? {
        let status = waiting_status(
            rollout,
            "Superseded",
            format!("ProtocolRollout {older:?} already drives this cluster; this one is ignored"),
            &wall,
        );
        write_status(ctx, rollout, status).await?;
        return Ok(Action::requeue(plan::IDLE_REQUEUE));
    }

    let pools = version_pools(&cluster, Some(rollout))?;
    let pool_sizes: BTreeMap<String, u32> =
        pools.into_iter().map(|p| (p.name, p.replicas)).collect();
    let shard_count = u32::try_from(cluster.spec.shards)
        .map_err(|_| Error::InvalidSpec(format!("shards {} is negative", cluster.spec.shards)))?;
    let keys = Keyspace::new(&namespace, &cluster.name_any())
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let etcd = ctx.etcd.for_cluster(&cluster).await?;
    let (nodes, assignments, stored) = read_etcd(&etcd, &cluster.spec.etcd, &keys).await?;
    let (previous, previous_revision) = stored;
    let mut observed = observe(shard_count, &nodes, &assignments, pool_sizes, previous);
    if let Some(query) = rollout
        .spec
        .strategy
        .rollback
        .as_ref()
        .and_then(|p| p.prometheus.as_ref())
    {
        let versions: Vec<String> = rollout
            .spec
            .versions
            .iter()
            .map(|v| v.name.clone())
            .collect();
        observed.external_rates = Some(
            prometheus::rates(query, &versions)
                .await
                .map_err(|e| e.to_string()),
        );
    }

    let outcome = plan::reconcile(rollout, &observed, &wall)?;
    if let Some(answer) = &outcome.request {
        let (type_, reason) = match answer.outcome {
            RequestOutcome::Accepted => (EventType::Normal, "RequestAccepted"),
            RequestOutcome::Rejected => (EventType::Warning, "RequestRejected"),
        };
        tracing::info!(%namespace, rollout = %name, id = %answer.id, action = %answer.action, outcome = ?answer.outcome, message = %answer.message, "rollout request answered");
        let note = format!(
            "{} (request {}): {}",
            answer.action, answer.id, answer.message
        );
        publish(ctx, rollout, type_, reason, note).await;
    }

    let mut requeue = outcome.requeue;
    if let Some(value) = &outcome.value {
        let key = keys.rollout();
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                previous_revision,
            )])
            .and_then(vec![TxnOp::put(key, value.encode(), None)]);
        let response = etcd
            .kv_client()
            .txn(txn)
            .await
            .map_err(|source| EtcdError::Request {
                endpoints: cluster.spec.etcd.endpoints.join(","),
                source,
            })?;
        if response.succeeded() {
            tracing::info!(%namespace, rollout = %name, revision = value.revision, "rollout key written");
        } else {
            // Written by someone else since we read it: look again soon.
            requeue = Duration::from_secs(1);
        }
    }

    let cluster_name = cluster.name_any();
    for version in &outcome.status.versions {
        let labels = [
            namespace.as_str(),
            cluster_name.as_str(),
            version.name.as_str(),
        ];
        ctx.metrics
            .weight
            .with_label_values(&labels)
            .set(i64::from(version.weight));
        if let Some(rate) = version.error_rate {
            ctx.metrics.error_rate.with_label_values(&labels).set(rate);
        }
    }

    ctx.metrics
        .set_phase(&namespace, &cluster_name, &name, outcome.status.phase);
    let previous_phase = rollout.status.as_ref().map(|s| s.phase);
    if let Some(breach) = &outcome.rollback {
        let note = format!(
            "error rate of {} reached {:.4}; weights returned to {}",
            breach.version,
            breach.rate,
            outcome.status.weights.clone().unwrap_or_default()
        );
        publish(ctx, rollout, EventType::Warning, "RolledBack", note).await;
    } else if outcome.status.phase != RolloutPhase::RolledBack
        && previous_phase != Some(outcome.status.phase)
    {
        let note = format!(
            "{:?}: weights {}",
            outcome.status.phase,
            outcome.status.weights.clone().unwrap_or_default()
        );
        publish(ctx, rollout, EventType::Normal, "PhaseChanged", note).await;
    }
    if rollout.status.as_ref() != Some(&outcome.status) {
        write_status(ctx, rollout, outcome.status).await?;
    }
    Ok(Action::requeue(requeue))
}

/// The name of an older rollout that refers to the same cluster, if there is one.
async fn older_rollout(
    ctx: &Context,
    rollout: &ProtocolRollout,
    namespace: &str,
) -> Result<Option<String>> {
    let api: Api<DeserializeGuard<ProtocolRollout>> =
        Api::namespaced(ctx.client.clone(), namespace);
    let rank = |r: &ProtocolRollout| (r.metadata.creation_timestamp.clone(), r.name_any());
    let mine = rank(rollout);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|guard| guard.0.ok())
        .filter(|r| r.spec.cluster_ref == rollout.spec.cluster_ref && rank(r) < mine)
        .map(|r| r.name_any())
        .min())
}

/// The previous status with the Progressing condition saying why nothing happens.
fn waiting_status(
    rollout: &ProtocolRollout,
    reason: &str,
    message: String,
    wall: &Time,
) -> ProtocolRolloutStatus {
    let mut status = rollout.status.clone().unwrap_or_default();
    conditions::set(
        &mut status.conditions,
        plan::PROGRESSING,
        Status::False,
        reason,
        message,
        rollout.metadata.generation,
        wall,
    );
    status.observed_generation = rollout.metadata.generation;
    status
}

async fn write_status(
    ctx: &Context,
    rollout: &ProtocolRollout,
    status: ProtocolRolloutStatus,
) -> Result<()> {
    if rollout.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let namespace = rollout
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let api: Api<ProtocolRollout> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": ProtocolRollout::api_version(&()),
        "kind": ProtocolRollout::kind(&()),
        "status": status,
    });
    api.patch_status(
        &rollout.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    rollout: &ProtocolRollout,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let reference: ObjectReference = rollout.object_ref(&());
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Rollout".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::debug!(%error, "event not published");
    }
}

/// What to do after a failed reconcile: the controllers' one policy
/// ([`crate::controller::policy`]).
pub fn error_policy(
    guard: Arc<DeserializeGuard<ProtocolRollout>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let Ok(rollout) = &guard.0 else {
        return Action::await_change();
    };
    let name = format!(
        "{}/{}",
        rollout.namespace().unwrap_or_default(),
        rollout.name_any()
    );
    policy::on_error(
        KIND,
        &name,
        ObjectRef::from_obj(rollout),
        error,
        &ctx.operator_metrics,
        &ctx.failures,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_contract::keys::Load;

    fn info(version: &str, state: NodeState, error_rate: f64) -> NodeInfo {
        NodeInfo {
            url: "ws://x".into(),
            version: version.into(),
            protocols: vec![],
            state,
            load: Load::default(),
            error_rate,
            started_at_ms: 0,
            liveness: None,
        }
    }

    #[test]
    fn observation_follows_handoffs_and_averages_pools() {
        let nodes = vec![
            ("a".to_string(), info("v1", NodeState::Ready, 0.1)),
            ("b".to_string(), info("v2", NodeState::Ready, 0.2)),
            ("c".to_string(), info("v2", NodeState::Draining, 0.0)),
        ];
        let mut moving = Assignment {
            node: "a".into(),
            epoch: 1,
            version: "v1".into(),
            handoff_to: Some("b".into()),
        };
        let assignments = BTreeMap::from([(0, moving.clone()), {
            moving.handoff_to = None;
            (1, moving)
        }]);
        let obs = observe(3, &nodes, &assignments, BTreeMap::new(), None);
        assert_eq!(
            obs.current,
            vec![Some("v2".to_string()), Some("v1".to_string()), None]
        );
        assert_eq!(obs.pools["v2"].ready, 1);
        assert_eq!(obs.pools["v2"].error_rate, Some(0.1));
        assert_eq!(obs.pools["v1"].error_rate, Some(0.1));
    }
}

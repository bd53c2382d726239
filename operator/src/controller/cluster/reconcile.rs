//! I/O of the SignalingCluster reconciler: read the rollout and pods, build the desired
//! children (pure, [`super::desired`]), server-side apply them under one field manager, create
//! and delete pods, publish Events, and write the status only when it changed.
//!
//! Requeue policy: success → 5 minutes as a backstop (owned objects trigger reconciles on
//! change), 15 seconds while pods are still changing; invalid spec → wait for an edit (the
//! Degraded condition says why); transient error → per-object exponential backoff from 2 s to
//! 5 minutes, reset on success.
//!
//! Status writes do not storm: an unchanged state yields an equal status (conditions keep
//! their transition times), so the reconcile a status write triggers writes nothing.
//!
//! The etcd half ([`super::etcd_sync`]) runs after the Kubernetes children: the node config,
//! membership and acks, the shard manager. etcd watches of `nodes/` and `acks/`
//! ([`super::triggers`]) request reconciles when membership or acks change; while a config
//! revision is not applied the cluster is also re-checked on a timer.
//!
//! The finalizer `switchboard.dev/cleanup`: a deleted cluster's reconcile stops the cluster's
//! watch and shard manager, deletes its pods and requeues until they are gone; only then the
//! finalizer's cleanup deletes its RoomShards and runs [`ClusterCleanup`] (the etcd prefix,
//! [`super::store::EtcdCleanup`]) before the cluster is deleted; Kubernetes garbage-collects the other children through their owner references. Uninstall order: delete the SignalingClusters, wait for them to go, then stop
//! the operator, then remove the CRDs.
//!
//! Every log line of a reconcile carries the cluster's `namespace` and name (`cluster`) from
//! the span `reconcile`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::access::{self, sync::AccessReport, sync::TlsState};
pub use super::context::{CleanupOutcome, ClusterCleanup, Context, NoCleanup, Services};
use super::etcd_sync;
use super::pods::with_node_env;
use super::status::{self, Failure, Observed};
use super::{Desired, desired};
use crate::controller::conditions::camel_case;
use crate::controller::labels::{FIELD_MANAGER, FINALIZER, selector_labels, selector_string};
use crate::controller::policy;
use crate::controller::{Error, Result, WatchScope};
use crate::crd::{ProtocolRollout, RoomShard, ShardPhase, SignalingCluster};

/// Kind label of this controller's metrics.
pub const KIND: &str = "SignalingCluster";

/// Runs the controller over the namespaces of `scope` until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    scope: WatchScope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let triggers = ctx
        .trigger_receiver
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let managed =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={FIELD_MANAGER}"));
    let controller = Controller::new(
        scope.api::<DeserializeGuard<SignalingCluster>>(client.clone()),
        watcher::Config::default(),
    );
    // A rotated or deleted client certificate Secret (or our copy of it) is noticed at once;
    // only metadata is watched, so Secret contents never stream through the operator.
    let clusters = controller.store();
    let secrets = watcher(
        scope.api::<PartialObjectMeta<Secret>>(client.clone()),
        watcher::Config::default(),
    )
    .touched_objects()
    .predicate_filter(predicates::resource_version, Default::default());
    let controller = controller
        .owns(scope.api::<Pod>(client.clone()), managed.clone())
        .owns(scope.api::<Service>(client.clone()), managed.clone())
        .owns(scope.api::<Ingress>(client.clone()), managed.clone())
        .owns(
            scope.api::<PodDisruptionBudget>(client.clone()),
            managed.clone(),
        )
        .owns(scope.api::<RoomShard>(client.clone()), managed)
        .watches(
            scope.api::<DeserializeGuard<ProtocolRollout>>(client),
            watcher::Config::default(),
            rollout_target,
        )
        .watches_stream(secrets, move |secret| {
            secret_users(&clusters.state(), &secret)
        });
    let controller = match triggers {
        Some(triggers) => controller.reconcile_on(triggers),
        None => controller,
    };
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile failed"),
            }
        })
        .await;
    ctx.triggers.stop_all();
}

/// The clusters whose client certificate is Secret `secret` (or its operator copy).
fn secret_users(
    clusters: &[Arc<DeserializeGuard<SignalingCluster>>],
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DeserializeGuard<SignalingCluster>>> {
    let (Some(namespace), name) = (secret.namespace(), secret.name_any()) else {
        return Vec::new();
    };
    clusters
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|cluster| cluster.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|cluster| {
            let tls = cluster
                .spec
                .client_access
                .as_ref()
                .and_then(|a| a.tls.as_ref());
            tls.is_some_and(|t| t.secret_name == name)
                || access::tls_copy_name(&cluster.name_any()) == name
        })
        .map(|cluster| ObjectRef::new(&cluster.name_any()).within(&namespace))
        .collect()
}

/// A rollout triggers the cluster it refers to (a rollout that does not parse triggers none).
fn rollout_target(
    rollout: DeserializeGuard<ProtocolRollout>,
) -> Option<ObjectRef<DeserializeGuard<SignalingCluster>>> {
    let rollout = rollout.0.ok()?;
    let namespace = rollout.namespace()?;
    Some(ObjectRef::new(&rollout.spec.cluster_ref).within(&namespace))
}

/// One reconcile of one cluster.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<SignalingCluster>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let cluster = match &guard.0 {
        Ok(cluster) => Arc::new(cluster.clone()),
        Err(invalid) => {
            // A cluster that does not parse must not stop the controller: report and wait.
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error, "unreadable SignalingCluster");
            return Ok(Action::await_change());
        }
    };
    let key = ObjectRef::from_obj(&*cluster);
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    // `cluster`, not `name`: the JSON log format already uses `name` for the span's name.
    let span = tracing::info_span!("reconcile", %namespace, cluster = %cluster.name_any());
    let metrics = &ctx.services.metrics;
    metrics.reconciliations.with_label_values(&[KIND]).inc();
    let timer = metrics
        .reconcile_duration
        .with_label_values(&[KIND])
        .start_timer();
    let api: Api<SignalingCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = async {
        // The finalizer's cleanup must not start before the pods are gone, and a cleanup that
        // returns at all releases the object: wait for them here, outside it.
        if is_being_deleted(&cluster) {
            let remaining = stop_writers(&cluster, &ctx).await?;
            if remaining > 0 {
                tracing::info!(remaining, "waiting for the cluster's pods to terminate");
                return Ok(Action::requeue(POD_RECHECK));
            }
        }
        finalizer(&api, FINALIZER, Arc::clone(&cluster), |event| async {
            match event {
                Finalizer::Apply(cluster) => apply(&cluster, &ctx).await,
                Finalizer::Cleanup(cluster) => cleanup(&cluster, &ctx).await,
            }
        })
        .await
        .map_err(|error| Error::Finalizer(Box::new(error)))
    }
    .instrument(span)
    .await;
    timer.observe_duration();
    let action = action?;
    ctx.failures.reset(&key);
    Ok(action)
}

/// What to do after a failed reconcile: the controllers' one policy
/// ([`crate::controller::policy`]).
pub fn error_policy(
    guard: Arc<DeserializeGuard<SignalingCluster>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let Ok(cluster) = &guard.0 else {
        return Action::await_change();
    };
    let name = format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    );
    policy::on_error(
        KIND,
        &name,
        ObjectRef::from_obj(cluster),
        error,
        &ctx.services.metrics,
        &ctx.failures,
    )
}

fn now() -> Time {
    Time(Timestamp::now())
}

async fn apply(cluster: &SignalingCluster, ctx: &Context) -> Result<Action> {
    match apply_children(cluster, ctx).await {
        Ok(action) => Ok(action),
        Err(error) => {
            let refused = admission_refusal(&error);
            let failure = Failure {
                reason: match (&refused, &error) {
                    (Some(_), _) => "Forbidden".to_string(),
                    (None, Error::ClientAccess(access)) => access.reason().to_string(),
                    (None, _) => camel_case(error.metric_label()),
                },
                message: error.to_string(),
                client_access: matches!(error, Error::ClientAccess(_)),
            };
            // Best effort: the error itself is what the caller acts on.
            if let Err(status_error) = write_status(
                cluster,
                ctx,
                status::with_failure(cluster, &failure, &now()),
            )
            .await
            {
                tracing::debug!(%status_error, "could not record the failure in status");
            }
            // A refusal (Pod Security admission, a policy, RBAC) needs someone to act: say it
            // where `kubectl describe` shows it, not only in the status.
            if let Some(message) = refused {
                ctx.publish(
                    cluster,
                    EventType::Warning,
                    "Forbidden",
                    "Apply",
                    message,
                    None,
                )
                .await;
            }
            if let Error::ClientAccess(access) = &error {
                ctx.publish(
                    cluster,
                    EventType::Warning,
                    access.reason(),
                    "Validate",
                    error.to_string(),
                    None,
                )
                .await;
            }
            if matches!(error, Error::InvalidSpec(_)) {
                ctx.publish(
                    cluster,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    error.to_string(),
                    None,
                )
                .await;
            }
            Err(error)
        }
    }
}

/// The apiserver's message when it refused a write with 403 Forbidden (admission or RBAC).
fn admission_refusal(error: &Error) -> Option<String> {
    match error {
        Error::Kube(kube::Error::Api(status)) if status.code == 403 => Some(status.message.clone()),
        _ => None,
    }
}

async fn apply_children(cluster: &SignalingCluster, ctx: &Context) -> Result<Action> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("name"))?;
    let selector = ListParams::default().labels(&selector_string(&selector_labels(&name)));

    let rollout = find_rollout(&ctx.client, &namespace, &name).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = pods.list(&selector).await?.items;
    let cluster = &with_node_env(cluster, &ctx.services.node_env);
    let mut plan: Desired = desired(cluster, rollout.as_ref(), &existing, Timestamp::now())?;

    let params = PatchParams::apply(FIELD_MANAGER).force();
    apply_one(
        &Api::namespaced(ctx.client.clone(), &namespace),
        &plan.client_service,
        &params,
    )
    .await?;
    apply_one(
        &Api::namespaced(ctx.client.clone(), &namespace),
        &plan.headless_service,
        &params,
    )
    .await?;
    sync_budgets(
        ctx,
        &namespace,
        &selector,
        &plan.disruption_budgets,
        &params,
    )
    .await?;

    let access = match &plan.access {
        Some(access) => Some(
            access::sync::sync(
                &ctx.client,
                cluster,
                access,
                &existing,
                &mut plan.pods.create,
            )
            .await?,
        ),
        None => {
            if access::sync::had_client_access(cluster) {
                access::sync::remove(&ctx.client, cluster).await?;
            }
            None
        }
    };
    if let Some(report) = &access {
        publish_access_events(cluster, ctx, report).await;
    }

    let shards_api: Api<RoomShard> = Api::namespaced(ctx.client.clone(), &namespace);
    let shards: BTreeMap<String, RoomShard> = shards_api
        .list(&selector)
        .await?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    for shard in &plan.room_shards {
        let present = shards.get(&shard.name_any());
        if present.is_none_or(|p| {
            p.spec != shard.spec || p.owner_references() != shard.owner_references()
        }) {
            apply_one(&shards_api, shard, &params).await?;
        }
    }

    for pod in &plan.pods.create {
        apply_one(&pods, pod, &params).await?;
        let note = format!("created pod {}", pod.name_any());
        ctx.publish(
            cluster,
            EventType::Normal,
            "CreatedPod",
            "Scale",
            note,
            Some(pod_ref(&namespace, &pod.name_any())),
        )
        .await;
    }
    for pod in &plan.pods.delete {
        match pods.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }
        let note = format!("deleted pod {pod} (it drains first)");
        ctx.publish(
            cluster,
            EventType::Normal,
            "DeletedPod",
            "Scale",
            note,
            Some(pod_ref(&namespace, pod)),
        )
        .await;
    }

    let etcd = etcd_sync::sync(cluster, &existing, ctx).await?;
    let observed = Observed {
        pools: plan.pods.pools.clone(),
        ready_nodes: etcd.progress.ready,
        shards_assigned: shards.values().filter(|s| is_assigned(s)).count() as u32,
        handoffs_in_flight: shards
            .values()
            .filter(|s| phase(s) == ShardPhase::HandingOff)
            .count() as u32,
        config_revision: Some(i64::try_from(etcd.config_revision).unwrap_or(i64::MAX)),
        config_acked: etcd.progress.acked,
        config_lagging: etcd.progress.lagging.clone(),
        failure: None,
        client_access: access.as_ref().map(status::AccessObserved::from),
    };
    let new_status = status::cluster_status(cluster, &observed, &now());
    if cluster.status.as_ref() != Some(&new_status) {
        write_status(cluster, ctx, new_status).await?;
    }
    let pods_recheck = if plan.pods.is_settled() {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(15)
    };
    let recheck = [etcd.recheck, plan.pods.recheck]
        .into_iter()
        .flatten()
        .fold(pods_recheck, Duration::min);
    Ok(Action::requeue(recheck))
}

/// Events for what client access found: a Warning when the certificate is refused (once per
/// reason, when the condition changes to it), Normal when a new certificate is in use.
async fn publish_access_events(cluster: &SignalingCluster, ctx: &Context, report: &AccessReport) {
    match &report.tls {
        Some(TlsState::Updated) => {
            let note = format!(
                "certificate copied to {} for the nodes and Ingress objects",
                access::tls_copy_name(&cluster.name_any())
            );
            ctx.publish(
                cluster,
                EventType::Normal,
                "TLSCertificateUpdated",
                "Certificate",
                note,
                None,
            )
            .await;
        }
        Some(TlsState::Refused(problem)) => {
            let previous = cluster
                .status
                .as_ref()
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == access::CLIENT_ACCESS_READY)
                })
                .map(|c| (c.reason.clone(), c.message.clone()));
            let now = (problem.reason().to_string(), problem.to_string());
            if previous.as_ref() != Some(&now) {
                ctx.publish(
                    cluster,
                    EventType::Warning,
                    problem.reason(),
                    "Certificate",
                    problem.to_string(),
                    None,
                )
                .await;
            }
        }
        Some(TlsState::Current) | None => {}
    }
}

/// Applies the pools' budgets and deletes the cluster's other ones (retired pools, the
/// toggle turned off, the single `<cluster>` budget of earlier releases).
async fn sync_budgets(
    ctx: &Context,
    namespace: &str,
    selector: &ListParams,
    desired: &[PodDisruptionBudget],
    params: &PatchParams,
) -> Result<()> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), namespace);
    for budget in desired {
        apply_one(&api, budget, params).await?;
    }
    for present in api.list(selector).await?.items {
        let name = present.name_any();
        if desired
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some(&name))
        {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(budget = %name, "deleted a PodDisruptionBudget no pool needs"),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

fn phase(shard: &RoomShard) -> ShardPhase {
    shard.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn is_assigned(shard: &RoomShard) -> bool {
    let owned = shard.status.as_ref().is_some_and(|s| s.node.is_some());
    owned && matches!(phase(shard), ShardPhase::Assigned | ShardPhase::HandingOff)
}

/// The rollout of cluster `name`: the oldest one whose `clusterRef` names it (later ones are
/// ignored, and say so in the log).
async fn find_rollout(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ProtocolRollout>> {
    let api: Api<DeserializeGuard<ProtocolRollout>> = Api::namespaced(client.clone(), namespace);
    let mut matching: Vec<ProtocolRollout> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|guard| guard.0.ok())
        .filter(|r| r.spec.cluster_ref == name)
        .collect();
    matching.sort_by(|a, b| {
        let key = |r: &ProtocolRollout| (r.metadata.creation_timestamp.clone(), r.name_any());
        key(a).cmp(&key(b))
    });
    if matching.len() > 1 {
        let ignored: Vec<String> = matching[1..].iter().map(ResourceExt::name_any).collect();
        tracing::warn!(
            cluster = name,
            ?ignored,
            "several ProtocolRollouts refer to one cluster; using the oldest"
        );
    }
    Ok(matching.into_iter().next())
}

async fn apply_one<K>(api: &Api<K>, object: &K, params: &PatchParams) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("name"))?;
    api.patch(&name, params, &Patch::Apply(object)).await?;
    Ok(())
}

async fn write_status(
    cluster: &SignalingCluster,
    ctx: &Context,
    status: crate::crd::SignalingClusterStatus,
) -> Result<()> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let api: Api<SignalingCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": SignalingCluster::api_version(&()),
        "kind": SignalingCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    ctx.services
        .metrics
        .status_writes
        .with_label_values(&[KIND])
        .inc();
    Ok(())
}

/// Whether `cluster` is being deleted and still carries this operator's finalizer.
fn is_being_deleted(cluster: &SignalingCluster) -> bool {
    cluster.meta().deletion_timestamp.is_some()
        && cluster.finalizers().iter().any(|f| f == FINALIZER)
}

/// Stops everything that writes the cluster's etcd prefix before the finalizer removes it:
/// the member watch, the shard manager and the nodes themselves. Pods go first (promptly, not
/// ~40 s later through garbage collection), since a node still running would re-register in
/// the prefix being removed. Returns how many pods are still terminating.
async fn stop_writers(cluster: &SignalingCluster, ctx: &Context) -> Result<usize> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = cluster.name_any();
    ctx.triggers.stop(&ObjectRef::new(&name).within(&namespace));
    ctx.services.shards.stop(&namespace, &name);
    delete_pods(ctx, &namespace, &name).await
}

/// The finalizer's cleanup, once [`stop_writers`] saw the pods gone.
async fn cleanup(cluster: &SignalingCluster, ctx: &Context) -> Result<Action> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let name = cluster.name_any();
    delete_room_shards(ctx, &namespace, &name).await?;
    let outcome = ctx.services.cleanup.cleanup(cluster).await?;
    ctx.services.metrics.forget_cluster(&namespace, &name);
    ctx.forget(&ObjectRef::from_obj(cluster));
    let (type_, reason, note) = match outcome {
        CleanupOutcome::Removed { prefix, keys } => {
            ctx.services
                .metrics
                .etcd_writes
                .with_label_values(&["cleanup"])
                .inc();
            tracing::info!(%prefix, keys, "removed the cluster's etcd state");
            (
                EventType::Normal,
                "CleanedUp",
                format!("removed etcd prefix {prefix} ({keys} keys)"),
            )
        }
        CleanupOutcome::Skipped(why) => {
            tracing::warn!(reason = %why, "etcd cleanup skipped");
            (EventType::Warning, "CleanupSkipped", why)
        }
    };
    ctx.publish(cluster, type_, reason, "Delete", note, None)
        .await;
    Ok(Action::await_change())
}

/// How long a reconcile of a deleted cluster waits inline for its pods before it requeues.
const POD_DELETION_WAIT: Duration = Duration::from_secs(10);

/// When to look again while pods terminate (every pod deletion also triggers a reconcile).
const POD_RECHECK: Duration = Duration::from_secs(2);

/// Deletes the cluster's pods (with their grace period: nodes drain on SIGTERM) and waits up
/// to [`POD_DELETION_WAIT`] for them to be gone; returns how many remain.
async fn delete_pods(ctx: &Context, namespace: &str, cluster: &str) -> Result<usize> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = ListParams::default().labels(&selector_string(&selector_labels(cluster)));
    let deadline = tokio::time::Instant::now() + POD_DELETION_WAIT;
    loop {
        let remaining = pods.list(&selector).await?.items;
        if remaining.is_empty() {
            return Ok(0);
        }
        for pod in remaining
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let pod_name = pod.name_any();
            match pods.delete(&pod_name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(pod = %pod_name, "deleted pod of the deleted cluster"),
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(error) => return Err(error.into()),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(remaining.len());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// RoomShard deletions in flight at once in the finalizer.
const SHARD_DELETE_CONCURRENCY: usize = 16;

/// Deletes the cluster's RoomShards (they carry no finalizer, so they go at once) instead of
/// leaving them to the garbage collector, which takes tens of seconds.
async fn delete_room_shards(ctx: &Context, namespace: &str, cluster: &str) -> Result<()> {
    let api: Api<RoomShard> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = ListParams::default().labels(&selector_string(&selector_labels(cluster)));
    let names: Vec<String> = api
        .list(&selector)
        .await?
        .items
        .iter()
        .filter(|s| s.spec.cluster == cluster)
        .map(ResourceExt::name_any)
        .collect();
    let results: Vec<Result<(), kube::Error>> = futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
                    Err(error) => Err(error),
                }
            }
        })
        .buffer_unordered(SHARD_DELETE_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}

fn pod_ref(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollouts_trigger_their_cluster() {
        let rollout = crate::controller::cluster::testing::rollout(&[("v1", 100)]);
        let target = rollout_target(DeserializeGuard(Ok(rollout))).unwrap();
        assert_eq!(target.name, "demo");
        assert_eq!(target.namespace.as_deref(), Some("live"));
    }

    #[test]
    fn assignment_counts_need_an_owner() {
        let mut shard = crate::controller::cluster::shards::room_shards(
            &crate::controller::cluster::testing::cluster(1, 1),
        )
        .unwrap()
        .remove(0);
        assert!(!is_assigned(&shard));
        shard.status = Some(crate::crd::RoomShardStatus {
            node: Some("demo-default-0".into()),
            phase: ShardPhase::Assigned,
            ..Default::default()
        });
        assert!(is_assigned(&shard));
    }
}

//! Kubernetes side of the shard manager: the cluster's Pods, ProtocolRollout and RoomShard move
//! requests (watches), the
//! stored RoomShard statuses (read once), status writes (server-side apply of the status
//! subresource, coalesced per shard, bounded concurrency) and Events on RoomShards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, mpsc, watch};

use super::health::PodObs;
use super::state::{Input, MoveRequest};
use crate::controller::cluster::shards::shard_name;
use crate::controller::labels::{CLUSTER, DRAIN, FIELD_MANAGER, MOVE_REQUESTED, MOVE_TO};
use crate::crd::{GROUP, ProtocolRollout, RoomShard, RoomShardStatus, VERSION};
use crate::placement::ShardId;

/// What the Pod watch reports about `pod`.
pub fn pod_obs(pod: &Pod) -> PodObs {
    let status = pod.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == type_))
            .map(|c| c.status == "True")
    };
    let ready = condition("Ready").unwrap_or(false);
    let containers = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let finished = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    let exited = finished
        || containers
            .iter()
            .any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
    PodObs {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        exited,
        restarts: containers.iter().map(|c| c.restart_count).sum(),
        drain_requested: pod
            .annotations()
            .get(DRAIN)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        // The kubelet keeps ContainersReady in step with Ready; only the node lifecycle
        // controller turns Ready off alone.
        node_unreachable: !ready && condition("ContainersReady") == Some(true),
    }
}

fn selector(cluster: &str) -> String {
    format!("{CLUSTER}={cluster}")
}

/// Feeds `inputs` with the cluster's Pods until the manager goes away.
pub async fn watch_pods(
    client: Client,
    namespace: String,
    cluster: String,
    inputs: mpsc::Sender<Input>,
) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&selector(&cluster));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut initial: Vec<(String, PodObs)> = Vec::new();
    while let Some(event) = stream.next().await {
        let input = match event {
            Ok(watcher::Event::Init) => {
                initial.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(pod)) => {
                initial.push((pod.name_any(), pod_obs(&pod)));
                continue;
            }
            Ok(watcher::Event::InitDone) => Input::PodsReset(std::mem::take(&mut initial)),
            Ok(watcher::Event::Apply(pod)) => Input::Pod(pod.name_any(), pod_obs(&pod)),
            Ok(watcher::Event::Delete(pod)) => Input::PodGone(pod.name_any()),
            Err(error) => {
                tracing::warn!(%namespace, %cluster, %error, "pod watch error");
                continue;
            }
        };
        if inputs.send(input).await.is_err() {
            return;
        }
    }
}

/// Publishes the ProtocolRollout that refers to `cluster` (the oldest if several do).
pub async fn watch_rollout(
    client: Client,
    namespace: String,
    cluster: String,
    rollout: watch::Sender<Option<ProtocolRollout>>,
) {
    let api: Api<DeserializeGuard<ProtocolRollout>> = Api::namespaced(client, &namespace);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut ours: BTreeMap<String, ProtocolRollout> = BTreeMap::new();
    let mut initial: BTreeMap<String, ProtocolRollout> = BTreeMap::new();
    let relevant = |guard: DeserializeGuard<ProtocolRollout>| {
        guard.0.ok().filter(|r| r.spec.cluster_ref == cluster)
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => initial.clear(),
            Ok(watcher::Event::InitApply(guard)) => {
                if let Some(r) = relevant(guard) {
                    initial.insert(r.name_any(), r);
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => ours = std::mem::take(&mut initial),
            Ok(watcher::Event::Apply(guard)) => {
                // An object that stopped parsing or changed cluster is dropped by name.
                let name = match &guard.0 {
                    Ok(r) => r.name_any(),
                    Err(invalid) => invalid.metadata.name.clone().unwrap_or_default(),
                };
                ours.remove(&name);
                if let Some(r) = relevant(guard) {
                    ours.insert(name, r);
                }
            }
            Ok(watcher::Event::Delete(guard)) => {
                let name = match &guard.0 {
                    Ok(r) => r.name_any(),
                    Err(invalid) => invalid.metadata.name.clone().unwrap_or_default(),
                };
                ours.remove(&name);
            }
            Err(error) => {
                tracing::warn!(%namespace, %cluster, %error, "rollout watch error");
                continue;
            }
        }
        // The oldest one wins, as in the SignalingCluster reconciler.
        let first = ours
            .values()
            .min_by_key(|r| (r.metadata.creation_timestamp.clone(), r.name_any()))
            .cloned();
        rollout.send_if_modified(|current| {
            let changed = *current != first;
            *current = first;
            changed
        });
        if rollout.is_closed() {
            return;
        }
    }
}

/// The move request a RoomShard's annotations carry, if any.
pub fn move_request(shard: &RoomShard) -> Option<MoveRequest> {
    let annotations = shard.annotations();
    let id = annotations.get(MOVE_REQUESTED)?.trim();
    if id.is_empty() {
        return None;
    }
    let to = annotations
        .get(MOVE_TO)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Some(MoveRequest {
        id: id.to_string(),
        to,
    })
}

/// Feeds `inputs` with the move requests on the cluster's RoomShards (the full set on every
/// change) until the manager goes away.
pub async fn watch_move_requests(
    client: Client,
    namespace: String,
    cluster: String,
    inputs: mpsc::Sender<Input>,
) {
    let api: Api<DeserializeGuard<RoomShard>> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&selector(&cluster));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut current: BTreeMap<String, (ShardId, MoveRequest)> = BTreeMap::new();
    let mut initial: BTreeMap<String, (ShardId, MoveRequest)> = BTreeMap::new();
    let mut sent: Option<BTreeMap<ShardId, MoveRequest>> = None;
    let entry = |shard: &RoomShard| {
        if shard.spec.cluster != cluster {
            return None;
        }
        let index = ShardId::try_from(shard.spec.index).ok()?;
        Some((index, move_request(shard)?))
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => initial.clear(),
            Ok(watcher::Event::InitApply(guard)) => {
                if let Ok(shard) = guard.0
                    && let Some(request) = entry(&shard)
                {
                    initial.insert(shard.name_any(), request);
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => current = std::mem::take(&mut initial),
            Ok(watcher::Event::Apply(guard)) | Ok(watcher::Event::Delete(guard))
                if guard.0.is_err() =>
            {
                continue;
            }
            Ok(watcher::Event::Apply(guard)) => {
                if let Ok(shard) = guard.0 {
                    match entry(&shard) {
                        Some(request) => current.insert(shard.name_any(), request),
                        None => current.remove(&shard.name_any()),
                    };
                }
            }
            Ok(watcher::Event::Delete(guard)) => {
                if let Ok(shard) = guard.0 {
                    current.remove(&shard.name_any());
                }
            }
            Err(error) => {
                tracing::warn!(%namespace, %cluster, %error, "RoomShard watch error");
                continue;
            }
        }
        let requests: BTreeMap<ShardId, MoveRequest> = current.values().cloned().collect();
        if sent.as_ref() == Some(&requests) {
            continue;
        }
        sent = Some(requests.clone());
        if inputs.send(Input::MoveRequests(requests)).await.is_err() {
            return;
        }
    }
}

/// Reads the stored statuses of the cluster's RoomShards (by shard index), retrying until it
/// succeeds, and feeds them to the manager.
pub async fn load_statuses(
    client: Client,
    namespace: String,
    cluster: String,
    inputs: mpsc::Sender<Input>,
) {
    let api: Api<RoomShard> = Api::namespaced(client, &namespace);
    let params = ListParams::default().labels(&selector(&cluster));
    let mut delay = Duration::from_millis(200);
    loop {
        match api.list(&params).await {
            Ok(list) => {
                let statuses = list
                    .items
                    .into_iter()
                    .filter(|s| s.spec.cluster == cluster)
                    .filter_map(|s| {
                        let index = ShardId::try_from(s.spec.index).ok()?;
                        Some((index, s.status.unwrap_or_default()))
                    })
                    .collect();
                let _ = inputs.send(Input::StoredStatuses(statuses)).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%namespace, %cluster, %error, "listing RoomShards failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Statuses waiting to be written, newest per shard.
#[derive(Debug, Default)]
pub struct StatusQueue {
    pending: Mutex<BTreeMap<ShardId, RoomShardStatus>>,
    notify: Notify,
}

impl StatusQueue {
    /// Queues `status` for `shard`, replacing an unwritten older one.
    pub fn push(&self, shard: ShardId, status: RoomShardStatus) {
        self.lock().insert(shard, status);
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ShardId, RoomShardStatus>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, max: usize) -> Vec<(ShardId, RoomShardStatus)> {
        let mut pending = self.lock();
        let keys: Vec<ShardId> = pending.keys().take(max).copied().collect();
        keys.into_iter()
            .filter_map(|k| pending.remove(&k).map(|v| (k, v)))
            .collect()
    }

    fn put_back(&self, shard: ShardId, status: RoomShardStatus) {
        // A newer status queued meanwhile wins.
        self.lock().entry(shard).or_insert(status);
    }
}

/// How many status writes run at once.
pub const STATUS_CONCURRENCY: usize = 8;

/// Writes queued statuses with server-side apply (`force`, field manager
/// `switchboard-operator`). Failed writes are retried with backoff; a RoomShard that does not
/// exist yet (the cluster reconciler creates them) is retried the same way.
pub async fn write_statuses(
    client: Client,
    namespace: String,
    cluster: String,
    queue: Arc<StatusQueue>,
) {
    let api: Api<RoomShard> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut failures: u32 = 0;
    loop {
        queue.notify.notified().await;
        loop {
            let batch = queue.take(64);
            if batch.is_empty() {
                break;
            }
            let results: Vec<(ShardId, RoomShardStatus, Result<(), kube::Error>)> =
                futures::stream::iter(batch)
                    .map(|(shard, status)| {
                        let api = api.clone();
                        let params = params.clone();
                        let name = shard_name(&cluster, shard);
                        async move {
                            let patch = serde_json::json!({
                                "apiVersion": format!("{GROUP}/{VERSION}"),
                                "kind": "RoomShard",
                                "metadata": {"name": name},
                                "status": status,
                            });
                            let result = api
                                .patch_status(&name, &params, &Patch::Apply(&patch))
                                .await
                                .map(|_| ());
                            (shard, status, result)
                        }
                    })
                    .buffer_unordered(STATUS_CONCURRENCY)
                    .collect()
                    .await;
            let mut failed = false;
            for (shard, status, result) in results {
                if let Err(error) = result {
                    tracing::debug!(%namespace, %cluster, shard, %error, "status write failed");
                    queue.put_back(shard, status);
                    failed = true;
                }
            }
            if failed {
                failures = failures.saturating_add(1);
                let exponent = failures.min(6);
                tokio::time::sleep(Duration::from_millis(250u64 << exponent)).await;
            } else {
                failures = 0;
            }
        }
    }
}

/// An Event to publish on a RoomShard.
#[derive(Debug, Clone)]
pub struct ShardEvent {
    /// The shard.
    pub shard: ShardId,
    /// Warning (failover) or Normal.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
}

/// Publishes Events from `events` on the cluster's RoomShards.
pub async fn publish_events(
    client: Client,
    namespace: String,
    cluster: String,
    mut events: mpsc::Receiver<ShardEvent>,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    while let Some(event) = events.recv().await {
        let reference = ObjectReference {
            api_version: Some(format!("{GROUP}/{VERSION}")),
            kind: Some("RoomShard".into()),
            name: Some(shard_name(&cluster, event.shard)),
            namespace: Some(namespace.clone()),
            ..Default::default()
        };
        let published = recorder
            .publish(
                &Event {
                    type_: if event.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: event.reason.into(),
                    note: Some(event.note),
                    action: "AssignShard".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
        if let Err(error) = published {
            tracing::debug!(%namespace, %cluster, %error, "event not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    #[test]
    fn pod_observations_follow_the_kubelet() {
        let mut pod = Pod::default();
        pod.metadata.uid = Some("u1".into());
        assert_eq!(
            pod_obs(&pod),
            PodObs {
                uid: "u1".into(),
                ..Default::default()
            }
        );
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(pod_obs(&pod).ready);
        pod.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(pod_obs(&pod).terminating);
        if let Some(status) = pod.status.as_mut() {
            status.container_statuses = Some(vec![ContainerStatus {
                name: "node".into(),
                restart_count: 2,
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 137,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        }
        let obs = pod_obs(&pod);
        assert!(obs.exited);
        assert_eq!(obs.restarts, 2);
    }

    #[test]
    fn ready_off_while_the_containers_are_ready_is_the_node_controllers_mark() {
        let pod_with = |ready: &str, containers: &str| {
            let pod = Pod {
                status: Some(PodStatus {
                    conditions: Some(vec![
                        PodCondition {
                            type_: "ContainersReady".into(),
                            status: containers.into(),
                            ..Default::default()
                        },
                        PodCondition {
                            type_: "Ready".into(),
                            status: ready.into(),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            pod_obs(&pod)
        };
        assert!(pod_with("False", "True").node_unreachable);
        // A failing readiness probe: the kubelet turns both off.
        assert!(!pod_with("False", "False").node_unreachable);
        assert!(!pod_with("True", "True").node_unreachable);
    }

    #[test]
    fn the_status_queue_keeps_the_newest_per_shard() {
        let queue = StatusQueue::default();
        let status = |epoch| RoomShardStatus {
            epoch,
            ..Default::default()
        };
        queue.push(1, status(1));
        queue.push(1, status(2));
        queue.push(0, status(5));
        let taken = queue.take(10);
        assert_eq!(taken, vec![(0, status(5)), (1, status(2))]);
        queue.push(1, status(3));
        queue.put_back(1, status(2));
        assert_eq!(queue.take(10), vec![(1, status(3))]);
    }
}

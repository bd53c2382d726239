//! The shard manager and the rollout reconciler against a real kube-apiserver and etcd:
//! RoomShard statuses and lastFailover for the three failure signals (lease expiry, Pod
//! NotReady, Pod deleted), Events, metrics; a 90/10 → 50/50 weight change moving exactly the
//! required shards, at most maxShardsMoving at a time; an automatic rollback.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use support::{SimNode, assignments, spawn_responder};
use switchboard_contract::keys::Keyspace;
use switchboard_operator::controller::cluster::shards::{room_shards, shard_name};
use switchboard_operator::controller::rollout;
use switchboard_operator::controller::shards::{ManagerOptions, ShardManagers};
use switchboard_operator::crd::{
    ProtocolRollout, ProtocolRolloutSpec, ProtocolVersion, RolloutPhase, RolloutStrategy,
    RolloutVersion, RoomShard, ShardPhase, SignalingCluster,
};
use switchboard_operator::etcd::EtcdClients;
use switchboard_operator::metrics::Metrics;
use switchboard_operator::placement::{VersionWeight, assign_versions};
use switchboard_testkit::{ApiServer, Etcd, eventually, patience};
use tokio::time::Instant;

async fn setup(namespace: &str) -> (Etcd, ApiServer, kube::Client) {
    let etcd = Etcd::start().await;
    let api = ApiServer::start(&etcd).await;
    let client = api.client().await;
    support::install_crds(&client).await;
    support::create_namespace(&client, namespace).await;
    (etcd, api, client)
}

async fn create_cluster(
    client: &kube::Client,
    namespace: &str,
    replicas: i32,
    shards: i32,
    etcd: &str,
) -> SignalingCluster {
    let api: Api<SignalingCluster> = Api::namespaced(client.clone(), namespace);
    let cluster = support::cluster(namespace, "demo", replicas, shards, etcd);
    let created = api.create(&PostParams::default(), &cluster).await.unwrap();
    let rs: Api<RoomShard> = Api::namespaced(client.clone(), namespace);
    for shard in room_shards(&created).unwrap() {
        rs.create(&PostParams::default(), &shard).await.unwrap();
    }
    created
}

async fn create_pod(client: &kube::Client, namespace: &str, name: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"switchboard.dev/cluster": "demo"}},
        "spec": {"containers": [{"name": "node", "image": "switchboard/signaling-node:test"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    set_pod_ready(client, namespace, name, ready).await;
}

async fn set_pod_ready(client: &kube::Client, namespace: &str, name: &str, ready: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn statuses(client: &kube::Client, namespace: &str) -> BTreeMap<i32, RoomShard> {
    let api: Api<RoomShard> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.spec.index, s))
        .collect()
}

fn node_of(shard: &RoomShard) -> Option<&str> {
    shard.status.as_ref()?.node.as_deref()
}

/// Waits until every shard once owned by `dead` shows a completed failover from it.
async fn await_failover(
    client: &kube::Client,
    namespace: &str,
    dead: &str,
    shards: &[i32],
    reason: &str,
) -> BTreeMap<i32, RoomShard> {
    let what = format!("failover of {dead}'s shards ({reason})");
    eventually(&what, || async {
        let all = statuses(client, namespace).await;
        let done = shards.iter().all(|index| {
            let Some(status) = all[index].status.as_ref() else {
                return false;
            };
            let Some(last) = status.last_failover.as_ref() else {
                return false;
            };
            last.from == dead
                && last.reason == reason
                && status.node.as_deref() == Some(last.to.as_str())
                && last.recovered_ms.is_some()
                && status.phase == ShardPhase::Assigned
        });
        done.then_some(all)
    })
    .await
}

/// The tests each run an apiserver, an etcd and a shard manager; on a 2-core machine two at
/// once starve each other past the timeouts, so they take turns.
static ONE_AT_A_TIME: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_shard_status_records_every_kind_of_failover() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let namespace = "failover";
    let (etcd, _api, client) = setup(namespace).await;
    let etcd_client = etcd.client().await;
    let keys = Keyspace::new(namespace, "demo").unwrap();
    let cluster = create_cluster(&client, namespace, 4, 8, &etcd.endpoint()).await;

    let mut nodes = Vec::new();
    for i in 0..4 {
        let name = format!("demo-default-{i}");
        create_pod(&client, namespace, &name, true).await;
        nodes.push(SimNode::register(&etcd_client, &keys, &name, "default", 2).await);
    }
    let names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let _responder = spawn_responder(etcd_client.clone(), keys.clone(), names, BTreeSet::new());

    let registry = prometheus::Registry::new();
    let mut options = ManagerOptions::default();
    options.base.placement_grace = Duration::from_millis(300);
    let managers = ShardManagers::with_options(client.clone(), &registry, options);
    managers.ensure(&cluster, etcd_client.clone());
    managers.ensure(&cluster, etcd_client.clone()); // idempotent
    assert_eq!(
        managers.running(),
        vec![(namespace.to_string(), "demo".to_string())]
    );

    let placed = eventually("every RoomShard Assigned", || async {
        let all = statuses(&client, namespace).await;
        let ok = all.len() == 8
            && all.values().all(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.phase == ShardPhase::Assigned && st.epoch == 1 && st.node.is_some()
                })
            });
        ok.then_some(all)
    })
    .await;
    let owned_by = |all: &BTreeMap<i32, RoomShard>, node: &str| -> Vec<i32> {
        all.iter()
            .filter(|(_, s)| node_of(s) == Some(node))
            .map(|(i, _)| *i)
            .collect()
    };
    assert!(nodes.iter().all(|n| owned_by(&placed, &n.name).len() == 2));

    // 1. Lease expiry.
    let lost = owned_by(&placed, &nodes[0].name);
    nodes[0].stop_keepalive();
    let after = await_failover(&client, namespace, &nodes[0].name, &lost, "LeaseExpired").await;
    for index in &lost {
        let status = after[index].status.as_ref().unwrap();
        assert_eq!(status.epoch, 2);
        let last = status.last_failover.as_ref().unwrap();
        println!(
            "LeaseExpired shard {index}: detected {} ms, recovered {:?} ms",
            last.detected_ms, last.recovered_ms
        );
        assert!(last.detected_ms >= 0 && last.recovered_ms.unwrap() >= last.detected_ms);
    }

    // 2. The Pod turns NotReady: the lease is revoked first (the key vanishes at once).
    let victim = nodes[1].name.clone();
    let lost = owned_by(&after, &victim);
    let not_ready = lost.len();
    let started = Instant::now();
    set_pod_ready(&client, namespace, &victim, false).await;
    let after = await_failover(&client, namespace, &victim, &lost, "PodNotReady").await;
    println!("PodNotReady → all recovered in {:?}", started.elapsed());
    eventually(
        "fenced: the node key is gone with its revoked lease",
        || async {
            let key = keys.node(&victim).unwrap();
            let r = etcd_client.kv_client().get(key, None).await.unwrap();
            r.kvs().is_empty().then_some(())
        },
    )
    .await;

    // 3. The Pod is deleted.
    let victim = nodes[2].name.clone();
    let lost = owned_by(&after, &victim);
    let deleted = lost.len();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.delete(&victim, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let after = await_failover(&client, namespace, &victim, &lost, "PodDeleted").await;
    assert_eq!(owned_by(&after, &nodes[3].name).len(), 8);
    let map = assignments(&etcd_client, &keys).await;
    assert!(map.values().all(|a| a.node == nodes[3].name));

    // Events on the RoomShards, metrics in the registry.
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), namespace);
    let failed_over = eventually("Failover events", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let n = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Failover"))
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("RoomShard"))
            })
            .count();
        (n >= 6).then_some(n)
    })
    .await;
    assert!(failed_over >= 6);
    let gathered = registry.gather();
    let failovers: BTreeMap<String, f64> = gathered
        .iter()
        .filter(|f| f.name() == "switchboard_operator_failovers_total")
        .flat_map(|f| f.get_metric().iter())
        .map(|m| {
            let reason = m
                .get_label()
                .iter()
                .find(|l| l.name() == "reason")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            (reason, m.get_counter().get_value())
        })
        .collect();
    assert_eq!(failovers["LeaseExpired"], 2.0);
    assert_eq!(failovers["PodNotReady"], not_ready as f64);
    assert_eq!(failovers["PodDeleted"], deleted as f64);
    assert!(
        gathered
            .iter()
            .any(|f| f.name() == "switchboard_operator_failover_duration_seconds")
    );

    managers.stop(namespace, "demo");
    assert!(managers.running().is_empty());
    let _ = shard_name("demo", 0);
}

fn rollout_object(namespace: &str, weights: &[(&str, i32)], max_moving: i32) -> ProtocolRollout {
    let mut rollout = ProtocolRollout::new(
        "demo",
        ProtocolRolloutSpec {
            cluster_ref: "demo".into(),
            versions: weights
                .iter()
                .map(|(name, weight)| RolloutVersion {
                    name: (*name).into(),
                    image: None,
                    protocols: vec![ProtocolVersion::V1, ProtocolVersion::V2],
                    weight: *weight,
                })
                .collect(),
            strategy: RolloutStrategy {
                max_shards_moving: max_moving,
                ..RolloutStrategy::default()
            },
            paused: false,
        },
    );
    rollout.metadata.namespace = Some(namespace.into());
    rollout
}

async fn await_phase(
    client: &kube::Client,
    namespace: &str,
    phase: RolloutPhase,
    weights: &str,
) -> ProtocolRollout {
    let api: Api<ProtocolRollout> = Api::namespaced(client.clone(), namespace);
    eventually(&format!("rollout {phase:?} at {weights}"), || async {
        let r = api.get("demo").await.ok()?;
        let status = r.status.as_ref()?;
        (status.phase == phase
            && status.weights.as_deref() == Some(weights)
            && status.observed_generation == r.metadata.generation)
            .then_some(r)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_move_exactly_the_required_shards_and_roll_back_on_errors() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const SHARDS: u32 = 20;
    let namespace = "rollout";
    let (etcd, _api, client) = setup(namespace).await;
    let etcd_client = etcd.client().await;
    let keys = Keyspace::new(namespace, "demo").unwrap();
    let cluster = create_cluster(&client, namespace, 6, SHARDS as i32, &etcd.endpoint()).await;
    let rollouts: Api<ProtocolRollout> = Api::namespaced(client.clone(), namespace);
    rollouts
        .create(
            &PostParams::default(),
            &rollout_object(namespace, &[("v1", 90), ("v2", 10)], 2),
        )
        .await
        .unwrap();

    let mut nodes = Vec::new();
    for (version, count) in [("v1", 5), ("v2", 3)] {
        for i in 0..count {
            let name = format!("demo-{version}-{i}");
            nodes.push(SimNode::register(&etcd_client, &keys, &name, version, 5).await);
        }
    }
    let names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let _responder = spawn_responder(etcd_client.clone(), keys.clone(), names, BTreeSet::new());

    let registry = prometheus::Registry::new();
    let mut options = ManagerOptions::default();
    options.base.placement_grace = Duration::from_millis(300);
    let managers = ShardManagers::with_options(client.clone(), &registry, options);
    managers.ensure(&cluster, etcd_client.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = Metrics::register(registry.clone()).unwrap();
    let controller = tokio::spawn(rollout::run(
        client.clone(),
        EtcdClients::new(client.clone(), Duration::from_secs(5)),
        &metrics,
        switchboard_operator::controller::WatchScope::Namespace(namespace.to_string()),
        async {
            let _ = stopped.await;
        },
    ));

    let first = await_phase(&client, namespace, RolloutPhase::Completed, "v1=90,v2=10").await;
    let before = assignments(&etcd_client, &keys).await;
    assert_eq!(before.len(), SHARDS as usize);
    assert_eq!(before.values().filter(|a| a.version == "v2").count(), 2);
    assert!(
        before
            .values()
            .all(|a| a.node.starts_with(&format!("demo-{}-", a.version)))
    );
    assert_eq!(
        first.status.as_ref().unwrap().last_stable_weights,
        BTreeMap::from([("v1".into(), 90), ("v2".into(), 10)])
    );

    // 90/10 → 50/50: exactly the shards the placement math says, two at a time.
    let current: Vec<Option<String>> = (0..SHARDS)
        .map(|s| Some(before[&s].version.clone()))
        .collect();
    let target = assign_versions(
        SHARDS,
        &[VersionWeight::new("v1", 50), VersionWeight::new("v2", 50)],
        &current,
    )
    .unwrap();
    let required: BTreeSet<u32> = (0..SHARDS)
        .filter(|s| target[*s as usize] != before[s].version)
        .collect();
    assert_eq!(required.len(), 8);
    let patch = serde_json::json!({"spec": {"versions": [
        {"name": "v1", "weight": 50, "protocols": ["v1", "v2"]},
        {"name": "v2", "weight": 50, "protocols": ["v1", "v2"]}
    ]}});
    rollouts
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let started = Instant::now();
    let api: Api<ProtocolRollout> = Api::namespaced(client.clone(), namespace);
    let mut max_in_flight = 0;
    loop {
        let map = assignments(&etcd_client, &keys).await;
        max_in_flight = max_in_flight.max(map.values().filter(|a| a.handoff_to.is_some()).count());
        let r = api.get("demo").await.unwrap();
        let status = r.status.unwrap_or_default();
        if status.phase == RolloutPhase::Completed
            && status.weights.as_deref() == Some("v1=50,v2=50")
        {
            break;
        }
        assert!(
            started.elapsed() < patience(),
            "50/50 did not complete: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "90/10 → 50/50 (8 moves, 2 at a time) completed in {:?}",
        started.elapsed()
    );
    assert!(
        max_in_flight <= 2,
        "maxShardsMoving exceeded: {max_in_flight}"
    );
    let after = assignments(&etcd_client, &keys).await;
    for shard in 0..SHARDS {
        if required.contains(&shard) {
            assert_eq!(after[&shard].version, "v2");
            assert_eq!(after[&shard].epoch, before[&shard].epoch + 1);
        } else {
            assert_eq!(after[&shard], before[&shard], "shard {shard} must not move");
        }
    }
    // RoomShard statuses are written after the assignments the rollout's phase is read from.
    eventually("10 RoomShard statuses on v2", || async {
        let rs = statuses(&client, namespace).await;
        rs.values()
            .filter(|s| s.status.as_ref().and_then(|st| st.version.as_deref()) == Some("v2"))
            .count()
            == 10
    })
    .await;

    // 50/50 → 20/80 with a rollback policy while v2 fails: the v2 pool (5 nodes wanted, 3
    // ready) holds the moves back, the error rate rolls the weights back to 50/50.
    for node in nodes.iter_mut().filter(|n| n.name.starts_with("demo-v2-")) {
        node.set_error_rate(&etcd_client, &keys, 0.5).await;
    }
    let patch = serde_json::json!({"spec": {
        "versions": [
            {"name": "v1", "weight": 20, "protocols": ["v1", "v2"]},
            {"name": "v2", "weight": 80, "protocols": ["v1", "v2"]}
        ],
        "strategy": {"maxShardsMoving": 2, "rollback": {"maxErrorRate": 0.05, "windowSeconds": 10}}
    }});
    rollouts
        .patch("demo", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let rolled = await_phase(&client, namespace, RolloutPhase::RolledBack, "v1=50,v2=50").await;
    let status = rolled.status.unwrap();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "RolledBack")
        .unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "ErrorRateExceeded")
    );
    let value: switchboard_contract::keys::RolloutValue = {
        use switchboard_contract::keys::Value;
        let r = etcd_client
            .kv_client()
            .get(keys.rollout(), None)
            .await
            .unwrap();
        Value::decode(r.kvs()[0].value()).unwrap()
    };
    assert_eq!(
        value.weights,
        BTreeMap::from([("v1".into(), 50), ("v2".into(), 50)])
    );
    assert_eq!(
        assignments(&etcd_client, &keys).await,
        after,
        "nothing moved"
    );
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), namespace);
    eventually("RolledBack event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolledBack"))
            .then_some(())
    })
    .await;
    let weight_metric = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "switchboard_operator_rollout_weight")
        .map(|f| f.get_metric().len());
    assert_eq!(weight_metric, Some(2));

    let _ = stop.send(());
    controller.await.unwrap();
    let _ = cluster.name_any();
}

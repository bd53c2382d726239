//! A SignalingCluster's life against a real kube-apiserver and etcd, driven by the operator
//! binary: startup refuses a cluster without CRDs; children are created; the node config
//! lands in etcd with revision 1 and an edit bumps it to 2; fake nodes and acks turn
//! ConfigApplied true; a steady cluster causes no writes; deletion removes the pods, the
//! RoomShards and the etcd prefix.

mod runtime_support;

use std::time::Duration;

use tokio::time::Instant;

use etcd_client::GetOptions;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use runtime_support::{ControlPlane, eventually, metric_value};
use serde_json::json;
use switchboard_contract::keys::{Ack, ConfigValue, Keyspace, Load, NodeInfo, NodeState, Value};
use switchboard_operator::crd::{RoomShard, SignalingCluster};

const NS: &str = "sb-test";

fn cluster_manifest(etcd: &str) -> SignalingCluster {
    serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "SignalingCluster",
        "metadata": {"name": "demo", "namespace": NS},
        "spec": {
            "replicas": 2,
            "image": "switchboard/signaling-node:test",
            "shards": 4,
            "etcd": {"endpoints": [etcd]},
            "authSecret": "demo-auth"
        }
    }))
    .expect("cluster manifest")
}

async fn config(etcd: &mut etcd_client::Client, keys: &Keyspace) -> Option<ConfigValue> {
    let response = etcd.get(keys.config(), None).await.ok()?;
    ConfigValue::decode(response.kvs().first()?.value()).ok()
}

fn condition(cluster: &SignalingCluster, type_: &str) -> Option<(String, String, String)> {
    let c = cluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn node(state: NodeState) -> Vec<u8> {
    NodeInfo {
        url: "ws://127.0.0.1:7000/ws".into(),
        version: "default".into(),
        protocols: vec!["switchboard.v1".into()],
        state,
        load: Load::default(),
        error_rate: 0.0,
        started_at_ms: 0,
        liveness: None,
    }
    .encode()
}

fn ack(revision: u64) -> Vec<u8> {
    Ack {
        config_revision: revision,
        ..Default::default()
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_from_creation_to_deletion() {
    let plane = ControlPlane::start().await;

    // Without CRDs the operator refuses to start, saying what to do.
    let mut early = plane.operator("no-crds", &["--log-level=info"]);
    assert_eq!(early.wait_exit().await, Some(1));
    let log = early.log_text();
    assert!(
        log.contains("CRDs not installed: kubectl apply -f crds/"),
        "{log}"
    );

    plane.apply_crds().await;
    let client = plane.client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .expect("create namespace");

    let operator = plane.operator(
        "operator",
        &[
            "--log-level=info,switchboard_operator=debug",
            "--log-format=json",
        ],
    );
    eventually("operator ready", || async {
        operator.status_of("/readyz").await == Some(200)
    })
    .await;
    assert_eq!(operator.status_of("/healthz").await, Some(200));
    assert_eq!(
        operator.metric("switchboard_operator_leader", "").await,
        1.0,
        "without --leader-elect the process leads"
    );

    let clusters: Api<SignalingCluster> = Api::namespaced(client.clone(), NS);
    clusters
        .create(&PostParams::default(), &cluster_manifest(&plane.etcd_url))
        .await
        .expect("create cluster");

    // Children.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), NS);
    let shards: Api<RoomShard> = Api::namespaced(client.clone(), NS);
    let waiting = Instant::now();
    eventually("pods, services, PDB and shards", || async {
        let pods = pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len());
        let shards = shards
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len());
        matches!(pods, Ok(2))
            && matches!(shards, Ok(4))
            && services.get_opt("demo").await.ok().flatten().is_some()
            && services
                .get_opt("demo-nodes")
                .await
                .ok()
                .flatten()
                .is_some()
            && budgets
                .get_opt("demo-default")
                .await
                .ok()
                .flatten()
                .is_some()
    })
    .await;
    let took = waiting.elapsed();
    eprintln!("children created in {took:?}");

    // Config revision 1 in etcd and in status.
    let keys = Keyspace::new(NS, "demo").unwrap();
    let mut etcd = plane.etcd().await;
    eventually("config revision 1", || {
        let (mut etcd, keys) = (etcd.clone(), keys.clone());
        async move {
            config(&mut etcd, &keys)
                .await
                .is_some_and(|c| c.revision == 1)
        }
    })
    .await;
    let first = config(&mut etcd, &keys).await.unwrap();
    assert_eq!(first.settings.heartbeat_seconds, Some(30));
    assert_eq!(first.settings.room_size, Some(16));
    eventually("status configRevision 1", || async {
        clusters.get("demo").await.ok().is_some_and(|c| {
            c.status.as_ref().and_then(|s| s.config_revision) == Some(1)
                && condition(&c, "ConfigApplied").is_some_and(|c| c.1 == "NoReadyNodes")
        })
    })
    .await;

    // Editing spec.config bumps the revision.
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"config": {"heartbeatSeconds": 5}}})),
        )
        .await
        .expect("edit config");
    eventually("config revision 2", || {
        let (mut etcd, keys) = (etcd.clone(), keys.clone());
        async move {
            config(&mut etcd, &keys)
                .await
                .is_some_and(|c| c.revision == 2)
        }
    })
    .await;
    assert_eq!(
        config(&mut etcd, &keys)
            .await
            .unwrap()
            .settings
            .heartbeat_seconds,
        Some(5)
    );

    // Two nodes come up: the kubelet would mark their pods Ready, the nodes register in etcd.
    for pod in ["demo-default-0", "demo-default-1"] {
        pods.patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]
            }})),
        )
        .await
        .expect("mark pod ready");
        etcd.put(keys.node(pod).unwrap(), node(NodeState::Ready), None)
            .await
            .expect("register node");
    }
    etcd.put(keys.ack("demo-default-0").unwrap(), ack(2), None)
        .await
        .unwrap();
    eventually("ConfigApplied pending on one node", || async {
        clusters.get("demo").await.ok().is_some_and(|c| {
            c.status.as_ref().is_some_and(|s| s.ready_nodes == 2)
                && condition(&c, "ConfigApplied").is_some_and(|c| {
                    c.0 == "False"
                        && c.2
                            .starts_with("1 of 2 ready nodes acked config revision 2")
                })
        })
    })
    .await;
    etcd.put(keys.ack("demo-default-1").unwrap(), ack(2), None)
        .await
        .unwrap();
    let waiting = Instant::now();
    eventually("ConfigApplied true", || async {
        clusters
            .get("demo")
            .await
            .ok()
            .is_some_and(|c| condition(&c, "ConfigApplied").is_some_and(|c| c.0 == "True"))
    })
    .await;
    let took = waiting.elapsed();
    eprintln!("ConfigApplied turned True {took:?} after the last ack (etcd watch trigger)");

    // A steady cluster: no status writes, no etcd writes, (almost) no reconciles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = operator.metrics().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = operator.metrics().await;
    let delta = |name: &str, labels: &str| {
        metric_value(&after, name, labels) - metric_value(&before, name, labels)
    };
    let reconciles = delta(
        "switchboard_operator_reconciliations_total",
        "SignalingCluster",
    );
    let status_writes = delta(
        "switchboard_operator_status_writes_total",
        "SignalingCluster",
    );
    let etcd_writes = delta("switchboard_operator_etcd_writes_total", "config");
    eprintln!(
        "steady cluster over 30 s: {reconciles} reconciles, {status_writes} status writes, \
         {etcd_writes} etcd writes"
    );
    assert_eq!(status_writes, 0.0, "a steady cluster must not write status");
    assert_eq!(
        etcd_writes, 0.0,
        "a steady cluster must not rewrite its config"
    );

    // A node draining makes it not ready.
    etcd.put(
        keys.node("demo-default-1").unwrap(),
        node(NodeState::Draining),
        None,
    )
    .await
    .unwrap();
    eventually("readyNodes 1", || async {
        clusters
            .get("demo")
            .await
            .ok()
            .is_some_and(|c| c.status.as_ref().is_some_and(|s| s.ready_nodes == 1))
    })
    .await;

    // Deletion: the finalizer removes the etcd prefix, then the object goes.
    etcd.put(format!("{}rooms/0000000001/r1", keys.prefix()), "x", None)
        .await
        .unwrap();
    clusters
        .delete("demo", &DeleteParams::default())
        .await
        .expect("delete cluster");
    let waiting = Instant::now();
    eventually("cluster gone", || async {
        matches!(clusters.get_opt("demo").await, Ok(None))
    })
    .await;
    let took = waiting.elapsed();
    eprintln!("cluster deleted {took:?} after the request");
    // No garbage collector runs here: the finalizer itself removed the pods.
    let pods_left = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels("switchboard.dev/cluster=demo"))
        .await
        .unwrap()
        .items;
    let shards_left = Api::<RoomShard>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        shards_left.is_empty(),
        "the finalizer deletes the RoomShards"
    );
    assert!(
        pods_left.is_empty(),
        "the finalizer deletes the cluster's pods: {:?}",
        pods_left
            .iter()
            .map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    let left = etcd
        .get(
            keys.prefix(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(left, 0, "the cluster's etcd prefix is empty");
    // At least once: a reconcile queued while the finalizer waited for the pods may run the
    // (idempotent) cleanup a second time from a cache that still shows the finalizer.
    let cleanups = operator
        .metric("switchboard_operator_etcd_writes_total", "cleanup")
        .await;
    assert!(
        (1.0..=2.0).contains(&cleanups),
        "cleanup ran {cleanups} times"
    );
    let log = operator.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("wrote node config") && l.contains("\"namespace\":\"sb-test\"")),
        "log lines carry the cluster's namespace and name"
    );
}

//! The `kubectl-switchboard` binary against a real kube-apiserver and etcd, with the shard
//! manager and the rollout controller running: every subcommand, its output, exit status and
//! what it changed, and the error cases (CRDs missing, unknown cluster / shard / node /
//! version, weights not summing to 100, a rejected move or rollout request, an unreachable
//! API server).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use support::{SimNode, spawn_responder};
use switchboard_contract::keys::Keyspace;
use switchboard_operator::controller::WatchScope;
use switchboard_operator::controller::cluster::shards::room_shards;
use switchboard_operator::controller::labels::DRAIN;
use switchboard_operator::controller::rollout;
use switchboard_operator::controller::shards::{ManagerOptions, ShardManagers};
use switchboard_operator::crd::{
    MovePhase, ProtocolRollout, ProtocolRolloutSpec, RolloutStrategy, RolloutVersion, RoomShard,
    ShardPhase, SignalingCluster,
};
use switchboard_operator::etcd::EtcdClients;
use switchboard_operator::metrics::Metrics;
use switchboard_testkit::{ApiServer, Etcd, TempDir, eventually, free_port};

const NS: &str = "ops";

struct Output {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn plugin(kubeconfig: &Path, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-switchboard"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", NS])
        .args(args)
        .output()
        .await
        .expect("run kubectl-switchboard");
    let out = Output {
        ok: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!(
        "$ kubectl switchboard {}\n{}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
    out
}

async fn fails_with(kubeconfig: &Path, args: &[&str], message: &str) {
    let out = plugin(kubeconfig, args).await;
    assert!(!out.ok, "{args:?} should fail");
    assert!(
        out.stderr.contains(message),
        "{args:?}: expected {message:?} in {:?}",
        out.stderr
    );
}

async fn create_pod(client: &kube::Client, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {
            "switchboard.dev/cluster": "demo", "switchboard.dev/version": "default"}},
        "spec": {"containers": [{"name": "node", "image": "switchboard/signaling-node:test"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.9",
        "conditions": [{"type": "Ready", "status": "True"}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

async fn shards(client: &kube::Client) -> Vec<RoomShard> {
    let api: Api<RoomShard> = Api::namespaced(client.clone(), NS);
    let mut all = api.list(&Default::default()).await.unwrap().items;
    all.sort_by_key(|s| s.spec.index);
    all
}

fn owner(shard: &RoomShard) -> Option<String> {
    shard.status.as_ref()?.node.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_against_a_real_apiserver() {
    let etcd = Etcd::start().await;
    let api = ApiServer::start(&etcd).await;
    let client = api.client().await;
    let dir = TempDir::new("plugin").unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig_yaml()).unwrap();
    let kc = kubeconfig.as_path();

    // Unreachable API server (a closed loopback port).
    let closed = dir.join("closed");
    let yaml = api.kubeconfig_yaml().replace(
        &api.kubeconfig_yaml()
            .lines()
            .find(|l| l.contains("server:"))
            .unwrap()
            .to_string(),
        &format!("    server: https://127.0.0.1:{}", free_port()),
    );
    std::fs::write(&closed, yaml).unwrap();
    fails_with(
        &closed,
        &["status"],
        "cannot reach the Kubernetes API server at https://127.0.0.1:",
    )
    .await;

    // No CRDs yet.
    fails_with(
        kc,
        &["status"],
        "the switchboard.dev CRDs are not installed in this cluster",
    )
    .await;
    support::install_crds(&client).await;
    support::create_namespace(&client, NS).await;
    fails_with(
        kc,
        &["status"],
        "no SignalingCluster in namespace ops (pick another namespace with -n)",
    )
    .await;

    let clusters: Api<SignalingCluster> = Api::namespaced(client.clone(), NS);
    let cluster = clusters
        .create(
            &PostParams::default(),
            &support::cluster(NS, "demo", 3, 6, &etcd.endpoint()),
        )
        .await
        .unwrap();
    let rs: Api<RoomShard> = Api::namespaced(client.clone(), NS);
    for shard in room_shards(&cluster).unwrap() {
        rs.create(&PostParams::default(), &shard).await.unwrap();
    }
    fails_with(
        kc,
        &["status", "nope"],
        "SignalingCluster \"nope\" not found in namespace ops; existing: demo",
    )
    .await;

    // Three simulated nodes with Ready pods; the shard manager places every shard.
    let etcd_client = etcd.client().await;
    let keys = Keyspace::new(NS, "demo").unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("demo-default-{i}");
        create_pod(&client, &name).await;
        nodes.push(SimNode::register(&etcd_client, &keys, &name, "default", 2).await);
    }
    let names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let _responder = spawn_responder(etcd_client.clone(), keys.clone(), names, BTreeSet::new());
    let registry = prometheus::Registry::new();
    let mut options = ManagerOptions::default();
    options.base.placement_grace = Duration::from_millis(300);
    let managers = ShardManagers::with_options(client.clone(), &registry, options);
    managers.ensure_with_identity(&cluster, etcd_client.clone(), "etcd tls=ns/s@fp1");
    // The same connection identity (e.g. a TLS Secret re-written with the same content) keeps
    // the manager; another one (rotated credentials) restarts it on the new client.
    managers.ensure_with_identity(&cluster, etcd_client.clone(), "etcd tls=ns/s@fp1");
    assert_eq!(managers.starts(), 1);
    managers.ensure_with_identity(&cluster, etcd_client.clone(), "etcd tls=ns/s@fp2");
    assert_eq!(managers.starts(), 2);
    eventually("every shard Assigned", || async {
        let all = shards(&client).await;
        all.iter()
            .all(|s| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.phase == ShardPhase::Assigned && st.node.is_some())
            })
            .then_some(())
    })
    .await;

    // status and rooms.
    let out = plugin(kc, &["status"]).await;
    assert!(out.ok);
    assert!(out.stdout.contains("SignalingCluster ops/demo: 3 replicas"));
    assert!(
        out.stdout
            .contains("default  3/3    0        switchboard/signaling-node:test")
    );
    assert!(out.stdout.contains("SHARD  NODE"));
    assert!(out.stdout.contains("No ProtocolRollout"));
    let room_shard = switchboard_contract::shard::shard_of("studio", 6);
    let expected_owner = owner(&shards(&client).await[room_shard as usize]).unwrap();
    let out = plugin(kc, &["rooms", "studio"]).await;
    assert!(out.ok);
    assert!(out.stdout.contains(&format!("shard {room_shard} of 6")));
    assert!(
        out.stdout
            .contains(&format!("owner: {expected_owner} (epoch 1"))
    );
    assert!(out.stdout.contains("url:   ws://127.0.0.9:7000/ws"));

    // failover: errors first, then a real move.
    fails_with(
        kc,
        &["failover", "9"],
        "shard 9 does not exist; SignalingCluster demo has shards 0..6",
    )
    .await;
    fails_with(kc, &["failover", "0", "--to", "nobody"], "nobody is not a signaling-node pod of SignalingCluster demo; its pods are demo-default-0, demo-default-1, demo-default-2").await;
    let before = owner(&shards(&client).await[0]).unwrap();
    fails_with(
        kc,
        &["failover", "0", "--to", &before],
        "move of shard 0 was rejected",
    )
    .await;
    let out = plugin(kc, &["failover", "0"]).await;
    assert!(out.ok, "{}", out.stderr);
    let after = shards(&client).await;
    let moved_to = owner(&after[0]).unwrap();
    assert_ne!(moved_to, before);
    assert!(out.stdout.contains(&format!(
        "shard 0 moved from {before} to {moved_to} (epoch 2"
    )));
    let answer = after[0]
        .status
        .as_ref()
        .unwrap()
        .last_move_request
        .clone()
        .unwrap();
    assert_eq!(answer.phase, MovePhase::Completed);
    let target = nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != moved_to)
        .unwrap();
    let out = plugin(kc, &["failover", "0", "--to", &target]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "shard 0 moved from {moved_to} to {target} (epoch 3"
        )),
        "straight from the previous owner, no rebalancing in between"
    );
    assert_eq!(owner(&shards(&client).await[0]).unwrap(), target);

    // drain: every shard leaves the node, and it gets none back until the undo.
    fails_with(
        kc,
        &["drain", "ghost", "--cluster", "demo"],
        "ghost is not a signaling-node pod",
    )
    .await;
    let drained = "demo-default-1";
    let out = plugin(kc, &["drain", drained]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("pod/demo-default-1 owns no shards"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod = pods.get(drained).await.unwrap();
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DRAIN))
            .map(String::as_str),
        Some("true")
    );
    let all = shards(&client).await;
    assert!(all.iter().all(|s| owner(s).as_deref() != Some(drained)));
    let out = plugin(kc, &["status"]).await;
    assert!(out.stdout.contains("default  3/3    1"), "one drained pod");
    fails_with(
        kc,
        &["failover", "2", "--to", drained],
        "was rejected: demo-default-1 is not a live node that may take shards",
    )
    .await;
    let out = plugin(kc, &["drain", drained, "--undo"]).await;
    assert!(out.ok);
    let pod = pods.get(drained).await.unwrap();
    assert!(
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DRAIN))
            .is_none()
    );
    eventually("the undrained node takes shards again", || async {
        shards(&client)
            .await
            .iter()
            .any(|s| owner(s).as_deref() == Some(drained))
            .then_some(())
    })
    .await;
    managers.stop(NS, "demo");

    // rollout.
    fails_with(
        kc,
        &["rollout", "pause"],
        "no ProtocolRollout in namespace ops refers to SignalingCluster demo",
    )
    .await;
    let rollouts: Api<ProtocolRollout> = Api::namespaced(client.clone(), NS);
    let mut rollout = ProtocolRollout::new(
        "demo",
        ProtocolRolloutSpec {
            cluster_ref: "demo".into(),
            versions: [("v1", 90), ("v2", 10)]
                .iter()
                .map(|(name, weight)| RolloutVersion {
                    name: (*name).into(),
                    image: None,
                    protocols: vec![switchboard_operator::crd::ProtocolVersion::V1],
                    weight: *weight,
                })
                .collect(),
            strategy: RolloutStrategy::default(),
            paused: false,
        },
    );
    rollout.metadata.namespace = Some(NS.into());
    rollouts
        .create(&PostParams::default(), &rollout)
        .await
        .unwrap();
    let weights = || async {
        let r = rollouts.get("demo").await.unwrap();
        let w: Vec<i32> = r.spec.versions.iter().map(|v| v.weight).collect();
        (w, r.spec.paused)
    };
    let out = plugin(kc, &["rollout", "set-weight", "v2=30"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("protocolrollout/demo: weights v1 90 → 70, v2 10 → 30")
    );
    assert_eq!(weights().await, (vec![70, 30], false));
    fails_with(
        kc,
        &["rollout", "set-weight", "v1=50", "v2=10"],
        "weights must sum to 100; v1=50,v2=10 sums to 60",
    )
    .await;
    fails_with(
        kc,
        &["rollout", "set-weight", "v9=10"],
        "unknown version \"v9\"; the rollout has v1, v2",
    )
    .await;
    fails_with(
        kc,
        &["rollout", "set-weight", "v1"],
        "expected VERSION=WEIGHT",
    )
    .await;
    assert_eq!(weights().await, (vec![70, 30], false), "nothing sent");

    // Requests: answered by the rollout controller in status; the spec stays as Git has it.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rollout_metrics = Metrics::register(prometheus::Registry::new()).unwrap();
    let controller = tokio::spawn(rollout::run(
        client.clone(),
        EtcdClients::new(client.clone(), Duration::from_secs(5)),
        &rollout_metrics,
        WatchScope::Namespace(NS.into()),
        async {
            let _ = stopped.await;
        },
    ));
    let out = plugin(kc, &["rollout", "pause"]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("pause requested") && out.stdout.contains("paused: no shard moves")
    );
    assert_eq!(
        weights().await,
        (vec![70, 30], false),
        "the spec is untouched"
    );
    let held = rollouts.get("demo").await.unwrap().status.unwrap();
    assert!(held.control.unwrap().paused);
    fails_with(
        kc,
        &["rollout", "pause"],
        "pause was rejected: the rollout is already paused",
    )
    .await;
    fails_with(kc, &["rollout", "promote", "v2"], "resume it first").await;
    fails_with(kc, &["rollout", "promote", "v9"], "unknown version \"v9\"").await;
    let out = plugin(kc, &["rollout", "resume"]).await;
    assert!(out.ok && out.stdout.contains("resumed"), "{}", out.stderr);
    fails_with(kc, &["rollout", "abort"], "no last stable weights").await;
    let out = plugin(kc, &["rollout", "promote"]).await;
    assert!(
        out.ok && out.stdout.contains("all weight to v2"),
        "{}",
        out.stderr
    );
    let promoted = rollouts.get("demo").await.unwrap();
    assert_eq!(
        promoted.spec.versions[1].weight, 30,
        "the spec is untouched"
    );
    assert_eq!(
        promoted.target_weights(),
        vec![("v1".to_string(), 0), ("v2".to_string(), 100)]
    );
    let out = plugin(kc, &["status"]).await;
    assert!(out.stdout.contains("ProtocolRollout demo"));
    assert!(
        out.stdout
            .contains("held by requests until the spec changes: promoted to v2")
    );
    assert!(out.stdout.contains("last request: promote accepted"));
    let _ = stop.send(());
    let _ = controller.await;

    // status -o json|yaml and the exit status CI gates on.
    let out = plugin(kc, &["status", "-o", "json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["health"]["degraded"], false);
    assert_eq!(doc["cluster"]["metadata"]["name"], "demo");
    assert_eq!(doc["pods"].as_array().unwrap().len(), 3);
    let out = plugin(kc, &["status", "-o", "yaml"]).await;
    let doc: serde_json::Value = serde_yaml::from_str(&out.stdout).unwrap();
    assert_eq!(doc["rollout"]["metadata"]["name"], "demo");
    let degraded = serde_json::json!({"status": {"conditions": [{
        "type": "Degraded", "status": "True", "reason": "ShardsUnassigned",
        "message": "2 shards have no owner", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    clusters
        .patch_status("demo", &PatchParams::default(), &Patch::Merge(&degraded))
        .await
        .unwrap();
    let out = plugin(kc, &["status"]).await;
    assert_eq!(out.code, Some(2), "Degraded exits 2");
    assert!(
        out.stdout
            .contains("UNHEALTHY: Degraded: ShardsUnassigned: 2 shards have no owner")
    );
    let out = plugin(kc, &["status", "-o", "json"]).await;
    assert_eq!(out.code, Some(2));
    let rolled = serde_json::json!({"status": {"phase": "RolledBack"}});
    rollouts
        .patch_status("demo", &PatchParams::default(), &Patch::Merge(&rolled))
        .await
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&plugin(kc, &["status", "-o", "json"]).await.stdout).unwrap();
    assert_eq!(doc["health"]["rolledBack"], true);

    // version and completion.
    let out = plugin(kc, &["version"]).await;
    assert!(
        out.ok
            && out
                .stdout
                .contains(concat!("kubectl-switchboard ", env!("CARGO_PKG_VERSION")))
    );
    assert!(
        out.stdout.contains("Kubernetes API server v1."),
        "{}",
        out.stdout
    );
    let out = plugin(kc, &["completion", "bash"]).await;
    assert!(
        out.ok && out.stdout.contains("kubectl-switchboard"),
        "{}",
        out.stderr
    );
}

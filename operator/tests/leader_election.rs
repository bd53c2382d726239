//! Leader election between operator processes against a real kube-apiserver: only the leader
//! reconciles; a standby takes over when the leader is killed (after the lease expires) or
//! stops (at once: the Lease is released); a leader whose Lease is taken exits non-zero.

mod runtime_support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use runtime_support::{ControlPlane, Operator, eventually};
use serde_json::json;
use switchboard_contract::keys::{ConfigValue, Keyspace, Value};
use switchboard_operator::crd::SignalingCluster;
use tokio::time::Instant;

const NS: &str = "sb-leader";
const LEASE: &str = "switchboard-operator";
/// The default lease duration and retry period of the flags.
const LEASE_DURATION: Duration = Duration::from_secs(10);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

fn start(plane: &ControlPlane, identity: &str) -> Operator {
    plane.operator(
        identity,
        &[
            "--leader-elect",
            "--leader-election-namespace=default",
            &format!("--leader-election-lease={LEASE}"),
            &format!("--identity={identity}"),
            "--log-level=info",
        ],
    )
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases.get_opt(LEASE).await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn transitions(leases: &Api<Lease>) -> i32 {
    leases
        .get(LEASE)
        .await
        .ok()
        .and_then(|l| l.spec?.lease_transitions)
        .unwrap_or(-1)
}

async fn config_revision(plane: &ControlPlane) -> u64 {
    let keys = Keyspace::new(NS, "demo").unwrap();
    let mut etcd = plane.etcd().await;
    let Ok(response) = etcd.get(keys.config(), None).await else {
        return 0;
    };
    response
        .kvs()
        .first()
        .and_then(|kv| ConfigValue::decode(kv.value()).ok())
        .map_or(0, |c| c.revision)
}

async fn reconciles(operator: &Operator) -> f64 {
    operator
        .metric(
            "switchboard_operator_reconciliations_total",
            "SignalingCluster",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let plane = ControlPlane::start().await;
    plane.apply_crds().await;
    let client = plane.client.clone();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .expect("create namespace");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");

    let mut a = start(&plane, "op-a");
    eventually("op-a leads", || async {
        holder(&leases).await.as_deref() == Some("op-a")
            && a.metric("switchboard_operator_leader", "").await == 1.0
    })
    .await;
    let b = start(&plane, "op-b");
    eventually("op-b ready as a standby", || async {
        b.status_of("/readyz").await == Some(200)
    })
    .await;

    let clusters: Api<SignalingCluster> = Api::namespaced(client.clone(), NS);
    let cluster: SignalingCluster = serde_json::from_value(json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "SignalingCluster",
        "metadata": {"name": "demo", "namespace": NS},
        "spec": {
            "replicas": 1,
            "image": "switchboard/signaling-node:test",
            "shards": 2,
            "etcd": {"endpoints": [plane.etcd_url]},
            "authSecret": "demo-auth"
        }
    }))
    .unwrap();
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster");
    eventually("config written by the leader", || async {
        config_revision(&plane).await == 1
    })
    .await;
    // Give the standby a few retry periods to misbehave.
    tokio::time::sleep(RETRY_PERIOD * 2).await;
    assert!(reconciles(&a).await >= 1.0);
    assert_eq!(reconciles(&b).await, 0.0, "the standby must not reconcile");
    assert_eq!(b.metric("switchboard_operator_leader", "").await, 0.0);
    assert_eq!(holder(&leases).await.as_deref(), Some("op-a"));

    // The leader crashes: the standby takes over once the lease expired.
    let killed = Instant::now();
    a.kill();
    eventually("op-b takes over", || async {
        holder(&leases).await.as_deref() == Some("op-b")
            && b.metric("switchboard_operator_leader", "").await == 1.0
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!(
        "takeover after SIGKILL of the leader: {takeover:?} (lease duration {LEASE_DURATION:?}, \
         retry period {RETRY_PERIOD:?})"
    );
    // The standby waits one lease duration from when it last saw a renewal, which it sees
    // at most a retry period late; anything beyond that is a bug, not slowness.
    assert!(
        takeover <= LEASE_DURATION + RETRY_PERIOD * 2 + Duration::from_secs(2),
        "took {takeover:?}"
    );
    assert_eq!(transitions(&leases).await, 1);
    clusters
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"config": {"roomSize": 8}}})),
        )
        .await
        .unwrap();
    eventually("the new leader reconciles", || async {
        config_revision(&plane).await == 2
    })
    .await;

    // A clean stop releases the Lease: the next standby takes over at once.
    let mut b = b;
    let c = start(&plane, "op-c");
    eventually("op-c ready as a standby", || async {
        c.status_of("/readyz").await == Some(200)
    })
    .await;
    tokio::time::sleep(RETRY_PERIOD).await;
    let stopped = Instant::now();
    b.terminate();
    assert_eq!(b.wait_exit().await, Some(0), "a requested stop exits 0");
    eventually("op-c takes over", || async {
        holder(&leases).await.as_deref() == Some("op-c")
    })
    .await;
    eprintln!(
        "takeover after SIGTERM of the leader (Lease released): {:?}",
        stopped.elapsed()
    );
    assert!(b.log_text().contains("released the leader Lease"));
    assert_eq!(transitions(&leases).await, 2);

    // Someone else takes the Lease: the deposed leader stops and exits non-zero.
    let mut c = c;
    eventually("op-c leads", || async {
        c.metric("switchboard_operator_leader", "").await == 1.0
    })
    .await;
    let now = k8s_openapi::jiff::Timestamp::now();
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "holderIdentity": "intruder",
                "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
            }})),
        )
        .await
        .unwrap();
    assert_eq!(c.wait_exit().await, Some(1), "a deposed leader exits 1");
    assert!(c.log_text().contains("lost leadership"), "{}", c.log_text());
}

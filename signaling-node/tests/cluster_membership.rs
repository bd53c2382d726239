//! Membership, fencing on lease loss, config watch and acks against a real etcd server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use signaling_node::cluster::ack::AckWriter;
use signaling_node::cluster::config_watch::ConfigWatch;
use signaling_node::cluster::health::Health;
use signaling_node::cluster::membership::{FenceHook, LeaseStatus, Membership, MembershipConfig};
use signaling_node::cluster::metrics::ClusterMetrics;
use signaling_node::cluster::watch::EtcdContext;
use switchboard_contract::ClusterSettings;
use switchboard_contract::keys::{
    Ack, ConfigValue, Keyspace, Load, NodeInfo, NodeState, RolloutValue, Value,
};
use switchboard_contract::watch::EtcdTiming;
use switchboard_testkit::{Etcd, eventually, get, get_with_lease, put};
use tokio_util::sync::CancellationToken;

fn info(url: &str) -> NodeInfo {
    NodeInfo {
        url: url.into(),
        version: "v1".into(),
        protocols: vec!["switchboard.v1".into(), "switchboard.v2".into()],
        state: NodeState::Ready,
        load: Load::default(),
        error_rate: 0.0,
        started_at_ms: 1,
        liveness: None,
    }
}

fn keys() -> Keyspace {
    Keyspace::new("test", "members").unwrap()
}

fn fence_log() -> (FenceHook, Arc<Mutex<Vec<bool>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let hook_log = Arc::clone(&log);
    let hook: FenceHook = Arc::new(move |fenced| hook_log.lock().unwrap().push(fenced));
    (hook, log)
}

async fn start(
    etcd: &Etcd,
    pod: &str,
    metrics: &ClusterMetrics,
) -> (Membership, Arc<Mutex<Vec<bool>>>) {
    let (hook, log) = fence_log();
    let config = MembershipConfig::new(pod, info(&format!("ws://{pod}/ws")));
    let membership = Membership::start(
        etcd.client().await,
        &keys(),
        config,
        Health::new(),
        metrics.clone(),
        hook,
    )
    .unwrap();
    (membership, log)
}

#[tokio::test]
async fn registration_appears_and_vanishes_after_the_ttl_when_the_node_dies() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let key = keys().node("node-a").unwrap();
    let (membership, fences) = start(&etcd, "node-a", &ClusterMetrics::default()).await;

    let (value, lease) = eventually("node key registered", || async {
        get_with_lease(&client, &key).await
    })
    .await;
    membership
        .handle()
        .status()
        .wait_for(|s| matches!(s, LeaseStatus::Live { .. }))
        .await
        .unwrap();
    let registered = NodeInfo::decode(&value).unwrap();
    assert_eq!(registered.url, "ws://node-a/ws");
    assert_eq!(registered.state, NodeState::Ready);
    assert_ne!(lease, 0, "the node key must live under a lease");
    assert_eq!(*fences.lock().unwrap(), vec![false]);

    // A crash: the task stops without revoking. The key outlives the process briefly...
    drop(membership);
    assert!(get(&client, &key).await.is_some());
    // ...and vanishes once the 2 s TTL runs out.
    eventually("node key expired", || async {
        get(&client, &key).await.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn clean_shutdown_revokes_the_lease_at_once() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let key = keys().node("node-b").unwrap();
    let (membership, _) = start(&etcd, "node-b", &ClusterMetrics::default()).await;
    let handle = membership.handle();
    handle
        .ack(Ack {
            config_revision: 1,
            rollout_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(get(&client, &key).await.is_some());
    membership.shutdown().await;
    // Revoked synchronously: no TTL wait.
    assert_eq!(get(&client, &key).await, None);
    assert_eq!(get(&client, &keys().ack("node-b").unwrap()).await, None);
    assert_eq!(*handle.status().borrow(), LeaseStatus::Stopped);
}

#[tokio::test]
async fn draining_and_load_are_published() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let key = keys().node("node-c").unwrap();
    let (membership, _) = start(&etcd, "node-c", &ClusterMetrics::default()).await;
    let handle = membership.handle();

    handle.set_state(NodeState::Draining).await.unwrap();
    let value = NodeInfo::decode(&get(&client, &key).await.unwrap()).unwrap();
    assert_eq!(value.state, NodeState::Draining);

    handle.set_load(
        Load {
            connections: 42,
            rooms: 7,
        },
        0.5,
    );
    eventually("load published", || async {
        let value = NodeInfo::decode(&get(&client, &key).await?).ok()?;
        (value.load.connections == 42 && value.load.rooms == 7 && value.error_rate == 0.5)
            .then_some(())
    })
    .await;
    membership.shutdown().await;
}

#[tokio::test]
async fn a_lost_lease_fences_then_the_node_registers_again() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let key = keys().node("node-d").unwrap();
    let metrics = ClusterMetrics::default();
    let (membership, fences) = start(&etcd, "node-d", &metrics).await;
    let handle = membership.handle();
    let mut status = handle.status();
    let first = *status
        .wait_for(|s| matches!(s, LeaseStatus::Live { .. }))
        .await
        .unwrap();
    let LeaseStatus::Live { lease, generation } = first else {
        unreachable!()
    };
    assert_eq!(generation, 1);
    handle
        .ack(Ack {
            config_revision: 5,
            rollout_revision: 6,
            ..Default::default()
        })
        .await
        .unwrap();

    // The operator fences a node by revoking its lease: the key and the ack vanish at once.
    client.lease_client().revoke(lease).await.unwrap();
    let second = *status
        .wait_for(|s| matches!(s, LeaseStatus::Live { generation: 2, .. }))
        .await
        .unwrap();
    let LeaseStatus::Live {
        lease: new_lease, ..
    } = second
    else {
        unreachable!()
    };
    assert_ne!(new_lease, lease);
    assert_eq!(*fences.lock().unwrap(), vec![false, true, false]);
    assert_eq!(metrics.lease_lost.get(), 1);

    // Re-registered under the new lease, with the last ack rewritten.
    let (_, key_lease) = get_with_lease(&client, &key).await.unwrap();
    assert_eq!(key_lease, new_lease);
    let ack = Ack::decode(&get(&client, &keys().ack("node-d").unwrap()).await.unwrap()).unwrap();
    assert_eq!((ack.config_revision, ack.rollout_revision), (5, 6));
    membership.shutdown().await;
}

#[tokio::test]
async fn config_watch_applies_valid_values_rejects_invalid_ones_and_acks() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let keys = keys();
    let metrics = ClusterMetrics::default();
    let (membership, _) = start(&etcd, "node-e", &metrics).await;
    put(
        &client,
        &keys.config(),
        br#"{"revision":1,"settings":{"heartbeatSeconds":30}}"#.to_vec(),
    )
    .await;
    let shutdown = CancellationToken::new();
    let health = Health::new();
    let ctx = EtcdContext {
        client: etcd.client().await,
        health: health.clone(),
        metrics: metrics.clone(),
        timing: EtcdTiming::default(),
        shutdown: shutdown.clone(),
    };
    // Acks go through the ack writer (which also carries the shard entries).
    let (_no_shards_tx, no_shards) = tokio::sync::watch::channel(Default::default());
    let acks = AckWriter::spawn(
        membership.handle(),
        no_shards.clone(),
        no_shards,
        shutdown.clone(),
    );
    let watch = ConfigWatch::spawn(ctx, keys.clone(), acks.handle());
    let mut config = watch.config();
    let mut rollout = watch.rollout();

    // The value present before the watch started is delivered.
    let first = config
        .wait_for(|c| c.is_some())
        .await
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(first.revision, 1);
    assert_eq!(first.settings.heartbeat_seconds, Some(30));
    let mut healthy = health.subscribe();
    healthy.wait_for(|h| *h).await.unwrap();

    // A new valid value replaces it.
    let second = ConfigValue {
        revision: 2,
        settings: ClusterSettings {
            heartbeat_seconds: Some(10),
            ..Default::default()
        },
    };
    put(&client, &keys.config(), second.encode()).await;
    config
        .wait_for(|c| c.as_ref() == Some(&second))
        .await
        .unwrap();

    // An invalid one is counted and ignored; the next valid rollout still arrives.
    put(&client, &keys.config(), b"{not json".to_vec()).await;
    put(
        &client,
        &keys.rollout(),
        br#"{"revision":3,"weights":{"v1":70,"v2":20}}"#.to_vec(),
    )
    .await;
    let good_rollout = RolloutValue {
        revision: 4,
        weights: [("v1".to_owned(), 80), ("v2".to_owned(), 20)].into(),
        shard_versions: [(0, "v1".to_owned()), (1, "v2".to_owned())].into(),
    };
    put(&client, &keys.rollout(), good_rollout.encode()).await;
    rollout
        .wait_for(|r| r.as_ref() == Some(&good_rollout))
        .await
        .unwrap();
    assert_eq!(config.borrow().as_ref(), Some(&second));
    // Events of the two keys may interleave: wait for both rejections to be counted.
    eventually("both invalid values counted", || async {
        let invalid = |key| metrics.config_invalid.with_label_values(&[key]).get();
        (invalid("config") == 1 && invalid("rollout") == 1).then_some(())
    })
    .await;
    assert_eq!(config.borrow().as_ref(), Some(&second));

    // The node confirms it applied them: the ack lands in etcd.
    watch.ack(2, 4).await.unwrap();
    let ack = Ack::decode(&get(&client, &keys.ack("node-e").unwrap()).await.unwrap()).unwrap();
    assert_eq!(
        ack,
        Ack {
            config_revision: 2,
            rollout_revision: 4,
            ..Default::default()
        }
    );

    shutdown.cancel();
    watch.join().await;
    membership.shutdown().await;
    // Let the runtime settle before etcd goes away.
    tokio::time::sleep(Duration::from_millis(10)).await;
}

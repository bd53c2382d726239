//! etcd killed, hung or out of space under a running node: the store reports Unavailable (or
//! in doubt), health drops, and everything reconnects and recovers on its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::Client;
use futures::future::BoxFuture;
use signaling_node::cluster::ClusterArgs;
use signaling_node::cluster::metrics::ClusterMetrics;
use signaling_node::cluster::node::{ClusterNode, ClusterNodeConfig};
use signaling_node::cluster::takeover::{RestoreError, ShardRestorer};
use signaling_node::routing::Ownership;
use signaling_node::store::{ShardRooms, StoreError};
use switchboard_contract::keys::{Assignment, Keyspace, Load, NodeInfo, NodeState, Value};
use switchboard_contract::shard::ShardId;
use switchboard_testkit::{Etcd, eventually, get, get_with_lease, put};

fn keys() -> Keyspace {
    Keyspace::new("test", "outage").unwrap()
}

fn assignment(node: &str, epoch: u64) -> Vec<u8> {
    Assignment {
        node: node.into(),
        epoch,
        version: "v1".into(),
        handoff_to: None,
    }
    .encode()
}

#[derive(Default)]
struct Restores(Mutex<Vec<(ShardId, u64, usize)>>);

impl ShardRestorer for Restores {
    fn restore_shard(
        &self,
        shard: ShardId,
        epoch: u64,
        snapshots: ShardRooms,
    ) -> BoxFuture<'static, Result<(), RestoreError>> {
        self.0.lock().unwrap().push((shard, epoch, snapshots.len()));
        Box::pin(async { Ok(()) })
    }

    fn release_shard(&self, _shard: ShardId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// A node named `name` started the way `serve` starts it (timeouts, HTTP/2 keepalive) and
/// serving shard 0 under epoch 1; returns it with its metrics.
async fn serving_node(
    etcd: &Etcd,
    name: &str,
    restores: Arc<Restores>,
) -> (ClusterNode, ClusterMetrics) {
    let admin = etcd.client().await;
    put(&admin, &keys().assignment(0), assignment(name, 1)).await;
    let options = ClusterArgs::default().connect_options().unwrap();
    let client = Client::connect([etcd.endpoint()], Some(options))
        .await
        .unwrap();
    let info = NodeInfo {
        url: format!("ws://{name}/ws"),
        version: "v1".into(),
        protocols: vec![],
        state: NodeState::Ready,
        load: Load::default(),
        error_rate: 0.0,
        started_at_ms: 0,
        liveness: None,
    };
    let config = ClusterNodeConfig::new(keys(), 2, name, info);
    let metrics = ClusterMetrics::default();
    let mut node = ClusterNode::start(client, config, metrics.clone()).unwrap();
    node.start_takeover(restores);
    let view = node.ownership_view();
    eventually("shard 0 served", || async {
        (view.owner_of(0) == Ownership::Local { epoch: 1 }).then_some(())
    })
    .await;
    (node, metrics)
}

#[tokio::test]
async fn store_is_unavailable_while_etcd_is_down_and_everything_recovers() {
    switchboard_testkit::init_tracing();
    let mut etcd = Etcd::start().await;
    let admin = etcd.client().await;
    let keys = keys();
    let restores = Arc::new(Restores::default());
    let (node, metrics) = serving_node(&etcd, "node-a", restores.clone()).await;
    let view = node.ownership_view();
    let store = node.room_store();
    let mut healthy = node.healthy();
    healthy.wait_for(|h| *h).await.unwrap();
    store.commit(0, "lobby", b"before".to_vec()).await.unwrap();
    let node_key = keys.node("node-a").unwrap();
    let (_, lease_before) = get_with_lease(&admin, &node_key).await.expect("registered");

    etcd.kill();
    // The transaction was sent and got no answer: the store cannot tell whether it applied.
    let during = store.commit(0, "lobby", b"during".to_vec()).await;
    assert!(
        matches!(during, Err(StoreError::InDoubt(_))),
        "expected InDoubt while etcd is down, got {during:?}"
    );
    healthy.wait_for(|h| !*h).await.unwrap();
    assert_eq!(metrics.etcd_healthy.get(), 0);
    // After a TTL without keepalives the lease is presumed lost: the node fences itself.
    eventually("node fenced", || async {
        (metrics.lease_lost.get() >= 1 && view.owner_of(0) == Ownership::Unavailable).then_some(())
    })
    .await;
    assert_eq!(
        store.commit(0, "lobby", b"fenced".to_vec()).await,
        Err(StoreError::Fenced { shard: 0 })
    );

    etcd.restart().await;
    healthy.wait_for(|h| *h).await.unwrap();
    assert_eq!(metrics.etcd_healthy.get(), 1);
    // Re-registered, the node takes its shard back from etcd and commits again.
    eventually("commit succeeds after recovery", || async {
        store.commit(0, "lobby", b"after".to_vec()).await.ok()
    })
    .await;
    assert_eq!(
        get(&admin, &keys.room(0, "lobby").unwrap())
            .await
            .as_deref(),
        Some(&b"after"[..])
    );
    eventually("shard served again", || async {
        (view.owner_of(0) == Ownership::Local { epoch: 1 }).then_some(())
    })
    .await;
    // etcd renews leases when it restarts: the node asked before registering anew and kept
    // its lease (issue 15), so the operator saw no new registration.
    let (_, lease_after) = get_with_lease(&admin, &node_key).await.expect("registered");
    assert_eq!(lease_after, lease_before, "the node kept its lease");
    assert_eq!(metrics.lease_revived.get(), 1);
    let restores = restores.0.lock().unwrap().clone();
    assert!(
        restores.len() >= 2,
        "restored at start and again after the fence: {restores:?}"
    );
    assert_eq!(*restores.last().unwrap(), (0, 1, 1));

    // The watches resynced: a new assignment made after the outage is seen.
    put(
        &admin,
        &keys.node("node-b").unwrap(),
        NodeInfo {
            url: "ws://node-b/ws".into(),
            version: "v1".into(),
            protocols: vec![],
            state: NodeState::Ready,
            load: Load::default(),
            error_rate: 0.0,
            started_at_ms: 0,
            liveness: None,
        }
        .encode(),
    )
    .await;
    put(&admin, &keys.assignment(1), assignment("node-b", 1)).await;
    eventually("assignment after the outage seen", || async {
        (view.owner_of(1)
            == Ownership::Remote {
                url: "ws://node-b/ws".into(),
            })
        .then_some(())
    })
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_hung_etcd_fails_queued_commits_after_one_timeout() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let admin = etcd.client().await;
    let (node, metrics) = serving_node(&etcd, "node-h", Arc::default()).await;
    let store = node.room_store();

    // A partition: etcd keeps its sockets open but never answers. SIGSTOP stops each of a
    // busy process's threads only when it is next scheduled, so wait until etcd is silent
    // (on a loaded machine its first batch once still committed).
    etcd.pause();
    eventually("etcd silent", || async {
        let mut admin = admin.clone();
        let probe = admin.get("probe", None);
        tokio::time::timeout(Duration::from_millis(300), probe)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let commits = (0..300).map(|i| store.commit(0, &format!("room-{i}"), b"x".to_vec()));
    let results = futures::future::join_all(commits).await;
    etcd.resume();
    assert!(results.iter().all(Result::is_err), "{results:?}");
    // The first transaction's commits are in doubt; those queued behind it were never sent.
    let in_doubt = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::InDoubt(_))))
        .count();
    let unavailable = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Unavailable(_))))
        .count();
    assert!(in_doubt > 0 && unavailable > 0, "{results:?}");
    // 300 commits need three transactions of at most 128 rooms, but only the first waited
    // for etcd: the queue behind it was refused as soon as it timed out.
    let timed_out = metrics
        .store_txns
        .with_label_values(&[signaling_node::cluster::metrics::outcome::UNAVAILABLE])
        .get();
    assert_eq!(timed_out, 1);

    eventually("commit succeeds after the partition heals", || async {
        store.commit(0, "lobby", b"after".to_vec()).await.ok()
    })
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_full_space_quota_refuses_commits_at_once_and_they_succeed_once_it_is_freed() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let admin = etcd.client().await;
    let (node, metrics) = serving_node(&etcd, "node-q", Arc::default()).await;
    let store = node.room_store();
    store.commit(0, "lobby", b"before".to_vec()).await.unwrap();

    // The alarm etcd raises itself when its backend passes the quota: every write is refused
    // with "mvcc: database space exceeded" until an operator frees space and disarms it.
    etcd.set_space_full(true).await;
    let started = std::time::Instant::now();
    let during = store.commit(0, "lobby", b"during".to_vec()).await;
    // A definite refusal, not a commit in doubt: the room refuses at once instead of
    // committing the same state again for seconds.
    assert!(
        matches!(&during, Err(StoreError::Unavailable(m)) if m.contains("database space exceeded")),
        "expected Unavailable while the quota is full, got {during:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let refused = metrics
        .store_txns
        .with_label_values(&[signaling_node::cluster::metrics::outcome::UNAVAILABLE])
        .get();
    assert_eq!(refused, 1);
    assert_eq!(
        get(&admin, &keys().room(0, "lobby").unwrap())
            .await
            .as_deref(),
        Some(&b"before"[..])
    );

    etcd.set_space_full(false).await;
    store.commit(0, "lobby", b"after".to_vec()).await.unwrap();
    assert_eq!(
        get(&admin, &keys().room(0, "lobby").unwrap())
            .await
            .as_deref(),
        Some(&b"after"[..])
    );
    node.shutdown().await;
}

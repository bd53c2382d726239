//! Ownership cache, takeover and the ClusterNode wiring against a real etcd server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use signaling_node::cluster::metrics::ClusterMetrics;
use signaling_node::cluster::node::{ClusterNode, ClusterNodeConfig};
use signaling_node::cluster::takeover::{RestoreError, ShardRestorer, TakeoverEvent};
use signaling_node::routing::Ownership;
use signaling_node::store::{ShardRooms, StoreError};
use switchboard_contract::keys::{Assignment, Keyspace, Load, NodeInfo, NodeState, Value};
use switchboard_contract::shard::ShardId;
use switchboard_testkit::{Etcd, delete, eventually, put};

fn keys() -> Keyspace {
    Keyspace::new("test", "owners").unwrap()
}

fn info(pod: &str) -> NodeInfo {
    NodeInfo {
        url: format!("ws://{pod}.example:7000/ws"),
        version: "v1".into(),
        protocols: vec!["switchboard.v2".into()],
        state: NodeState::Ready,
        load: Load::default(),
        error_rate: 0.0,
        started_at_ms: 0,
        liveness: None,
    }
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

/// A room registry stand-in: remembers which shards hold which rooms.
#[derive(Default)]
struct Registry {
    shards: Mutex<BTreeMap<ShardId, (u64, ShardRooms)>>,
    released: Mutex<Vec<ShardId>>,
}

impl ShardRestorer for Registry {
    fn restore_shard(
        &self,
        shard: ShardId,
        epoch: u64,
        snapshots: ShardRooms,
    ) -> BoxFuture<'static, Result<(), RestoreError>> {
        self.shards
            .lock()
            .unwrap()
            .insert(shard, (epoch, snapshots));
        Box::pin(async { Ok(()) })
    }

    fn release_shard(&self, shard: ShardId) -> BoxFuture<'static, ()> {
        self.shards.lock().unwrap().remove(&shard);
        self.released.lock().unwrap().push(shard);
        Box::pin(async {})
    }
}

#[tokio::test]
async fn ownership_follows_assignments_and_takeover_restores_and_releases() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let keys = keys();

    // State left by a previous owner of shard 0, and another live node.
    put(
        &client,
        &keys.room(0, "lobby").unwrap(),
        b"snapshot".to_vec(),
    )
    .await;
    put(
        &client,
        &keys.node("node-b").unwrap(),
        info("node-b").encode(),
    )
    .await;
    put(&client, &keys.assignment(1), assignment("node-b", 1)).await;
    put(&client, &keys.assignment(2), assignment("node-gone", 1)).await;

    let metrics = ClusterMetrics::default();
    let config = ClusterNodeConfig::new(keys.clone(), 4, "node-a", info("node-a"));
    let mut node = ClusterNode::start(etcd.client().await, config, metrics.clone()).unwrap();
    let registry = Arc::new(Registry::default());
    let mut events = node.start_takeover(registry.clone());
    let view = node.ownership_view();
    let mut healthy = node.healthy();
    healthy.wait_for(|h| *h).await.unwrap();

    eventually("remote owner resolved", || async {
        (view.owner_of(1)
            == Ownership::Remote {
                url: "ws://node-b.example:7000/ws".into(),
            })
        .then_some(())
    })
    .await;
    // An owner without a live registration, and a shard without an assignment.
    assert_eq!(view.owner_of(2), Ownership::Unavailable);
    assert_eq!(view.owner_of(3), Ownership::Unavailable);
    assert_eq!(view.shard_count(), 4);

    // Shard 0 is assigned to this node: restored from its snapshots, then served locally.
    put(&client, &keys.assignment(0), assignment("node-a", 7)).await;
    let restored = match events.recv().await.unwrap() {
        TakeoverEvent::Restored(report) => report,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!((restored.shard, restored.epoch, restored.rooms), (0, 7, 1));
    assert_eq!(view.owner_of(0), Ownership::Local { epoch: 7 });
    assert_eq!(
        registry.shards.lock().unwrap()[&0],
        (7, vec![("lobby".to_owned(), b"snapshot".to_vec())])
    );
    assert_eq!(metrics.shards_restored.get(), 1);

    // The node commits into its shard.
    let store = node.room_store();
    store.commit(0, "lobby", b"v2".to_vec()).await.unwrap();

    // The node's own registration is visible to the cache too.
    eventually("own registration watched", || async {
        node.ownership()
            .node_info("node-a")
            .filter(|i| i.url == "ws://node-a.example:7000/ws")
    })
    .await;

    // The operator moves shard 0 to node-b: released here, redirected there, writes fenced.
    put(&client, &keys.assignment(0), assignment("node-b", 8)).await;
    assert_eq!(
        events.recv().await.unwrap(),
        TakeoverEvent::Released { shard: 0 }
    );
    assert_eq!(*registry.released.lock().unwrap(), vec![0]);
    assert_eq!(
        view.owner_of(0),
        Ownership::Remote {
            url: "ws://node-b.example:7000/ws".into()
        }
    );
    assert_eq!(
        store.commit(0, "lobby", b"v3".to_vec()).await,
        Err(StoreError::Fenced { shard: 0 })
    );

    // node-b dies (its key vanishes): its shards become unavailable until reassigned.
    delete(&client, &keys.node("node-b").unwrap()).await;
    eventually("dead owner unavailable", || async {
        (view.owner_of(0) == Ownership::Unavailable).then_some(())
    })
    .await;
    // ...and the operator fails shard 1 over to this node with epoch + 1.
    put(&client, &keys.assignment(1), assignment("node-a", 2)).await;
    eventually("failed-over shard served", || async {
        (view.owner_of(1) == Ownership::Local { epoch: 2 }).then_some(())
    })
    .await;

    // Deleting an assignment releases the shard.
    delete(&client, &keys.assignment(1)).await;
    eventually("deleted assignment released", || async {
        (view.owner_of(1) == Ownership::Unavailable
            && !registry.shards.lock().unwrap().contains_key(&1))
        .then_some(())
    })
    .await;

    // Draining publishes the state and returns once nothing is held.
    let held = node.drain(std::time::Duration::from_secs(5)).await.unwrap();
    assert!(held.is_empty());
    let value = switchboard_testkit::get(&client, &keys.node("node-a").unwrap())
        .await
        .unwrap();
    assert_eq!(NodeInfo::decode(&value).unwrap().state, NodeState::Draining);
    node.shutdown().await;
    assert_eq!(
        switchboard_testkit::get(&client, &keys.node("node-a").unwrap()).await,
        None
    );
}

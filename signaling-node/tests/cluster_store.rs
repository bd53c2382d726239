//! The fenced, group-committing room store against a real etcd server.

use std::sync::Arc;

use etcd_client::Client;
use futures::future::join_all;
use signaling_node::cluster::metrics::{ClusterMetrics, outcome};
use signaling_node::cluster::ownership::OwnershipCache;
use signaling_node::cluster::store::{EtcdRoomStore, StoreConfig};
use signaling_node::routing::{Ownership, OwnershipView};
use signaling_node::store::{RoomStore, StoreError};
use switchboard_contract::keys::{Assignment, Keyspace, Value};
use switchboard_contract::watch::{Entry, Update};
use switchboard_testkit::{Etcd, get, put};

fn keys() -> Keyspace {
    Keyspace::new("test", "store").unwrap()
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

/// Writes `assignments/<shard>` and feeds the same bytes to `cache` (as its watch would).
async fn assign(client: &Client, cache: &OwnershipCache, shard: u32, node: &str, epoch: u64) {
    let value = assignment(node, epoch);
    put(client, &keys().assignment(shard), value.clone()).await;
    cache.apply(Update::Put(Entry {
        key: keys().assignment(shard).into_bytes(),
        value,
        mod_revision: 0,
        lease: 0,
    }));
}

async fn store_for(
    etcd: &Etcd,
    node: &str,
    config: StoreConfig,
) -> (EtcdRoomStore, Arc<OwnershipCache>, ClusterMetrics) {
    let cache = OwnershipCache::new(keys(), node, 16);
    cache.apply(Update::Reset(vec![]));
    let metrics = ClusterMetrics::default();
    let store = EtcdRoomStore::start(
        etcd.client().await,
        Arc::clone(&cache),
        config,
        metrics.clone(),
    );
    (store, cache, metrics)
}

fn txns(metrics: &ClusterMetrics, label: &str) -> u64 {
    metrics.store_txns.with_label_values(&[label]).get()
}

#[tokio::test]
async fn concurrent_commits_are_grouped_into_few_transactions() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let (store, cache, metrics) = store_for(&etcd, "node-a", StoreConfig::default()).await;
    for shard in 0..4 {
        assign(&client, &cache, shard, "node-a", 1).await;
    }

    let commits = (0..200u32).map(|i| {
        let shard = i % 4;
        store.commit(
            shard,
            &format!("room-{i}"),
            format!("snapshot-{i}").into_bytes(),
        )
    });
    let results = join_all(commits).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let committed = txns(&metrics, outcome::COMMITTED);
    println!("200 concurrent commits went in {committed} transactions");
    assert!(committed >= 2, "a transaction carries at most 128 rooms");
    assert!(
        committed < 100,
        "expected grouping, got {committed} transactions"
    );
    assert_eq!(metrics.store_commits.get(), 200);
    assert_eq!(metrics.store_batch_size.get_sample_sum() as u64, 200);

    // Every snapshot is durable and readable per shard.
    let mut total = 0;
    for shard in 0..4 {
        let rooms = store.load_shard(shard).await.unwrap();
        for (room, snapshot) in &rooms {
            let i: u32 = room.strip_prefix("room-").unwrap().parse().unwrap();
            assert_eq!(i % 4, shard);
            assert_eq!(snapshot, format!("snapshot-{i}").as_bytes());
        }
        total += rooms.len();
    }
    assert_eq!(total, 200);
}

#[tokio::test]
async fn a_moved_shard_fences_the_old_holder_and_keeps_the_new_state() {
    switchboard_testkit::init_tracing();
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let (store, cache, metrics) = store_for(&etcd, "node-a", StoreConfig::default()).await;
    assign(&client, &cache, 1, "node-a", 1).await;
    assign(&client, &cache, 2, "node-a", 1).await;
    assert!(cache.mark_restored(1, 1) && cache.mark_restored(2, 1));
    assert!(matches!(cache.owner_of(1), Ownership::Local { epoch: 1 }));
    store.commit(1, "lobby", b"v1".to_vec()).await.unwrap();

    // The operator moves shard 1 to node-b with epoch 2; node-a has not seen the change yet
    // (its cache still says it holds the shard), so the compare in etcd must catch it.
    put(&client, &keys().assignment(1), assignment("node-b", 2)).await;
    let room_key = keys().room(1, "lobby").unwrap();
    let (stale, other_shard) = tokio::join!(
        store.commit(1, "lobby", b"stale".to_vec()),
        store.commit(2, "hall", b"fine".to_vec()),
    );
    assert_eq!(stale, Err(StoreError::Fenced { shard: 1 }));
    // The refusal also stops routing shard 1 here although the cache still names node-a:
    // a client resuming now is told to retry, not welcomed into a room that stopped.
    assert_eq!(cache.owner_of(1), Ownership::Unavailable);
    assert!(matches!(cache.owner_of(2), Ownership::Local { .. }));
    // Both commits were queued before the committer ran (single-threaded test runtime), so
    // they shared one transaction: the other shard is not held back by the fenced one.
    assert_eq!(other_shard, Ok(()));
    assert_eq!(
        txns(&metrics, outcome::FENCED),
        1,
        "one shared transaction failed its compare"
    );
    assert_eq!(
        txns(&metrics, outcome::COMMITTED),
        2,
        "the first commit, then the retry of shard 2"
    );
    assert_eq!(get(&client, &room_key).await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(
        store.remove(1, "lobby").await,
        Err(StoreError::Fenced { shard: 1 })
    );
    assert_eq!(get(&client, &room_key).await.as_deref(), Some(&b"v1"[..]));
    assert!(metrics.store_fenced.get() >= 2);

    // Once the cache sees the move, commits are refused without a round trip.
    let before = txns(&metrics, outcome::FENCED) + txns(&metrics, outcome::COMMITTED);
    cache.apply(Update::Put(Entry {
        key: keys().assignment(1).into_bytes(),
        value: assignment("node-b", 2),
        mod_revision: 0,
        lease: 0,
    }));
    assert_eq!(
        store.commit(1, "lobby", b"stale".to_vec()).await,
        Err(StoreError::Fenced { shard: 1 })
    );
    assert_eq!(
        txns(&metrics, outcome::FENCED) + txns(&metrics, outcome::COMMITTED),
        before
    );

    // The new owner writes under its own epoch.
    let (store_b, cache_b, _) = store_for(&etcd, "node-b", StoreConfig::default()).await;
    assign(&client, &cache_b, 1, "node-b", 2).await;
    store_b.commit(1, "lobby", b"v2".to_vec()).await.unwrap();
    assert_eq!(get(&client, &room_key).await.as_deref(), Some(&b"v2"[..]));
}

#[tokio::test]
async fn a_rewritten_but_equivalent_assignment_does_not_fence() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let (store, cache, metrics) = store_for(&etcd, "node-a", StoreConfig::default()).await;
    assign(&client, &cache, 3, "node-a", 4).await;
    // Same owner and epoch, spelled differently (field order, whitespace).
    put(
        &client,
        &keys().assignment(3),
        br#"{ "version": "v1", "epoch": 4, "node": "node-a" }"#.to_vec(),
    )
    .await;
    store.commit(3, "r", b"x".to_vec()).await.unwrap();
    assert_eq!(
        txns(&metrics, outcome::FENCED),
        1,
        "the first compare fails"
    );
    assert_eq!(
        txns(&metrics, outcome::COMMITTED),
        1,
        "the retry with current bytes commits"
    );
    assert_eq!(
        get(&client, &keys().room(3, "r").unwrap()).await.as_deref(),
        Some(&b"x"[..])
    );
}

#[tokio::test]
async fn removal_deletes_and_unknown_shards_are_fenced() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let (store, cache, _) = store_for(&etcd, "node-a", StoreConfig::default()).await;
    assign(&client, &cache, 0, "node-a", 1).await;
    store.commit(0, "a", b"1".to_vec()).await.unwrap();
    store.commit(0, "b", b"2".to_vec()).await.unwrap();
    store.remove(0, "a").await.unwrap();
    assert_eq!(
        store.load_shard(0).await.unwrap(),
        vec![("b".to_owned(), b"2".to_vec())]
    );
    // No assignment at all for shard 9.
    assert_eq!(
        store.commit(9, "a", b"1".to_vec()).await,
        Err(StoreError::Fenced { shard: 9 })
    );
    // Oversized snapshots are refused before reaching etcd.
    let huge = vec![0u8; StoreConfig::default().max_batch_bytes + 1];
    assert!(matches!(
        store.commit(0, "big", huge).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn loading_a_large_shard_pages_through_every_room() {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let config = StoreConfig {
        load_page_size: 7,
        ..StoreConfig::default()
    };
    let (store, cache, _) = store_for(&etcd, "node-a", config).await;
    assign(&client, &cache, 5, "node-a", 1).await;
    assign(&client, &cache, 6, "node-a", 1).await;
    let commits = (0..50).map(|i| store.commit(5, &format!("r{i:03}"), vec![i as u8]));
    assert!(join_all(commits).await.iter().all(Result::is_ok));
    store.commit(6, "neighbour", vec![1]).await.unwrap();
    let rooms = store.load_shard(5).await.unwrap();
    assert_eq!(rooms.len(), 50);
    assert!(
        rooms
            .iter()
            .enumerate()
            .all(|(i, (room, value))| *room == format!("r{i:03}") && value == &vec![i as u8])
    );
}

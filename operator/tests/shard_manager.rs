//! The shard manager against a real etcd (no Kubernetes): simulated nodes under leases,
//! placement, failover on lease expiry, drain handoffs with released acks, the handoff
//! deadline, and version moves that follow the `rollout` key, throttled.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::{SimNode, assignments, spawn_responder};
use switchboard_contract::keys::{Keyspace, NodeState, RolloutValue, Value};
use switchboard_operator::controller::shards::ShardMetrics;
use switchboard_operator::controller::shards::core::{HandoffKind, Notice};
use switchboard_operator::controller::shards::manager::{self, ManagerHandle, ManagerOptions};
use switchboard_operator::placement::{VersionWeight, assign_versions};
use switchboard_testkit::{Etcd, eventually, patience};
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Harness {
    etcd: Etcd,
    client: etcd_client::Client,
    keys: Keyspace,
    metrics: ShardMetrics,
    notices: mpsc::Receiver<Notice>,
    _manager: ManagerHandle,
}

async fn harness(
    replicas: i32,
    shards: i32,
    configure: impl FnOnce(&mut ManagerOptions),
    before: impl AsyncFnOnce(&etcd_client::Client, &Keyspace),
) -> Harness {
    let etcd = Etcd::start().await;
    let client = etcd.client().await;
    let keys = Keyspace::new("test", "demo").unwrap();
    before(&client, &keys).await;
    let cluster = support::cluster("test", "demo", replicas, shards, &etcd.endpoint());
    let (tx, notices) = mpsc::channel(4096);
    let mut options = ManagerOptions {
        observer: Some(tx),
        ..ManagerOptions::default()
    };
    options.base.placement_grace = Duration::from_millis(300);
    configure(&mut options);
    let metrics = ShardMetrics::register(&prometheus::Registry::new());
    let manager = manager::spawn(&cluster, client.clone(), None, metrics.clone(), options).unwrap();
    Harness {
        etcd,
        client,
        keys,
        metrics,
        notices,
        _manager: manager,
    }
}

fn per_node(
    map: &BTreeMap<u32, switchboard_contract::keys::Assignment>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in map.values() {
        *counts.entry(a.node.clone()).or_insert(0) += 1;
    }
    counts
}

/// The notices matching `pick` until `want` of them came (or patience ran out), plus any
/// matching ones already queued behind them. The manager sends a notice after its etcd write
/// is answered, so a test that saw the write in etcd may still be ahead of the notice.
async fn notices_until(
    notices: &mut mpsc::Receiver<Notice>,
    want: usize,
    pick: impl Fn(&Notice) -> bool,
) -> Vec<Notice> {
    let deadline = Instant::now() + patience();
    let mut seen = Vec::new();
    while seen.len() < want {
        match tokio::time::timeout_at(deadline, notices.recv()).await {
            Ok(Some(n)) if pick(&n) => seen.push(n),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    seen.extend(drain(notices).into_iter().filter(|n| pick(n)));
    seen
}

fn drain(notices: &mut mpsc::Receiver<Notice>) -> Vec<Notice> {
    let mut out = Vec::new();
    while let Ok(n) = notices.try_recv() {
        out.push(n);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_failover_on_lease_expiry_and_drain_handoff() {
    let mut h = harness(4, 16, |_| {}, async |_, _| {}).await;
    let (client, keys) = (h.client.clone(), h.keys.clone());
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(
            SimNode::register(&client, &keys, &format!("demo-default-{i}"), "default", 2).await,
        );
    }
    let names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let _responder = spawn_responder(client.clone(), keys.clone(), names, BTreeSet::new());

    // Initial placement: balanced, epoch 1.
    let placed = eventually("all 16 shards placed", || async {
        let a = assignments(&client, &keys).await;
        (a.len() == 16).then_some(a)
    })
    .await;
    assert!(per_node(&placed).values().all(|c| *c == 4), "{placed:?}");
    assert!(
        placed
            .values()
            .all(|a| a.epoch == 1 && a.handoff_to.is_none())
    );

    // Node 0 crashes: its lease expires (TTL 2 s); its shards move with epoch 2, nothing else.
    let lost: Vec<u32> = placed
        .iter()
        .filter(|(_, a)| a.node == nodes[0].name)
        .map(|(s, _)| *s)
        .collect();
    nodes[0].stop_keepalive();
    let started = Instant::now();
    let after = eventually("node 0's shards reassigned", || async {
        let a = assignments(&client, &keys).await;
        lost.iter().all(|s| a[s].node != nodes[0].name).then_some(a)
    })
    .await;
    println!(
        "lease expiry (TTL 2 s) to reassignment: {:?}",
        started.elapsed()
    );
    for (shard, a) in &after {
        if lost.contains(shard) {
            assert_eq!(a.epoch, 2, "shard {shard}");
        } else {
            assert_eq!(a, &placed[shard], "shard {shard} must not move");
        }
    }
    assert!(per_node(&after).values().all(|c| (5..=6).contains(c)));
    // The manager counts a failover after its write, which the test may see first.
    let failovers = || {
        h.metrics
            .failovers
            .with_label_values(&["test", "demo", "LeaseExpired"])
            .get()
    };
    eventually("4 LeaseExpired failovers counted", || async {
        (failovers() >= 4).then_some(())
    })
    .await;
    assert_eq!(failovers(), 4);
    // The responder acks serving: every failover recovers.
    let recovered =
        notices_until(&mut h.notices, 4, |n| matches!(n, Notice::Recovered { .. })).await;
    assert_eq!(recovered.len(), 4);

    // Node 1 drains: its shards are handed off (released by the node) to the others.
    let before = assignments(&client, &keys).await;
    let leaving = nodes[1].name.clone();
    let moving: Vec<u32> = before
        .iter()
        .filter(|(_, a)| a.node == leaving)
        .map(|(s, _)| *s)
        .collect();
    nodes[1]
        .set_state(&client, &keys, NodeState::Draining)
        .await;
    let drained = eventually("node 1 drained", || async {
        let a = assignments(&client, &keys).await;
        a.values()
            .all(|a| a.node != leaving && a.handoff_to.is_none())
            .then_some(a)
    })
    .await;
    for shard in &moving {
        assert_eq!(
            drained[shard].epoch,
            before[shard].epoch + 1,
            "shard {shard}"
        );
    }
    let handed = || {
        h.metrics
            .handoffs
            .with_label_values(&["test", "demo", "Drain", "released"])
            .get()
    };
    eventually("the drain's handoffs counted", || async {
        (handed() >= moving.len() as u64).then_some(())
    })
    .await;
    assert_eq!(handed(), moving.len() as u64);
    assert!(per_node(&drained).values().all(|c| *c == 8));
    drop(h.etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_owner_is_handed_off_at_the_deadline() {
    let mut h = harness(
        2,
        4,
        |o| o.base.handoff_deadline = Duration::from_millis(800),
        async |_, _| {},
    )
    .await;
    let (client, keys) = (h.client.clone(), h.keys.clone());
    let mut a = SimNode::register(&client, &keys, "demo-default-0", "default", 5).await;
    let b = SimNode::register(&client, &keys, "demo-default-1", "default", 5).await;
    let _responder = spawn_responder(
        client.clone(),
        keys.clone(),
        BTreeSet::from([a.name.clone(), b.name.clone()]),
        BTreeSet::from([a.name.clone()]),
    );
    eventually("placed", || async {
        (assignments(&client, &keys).await.len() == 4).then_some(())
    })
    .await;
    a.set_state(&client, &keys, NodeState::Draining).await;
    let started = Instant::now();
    eventually("a's shards on b", || async {
        let map = assignments(&client, &keys).await;
        map.values()
            .all(|x| x.node == b.name && x.handoff_to.is_none())
            .then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "finished before the deadline"
    );
    let finished = notices_until(&mut h.notices, 2, |n| {
        matches!(n, Notice::HandoffFinished { .. })
    })
    .await;
    assert_eq!(finished.len(), 2);
    assert!(finished.iter().all(|n| matches!(
        n,
        Notice::HandoffFinished {
            released: false,
            kind: HandoffKind::Drain,
            ..
        }
    )));
}

fn rollout_map(shards: u32, weights: &[(&str, u32)], current: &[Option<String>]) -> RolloutValue {
    let versions: Vec<VersionWeight> = weights
        .iter()
        .map(|(n, w)| VersionWeight::new(*n, *w))
        .collect();
    let assigned = assign_versions(shards, &versions, current).unwrap();
    RolloutValue {
        revision: 1,
        weights: weights
            .iter()
            .map(|(n, w)| ((*n).to_string(), *w))
            .collect(),
        shard_versions: assigned
            .into_iter()
            .enumerate()
            .map(|(s, v)| (s as u32, v))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_moves_exactly_the_required_shards_one_at_a_time() {
    const SHARDS: u32 = 20;
    let first = rollout_map(SHARDS, &[("v1", 90), ("v2", 10)], &[]);
    let initial = first.clone();
    let h = harness(
        6,
        SHARDS as i32,
        |_| {},
        async move |client, keys| {
            client
                .kv_client()
                .put(keys.rollout(), initial.encode(), None)
                .await
                .unwrap();
        },
    )
    .await;
    let (client, keys) = (h.client.clone(), h.keys.clone());
    let mut nodes = Vec::new();
    for (version, count) in [("v1", 3), ("v2", 3)] {
        for i in 0..count {
            nodes.push(
                SimNode::register(&client, &keys, &format!("demo-{version}-{i}"), version, 5).await,
            );
        }
    }
    let names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let _responder = spawn_responder(client.clone(), keys.clone(), names, BTreeSet::new());
    let placed = eventually("placed by version", || async {
        let a = assignments(&client, &keys).await;
        let ok = a.len() == SHARDS as usize
            && a.iter()
                .all(|(s, a)| a.version == first.shard_versions[s] && a.node.contains(&a.version));
        ok.then_some(a)
    })
    .await;
    assert_eq!(placed.values().filter(|a| a.version == "v2").count(), 2);

    // 90/10 → 50/50.
    let current: Vec<Option<String>> = (0..SHARDS)
        .map(|s| Some(first.shard_versions[&s].clone()))
        .collect();
    let mut second = rollout_map(SHARDS, &[("v1", 50), ("v2", 50)], &current);
    second.revision = 2;
    let required: BTreeSet<u32> = (0..SHARDS)
        .filter(|s| first.shard_versions[s] != second.shard_versions[s])
        .collect();
    assert_eq!(required.len(), 8);
    client
        .kv_client()
        .put(keys.rollout(), second.encode(), None)
        .await
        .unwrap();
    let mut max_in_flight = 0;
    let started = Instant::now();
    let done = loop {
        let a = assignments(&client, &keys).await;
        max_in_flight = max_in_flight.max(a.values().filter(|a| a.handoff_to.is_some()).count());
        if a.iter()
            .all(|(s, a)| a.version == second.shard_versions[s] && a.handoff_to.is_none())
        {
            break a;
        }
        assert!(
            started.elapsed() < patience(),
            "version moves did not finish: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("8 version moves, one at a time: {:?}", started.elapsed());
    assert!(
        max_in_flight <= 1,
        "maxShardsMoving exceeded: {max_in_flight}"
    );
    for shard in 0..SHARDS {
        if required.contains(&shard) {
            assert_eq!(
                done[&shard].epoch,
                placed[&shard].epoch + 1,
                "shard {shard}"
            );
            assert!(done[&shard].node.starts_with("demo-v2-"));
        } else {
            assert_eq!(done[&shard], placed[&shard], "shard {shard} must not move");
        }
    }
    // The counter is bumped right after the final assignment write that ended the loop.
    let handoffs =
        h.metrics
            .handoffs
            .with_label_values(&["test", "demo", "VersionMove", "released"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while handoffs.get() < 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handoffs.get(), 8);
}

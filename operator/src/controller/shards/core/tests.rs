use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use switchboard_contract::keys::{Ack, Assignment, Load, NodeInfo, NodeState, RolloutValue};
use tokio::time::Instant;

use super::*;
use crate::controller::shards::health::PodObs;
use crate::controller::shards::status;
use crate::crd::ShardPhase;

fn info(version: &str, state: NodeState) -> NodeInfo {
    NodeInfo {
        url: "ws://127.0.0.1:7000/ws".into(),
        version: version.into(),
        protocols: vec![],
        state,
        load: Load::default(),
        error_rate: 0.0,
        started_at_ms: 0,
        liveness: None,
    }
}

fn node(name: &str, version: &str, lease: i64) -> Change {
    Change::Node(
        name.into(),
        NodeObs {
            info: info(version, NodeState::Ready),
            lease,
            mod_revision: 1,
        },
    )
}

fn owned(shard: ShardId, node: &str, epoch: u64, version: &str) -> Change {
    Change::Assignment(
        shard,
        Some(Assignment {
            node: node.into(),
            epoch,
            version: version.into(),
            handoff_to: None,
        }),
        10 + i64::from(shard),
    )
}

fn settings(shards: u32) -> Settings {
    Settings {
        shard_count: shards,
        ..Settings::default()
    }
}

fn wall() -> Time {
    Time(Timestamp::UNIX_EPOCH)
}

/// Applies every write of `decision` as if etcd accepted it.
fn commit(core: &mut Core, decision: &Decision, now: Instant) -> Vec<Notice> {
    for (_, lease) in &decision.revoke {
        core.revoked(*lease, now);
    }
    core.written(decision.writes.clone(), 100, now, &wall())
}

fn owners(core: &Core) -> BTreeMap<ShardId, (String, u64)> {
    core.assignments()
        .map(|(s, a)| (s, (a.node.clone(), a.epoch)))
        .collect()
}

#[test]
fn initial_placement_waits_for_the_expected_pool_or_the_grace() {
    let t0 = Instant::now();
    let mut s = settings(4);
    s.expected_pools.insert(plan::ANY_POOL.into(), 2);
    let mut core = Core::new(s);
    assert!(core.decide(t0).is_empty(), "nothing before the first read");
    core.apply(Input::Reset(vec![node("a", "v1", 1)]), t0);
    assert!(
        core.decide(t0).writes.is_empty(),
        "one of two expected nodes"
    );
    assert_eq!(core.wake_at(t0), Some(t0 + Duration::from_secs(3)));

    core.apply(Input::Changes(vec![node("b", "v1", 2)]), t0);
    let decision = core.decide(t0);
    assert_eq!(decision.writes.len(), 4);
    assert!(decision.writes.iter().all(|w| w.expect == 0
        && w.value.epoch == 1
        && w.value.handoff_to.is_none()
        && w.cause == WriteCause::Place));
    commit(&mut core, &decision, t0);
    let on_a = owners(&core).values().filter(|(n, _)| n == "a").count();
    assert_eq!(on_a, 2);
    assert!(core.decide(t0).is_empty(), "steady state");

    // Alone, a node gets everything after the grace period.
    let mut core = Core::new(settings(2));
    core.apply(Input::Reset(vec![node("a", "v1", 1)]), t0);
    assert!(
        core.decide(t0 + Duration::from_millis(2_999))
            .writes
            .is_empty()
    );
    assert_eq!(core.decide(t0 + Duration::from_secs(3)).writes.len(), 2);
}

#[test]
fn a_lost_node_fails_over_with_epoch_plus_one_to_its_own_pool() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(4));
    let rollout = RolloutValue {
        revision: 1,
        weights: BTreeMap::from([("v1".into(), 50), ("v2".into(), 50)]),
        shard_versions: BTreeMap::from([
            (0, "v1".into()),
            (1, "v1".into()),
            (2, "v2".into()),
            (3, "v2".into()),
        ]),
    };
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 1),
            node("b", "v1", 2),
            node("c", "v2", 3),
            node("d", "v2", 4),
            owned(0, "a", 3, "v1"),
            owned(1, "b", 1, "v1"),
            owned(2, "c", 1, "v2"),
            owned(3, "d", 1, "v2"),
            Change::Rollout(rollout),
        ]),
        t0,
    );
    assert!(core.decide(t0).is_empty());

    let t1 = t0 + Duration::from_millis(500);
    core.apply(Input::Changes(vec![Change::NodeGone("a".into())]), t1);
    let t2 = t1 + Duration::from_millis(7);
    let decision = core.decide(t2);
    assert!(decision.revoke.is_empty(), "the key is already gone");
    assert_eq!(decision.writes.len(), 1);
    let write = &decision.writes[0];
    assert_eq!(write.shard, 0);
    assert_eq!(write.expect, 10, "compares the key's mod revision");
    assert_eq!(
        write.value,
        Assignment {
            node: "b".into(),
            epoch: 4,
            version: "v1".into(),
            handoff_to: None
        }
    );
    let notices = commit(&mut core, &decision, t2);
    assert_eq!(
        notices,
        vec![Notice::Failover {
            shard: 0,
            from: "a".into(),
            to: "b".into(),
            reason: Reason::LeaseExpired,
            detected: Duration::from_millis(7),
        }]
    );
    let status = status::shard_status(&core, 0, t2);
    assert_eq!(status.phase, ShardPhase::Recovering);
    let last = status.last_failover.clone().unwrap();
    assert_eq!((last.from.as_str(), last.to.as_str()), ("a", "b"));
    assert_eq!(last.reason, "LeaseExpired");
    assert_eq!(last.detected_ms, 7);
    assert_eq!(last.recovered_ms, None);

    // The new owner reports serving epoch 4: recovered, 50 ms after the signal.
    let t3 = t1 + Duration::from_millis(50);
    let ack = Ack {
        serving: BTreeMap::from([(0, 4)]),
        ..Ack::default()
    };
    let notices = core.apply(
        Input::Changes(vec![Change::Ack(
            "b".into(),
            Tracked {
                value: ack,
                mod_revision: 200,
            },
        )]),
        t3,
    );
    assert_eq!(
        notices,
        vec![Notice::Recovered {
            shard: 0,
            to: "b".into(),
            total: Duration::from_millis(50)
        }]
    );
    let status = status::shard_status(&core, 0, t3);
    assert_eq!(status.phase, ShardPhase::Assigned);
    assert_eq!(status.epoch, 4);
    assert_eq!(status.last_failover.unwrap().recovered_ms, Some(50));
}

#[test]
fn a_pod_signal_fences_the_lease_before_the_failover() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(2));
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 11),
            node("b", "v1", 12),
            owned(0, "a", 1, "v1"),
            owned(1, "b", 1, "v1"),
        ]),
        t0,
    );
    let ready = |uid: &str, ready: bool| PodObs {
        uid: uid.into(),
        ready,
        ..PodObs::default()
    };
    core.apply(
        Input::PodsReset(vec![
            ("a".into(), ready("ua", true)),
            ("b".into(), ready("ub", true)),
        ]),
        t0,
    );
    assert!(core.decide(t0).is_empty());

    core.apply(Input::Pod("a".into(), ready("ua", false)), t0);
    let decision = core.decide(t0);
    assert_eq!(decision.revoke, vec![("a".to_string(), 11)]);
    assert_eq!(decision.writes.len(), 1);
    assert_eq!(decision.writes[0].value.node, "b");
    match &decision.writes[0].cause {
        WriteCause::Failover { reason, .. } => assert_eq!(*reason, Reason::PodNotReady),
        other => panic!("{other:?}"),
    }
    commit(&mut core, &decision, t0);
    // The revoked lease's key vanishes; the node comes back under a new lease but its Pod is
    // still not Ready: no second revoke, no shards.
    core.apply(Input::Changes(vec![Change::NodeGone("a".into())]), t0);
    core.apply(Input::Changes(vec![node("a", "v1", 21)]), t0);
    assert!(core.decide(t0).is_empty());

    // A process exit is a failover too, whatever the key says.
    let mut exited = ready("ub", true);
    exited.exited = true;
    core.apply(Input::Pod("b".into(), exited), t0);
    let decision = core.decide(t0);
    assert_eq!(decision.revoke, vec![("b".to_string(), 12)]);
    assert!(
        decision.writes.is_empty(),
        "no eligible node left: {decision:?}"
    );
    assert_eq!(status::unassigned(&core), 2);
}

#[test]
fn a_node_that_registers_again_while_its_pod_is_not_ready_is_fenced_once() {
    // Soak (restart-etcd): no node was eligible to take the shards, and each lease the node
    // registered afresh was revoked at once, over and over, until its Pod turned Ready.
    let t0 = Instant::now();
    // b and c are still starting (never Ready): held, nowhere to fail over to.
    let mut core = abc_fleet(&["a", "a"], [true, false, false], t0);
    core.apply(Input::Pod("a".into(), pod_obs("ua", false)), t0);
    let decision = core.decide(t0);
    assert_eq!(decision.revoke, vec![("a".to_string(), 11)]);
    assert!(decision.writes.is_empty(), "nowhere to fail over to");
    commit(&mut core, &decision, t0);
    // The revoked key vanishes (seen on its own), then the node registers again while its
    // Pod is still NotReady.
    core.apply(Input::Changes(vec![Change::NodeGone("a".into())]), t0);
    assert_eq!(core.health("a"), Health::Dead(Reason::LeaseExpired));
    core.apply(Input::Changes(vec![node("a", "v1", 21)]), t0);
    assert_eq!(core.health("a"), Health::Held);
    assert!(
        core.decide(t0).revoke.is_empty(),
        "the new lease is not revoked"
    );
    // Ready again: eligible, and it keeps its shards.
    core.apply(Input::Pod("a".into(), pod_obs("ua", true)), t0);
    assert_eq!(core.health("a"), Health::Eligible);
    assert!(core.decide(t0).is_empty());
}

#[test]
fn half_the_fleet_turning_not_ready_together_is_not_a_node_failure() {
    // An etcd outage turns every readiness probe red at once: fencing them all would move
    // every shard to whichever node turns Ready first.
    let t0 = Instant::now();
    let mut core = abc_fleet(&["a", "b", "c"], [true, true, true], t0);
    core.apply(Input::Pod("a".into(), pod_obs("ua", false)), t0);
    core.apply(Input::Pod("b".into(), pod_obs("ub", false)), t0);
    assert_eq!(core.health("a"), Health::Held);
    assert_eq!(core.health("b"), Health::Held);
    assert!(
        core.decide(t0).is_empty(),
        "nobody is fenced, nothing moves"
    );
    // b recovers first; a is still excused (it went NotReady with the others).
    core.apply(Input::Pod("b".into(), pod_obs("ub", true)), t0);
    assert_eq!(core.health("a"), Health::Held);
    assert!(core.decide(t0).is_empty());
    core.apply(Input::Pod("a".into(), pod_obs("ua", true)), t0);
    assert_eq!(core.health("a"), Health::Eligible);
    // One node alone turning NotReady afterwards is judged as before: fenced, failed over.
    core.apply(Input::Pod("c".into(), pod_obs("uc", false)), t0);
    let decision = core.decide(t0);
    assert_eq!(decision.revoke, vec![("c".to_string(), 13)]);
    assert_eq!(decision.writes.len(), 1);
}

/// Nodes a, b, c (v1, leases 11, 12, 13) whose Pods' readiness is `ready`; shard i is owned
/// by `owners[i]`.
fn abc_fleet(owners: &[&str], ready: [bool; 3], t0: Instant) -> Core {
    let mut core = Core::new(settings(owners.len() as u32));
    let mut changes = vec![
        node("a", "v1", 11),
        node("b", "v1", 12),
        node("c", "v1", 13),
    ];
    for (shard, owner) in owners.iter().enumerate() {
        changes.push(owned(shard as ShardId, owner, 1, "v1"));
    }
    core.apply(Input::Reset(changes), t0);
    let pods = ["a", "b", "c"]
        .iter()
        .zip(ready)
        .map(|(name, ready)| (name.to_string(), pod_obs(&format!("u{name}"), ready)))
        .collect();
    core.apply(Input::PodsReset(pods), t0);
    core
}

fn pod_obs(uid: &str, ready: bool) -> PodObs {
    PodObs {
        uid: uid.into(),
        ready,
        ..PodObs::default()
    }
}

#[test]
fn a_restart_without_a_seen_exit_fails_over_once_and_the_node_lives_on() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(2));
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 11),
            node("b", "v1", 12),
            owned(0, "a", 1, "v1"),
            owned(1, "b", 1, "v1"),
        ]),
        t0,
    );
    let pod = |ready: bool, restarts: i32| PodObs {
        uid: "ua".into(),
        ready,
        restarts,
        ..PodObs::default()
    };
    core.apply(
        Input::PodsReset(vec![
            ("a".into(), pod(true, 0)),
            (
                "b".into(),
                PodObs {
                    uid: "ub".into(),
                    ready: true,
                    ..PodObs::default()
                },
            ),
        ]),
        t0,
    );
    assert!(core.decide(t0).is_empty());

    // kill -9: the restarted process registered under a new lease before the Pod watch
    // reported anything but the higher restart count (never the terminated state).
    let t1 = t0 + Duration::from_millis(100);
    core.apply(Input::Changes(vec![node("a", "v1", 21)]), t1);
    assert!(core.decide(t1).is_empty(), "a new lease alone is no signal");
    let t2 = t1 + Duration::from_millis(50);
    core.apply(Input::Pod("a".into(), pod(false, 1)), t2);
    assert_eq!(core.health("a"), Health::Dead(Reason::ProcessExited));
    let decision = core.decide(t2);
    // The key carries the restarted process's lease by now: nothing to fence.
    assert!(decision.revoke.is_empty(), "{decision:?}");
    assert_eq!(decision.writes.len(), 1);
    assert_eq!(decision.writes[0].shard, 0);
    assert_eq!(decision.writes[0].value.node, "b");
    assert_eq!(decision.writes[0].value.epoch, 2);
    let notices = commit(&mut core, &decision, t2);
    assert!(matches!(
        notices.as_slice(),
        [Notice::Failover {
            reason: Reason::ProcessExited,
            ..
        }]
    ));
    let status = status::shard_status(&core, 0, t2);
    assert_eq!(status.last_failover.unwrap().reason, "ProcessExited");

    // The restarted process is a node like any other: held until Ready, then eligible, never
    // failed over again and its new lease never revoked.
    assert_eq!(core.health("a"), Health::Held);
    assert!(core.decide(t2).is_empty());
    let t3 = t2 + Duration::from_secs(1);
    core.apply(Input::Pod("a".into(), pod(true, 1)), t3);
    assert_eq!(core.health("a"), Health::Eligible);
    let later = core.decide(t3);
    assert!(later.revoke.is_empty(), "{later:?}");
    assert!(
        later
            .writes
            .iter()
            .all(|w| !matches!(w.cause, WriteCause::Failover { .. })),
        "{later:?}"
    );
    assert_eq!(owners(&core)[&0], ("b".to_string(), 2));
}

#[test]
fn an_exit_seen_while_the_old_lease_is_on_the_key_fences_it_once() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(2));
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 11),
            node("b", "v1", 12),
            owned(0, "a", 1, "v1"),
            owned(1, "a", 1, "v1"),
        ]),
        t0,
    );
    let pod = |ready: bool, restarts: i32| PodObs {
        uid: "ua".into(),
        ready,
        restarts,
        ..PodObs::default()
    };
    core.apply(Input::Pod("a".into(), pod(true, 0)), t0);
    core.apply(Input::Pod("a".into(), pod(false, 1)), t0);
    let decision = core.decide(t0);
    assert_eq!(decision.revoke, vec![("a".to_string(), 11)]);
    assert_eq!(decision.writes.len(), 2);
    // Say the writes lost a race: the shards are still a's while the old key vanishes and
    // the restarted process registers anew.
    core.revoked(11, t0);
    core.apply(Input::Changes(vec![Change::NodeGone("a".into())]), t0);
    core.apply(Input::Changes(vec![node("a", "v1", 21)]), t0);
    let retry = core.decide(t0);
    assert!(retry.revoke.is_empty(), "new lease left alone: {retry:?}");
    assert_eq!(retry.writes.len(), 2);
    commit(&mut core, &retry, t0);
    assert!(owners(&core).values().all(|(n, e)| n == "b" && *e == 2));
    assert_eq!(core.health("a"), Health::Held);
}

#[test]
fn a_restarted_sole_owner_keeps_its_shards_once_ready() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(1));
    core.apply(
        Input::Reset(vec![node("a", "v1", 11), owned(0, "a", 1, "v1")]),
        t0,
    );
    let pod = |ready: bool, restarts: i32| PodObs {
        uid: "ua".into(),
        ready,
        restarts,
        ..PodObs::default()
    };
    core.apply(Input::Pod("a".into(), pod(true, 0)), t0);
    // Seen with the terminated state first, then restarted.
    let mut exited = pod(false, 0);
    exited.exited = true;
    core.apply(Input::Pod("a".into(), exited), t0);
    core.apply(Input::Pod("a".into(), pod(false, 1)), t0);
    assert_eq!(core.health("a"), Health::Dead(Reason::ProcessExited));
    // Nowhere to go: no write; no node to fail over to, so once Ready it is alive again.
    assert!(core.decide(t0).writes.is_empty());
    core.apply(Input::Pod("a".into(), pod(true, 1)), t0);
    assert_eq!(core.health("a"), Health::Eligible);
    assert!(core.decide(t0).is_empty());
}

#[test]
fn a_draining_node_hands_off_in_two_phases() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(3));
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 1),
            node("b", "v1", 2),
            owned(0, "a", 2, "v1"),
            owned(1, "a", 5, "v1"),
            owned(2, "b", 1, "v1"),
        ]),
        t0,
    );
    assert!(core.decide(t0).is_empty());
    core.apply(
        Input::Changes(vec![Change::Node(
            "a".into(),
            NodeObs {
                info: info("v1", NodeState::Draining),
                lease: 1,
                mod_revision: 2,
            },
        )]),
        t0,
    );
    // Phase 1 for both shards at once (evacuation is never throttled).
    let decision = core.decide(t0);
    assert!(decision.revoke.is_empty());
    let phase1: Vec<_> = decision
        .writes
        .iter()
        .map(|w| {
            (
                w.shard,
                w.value.node.as_str(),
                w.value.epoch,
                w.value.handoff_to.as_deref(),
            )
        })
        .collect();
    assert_eq!(phase1, vec![(0, "a", 2, Some("b")), (1, "a", 5, Some("b"))]);
    let notices = commit(&mut core, &decision, t0);
    assert!(matches!(
        notices[0],
        Notice::HandoffStarted {
            kind: HandoffKind::Drain,
            ..
        }
    ));
    assert_eq!(
        status::shard_status(&core, 0, t0).phase,
        ShardPhase::HandingOff
    );
    assert!(core.decide(t0).is_empty(), "waits for the release");

    // Shard 0 released: phase 3 for it alone.
    let t1 = t0 + Duration::from_millis(30);
    let ack = Ack {
        released: BTreeMap::from([(0, 2)]),
        ..Ack::default()
    };
    core.apply(
        Input::Changes(vec![Change::Ack(
            "a".into(),
            Tracked {
                value: ack,
                mod_revision: 300,
            },
        )]),
        t1,
    );
    let decision = core.decide(t1);
    assert_eq!(decision.writes.len(), 1);
    assert_eq!(
        decision.writes[0].value,
        Assignment {
            node: "b".into(),
            epoch: 3,
            version: "v1".into(),
            handoff_to: None
        }
    );
    assert_eq!(
        decision.writes[0].cause,
        WriteCause::HandoffFinish {
            from: "a".into(),
            kind: HandoffKind::Drain,
            released: true
        }
    );
    commit(&mut core, &decision, t1);

    // Shard 1 never released: finished at the 5 s deadline.
    assert_eq!(core.wake_at(t1), Some(t0 + Duration::from_secs(5)));
    assert!(core.decide(t0 + Duration::from_millis(4_999)).is_empty());
    let decision = core.decide(t0 + Duration::from_secs(5));
    assert_eq!(decision.writes.len(), 1);
    assert_eq!(decision.writes[0].value.epoch, 6);
    assert!(matches!(
        decision.writes[0].cause,
        WriteCause::HandoffFinish {
            released: false,
            ..
        }
    ));
}

fn versioned(shards: u32, split: u32) -> RolloutValue {
    RolloutValue {
        revision: 2,
        weights: BTreeMap::from([("v1".into(), 50), ("v2".into(), 50)]),
        shard_versions: (0..shards)
            .map(|s| (s, if s < split { "v1" } else { "v2" }.to_string()))
            .collect(),
    }
}

#[test]
fn version_moves_respect_max_shards_moving_and_wait_for_the_pool() {
    let t0 = Instant::now();
    let mut s = settings(6);
    s.max_moving = 2;
    let mut core = Core::new(s);
    let mut reset: Vec<Change> = (0..6).map(|s| owned(s, "a", 1, "v1")).collect();
    reset.push(node("a", "v1", 1));
    reset.push(Change::Rollout(versioned(6, 6)));
    core.apply(Input::Reset(reset), t0);
    assert!(core.decide(t0).is_empty());

    // The rollout wants shards 2..6 on v2, but v2 has no node yet.
    core.apply(Input::Changes(vec![Change::Rollout(versioned(6, 2))]), t0);
    assert!(
        core.decide(t0).is_empty(),
        "no moves while the pool is empty"
    );
    // A v2 node whose Pod is not Ready yet does not count.
    core.apply(Input::Changes(vec![node("v2-0", "v2", 9)]), t0);
    core.apply(
        Input::Pod(
            "v2-0".into(),
            PodObs {
                uid: "u".into(),
                ..PodObs::default()
            },
        ),
        t0,
    );
    assert!(core.decide(t0).is_empty(), "target pool not ready");

    core.apply(
        Input::Pod(
            "v2-0".into(),
            PodObs {
                uid: "u".into(),
                ready: true,
                ..PodObs::default()
            },
        ),
        t0,
    );
    let mut moved = 0;
    let mut now = t0;
    for round in 0..10 {
        let decision = core.decide(now);
        let starts: Vec<_> = decision
            .writes
            .iter()
            .filter(|w| matches!(w.cause, WriteCause::HandoffStart { .. }))
            .collect();
        let in_flight = core
            .assignments()
            .filter(|(_, a)| a.handoff_to.is_some())
            .count();
        assert!(
            in_flight + starts.len() <= 2,
            "round {round}: more than maxShardsMoving"
        );
        assert!(starts.iter().all(|w| matches!(
            w.cause,
            WriteCause::HandoffStart {
                kind: HandoffKind::VersionMove,
                ..
            }
        )));
        moved += decision
            .writes
            .iter()
            .filter(|w| matches!(w.cause, WriteCause::HandoffFinish { .. }))
            .count();
        commit(&mut core, &decision, now);
        // The old owner releases whatever it is asked to.
        let released = core
            .assignments()
            .filter(|(_, a)| a.handoff_to.is_some())
            .map(|(s, a)| (s, a.epoch))
            .collect();
        core.apply(
            Input::Changes(vec![Change::Ack(
                "a".into(),
                Tracked {
                    value: Ack {
                        released,
                        ..Ack::default()
                    },
                    mod_revision: 400 + round,
                },
            )]),
            now,
        );
        now += Duration::from_millis(10);
    }
    assert_eq!(moved, 4);
    let on_v2: Vec<ShardId> = core
        .assignments()
        .filter(|(_, a)| a.node == "v2-0")
        .map(|(s, a)| {
            assert_eq!((a.version.as_str(), a.epoch), ("v2", 2));
            s
        })
        .collect();
    assert_eq!(on_v2, vec![2, 3, 4, 5]);
}

#[test]
fn conflicts_refresh_the_view_and_stale_events_are_ignored() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(1));
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 1),
            node("b", "v1", 2),
            owned(0, "a", 1, "v1"),
        ]),
        t0,
    );
    core.apply(Input::Changes(vec![Change::NodeGone("a".into())]), t0);
    let decision = core.decide(t0);
    assert_eq!(decision.writes[0].expect, 10);
    // Someone else already moved it.
    core.conflicted(
        vec![Change::Assignment(
            0,
            Some(Assignment {
                node: "b".into(),
                epoch: 2,
                version: "v1".into(),
                handoff_to: None,
            }),
            55,
        )],
        t0,
    );
    assert!(core.decide(t0).is_empty());
    // A late watch event from before the conflict does not roll the view back.
    core.apply(Input::Changes(vec![owned(0, "a", 1, "v1")]), t0);
    assert_eq!(core.assignment(0).unwrap().node, "b");
}

#[test]
fn stored_failovers_survive_a_restart_and_acks_of_departed_nodes_are_cleaned() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(1));
    let last = Failover {
        from: "x".into(),
        to: "a".into(),
        reason: "PodDeleted".into(),
        detected_ms: 3,
        recovered_ms: Some(40),
        at: wall(),
    };
    core.apply(
        Input::StoredStatuses(BTreeMap::from([(
            0,
            crate::crd::RoomShardStatus {
                last_failover: Some(last.clone()),
                ..Default::default()
            },
        )])),
        t0,
    );
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 1),
            owned(0, "a", 2, "v1"),
            Change::Ack(
                "x".into(),
                Tracked {
                    value: Ack::default(),
                    mod_revision: 77,
                },
            ),
        ]),
        t0,
    );
    let status = status::shard_status(&core, 0, t0);
    assert_eq!(status.last_failover, Some(last));
    assert_eq!(status.phase, ShardPhase::Assigned);
    assert!(core.decide(t0).is_empty());
    let later = t0 + Duration::from_secs(30);
    let settled = t0 + Settings::default().rebalance_settle;
    assert_eq!(core.wake_at(t0), Some(settled), "a settles first");
    assert_eq!(core.wake_at(settled), Some(later));
    assert_eq!(core.decide(later).delete_acks, vec![("x".to_string(), 77)]);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Runs decide → commit until nothing is left (bounded).
    fn settle(core: &mut Core, now: Instant) {
        for _ in 0..32 {
            let decision = core.decide(now);
            if decision.is_empty() {
                return;
            }
            commit(core, &decision, now);
        }
        panic!("no steady state after 32 rounds");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever nodes die, every shard ends on a live node, only the dead nodes' shards
        /// move (each exactly once, epoch + 1), and the survivors stay balanced.
        #[test]
        fn failover_moves_only_orphans_and_keeps_balance(
            nodes in 2usize..12,
            shards in 1u32..200,
            dead_mask in any::<u16>(),
        ) {
            let t0 = Instant::now();
            let mut s = settings(shards);
            s.expected_pools.insert(plan::ANY_POOL.into(), nodes as u32);
            let mut core = Core::new(s);
            let names: Vec<String> = (0..nodes).map(|i| format!("n{i:02}")).collect();
            let reset = names
                .iter()
                .enumerate()
                .map(|(i, n)| node(n, "v1", i as i64 + 1))
                .collect();
            core.apply(Input::Reset(reset), t0);
            settle(&mut core, t0);
            let before = owners(&core);
            prop_assert_eq!(before.len(), shards as usize);

            let dead: Vec<&String> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| dead_mask & (1 << i) != 0)
                .map(|(_, n)| n)
                .take(nodes - 1)
                .collect();
            let gone = dead.iter().map(|n| Change::NodeGone((*n).clone())).collect();
            core.apply(Input::Changes(gone), t0);
            settle(&mut core, t0);
            let after = owners(&core);
            for (shard, (owner, epoch)) in &after {
                let (was, was_epoch) = &before[shard];
                prop_assert!(!dead.contains(&owner), "shard {} left on dead {}", shard, owner);
                if dead.contains(&was) {
                    prop_assert_eq!(*epoch, was_epoch + 1);
                } else {
                    prop_assert_eq!((owner, epoch), (was, was_epoch), "survivor's shard moved");
                }
            }
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for (owner, _) in after.values() {
                *counts.entry(owner.as_str()).or_insert(0) += 1;
            }
            let live = nodes - dead.len();
            let min = if counts.len() < live { 0 } else { *counts.values().min().unwrap_or(&0) };
            let max = *counts.values().max().unwrap_or(&0);
            prop_assert!(max - min <= 1, "unbalanced: {:?}", counts);
        }
    }
}

fn ready_pod(uid: &str, drain: bool) -> PodObs {
    PodObs {
        uid: uid.into(),
        ready: true,
        drain_requested: drain,
        ..PodObs::default()
    }
}

#[test]
fn a_drain_annotation_hands_every_shard_off_and_the_undo_takes_shards_again() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(4));
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 1),
            node("b", "v1", 2),
            owned(0, "a", 1, "v1"),
            owned(1, "a", 1, "v1"),
            owned(2, "b", 1, "v1"),
            owned(3, "b", 1, "v1"),
        ]),
        t0,
    );
    core.apply(
        Input::PodsReset(vec![
            ("a".into(), ready_pod("ua", false)),
            ("b".into(), ready_pod("ub", false)),
        ]),
        t0,
    );
    assert!(core.decide(t0).is_empty());
    core.apply(Input::Pod("a".into(), ready_pod("ua", true)), t0);
    assert_eq!(core.health("a"), Health::Leaving);
    let decision = core.decide(t0);
    assert!(decision.revoke.is_empty(), "a drain is not a failure");
    let targets: Vec<_> = decision
        .writes
        .iter()
        .map(|w| {
            (
                w.shard,
                w.value.node.as_str(),
                w.value.handoff_to.as_deref(),
            )
        })
        .collect();
    assert_eq!(targets, vec![(0, "a", Some("b")), (1, "a", Some("b"))]);
    commit(&mut core, &decision, t0);
    // Released (deadline) → b owns everything; the drained node gets nothing back.
    let later = t0 + Duration::from_secs(5);
    let decision = core.decide(later);
    assert_eq!(decision.writes.len(), 2);
    commit(&mut core, &decision, later);
    assert!(owners(&core).values().all(|(n, _)| n == "b"));
    assert!(
        core.decide(later).is_empty(),
        "nothing goes to a drained node"
    );

    // Undo: a is eligible again; once it has settled, rebalancing hands it a share
    // (throttled to one). Before that nothing moves: no shard bounces back to a node that
    // has just returned (a crash and restart would otherwise migrate clients twice).
    core.apply(Input::Pod("a".into(), ready_pod("ua", false)), later);
    assert!(core.decide(later).is_empty(), "a is still settling");
    let settled = later + Settings::default().rebalance_settle;
    assert!(core.decide(settled - Duration::from_millis(1)).is_empty());
    assert!(core.wake_at(later).is_some_and(|t| t <= settled));
    let decision = core.decide(settled);
    assert_eq!(decision.writes.len(), 1);
    assert_eq!(decision.writes[0].value.handoff_to.as_deref(), Some("a"));
}

fn request(id: &str, to: Option<&str>) -> MoveRequest {
    MoveRequest {
        id: id.into(),
        to: to.map(String::from),
    }
}

fn three_nodes(core: &mut Core, t0: Instant) {
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 1),
            node("b", "v1", 2),
            node("c", "v1", 3),
            owned(0, "a", 4, "v1"),
            owned(1, "a", 1, "v1"),
            owned(2, "b", 1, "v1"),
            owned(3, "b", 1, "v1"),
            owned(4, "c", 1, "v1"),
        ]),
        t0,
    );
    core.apply(Input::StoredStatuses(BTreeMap::new()), t0);
}

#[test]
fn a_requested_move_hands_the_shard_off_and_answers_in_the_status() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(5));
    three_nodes(&mut core, t0);
    assert!(core.decide(t0).is_empty());
    core.apply(
        Input::MoveRequests(BTreeMap::from([(0, request("n1", None))])),
        t0,
    );
    let decision = core.decide(t0);
    assert_eq!(decision.writes.len(), 1);
    let write = &decision.writes[0];
    // The least loaded other node of the pool: c (one shard).
    assert_eq!(
        (
            write.value.node.as_str(),
            write.value.epoch,
            write.value.handoff_to.as_deref()
        ),
        ("a", 4, Some("c"))
    );
    let notices = commit(&mut core, &decision, t0);
    assert!(matches!(
        notices[0],
        Notice::HandoffStarted {
            kind: HandoffKind::Requested,
            ..
        }
    ));
    let answer = status::shard_status(&core, 0, t0)
        .last_move_request
        .unwrap();
    assert_eq!(answer.phase, MovePhase::Moving);
    assert_eq!(answer.to.as_deref(), Some("c"));
    assert!(core.decide(t0).is_empty(), "one answer per request id");

    // Release → phase 3 → Completed.
    core.apply(
        Input::Changes(vec![Change::Ack(
            "a".into(),
            Tracked {
                value: Ack {
                    released: BTreeMap::from([(0, 4)]),
                    ..Ack::default()
                },
                mod_revision: 200,
            },
        )]),
        t0,
    );
    let decision = core.decide(t0);
    assert_eq!(decision.writes.len(), 1);
    assert_eq!(decision.writes[0].value.node, "c");
    assert_eq!(decision.writes[0].value.epoch, 5);
    commit(&mut core, &decision, t0);
    let answer = core.move_result(0).unwrap();
    assert_eq!(answer.phase, MovePhase::Completed);
    assert_eq!(answer.from.as_deref(), Some("a"));
    // a: 1, b: 2, c: 2 — balanced; the moved shard stays pinned anyway.
    assert!(core.decide(t0).is_empty());

    // A new id is a new request; a named target is used.
    core.apply(
        Input::MoveRequests(BTreeMap::from([(0, request("n2", Some("b")))])),
        t0,
    );
    let decision = core.decide(t0);
    assert_eq!(decision.writes[0].value.handoff_to.as_deref(), Some("b"));
}

#[test]
fn impossible_move_requests_are_rejected_with_the_reason() {
    let t0 = Instant::now();
    let mut core = Core::new(settings(5));
    three_nodes(&mut core, t0);
    core.apply(
        Input::MoveRequests(BTreeMap::from([
            (0, request("x", Some("a"))),
            (1, request("y", Some("nobody"))),
            (7, request("z", None)),
        ])),
        t0,
    );
    let decision = core.decide(t0);
    assert!(decision.writes.is_empty());
    let reasons: Vec<_> = decision
        .rejections
        .iter()
        .map(|r| (r.shard, r.message.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (0, "a owns shard 0 already".to_string()),
            (
                1,
                "nobody is not a live node that may take shards".to_string()
            ),
            (
                7,
                "shard 7 does not exist (the cluster has 5 shards)".to_string()
            ),
        ]
    );
    core.rejected(decision.rejections, &wall());
    assert_eq!(core.move_result(1).unwrap().phase, MovePhase::Rejected);
    assert!(core.decide(t0).is_empty(), "answered once");

    // Requests wait for the stored statuses (answers from before a restart).
    let mut fresh = Core::new(settings(5));
    fresh.apply(
        Input::Reset(vec![
            node("a", "v1", 1),
            node("b", "v1", 2),
            owned(0, "a", 1, "v1"),
        ]),
        t0,
    );
    fresh.apply(
        Input::MoveRequests(BTreeMap::from([(0, request("n1", None))])),
        t0,
    );
    assert!(fresh.decide(t0).writes.iter().all(|w| w.shard != 0));
    let stored = crate::crd::RoomShardStatus {
        last_move_request: Some(MoveRequestStatus {
            id: "n1".into(),
            phase: MovePhase::Completed,
            from: Some("b".into()),
            to: Some("a".into()),
            message: String::new(),
            at: wall(),
        }),
        ..Default::default()
    };
    fresh.apply(Input::StoredStatuses(BTreeMap::from([(0, stored)])), t0);
    assert!(
        fresh.decide(t0).writes.iter().all(|w| w.shard != 0),
        "already answered before the restart"
    );
}

#[test]
fn a_requested_move_is_not_undone_by_rebalancing_while_the_request_stands() {
    let t0 = Instant::now();
    let mut core = Core::new(Settings {
        max_moving: 4,
        ..settings(6)
    });
    core.apply(
        Input::Reset(vec![
            node("a", "v1", 1),
            node("b", "v1", 2),
            node("c", "v1", 3),
            owned(0, "c", 1, "v1"),
            owned(1, "b", 1, "v1"),
            owned(2, "a", 1, "v1"),
            owned(3, "a", 1, "v1"),
            owned(4, "b", 1, "v1"),
            owned(5, "c", 1, "v1"),
        ]),
        t0,
    );
    core.apply(Input::StoredStatuses(BTreeMap::new()), t0);
    assert!(core.decide(t0).is_empty());
    core.apply(
        Input::MoveRequests(BTreeMap::from([(0, request("n1", None))])),
        t0,
    );
    let decision = core.decide(t0);
    assert_eq!(decision.writes[0].value.handoff_to.as_deref(), Some("a"));
    commit(&mut core, &decision, t0);
    let later = t0 + Duration::from_secs(5);
    let decision = core.decide(later);
    assert_eq!(decision.writes.len(), 1);
    commit(&mut core, &decision, later);
    assert_eq!(core.assignment(0).unwrap().node, "a");
    for _ in 0..3 {
        let decision = core.decide(later);
        assert!(
            decision.writes.iter().all(|w| w.shard != 0),
            "{:?}",
            decision.writes
        );
        commit(&mut core, &decision, later);
    }
    assert_eq!(core.assignment(0).unwrap().node, "a");
}

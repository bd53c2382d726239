use k8s_openapi::jiff::Timestamp;

use std::collections::BTreeMap;

use super::*;
use crate::controller::labels::ROLLOUT_REQUEST;
use crate::crd::{
    ProtocolRolloutSpec, ProtocolVersion, RollbackPolicy, RolloutStrategy, RolloutVersion,
};

fn policy() -> RollbackPolicy {
    RollbackPolicy {
        max_error_rate: 0.05,
        window_seconds: 10,
        min_samples: 3,
        sample_interval_seconds: 1,
        max_increase_over_stable: None,
        prometheus: None,
    }
}

fn rollout(weights: &[(&str, i32)], generation: i64) -> ProtocolRollout {
    let mut r = ProtocolRollout::new(
        "demo",
        ProtocolRolloutSpec {
            cluster_ref: "demo".into(),
            versions: weights
                .iter()
                .map(|(name, weight)| RolloutVersion {
                    name: (*name).into(),
                    image: None,
                    protocols: vec![ProtocolVersion::V1],
                    weight: *weight,
                })
                .collect(),
            strategy: RolloutStrategy::default(),
            paused: false,
        },
    );
    r.metadata.namespace = Some("live".into());
    r.metadata.generation = Some(generation);
    r
}

fn wall() -> Time {
    wall_at(0)
}

fn wall_at(second: i64) -> Time {
    Time(Timestamp::from_second(1_750_000_000 + second).unwrap())
}

fn observed(current: Vec<Option<&str>>, ready: &[(&str, u32)]) -> Observed {
    Observed {
        shard_count: current.len() as u32,
        current: current.into_iter().map(|c| c.map(String::from)).collect(),
        pools: ready
            .iter()
            .map(|(v, n)| {
                (
                    (*v).to_string(),
                    PoolObs {
                        ready: *n,
                        error_rate: Some(0.0),
                    },
                )
            })
            .collect(),
        pool_sizes: ready.iter().map(|(v, n)| ((*v).to_string(), *n)).collect(),
        previous: None,
        external_rates: None,
    }
}

fn versions_of(value: &RolloutValue) -> Vec<&str> {
    value.shard_versions.values().map(String::as_str).collect()
}

fn condition<'a>(status: &'a ProtocolRolloutStatus, type_: &str) -> (&'a str, &'a str) {
    let c = conditions::get(&status.conditions, type_).unwrap();
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_fresh_cluster_gets_its_shares_and_completes_when_placed() {
    let r = rollout(&[("v1", 90), ("v2", 10)], 1);
    let obs = observed(vec![None; 10], &[("v1", 2), ("v2", 1)]);
    let out = reconcile(&r, &obs, &wall()).unwrap();
    let value = out.value.clone().unwrap();
    assert_eq!(value.revision, 1);
    assert_eq!(
        value.weights,
        BTreeMap::from([("v1".into(), 90), ("v2".into(), 10)])
    );
    assert_eq!(
        versions_of(&value).iter().filter(|v| **v == "v2").count(),
        1
    );
    assert_eq!(out.status.phase, RolloutPhase::Progressing);
    assert_eq!(
        condition(&out.status, PROGRESSING),
        ("True", "MovingShards")
    );

    // The shard manager placed them: Completed, stable weights recorded.
    let mut obs = obs;
    obs.current = value.shard_versions.values().cloned().map(Some).collect();
    obs.previous = Some(value.clone());
    let mut r = r;
    r.status = Some(out.status);
    let out = reconcile(&r, &obs, &wall()).unwrap();
    assert_eq!(out.value, None, "unchanged key is not rewritten");
    assert_eq!(out.status.phase, RolloutPhase::Completed);
    assert_eq!(out.status.weights.as_deref(), Some("v1=90,v2=10"));
    assert_eq!(
        out.status.last_stable_weights,
        BTreeMap::from([("v1".into(), 90), ("v2".into(), 10)])
    );
    let v2 = &out.status.versions[1];
    assert_eq!(
        (v2.name.as_str(), v2.weight, v2.shards, v2.ready_nodes),
        ("v2", 10, 1, 1)
    );
    assert_eq!(out.requeue, IDLE_REQUEUE);

    // Recomputing an unchanged state gives an equal status (no write storm).
    r.status = Some(out.status.clone());
    let again = reconcile(&r, &obs, &wall_at(5)).unwrap();
    assert_eq!(again.status, out.status);
}

fn completed(
    weights: &[(&str, i32)],
    generation: i64,
    current: &[&str],
) -> (ProtocolRollout, Observed) {
    let mut r = rollout(weights, generation);
    let mut obs = observed(
        current.iter().map(|c| Some(*c)).collect(),
        &[("v1", 3), ("v2", 3)],
    );
    let out = reconcile(&r, &obs, &wall()).unwrap();
    assert_eq!(out.status.phase, RolloutPhase::Completed);
    obs.previous = out.value.clone().or(obs.previous);
    r.status = Some(out.status);
    (r, obs)
}

#[test]
fn a_weight_change_waits_for_the_pool_then_moves_exactly_the_surplus() {
    let current: Vec<&str> = {
        let versions = [VersionWeight::new("v1", 90), VersionWeight::new("v2", 10)];
        let assigned = assign_versions(10, &versions, &[]).unwrap();
        assigned
            .iter()
            .map(|v| if v == "v1" { "v1" } else { "v2" })
            .collect()
    };
    let (mut r, mut obs) = completed(&[("v1", 90), ("v2", 10)], 1, &current);
    r.spec.versions[0].weight = 50;
    r.spec.versions[1].weight = 50;
    r.metadata.generation = Some(2);
    obs.pool_sizes.insert("v2".into(), 5);
    let out = reconcile(&r, &obs, &wall()).unwrap();
    // v2 has 3 of 5 nodes: nothing moves yet, but the weights are published.
    let value = out.value.clone().unwrap();
    assert_eq!(value.weights["v2"], 50);
    assert_eq!(versions_of(&value), current);
    assert_eq!(
        condition(&out.status, PROGRESSING),
        ("True", "WaitingForPool")
    );
    assert_eq!(
        out.status.weights.as_deref(),
        Some("v1=90,v2=10"),
        "applied weights stay"
    );

    obs.pools.get_mut("v2").unwrap().ready = 5;
    obs.previous = Some(value);
    let out = reconcile(&r, &obs, &wall()).unwrap();
    let value = out.value.unwrap();
    assert_eq!(value.revision, obs.previous.as_ref().unwrap().revision + 1);
    let moved: Vec<usize> = (0..10)
        .filter(|s| value.shard_versions[&(*s as u32)] != current[*s])
        .collect();
    assert_eq!(moved.len(), 4);
    assert!(moved.iter().all(|s| current[*s] == "v1"));
    assert_eq!(
        versions_of(&value).iter().filter(|v| **v == "v2").count(),
        5
    );
}

#[test]
fn paused_freezes_the_map() {
    let (mut r, obs) = completed(&[("v1", 100), ("v2", 0)], 1, &["v1"; 4]);
    r.spec.versions[0].weight = 0;
    r.spec.versions[1].weight = 100;
    r.spec.paused = true;
    r.metadata.generation = Some(2);
    let out = reconcile(&r, &obs, &wall()).unwrap();
    assert_eq!(out.status.phase, RolloutPhase::Paused);
    let value = out.value.unwrap();
    assert_eq!(versions_of(&value), vec!["v1"; 4]);
    assert_eq!(value.weights["v2"], 100);
    assert_eq!(condition(&out.status, PROGRESSING), ("False", "Paused"));
}

/// A 90/10 rollout told to move to 50/50 under a rollback policy while v2 errs at 20%, the
/// start of both rollback tests.
fn v2_erring_mid_move() -> (ProtocolRollout, Observed) {
    let (mut r, mut obs) = completed(&[("v1", 90), ("v2", 10)], 1, &["v1", "v1", "v1", "v2"]);
    r.spec.versions[0].weight = 50;
    r.spec.versions[1].weight = 50;
    r.spec.strategy.rollback = Some(policy());
    r.metadata.generation = Some(2);
    obs.pools.get_mut("v2").unwrap().error_rate = Some(0.2);
    (r, obs)
}

#[test]
fn a_sustained_error_rate_rolls_back_until_the_spec_changes() {
    let (mut r, mut obs) = v2_erring_mid_move();
    let mut rolled = None;
    for second in 0..=10 {
        let out = reconcile(&r, &obs, &wall_at(second)).unwrap();
        if let Some(value) = &out.value {
            obs.previous = Some(value.clone());
        }
        if out.rollback.is_some() {
            rolled = Some((second, out));
            break;
        }
        assert_eq!(out.status.phase, RolloutPhase::Progressing);
        r.status = Some(out.status);
    }
    let (second, out) = rolled.expect("rolled back");
    assert_eq!(second, 10, "after one whole window");
    assert_eq!(out.status.phase, RolloutPhase::RolledBack);
    assert_eq!(
        condition(&out.status, ROLLED_BACK),
        ("True", "ErrorRateExceeded")
    );
    let value = obs.previous.clone().unwrap();
    assert_eq!(
        value.weights,
        BTreeMap::from([("v1".into(), 90), ("v2".into(), 10)])
    );
    assert_eq!(versions_of(&value), vec!["v1", "v1", "v1", "v2"]);
    assert_eq!(
        out.status.last_stable_weights,
        BTreeMap::from([("v1".into(), 90), ("v2".into(), 10)])
    );

    // It stays rolled back on later passes of the same generation, even if errors stop.
    obs.pools.get_mut("v2").unwrap().error_rate = Some(0.0);
    r.status = Some(out.status.clone());
    let again = reconcile(&r, &obs, &wall_at(60)).unwrap();
    assert_eq!(again.status.phase, RolloutPhase::RolledBack);
    assert_eq!(again.status.conditions, out.status.conditions);
    assert_eq!(again.value, None);

    // A new spec generation restarts: progressing toward the new weights again.
    r.metadata.generation = Some(3);
    r.spec.versions[0].weight = 80;
    r.spec.versions[1].weight = 20;
    let fresh = reconcile(&r, &obs, &wall_at(60)).unwrap();
    assert_eq!(fresh.status.phase, RolloutPhase::Progressing);
    assert_eq!(
        fresh.status.analysis.as_ref().and_then(|a| a.generation),
        Some(3)
    );
    assert_eq!(condition(&fresh.status, ROLLED_BACK), ("False", "Healthy"));
}

#[test]
fn the_analysis_carries_over_to_another_operator_through_status() {
    let (mut r, mut obs) = v2_erring_mid_move();
    for second in 0..6 {
        let out = reconcile(&r, &obs, &wall_at(second)).unwrap();
        obs.previous = out.value.clone().or(obs.previous.clone());
        r.status = Some(out.status);
    }
    // "Restart": nothing but the object (with its status) is handed to the next pass.
    let stored: ProtocolRollout =
        serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
    let analysis = stored.status.as_ref().unwrap().analysis.clone().unwrap();
    assert_eq!(analysis.started_at, Some(wall_at(0)));
    let v2 = analysis.versions.iter().find(|v| v.name == "v2").unwrap();
    assert_eq!((v2.samples, v2.watched), (6, true));
    let mut r = stored;
    let mut rolled_at = None;
    for second in 6..=12 {
        let out = reconcile(&r, &obs, &wall_at(second)).unwrap();
        obs.previous = out.value.clone().or(obs.previous.clone());
        if out.rollback.is_some() {
            rolled_at = Some(second);
            break;
        }
        r.status = Some(out.status);
    }
    assert_eq!(
        rolled_at,
        Some(10),
        "one window after the first pass, not after the restart"
    );
}

fn with_request(r: &mut ProtocolRollout, id: &str, json: &str) {
    r.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ROLLOUT_REQUEST.into(), json.replace("ID", id));
}

#[test]
fn requests_are_answered_in_status_and_hold_until_the_spec_changes() {
    let (mut r, mut obs) = completed(&[("v1", 90), ("v2", 10)], 1, &["v1", "v1", "v1", "v2"]);
    r.spec.versions[0].weight = 50;
    r.spec.versions[1].weight = 50;
    r.metadata.generation = Some(2);
    obs.pools.get_mut("v2").unwrap().ready = 0;
    let out = reconcile(&r, &obs, &wall()).unwrap();
    assert_eq!(out.status.phase, RolloutPhase::Progressing);
    r.status = Some(out.status);

    // Pause by request: the spec stays as Git has it, the status holds the pause.
    with_request(&mut r, "1", r#"{"id":"ID","action":"pause"}"#);
    let out = reconcile(&r, &obs, &wall_at(1)).unwrap();
    assert!(!r.spec.paused);
    assert_eq!(out.status.phase, RolloutPhase::Paused);
    let answer = out.request.clone().unwrap();
    assert_eq!(
        (answer.id.as_str(), answer.outcome),
        ("1", RequestOutcome::Accepted)
    );
    assert_eq!(out.status.last_request, Some(answer));
    r.status = Some(out.status);
    // The same annotation is not answered twice.
    let out = reconcile(&r, &obs, &wall_at(2)).unwrap();
    assert_eq!(out.request, None);
    assert_eq!(out.status.phase, RolloutPhase::Paused);
    r.status = Some(out.status);

    // Promote while paused: a clear refusal, nothing changes.
    with_request(
        &mut r,
        "2",
        r#"{"id":"ID","action":"promote","version":"v2"}"#,
    );
    let out = reconcile(&r, &obs, &wall_at(3)).unwrap();
    let answer = out.request.clone().unwrap();
    assert_eq!(answer.outcome, RequestOutcome::Rejected);
    assert!(
        answer.message.contains("resume it first"),
        "{}",
        answer.message
    );
    assert_eq!(out.status.phase, RolloutPhase::Paused);
    r.status = Some(out.status);

    // Resume, then promote: all weight to v2 though the spec says 50/50.
    with_request(&mut r, "3", r#"{"id":"ID","action":"resume"}"#);
    let out = reconcile(&r, &obs, &wall_at(4)).unwrap();
    assert_eq!(out.status.phase, RolloutPhase::Progressing);
    r.status = Some(out.status);
    with_request(&mut r, "4", r#"{"id":"ID","action":"promote"}"#);
    obs.pools.get_mut("v2").unwrap().ready = 3;
    let out = reconcile(&r, &obs, &wall_at(5)).unwrap();
    assert_eq!(
        out.request.as_ref().unwrap().outcome,
        RequestOutcome::Accepted
    );
    assert_eq!(
        out.status.target_weights,
        BTreeMap::from([("v1".into(), 0), ("v2".into(), 100)])
    );
    assert_eq!(
        r.target_weights(),
        vec![("v1".to_string(), 50), ("v2".to_string(), 50)]
    );
    let value = out.value.clone().unwrap();
    assert_eq!(versions_of(&value), vec!["v2"; 4]);
    obs.previous = Some(value);
    r.status = Some(out.status);
    assert_eq!(
        r.target_weights(),
        vec![("v1".to_string(), 0), ("v2".to_string(), 100)]
    );

    // Abort: back to the last stable weights, phase Aborted.
    with_request(&mut r, "5", r#"{"id":"ID","action":"abort"}"#);
    let out = reconcile(&r, &obs, &wall_at(6)).unwrap();
    assert_eq!(out.status.phase, RolloutPhase::Aborted);
    assert_eq!(condition(&out.status, PROGRESSING), ("False", "Aborted"));
    assert_eq!(out.value.unwrap().weights["v2"], 10);
    r.status = Some(out.status);

    // A new commit (generation 3) is a new intent: the abort no longer holds. The shards
    // are still v1,v1,v1,v2 (75/25), so the new weights must place them differently for
    // the rollout to have work to do (70/30 of 4 shards is 3/1, already in place:
    // Completed at once); 30/70 is 1/3.
    r.metadata.generation = Some(3);
    r.spec.versions[0].weight = 30;
    r.spec.versions[1].weight = 70;
    let out = reconcile(&r, &obs, &wall_at(7)).unwrap();
    assert_eq!(out.status.phase, RolloutPhase::Progressing);
    assert_eq!(out.status.control, None);
    assert_eq!(
        out.status.target_weights,
        BTreeMap::from([("v1".into(), 30), ("v2".into(), 70)]),
        "the spec's weights, not the aborted-to stable ones"
    );
    assert_eq!(out.value.unwrap().weights["v2"], 70);
    assert_eq!(out.request, None, "request 5 was already answered");

    // A garbled annotation gets an answer too.
    with_request(&mut r, "x", "pause please");
    let out = reconcile(&r, &obs, &wall_at(8)).unwrap();
    let answer = out.request.unwrap();
    assert_eq!(answer.outcome, RequestOutcome::Rejected);
    assert!(
        answer.message.contains("must be JSON"),
        "{}",
        answer.message
    );
}

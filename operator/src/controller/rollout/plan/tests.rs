use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::crd::{
    ProtocolRolloutSpec, ProtocolVersion, RollbackPolicy, RolloutStrategy, RolloutVersion,
};

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
    Time(Timestamp::from_second(1_750_000_000).unwrap())
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
    let now = Instant::now();
    let mut analysis = Analysis::new(None, now);
    let obs = observed(vec![None; 10], &[("v1", 2), ("v2", 1)]);
    let out = reconcile(&r, &obs, &mut analysis, now, &wall()).unwrap();
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
    let out = reconcile(&r, &obs, &mut analysis, now, &wall()).unwrap();
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
    let again = reconcile(
        &r,
        &obs,
        &mut analysis,
        now + Duration::from_secs(5),
        &wall(),
    )
    .unwrap();
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
    let now = Instant::now();
    let out = reconcile(&r, &obs, &mut Analysis::new(None, now), now, &wall()).unwrap();
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
    let now = Instant::now();
    let mut analysis = Analysis::new(None, now);
    let out = reconcile(&r, &obs, &mut analysis, now, &wall()).unwrap();
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
    let out = reconcile(&r, &obs, &mut analysis, now, &wall()).unwrap();
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
    let now = Instant::now();
    let out = reconcile(&r, &obs, &mut Analysis::new(None, now), now, &wall()).unwrap();
    assert_eq!(out.status.phase, RolloutPhase::Paused);
    let value = out.value.unwrap();
    assert_eq!(versions_of(&value), vec!["v1"; 4]);
    assert_eq!(value.weights["v2"], 100);
    assert_eq!(condition(&out.status, PROGRESSING), ("False", "Paused"));
}

#[test]
fn a_sustained_error_rate_rolls_back_until_the_spec_changes() {
    let (mut r, mut obs) = completed(&[("v1", 90), ("v2", 10)], 1, &["v1", "v1", "v1", "v2"]);
    r.spec.versions[0].weight = 50;
    r.spec.versions[1].weight = 50;
    r.spec.strategy.rollback = Some(RollbackPolicy {
        max_error_rate: 0.05,
        window_seconds: 10,
    });
    r.metadata.generation = Some(2);
    obs.pools.get_mut("v2").unwrap().error_rate = Some(0.2);
    let t0 = Instant::now();
    let mut analysis = Analysis::new(None, t0);
    let mut rolled = None;
    for second in 0..=10 {
        let now = t0 + Duration::from_secs(second);
        let out = reconcile(&r, &obs, &mut analysis, now, &wall()).unwrap();
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
    let later = t0 + Duration::from_secs(60);
    let again = reconcile(&r, &obs, &mut analysis, later, &wall()).unwrap();
    assert_eq!(again.status.phase, RolloutPhase::RolledBack);
    assert_eq!(again.status.conditions, out.status.conditions);
    assert_eq!(again.value, None);

    // A new spec generation restarts: progressing toward the new weights again.
    r.metadata.generation = Some(3);
    r.spec.versions[0].weight = 80;
    r.spec.versions[1].weight = 20;
    let fresh = reconcile(&r, &obs, &mut analysis, later, &wall()).unwrap();
    assert_eq!(fresh.status.phase, RolloutPhase::Progressing);
    assert_eq!(analysis.generation, Some(3));
    assert_eq!(condition(&fresh.status, ROLLED_BACK), ("False", "Healthy"));
}

//! The ProtocolRollout reconciler's pure core: from the spec, the stored status, what etcd
//! shows (shard versions, pools) and the rollback analysis, compute the `rollout` key value and
//! the status.
//!
//! - **Targets**: each version's share of shards by weight ([`crate::placement::assign_versions`] on
//!   the current shard → version map, so an edit moves only the surplus).
//! - **Health gate**: a shard is pointed at a new version only when that version's pool is
//!   Ready (its registered Ready nodes reach the pool size the SignalingCluster reconciler
//!   runs); until then it stays where it is and the rollout waits (`WaitingForPool`).
//!   Unassigned shards always get their target.
//! - **Requests** ([`super::requests`]): pause, resume, promote and abort from the annotation,
//!   answered in `status.lastRequest` and held in `status.control` until the spec changes.
//! - **Pause**: `spec.paused` or a pause request freezes the map at the shards' current
//!   versions.
//! - **Target weights**: the spec's, or all weight to a promoted version.
//! - **Rollback**: versions gaining weight over `status.lastStableWeights` are analysed
//!   ([`super::analysis`], kept in `status.analysis`); a breach returns the weights to
//!   `lastStableWeights`, phase RolledBack, until the spec changes (a new generation restarts
//!   the analysis). An abort request does the same by hand (phase Aborted).
//! - **Completed** when every shard is on its target version and, with a rollback policy, the
//!   analysis judged it clean; the weights then become `lastStableWeights`.
//! - **Applied weights** (`status.versions[].weight`, what pools are sized by): the previous
//!   applied weights until the shards reach their targets, then the effective weights.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchboard_contract::keys::RolloutValue;

use super::analysis::{self, Breach, Verdict};
use super::requests::{self, Situation};
use crate::controller::conditions::{self, Status};
use crate::crd::{
    ProtocolRollout, ProtocolRolloutStatus, RequestAction, RequestOutcome, RequestStatus,
    RolloutControl, RolloutPhase, VersionStatus,
};
use crate::placement::{PlacementError, VersionWeight, assign_versions};

/// Condition type: shards are moving toward the weights.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: every version with weight has a Ready node.
pub const AVAILABLE: &str = "Available";
/// Condition type: the rollout was rolled back automatically.
pub const ROLLED_BACK: &str = "RolledBack";

/// Requeue while shards move or analysis runs.
pub const ACTIVE_REQUEUE: Duration = Duration::from_secs(2);
/// Requeue when nothing is moving (a backstop; watches trigger the rest).
pub const IDLE_REQUEUE: Duration = Duration::from_secs(30);

/// One version pool as etcd shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolObs {
    /// Registered nodes in state Ready.
    pub ready: u32,
    /// Mean `error_rate` of the pool's registered nodes.
    pub error_rate: Option<f64>,
}

/// What the reconciler read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Shards `0..shard_count`.
    pub shard_count: u32,
    /// Each shard's current version (`None`: unassigned), indexed by shard.
    pub current: Vec<Option<String>>,
    /// Pools by version name.
    pub pools: BTreeMap<String, PoolObs>,
    /// Nodes each pool should run (from the SignalingCluster reconciler's pool sizes).
    pub pool_sizes: BTreeMap<String, u32>,
    /// The `rollout` key as stored.
    pub previous: Option<RolloutValue>,
    /// Error rates from the rollback policy's Prometheus query (`None`: use the nodes'
    /// reports in `pools`; `Err`: the query failed, take no sample).
    pub external_rates: Option<Result<BTreeMap<String, f64>, String>>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// A new `rollout` value to write (`None`: unchanged).
    pub value: Option<RolloutValue>,
    /// The status.
    pub status: ProtocolRolloutStatus,
    /// A rollback decided in this pass.
    pub rollback: Option<Breach>,
    /// A request answered in this pass.
    pub request: Option<RequestStatus>,
    /// When to look again.
    pub requeue: Duration,
}

fn weight(w: i32) -> u32 {
    u32::try_from(w.clamp(0, 100)).unwrap_or(0)
}

fn render(weights: &[(String, u32)]) -> String {
    weights
        .iter()
        .map(|(name, w)| format!("{name}={w}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Computes the key value and status of `rollout` at `wall` (see the module doc).
pub fn reconcile(
    rollout: &ProtocolRollout,
    observed: &Observed,
    wall: &Time,
) -> Result<Outcome, PlacementError> {
    let generation = rollout.metadata.generation;
    let previous = rollout.status.clone().unwrap_or_default();
    let same_generation = previous.observed_generation == generation;
    let spec: Vec<(String, u32)> = rollout
        .spec
        .versions
        .iter()
        .map(|v| (v.name.clone(), weight(v.weight)))
        .collect();
    let stable: BTreeMap<String, u32> = previous
        .last_stable_weights
        .iter()
        .map(|(n, w)| (n.clone(), weight(*w)))
        .collect();
    // Requests hold until the spec changes (a new commit in Git is a new intent).
    let mut control = previous
        .control
        .clone()
        .filter(|c| c.generation == generation)
        .unwrap_or_else(|| RolloutControl {
            generation,
            ..RolloutControl::default()
        });
    let mut rolled_back =
        previous.phase == RolloutPhase::RolledBack && same_generation && !stable.is_empty();

    let mut answered = None;
    if let Some(pending) = requests::pending(rollout) {
        answered = Some(match pending {
            Err(rejection) => requests::answered_at(rejection, wall),
            Ok(request) => {
                let situation = Situation {
                    phase: if same_generation {
                        previous.phase
                    } else {
                        RolloutPhase::Progressing
                    },
                    spec_paused: rollout.spec.paused,
                    control: &control,
                    versions: spec.iter().map(|(n, _)| n.clone()).collect(),
                    target: targets(&spec, &control),
                    stable: render(
                        &stable
                            .iter()
                            .map(|(n, w)| (n.clone(), *w))
                            .collect::<Vec<_>>(),
                    ),
                };
                let (answer, next) = requests::decide(&request, &situation, wall);
                if answer.outcome == RequestOutcome::Accepted
                    && request.action == RequestAction::Promote
                {
                    rolled_back = false;
                }
                control = next;
                answer
            }
        });
    }
    let last_request = answered.clone().or(previous.last_request.clone());
    let paused = rollout.spec.paused || control.paused;
    let aborted = control.aborted && !stable.is_empty();
    let target = targets(&spec, &control);

    // Rollback analysis of the versions gaining weight.
    let policy = rollout.spec.strategy.rollback.as_ref();
    let watched: BTreeSet<String> = if stable.is_empty() {
        BTreeSet::new()
    } else {
        target
            .iter()
            .filter(|(name, w)| *w > stable.get(name).copied().unwrap_or(0))
            .map(|(name, _)| name.clone())
            .collect()
    };
    let mut breach = None;
    let mut verdict = Verdict::Clean;
    let mut analysis_status = previous.analysis.clone().filter(|_| same_generation);
    if let Some(policy) = policy
        && !watched.is_empty()
        && !rolled_back
        && !aborted
        && !paused
    {
        let (rates, source, failure) = match &observed.external_rates {
            Some(Ok(rates)) => (rates.clone(), "prometheus", None),
            Some(Err(error)) => (BTreeMap::new(), "prometheus", Some(error.clone())),
            None => (
                observed
                    .pools
                    .iter()
                    .filter_map(|(v, p)| p.error_rate.map(|r| (v.clone(), r)))
                    .collect(),
                "nodes",
                None,
            ),
        };
        let mut sampled = analysis::sample(
            analysis_status.as_ref(),
            generation,
            &watched,
            &rates,
            source,
            policy,
            wall,
        );
        verdict = analysis::verdict(&sampled, policy, wall);
        sampled.message = match (&verdict, failure) {
            (_, Some(error)) => format!("no sample: the Prometheus query failed: {error}"),
            (Verdict::Pending(message), None) => message.clone(),
            (Verdict::Clean, None) => "clean: every watched version is within the limits".into(),
            (Verdict::Breach(b), None) => format!("{} breached with {:.4}", b.version, b.rate),
        };
        if let Verdict::Breach(b) = &verdict {
            breach = Some(b.clone());
            rolled_back = true;
        }
        analysis_status = Some(sampled);
    }

    let effective: Vec<(String, u32)> = if rolled_back || aborted {
        let mut list: Vec<(String, u32)> = spec
            .iter()
            .map(|(name, _)| (name.clone(), stable.get(name).copied().unwrap_or(0)))
            .collect();
        for (name, w) in &stable {
            if !list.iter().any(|(n, _)| n == name) {
                list.push((name.clone(), *w));
            }
        }
        list
    } else {
        target.clone()
    };
    let versions: Vec<VersionWeight> = effective
        .iter()
        .map(|(name, w)| VersionWeight::new(name.clone(), *w))
        .collect();
    let target = assign_versions(observed.shard_count, &versions, &observed.current)?;

    let pool_ready = |version: &str| {
        let ready = observed.pools.get(version).map(|p| p.ready).unwrap_or(0);
        let size = observed
            .pool_sizes
            .get(version)
            .copied()
            .unwrap_or(1)
            .max(1);
        ready >= size
    };
    let mut map: BTreeMap<u32, String> = BTreeMap::new();
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    let mut to_move = 0usize;
    for shard in 0..observed.shard_count {
        let index = shard as usize;
        let want = target[index].clone();
        let current = observed.current.get(index).cloned().flatten();
        let chosen = match current {
            Some(current) if current != want => {
                to_move += 1;
                if paused {
                    current
                } else if pool_ready(&want) {
                    want
                } else {
                    waiting.insert(want);
                    current
                }
            }
            Some(current) => current,
            None => {
                to_move += 1;
                want
            }
        };
        map.insert(shard, chosen);
    }
    let mut weights: BTreeMap<String, u32> = effective.iter().cloned().collect();
    for version in map.values() {
        weights.entry(version.clone()).or_insert(0);
    }
    let value = match &observed.previous {
        Some(p) if p.weights == weights && p.shard_versions == map => None,
        p => Some(RolloutValue {
            revision: p.as_ref().map_or(0, |p| p.revision) + 1,
            weights,
            shard_versions: map,
        }),
    };

    let done = to_move == 0;
    let analysis_clean = policy.is_none() || watched.is_empty() || verdict == Verdict::Clean;
    let phase = if rolled_back {
        RolloutPhase::RolledBack
    } else if aborted {
        RolloutPhase::Aborted
    } else if paused {
        RolloutPhase::Paused
    } else if done && analysis_clean {
        RolloutPhase::Completed
    } else {
        RolloutPhase::Progressing
    };

    let effective_i32: BTreeMap<String, i32> = effective
        .iter()
        .map(|(n, w)| (n.clone(), i32::try_from(*w).unwrap_or(0)))
        .collect();
    let previous_applied: BTreeMap<String, i32> = previous
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect();
    let applied = if done || previous_applied.is_empty() {
        effective_i32.clone()
    } else {
        previous_applied
    };
    let last_stable_weights = if phase == RolloutPhase::Completed {
        effective_i32.clone()
    } else {
        previous.last_stable_weights.clone()
    };

    let mut names: Vec<String> = spec.iter().map(|(n, _)| n.clone()).collect();
    for name in applied.keys() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let shards_on = |name: &str| {
        observed
            .current
            .iter()
            .filter(|c| c.as_deref() == Some(name))
            .count()
    };
    let version_status: Vec<VersionStatus> = names
        .iter()
        .map(|name| VersionStatus {
            name: name.clone(),
            weight: applied.get(name).copied().unwrap_or(0),
            shards: i32::try_from(shards_on(name)).unwrap_or(i32::MAX),
            ready_nodes: i32::try_from(observed.pools.get(name).map_or(0, |p| p.ready))
                .unwrap_or(i32::MAX),
            error_rate: observed.pools.get(name).and_then(|p| p.error_rate),
        })
        .collect();
    let applied_list: Vec<(String, u32)> = names
        .iter()
        .filter_map(|n| applied.get(n).map(|w| (n.clone(), weight(*w))))
        .collect();

    let mut conditions = previous.conditions.clone();
    let (status, reason, message) = match phase {
        RolloutPhase::Progressing if !waiting.is_empty() => {
            let pools: Vec<String> = waiting
                .iter()
                .map(|v| {
                    let ready = observed.pools.get(v).map_or(0, |p| p.ready);
                    let size = observed.pool_sizes.get(v).copied().unwrap_or(1);
                    format!("{v} ({ready}/{size} nodes ready)")
                })
                .collect();
            (
                Status::True,
                "WaitingForPool",
                format!("waiting for pool {} before moving shards", pools.join(", ")),
            )
        }
        RolloutPhase::Progressing if !done => (
            Status::True,
            "MovingShards",
            format!("{to_move} shards to move toward {}", render(&effective)),
        ),
        RolloutPhase::Progressing => (
            Status::True,
            "Analyzing",
            format!(
                "shards are in place; watching error rates of {}: {}",
                watched.iter().cloned().collect::<Vec<_>>().join(", "),
                analysis_status
                    .as_ref()
                    .map_or(String::new(), |a| a.message.clone())
            ),
        ),
        RolloutPhase::Completed => (
            Status::False,
            "Completed",
            format!("every shard is on its version ({})", render(&effective)),
        ),
        RolloutPhase::Aborted => (
            Status::False,
            "Aborted",
            format!("aborted by request: back to {}", render(&effective)),
        ),
        RolloutPhase::Paused => (
            Status::False,
            "Paused",
            format!("paused with {to_move} shards not on their target version"),
        ),
        RolloutPhase::RolledBack => (
            Status::False,
            "RolledBack",
            format!("rolled back to {}", render(&effective)),
        ),
    };
    conditions::set(
        &mut conditions,
        PROGRESSING,
        status,
        reason,
        message,
        generation,
        wall,
    );
    let unavailable: Vec<&str> = effective
        .iter()
        .filter(|(n, w)| *w > 0 && observed.pools.get(n).is_none_or(|p| p.ready == 0))
        .map(|(n, _)| n.as_str())
        .collect();
    conditions::set(
        &mut conditions,
        AVAILABLE,
        Status::from(unavailable.is_empty()),
        if unavailable.is_empty() {
            "PoolsReady"
        } else {
            "PoolNotReady"
        },
        if unavailable.is_empty() {
            "every version with weight has a ready node".into()
        } else {
            format!("no ready node in {}", unavailable.join(", "))
        },
        generation,
        wall,
    );
    let rollback_message = match (&breach, conditions::get(&conditions, ROLLED_BACK)) {
        (Some(b), _) => format!(
            "error rate of {} was {:.4} (limit {}{}); weights returned to {}",
            b.version,
            b.rate,
            policy.map_or(0.0, |p| p.max_error_rate),
            b.stable
                .map_or(String::new(), |s| format!(", stable versions {s:.4}")),
            render(&effective)
        ),
        (None, Some(c)) if rolled_back && c.status == "True" => c.message.clone(),
        _ => "no automatic rollback".into(),
    };
    conditions::set(
        &mut conditions,
        ROLLED_BACK,
        Status::from(rolled_back),
        if rolled_back {
            "ErrorRateExceeded"
        } else {
            "Healthy"
        },
        rollback_message,
        generation,
        wall,
    );

    let requeue = if phase == RolloutPhase::Progressing {
        ACTIVE_REQUEUE
    } else {
        IDLE_REQUEUE
    };
    let control =
        (control.paused || control.aborted || control.promoted.is_some()).then_some(control);
    Ok(Outcome {
        value,
        status: ProtocolRolloutStatus {
            phase,
            versions: version_status,
            weights: Some(render(&applied_list)),
            conditions,
            observed_generation: generation,
            last_stable_weights,
            last_request,
            control,
            analysis: analysis_status,
            target_weights: effective_i32,
        },
        rollback: breach,
        request: answered,
        requeue,
    })
}

/// The weights shards move toward: all to a promoted version, else the spec's.
fn targets(spec: &[(String, u32)], control: &RolloutControl) -> Vec<(String, u32)> {
    match &control.promoted {
        Some(version) if spec.iter().any(|(n, _)| n == version) => spec
            .iter()
            .map(|(n, _)| (n.clone(), if n == version { 100 } else { 0 }))
            .collect(),
        _ => spec.to_vec(),
    }
}

#[cfg(test)]
mod tests;

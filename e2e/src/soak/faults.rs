//! The fault schedule (chosen by a seeded RNG) and how each fault is injected and healed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;
use tokio::sync::watch;

use k8s_openapi::api::core::v1::Pod;
use switchboard_operator::controller::labels;

use super::env::{NS, OPERATOR_NS, SoakEnv, pod_ip, pod_name, pod_ready};
use super::error::SoakError;
use crate::pod_runner::control::Action;

/// Node lease TTL (2 s, docs/architecture.md); pauses and partitions last longer than this.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// Kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` of a node process.
    KillNode,
    /// SIGSTOP of a node for longer than its lease, then SIGCONT.
    FreezeNode,
    /// The operator's leader pod killed.
    KillOperatorLeader,
    /// The fleet etcd killed and restarted on its data.
    RestartEtcd,
    /// A node cut off from etcd (not from clients) for longer than its lease.
    PartitionNodeFromEtcd,
    /// ProtocolRollout weights edited.
    WeightEdit,
    /// SignalingCluster config edited (hot reload).
    ConfigChange,
    /// A node killed and the rollout weights edited right after, during its failover.
    WeightEditDuringFailover,
    /// The only Ready node of a version pool frozen for [`SOLE_NODE_HOLD`], long enough that
    /// waiting for it is not a recovery (any node when no pool has a single one).
    LoseSoleNode,
}

/// How long [`FaultKind::LoseSoleNode`] keeps the node frozen.
pub const SOLE_NODE_HOLD: Duration = Duration::from_secs(20);

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillNode,
        FaultKind::FreezeNode,
        FaultKind::KillOperatorLeader,
        FaultKind::RestartEtcd,
        FaultKind::PartitionNodeFromEtcd,
        FaultKind::WeightEdit,
        FaultKind::ConfigChange,
        FaultKind::WeightEditDuringFailover,
        FaultKind::LoseSoleNode,
    ];

    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillNode => "kill-9-node",
            FaultKind::FreezeNode => "sigstop-node",
            FaultKind::KillOperatorLeader => "kill-operator-leader",
            FaultKind::RestartEtcd => "restart-etcd",
            FaultKind::PartitionNodeFromEtcd => "node-cut-from-etcd",
            FaultKind::WeightEdit => "weight-edit",
            FaultKind::ConfigChange => "config-change",
            FaultKind::WeightEditDuringFailover => "weight-edit-during-failover",
            FaultKind::LoseSoleNode => "lose-sole-node",
        }
    }
}

/// One planned fault: everything random about it is drawn up front from the run's RNG, so a
/// seed names the same schedule every time.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Which fault.
    pub kind: FaultKind,
    /// Index into the Ready node pods (sorted by name) for node faults.
    pub target: usize,
    /// How long a pause, partition or etcd outage lasts.
    pub hold: Duration,
    /// Gap before injecting it (after the previous fault recovered).
    pub gap: Duration,
    /// New weight of the first version (weight edits), new invite timeout (config changes).
    pub value: u32,
}

/// Draws the next fault, of one of `kinds` (every kind when empty).
pub fn plan(rng: &mut StdRng, kinds: &[FaultKind]) -> Planned {
    let kinds = if kinds.is_empty() {
        &FaultKind::ALL[..]
    } else {
        kinds
    };
    let kind = kinds[rng.random_range(0..kinds.len())];
    let hold_ms = match kind {
        FaultKind::RestartEtcd => rng.random_range(500..3_000),
        FaultKind::LoseSoleNode => SOLE_NODE_HOLD.as_millis() as u64,
        _ => rng.random_range(LEASE_TTL.as_millis() as u64 * 2..LEASE_TTL.as_millis() as u64 * 4),
    };
    Planned {
        kind,
        target: rng.random_range(0..16),
        hold: Duration::from_millis(hold_ms),
        gap: Duration::from_millis(rng.random_range(1_000..4_000)),
        value: match kind {
            FaultKind::WeightEdit | FaultKind::WeightEditDuringFailover => {
                [0, 20, 50, 80, 100][rng.random_range(0..5)]
            }
            _ => rng.random_range(20..40),
        },
    }
}

/// What was done, for the report.
#[derive(Debug, Clone, Default)]
pub struct Injected {
    /// Human-readable target.
    pub target: String,
    /// The faulted node was the only Ready node of its version pool (its shards have no
    /// other node of their pool to fail over to).
    pub sole_of_pool: bool,
}

/// The version pool of `pod`.
fn version_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(labels::VERSION)
        .map(String::as_str)
}

/// Whether `pod` is the only one of `pods` in its version pool.
fn is_sole_of_pool(pods: &[Pod], pod: &Pod) -> bool {
    pods.iter()
        .filter(|p| version_of(p) == version_of(pod))
        .count()
        == 1
}

/// Injects `fault` into run cluster `name` and heals it after its hold time.
///
/// `effective` gets the moment the disruption took effect (the kill, pause, cut, etcd stop or
/// edit returned), which is what recovery is timed from.
pub async fn inject(
    env: &mut SoakEnv,
    name: &str,
    fault: &Planned,
    effective: &watch::Sender<Option<Instant>>,
) -> Result<Injected, SoakError> {
    let now = || {
        let _ = effective.send(Some(Instant::now()));
    };
    let pods: Vec<_> = env
        .node_pods(name)
        .await
        .into_iter()
        .filter(pod_ready)
        .collect();
    let node = if pods.is_empty() {
        None
    } else {
        Some(&pods[fault.target % pods.len()])
    };
    let no_node = || SoakError::Setup(format!("no Ready node of {name} to fault"));
    let sole_of_pool = node.is_some_and(|n| is_sole_of_pool(&pods, n));
    match fault.kind {
        FaultKind::KillNode => {
            let pod = node.ok_or_else(no_node)?;
            let target = format!("{NS}/{}", pod_name(pod));
            env.cluster.ctl(Action::Kill, &target, None).await?;
            now();
            Ok(Injected {
                target,
                sole_of_pool,
            })
        }
        FaultKind::FreezeNode => {
            let pod = node.ok_or_else(no_node)?;
            let target = format!("{NS}/{}", pod_name(pod));
            env.cluster.ctl(Action::Freeze, &target, None).await?;
            now();
            tokio::time::sleep(fault.hold).await;
            let replaced = resume(env, &target).await?;
            Ok(Injected {
                target: format!("{target} for {:?}{replaced}", fault.hold),
                sole_of_pool,
            })
        }
        FaultKind::LoseSoleNode => {
            let sole: Vec<&Pod> = pods.iter().filter(|p| is_sole_of_pool(&pods, p)).collect();
            let pod = if sole.is_empty() {
                node.ok_or_else(no_node)?
            } else {
                sole[fault.target % sole.len()]
            };
            let target = format!("{NS}/{}", pod_name(pod));
            env.cluster.ctl(Action::Freeze, &target, None).await?;
            now();
            tokio::time::sleep(fault.hold).await;
            let replaced = resume(env, &target).await?;
            Ok(Injected {
                target: format!("{target} for {:?}{replaced}", fault.hold),
                sole_of_pool: !sole.is_empty(),
            })
        }
        FaultKind::KillOperatorLeader => {
            let leader = env
                .leader()
                .await
                .ok_or_else(|| SoakError::Setup("no operator leader".into()))?;
            let target = format!("{OPERATOR_NS}/{leader}");
            env.cluster.ctl(Action::Kill, &target, None).await?;
            now();
            Ok(Injected {
                target,
                ..Injected::default()
            })
        }
        FaultKind::RestartEtcd => {
            env.etcd.stop();
            now();
            env.etcd.restart(fault.hold).await?;
            Ok(Injected {
                target: format!("fleet etcd down {:?}", fault.hold),
                ..Injected::default()
            })
        }
        FaultKind::PartitionNodeFromEtcd => {
            let pod = node.ok_or_else(no_node)?;
            let ip: IpAddr = pod_ip(pod)
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(|| SoakError::Setup(format!("{} has no IP", pod_name(pod))))?;
            env.proxy.blackhole(ip);
            now();
            tokio::time::sleep(fault.hold).await;
            env.proxy.heal(ip);
            Ok(Injected {
                target: format!("{NS}/{} ({ip}) for {:?}", pod_name(pod), fault.hold),
                sole_of_pool,
            })
        }
        FaultKind::WeightEdit => {
            let target = edit_weights(env, name, fault.value)?;
            now();
            Ok(Injected {
                target,
                ..Injected::default()
            })
        }
        FaultKind::WeightEditDuringFailover => {
            let pod = node.ok_or_else(no_node)?;
            let target = format!("{NS}/{}", pod_name(pod));
            env.cluster.ctl(Action::Kill, &target, None).await?;
            now();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let weights = edit_weights(env, name, fault.value)?;
            Ok(Injected {
                target: format!("{target} killed, then {weights}"),
                sole_of_pool,
            })
        }
        FaultKind::ConfigChange => {
            let patch = json!({"spec": {"config": {"inviteTimeoutSeconds": fault.value}}});
            env.kubectl(&[
                "patch",
                "sigc",
                name,
                "--type=merge",
                "-p",
                &patch.to_string(),
            ])?;
            now();
            Ok(Injected {
                target: format!("sigc/{name} inviteTimeoutSeconds={}", fault.value),
                ..Injected::default()
            })
        }
    }
}

/// Resumes the frozen pod `target` (`namespace/name`). A pod deleted meanwhile (the operator
/// replaced the failed only node of its pool) is not an error: returns a note saying so.
async fn resume(env: &SoakEnv, target: &str) -> Result<&'static str, SoakError> {
    let Err(error) = env.cluster.ctl(Action::Resume, target, None).await else {
        return Ok("");
    };
    let (ns, name) = target.split_once('/').unwrap_or((NS, target));
    let api: kube::Api<Pod> = kube::Api::namespaced(env.cluster.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(None) => Ok(", deleted while frozen"),
        Ok(Some(pod)) if pod.metadata.deletion_timestamp.is_some() => Ok(", deleted while frozen"),
        _ => Err(error.into()),
    }
}

/// Sets the rollout's weights to `w`/`100 - w`; returns what it did.
fn edit_weights(env: &SoakEnv, name: &str, w: u32) -> Result<String, SoakError> {
    let w = w.min(100);
    let patch = json!([
        {"op": "replace", "path": "/spec/versions/0/weight", "value": w},
        {"op": "replace", "path": "/spec/versions/1/weight", "value": 100 - w},
    ]);
    env.kubectl(&[
        "patch",
        "prollout",
        name,
        "--type=json",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(format!("prollout/{name} weights {w}/{}", 100 - w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_seed_names_one_schedule() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20).map(|_| plan(&mut rng, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn a_restricted_plan_draws_only_its_kinds() {
        let mut rng = StdRng::seed_from_u64(3);
        let only = [FaultKind::LoseSoleNode, FaultKind::KillNode];
        let plans: Vec<Planned> = (0..100).map(|_| plan(&mut rng, &only)).collect();
        assert!(plans.iter().all(|p| only.contains(&p.kind)));
        assert!(only.iter().all(|k| plans.iter().any(|p| p.kind == *k)));
        assert!(
            plans
                .iter()
                .filter(|p| p.kind == FaultKind::LoseSoleNode)
                .all(|p| p.hold == SOLE_NODE_HOLD)
        );
    }

    #[test]
    fn every_kind_is_drawn_and_pauses_outlast_the_lease() {
        let mut rng = StdRng::seed_from_u64(1);
        let plans: Vec<Planned> = (0..500).map(|_| plan(&mut rng, &[])).collect();
        for kind in FaultKind::ALL {
            assert!(plans.iter().any(|p| p.kind == kind), "{kind:?} never drawn");
        }
        for p in &plans {
            if matches!(
                p.kind,
                FaultKind::FreezeNode | FaultKind::PartitionNodeFromEtcd | FaultKind::LoseSoleNode
            ) {
                assert!(p.hold > LEASE_TTL, "{p:?}");
            }
            if matches!(
                p.kind,
                FaultKind::WeightEdit | FaultKind::WeightEditDuringFailover
            ) {
                assert!(p.value <= 100);
            }
        }
    }
}

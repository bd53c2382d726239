//! Which signaling-node pods to create and delete, pool by pool: scale up at once, scale down
//! and roll out new templates one ready pod at a time, health-gated.
//!
//! Rolling update (new image or pod settings) surges: while every pod of the pool is ready
//! and none is terminating, one up-to-date pod is added; once it is ready, one outdated pod is
//! deleted (it drains on SIGTERM and hands its shards off); repeat. A pool never drops below
//! its ready size because of an update, and a failing new version stalls at one extra pod
//! instead of replacing the fleet. Pods that are not ready, failed or outdated-and-unready go
//! first; pods of versions no longer in the rollout scale down the same careful way.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::pods::{desired_pod, pod_index, pool_template_hash, recorded_hash};
use super::pools::VersionPool;
use crate::controller::labels;
use crate::controller::{Error, Result};
use crate::crd::SignalingCluster;

/// What to do with the pods of a cluster now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodPlan {
    /// Pods to create.
    pub create: Vec<Pod>,
    /// Names of pods to delete (gracefully: they drain on SIGTERM).
    pub delete: Vec<String>,
    /// Per-pool counts, for status.
    pub pools: Vec<PoolSummary>,
}

impl PodPlan {
    /// Nothing to create, delete or wait for: every pool has its size, all up to date.
    pub fn is_settled(&self) -> bool {
        self.create.is_empty()
            && self.delete.is_empty()
            && self.pools.iter().all(PoolSummary::is_settled)
    }

    /// Pods that pass readiness, over all pools.
    pub fn ready(&self) -> u32 {
        self.pools.iter().map(|p| p.ready).sum()
    }
}

/// Observed counts of one version pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSummary {
    /// Version name.
    pub version: String,
    /// Pods the pool should run.
    pub desired: u32,
    /// Pods that are neither terminating nor finished.
    pub live: u32,
    /// Live pods that pass readiness.
    pub ready: u32,
    /// Live pods built from an older template.
    pub outdated: u32,
    /// Pods being deleted.
    pub terminating: u32,
}

impl PoolSummary {
    /// The pool has exactly its size, every pod ready and up to date, none terminating.
    pub fn is_settled(&self) -> bool {
        self.live == self.desired
            && self.ready == self.desired
            && self.outdated == 0
            && self.terminating == 0
    }
}

/// Whether the kubelet reports `pod` ready.
pub fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|list| {
        list.iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Whether `pod` is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether `pod` ran to completion or failed (it will never serve again).
pub fn is_finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Failed" | "Succeeded"))
}

struct Member<'a> {
    name: &'a str,
    index: Option<u32>,
    ready: bool,
    current: bool,
}

/// Plans pod creations and deletions for every pool of `cluster`. `existing` are the pods
/// that carry the cluster's label (any version); pods of versions not in `pools` are scaled
/// to zero.
pub fn plan_pods(
    cluster: &SignalingCluster,
    pools: &[VersionPool],
    existing: &[Pod],
) -> Result<PodPlan> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey("name"))?;
    let mut by_version: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in existing {
        if pod.labels().get(labels::CLUSTER).map(String::as_str) != Some(name) {
            continue;
        }
        let version = pod
            .labels()
            .get(labels::VERSION)
            .map(String::as_str)
            .unwrap_or("");
        by_version.entry(version).or_default().push(pod);
    }

    let mut plan = PodPlan::default();
    let known: BTreeSet<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    for pool in pools {
        let pods = by_version
            .get(pool.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let hash = pool_template_hash(cluster, pool)?;
        plan_pool(cluster, name, pool, Some(&hash), pods, true, &mut plan)?;
    }
    // Retired pools give up serving pods only once the active pools serve at full size.
    let active_ready = plan.pools.iter().all(|p| p.ready >= p.desired);
    for (version, pods) in &by_version {
        if known.contains(version) {
            continue;
        }
        let retired = VersionPool {
            name: (*version).to_string(),
            image: String::new(),
            protocols: Vec::new(),
            weight: 0,
            replicas: 0,
        };
        plan_pool(cluster, name, &retired, None, pods, active_ready, &mut plan)?;
    }
    Ok(plan)
}

fn plan_pool(
    cluster: &SignalingCluster,
    name: &str,
    pool: &VersionPool,
    hash: Option<&str>,
    pods: &[&Pod],
    may_remove_ready: bool,
    plan: &mut PodPlan,
) -> Result<()> {
    let mut summary = PoolSummary {
        version: pool.name.clone(),
        desired: pool.replicas,
        ..Default::default()
    };
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut live: Vec<Member<'_>> = Vec::new();
    for pod in pods {
        let Some(pod_name) = pod.metadata.name.as_deref() else {
            continue;
        };
        let index = pod_index(name, &pool.name, pod_name);
        taken.extend(index);
        if is_terminating(pod) {
            summary.terminating += 1;
        } else if is_finished(pod) {
            plan.delete.push(pod_name.to_string());
        } else {
            live.push(Member {
                name: pod_name,
                index,
                ready: is_ready(pod),
                current: hash.is_some() && recorded_hash(pod) == hash,
            });
        }
    }
    summary.live = live.len() as u32;
    summary.ready = live.iter().filter(|m| m.ready).count() as u32;
    summary.outdated = live.iter().filter(|m| !m.current).count() as u32;
    let desired = pool.replicas as usize;
    let quiet = summary.terminating == 0;
    let all_current_ready = live.iter().filter(|m| m.current).all(|m| m.ready);

    let mut create = 0usize;
    let mut delete: Vec<&str> = Vec::new();
    if live.len() < desired {
        create = desired - live.len();
    } else if live.len() > desired {
        // Cheapest first: not ready, then outdated, then the highest index.
        live.sort_by_key(|m| {
            (
                m.ready,
                m.current,
                std::cmp::Reverse(m.index.unwrap_or(u32::MAX)),
            )
        });
        let updating = summary.outdated > 0;
        // One serving pod at a time, after the previous one finished draining, and during an
        // update only once the surge pods serve.
        let mut ready_budget =
            usize::from(may_remove_ready && quiet && (!updating || all_current_ready));
        for member in &live {
            if delete.len() == live.len() - desired {
                break;
            }
            let allowed = match (member.ready, member.current) {
                (false, false) => true,
                // A starting up-to-date pod is the surge of an update: keep it.
                (false, true) => !updating,
                (true, _) if ready_budget > 0 => {
                    ready_budget -= 1;
                    true
                }
                (true, _) => false,
            };
            if allowed {
                delete.push(member.name);
            }
        }
    } else if summary.outdated > 0 {
        let unready_outdated: Vec<&str> = live
            .iter()
            .filter(|m| !m.ready && !m.current)
            .map(|m| m.name)
            .collect();
        if !unready_outdated.is_empty() {
            // Outdated and not serving: replace it directly.
            delete.extend(unready_outdated);
        } else if quiet && live.iter().all(|m| m.ready) {
            create = 1;
        }
    }

    let mut next = 0u32;
    for _ in 0..create {
        while taken.contains(&next) {
            next += 1;
        }
        taken.insert(next);
        plan.create.push(desired_pod(cluster, pool, next)?);
    }
    plan.delete.extend(delete.into_iter().map(str::to_string));
    plan.pools.push(summary);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cluster::pools::version_pools;
    use crate::controller::cluster::testing::{cluster, rollout, set_ready, set_terminating};

    /// Pods as the API would return them after creating everything `plan` asked for.
    fn created(plan: &PodPlan, ready: bool) -> Vec<Pod> {
        plan.create
            .iter()
            .cloned()
            .map(|mut pod| {
                set_ready(&mut pod, ready);
                pod
            })
            .collect()
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn an_empty_cluster_creates_every_pod() {
        let c = cluster(3, 16);
        let plan = plan_pods(&c, &version_pools(&c, None).unwrap(), &[]).unwrap();
        assert_eq!(
            names(&plan.create),
            ["demo-default-0", "demo-default-1", "demo-default-2"]
        );
        assert!(plan.delete.is_empty());
        assert!(!plan.is_settled());
    }

    #[test]
    fn a_full_ready_pool_is_settled() {
        let c = cluster(3, 16);
        let pools = version_pools(&c, None).unwrap();
        let pods = created(&plan_pods(&c, &pools, &[]).unwrap(), true);
        let plan = plan_pods(&c, &pools, &pods).unwrap();
        assert!(plan.is_settled(), "{plan:?}");
        assert_eq!(plan.ready(), 3);
    }

    #[test]
    fn scale_up_fills_the_lowest_free_indices() {
        let c = cluster(3, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(&plan_pods(&c, &pools, &[]).unwrap(), true);
        pods.remove(1);
        let bigger = cluster(4, 16);
        let plan = plan_pods(&bigger, &version_pools(&bigger, None).unwrap(), &pods).unwrap();
        assert_eq!(names(&plan.create), ["demo-default-1", "demo-default-3"]);
    }

    #[test]
    fn scale_down_removes_unready_first_then_one_ready_pod_at_a_time() {
        let c = cluster(4, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(&plan_pods(&c, &pools, &[]).unwrap(), true);
        set_ready(&mut pods[0], false);
        let smaller = cluster(1, 16);
        let small_pools = version_pools(&smaller, None).unwrap();
        let plan = plan_pods(&smaller, &small_pools, &pods).unwrap();
        // The unready pod and one ready pod (highest index) go now; the next waits.
        assert_eq!(plan.delete, ["demo-default-0", "demo-default-3"]);

        set_terminating(&mut pods[3]);
        pods.remove(0);
        let plan = plan_pods(&smaller, &small_pools, &pods).unwrap();
        assert!(
            plan.delete.is_empty(),
            "waits for the draining pod: {:?}",
            plan.delete
        );
        pods.retain(|p| !is_terminating(p));
        let plan = plan_pods(&smaller, &small_pools, &pods).unwrap();
        assert_eq!(plan.delete, ["demo-default-2"]);
    }

    #[test]
    fn image_change_rolls_one_surge_pod_at_a_time() {
        let c = cluster(2, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(&plan_pods(&c, &pools, &[]).unwrap(), true);
        let mut newer = c.clone();
        newer.spec.image = "switchboard/signaling-node:2".into();
        let new_pools = version_pools(&newer, None).unwrap();

        let mut rounds = 0;
        loop {
            let plan = plan_pods(&newer, &new_pools, &pods).unwrap();
            if plan.is_settled() {
                break;
            }
            rounds += 1;
            assert!(rounds < 20, "rolling update did not finish");
            assert!(plan.create.len() <= 1 && plan.delete.len() <= 1, "{plan:?}");
            // Never fewer ready pods than desired while updating.
            assert!(plan.pools[0].ready >= 2);
            // The surge pod starts unready; the next plan must wait for it.
            let mut fresh = created(&plan, false);
            if !fresh.is_empty() {
                pods.append(&mut fresh);
                let waiting = plan_pods(&newer, &new_pools, &pods).unwrap();
                assert!(
                    waiting.create.is_empty() && waiting.delete.is_empty(),
                    "{waiting:?}"
                );
                pods.iter_mut().for_each(|p| set_ready(p, true));
            }
            pods.retain(|p| !plan.delete.contains(&p.name_any()));
        }
        assert_eq!(pods.len(), 2);
        assert!(
            pods.iter()
                .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref()
                    == Some("switchboard/signaling-node:2"))
        );
    }

    #[test]
    fn failed_and_unready_outdated_pods_are_replaced_directly() {
        let c = cluster(2, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(&plan_pods(&c, &pools, &[]).unwrap(), true);
        pods[0].status.as_mut().unwrap().phase = Some("Failed".into());
        let plan = plan_pods(&c, &pools, &pods).unwrap();
        assert_eq!(plan.delete, ["demo-default-0"]);
        // The failed pod's name is still taken until it is gone.
        assert_eq!(names(&plan.create), ["demo-default-2"]);

        let mut newer = c.clone();
        newer.spec.image = "switchboard/signaling-node:2".into();
        set_ready(&mut pods[0], false);
        let plan = plan_pods(&newer, &version_pools(&newer, None).unwrap(), &pods).unwrap();
        assert_eq!(plan.delete, ["demo-default-0"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn rollout_pools_get_their_own_pods_and_the_default_pool_retires() {
        let c = cluster(4, 16);
        let old = created(
            &plan_pods(&c, &version_pools(&c, None).unwrap(), &[]).unwrap(),
            true,
        );
        let r = rollout(&[("v1", 75), ("v2", 25)]);
        let pools = version_pools(&c, Some(&r)).unwrap();
        let plan = plan_pods(&c, &pools, &old).unwrap();
        assert_eq!(
            names(&plan.create),
            ["demo-v1-0", "demo-v1-1", "demo-v1-2", "demo-v2-0"]
        );
        // The retired pool keeps serving until the new pools are ready...
        assert!(plan.delete.is_empty());
        let retired = plan.pools.iter().find(|p| p.version == "default").unwrap();
        assert_eq!((retired.desired, retired.live), (0, 4));
        // ...then loses one ready pod at a time.
        let mut pods = old.clone();
        pods.extend(created(&plan, true));
        let plan = plan_pods(&c, &pools, &pods).unwrap();
        assert!(plan.create.is_empty());
        assert_eq!(plan.delete, ["demo-default-3"]);
    }

    #[test]
    fn pods_of_other_clusters_are_ignored() {
        let c = cluster(1, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(&plan_pods(&c, &pools, &[]).unwrap(), true);
        pods[0]
            .labels_mut()
            .insert(labels::CLUSTER.into(), "other".into());
        let plan = plan_pods(&c, &pools, &pods).unwrap();
        assert_eq!(plan.create.len(), 1);
        assert!(plan.delete.is_empty());
    }
}

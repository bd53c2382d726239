//! Which signaling-node pods to create and delete, pool by pool: scale up at once, scale down
//! and roll out new templates one ready pod at a time, health-gated.
//!
//! A pool whose every pod failed (not ready for good, see [`fails_at`]) while another pod of
//! the cluster serves gets one replacement pod at once, before the failed one is gone: a
//! rollout's canary pool has a single node, and its shards have nowhere else to fail over to
//! (another pool may not speak the protocols its rooms negotiated). The replacement carries
//! [`labels::REPLACES`]; once it is ready the pod it replaces is deleted, ready or not, so the
//! shards that failed over to the replacement stay there.
//!
//! Rolling update (new image or pod settings) surges: while every pod of the pool is ready
//! and none is terminating, one up-to-date pod is added; once it is ready, one outdated pod is
//! deleted (it drains on SIGTERM and hands its shards off); repeat. A pool never drops below
//! its ready size because of an update, and a failing new version stalls at one extra pod
//! instead of replacing the fleet. Pods that are not ready, failed or outdated-and-unready go
//! first; pods of versions no longer in the rollout scale down the same careful way.

use std::collections::{BTreeMap, BTreeSet};

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
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
    /// When to plan again without an event: a pod not ready now counts as failed then.
    pub recheck: Option<Duration>,
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

/// How long a pod may start before not being ready counts as failed.
pub const STARTUP_GRACE: Duration = Duration::from_secs(10);
/// How long a started pod must stay not ready to count as failed: a container restarted in
/// place (kill -9) is back within it (restart, registration, one passing probe), and
/// replacing it would move its shards twice. Condition times have whole seconds, so the
/// wait is 4–5 s in effect.
pub const FAILED_AFTER: Duration = Duration::from_secs(5);

/// From when `pod` counts as failed if it stays not ready: [`STARTUP_GRACE`] after its start
/// and [`FAILED_AFTER`] after its Ready condition last turned false. `None` for a ready pod
/// or one that has not started.
pub fn fails_at(pod: &Pod, now: Timestamp) -> Option<Timestamp> {
    if is_ready(pod) {
        return None;
    }
    let status = pod.status.as_ref()?;
    let started = status.start_time.as_ref()?.0;
    let unready_since = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .map_or(now, |t| t.0);
    let by_start = started.checked_add(jiff_span(STARTUP_GRACE)).ok()?;
    let by_condition = unready_since.checked_add(jiff_span(FAILED_AFTER)).ok()?;
    Some(by_start.max(by_condition))
}

/// `d` as a span jiff can add to a timestamp.
fn jiff_span(d: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::try_from(d).unwrap_or(k8s_openapi::jiff::SignedDuration::MAX)
}

/// The pod `pod` was created to replace ([`labels::REPLACES`]).
pub fn replaces(pod: &Pod) -> Option<&str> {
    pod.annotations().get(labels::REPLACES).map(String::as_str)
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
    /// From when it counts as failed if it stays not ready ([`fails_at`]).
    fails_at: Option<Timestamp>,
    /// The pod this one replaces, if it is a replacement.
    replaces: Option<&'a str>,
}

/// Plans pod creations and deletions for every pool of `cluster` at `now`. `existing` are
/// the pods that carry the cluster's label (any version); pods of versions not in `pools` are
/// scaled to zero.
pub fn plan_pods(
    cluster: &SignalingCluster,
    pools: &[VersionPool],
    existing: &[Pod],
    now: Timestamp,
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
    // A pool's failure is its own only while some other pod serves: when none does (etcd is
    // down, say), replacing pods would only churn the whole fleet.
    let serving = by_version
        .values()
        .flatten()
        .any(|p| is_ready(p) && !is_terminating(p));
    let at = PlanTime { now, serving };
    for pool in pools {
        let pods = by_version
            .get(pool.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let hash = pool_template_hash(cluster, pool)?;
        plan_pool(cluster, name, pool, Some(&hash), pods, true, at, &mut plan)?;
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
        let at = PlanTime {
            now,
            serving: false,
        };
        plan_pool(
            cluster,
            name,
            &retired,
            None,
            pods,
            active_ready,
            at,
            &mut plan,
        )?;
    }
    Ok(plan)
}

/// When a plan is made, and whether any pod of the cluster serves then.
#[derive(Debug, Clone, Copy)]
struct PlanTime {
    now: Timestamp,
    serving: bool,
}

#[allow(clippy::too_many_arguments)] // one pool's inputs; a struct would only rename them
fn plan_pool(
    cluster: &SignalingCluster,
    name: &str,
    pool: &VersionPool,
    hash: Option<&str>,
    pods: &[&Pod],
    may_remove_ready: bool,
    at: PlanTime,
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
                fails_at: fails_at(pod, at.now),
                replaces: replaces(pod),
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
    let mut replacement: Option<&str> = None;
    // Pods that a live replacement replaces; once the replacement is ready they go.
    let replaced: BTreeSet<&str> = live
        .iter()
        .filter_map(|m| m.replaces)
        .filter(|name| live.iter().any(|m| m.name == *name))
        .collect();
    let replacement_ready = live.iter().any(|m| m.replaces.is_some() && m.ready);
    if !replaced.is_empty() {
        if replacement_ready {
            delete.extend(
                live.iter()
                    .filter(|m| replaced.contains(m.name))
                    .map(|m| m.name),
            );
        }
        // Otherwise hold: the failed pod may come back before its replacement serves.
    } else if desired > 0
        && at.serving
        && quiet
        && live.len() == desired
        && summary.ready == 0
        && live.iter().all(|m| m.fails_at.is_some())
    {
        match live.iter().filter_map(|m| m.fails_at).max() {
            Some(when) if when <= at.now => {
                replacement = live.first().map(|m| m.name);
                create = 1;
            }
            Some(when) => {
                let wait = Duration::try_from(when.duration_since(at.now)).unwrap_or_default();
                plan.recheck = Some(plan.recheck.map_or(wait, |r| r.min(wait)));
            }
            None => {}
        }
    } else if live.len() < desired {
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
        let mut pod = desired_pod(cluster, pool, next)?;
        if let Some(failed) = replacement {
            pod.annotations_mut()
                .insert(labels::REPLACES.to_string(), failed.to_string());
        }
        plan.create.push(pod);
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

    /// Whether `pod` counts as failed at `now`.
    fn has_failed(pod: &Pod, now: Timestamp) -> bool {
        fails_at(pod, now).is_some_and(|at| at <= now)
    }

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

    /// An instant `secs` after the epoch (pods in these tests start at the epoch).
    fn at(secs: u64) -> Timestamp {
        Timestamp::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Marks `pod` started at the epoch, its Ready condition last changed `secs` after it.
    fn set_started(pod: &mut Pod, secs: u64) {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        if let Some(status) = pod.status.as_mut() {
            status.start_time = Some(Time(Timestamp::UNIX_EPOCH));
            for c in status.conditions.iter_mut().flatten() {
                c.last_transition_time = Some(Time(at(secs)));
            }
        }
    }

    /// A canary rollout: 3 replicas at 80/20 give v1 two pods and v2 one, all ready and
    /// started at the epoch.
    fn canary() -> (SignalingCluster, Vec<VersionPool>, Vec<Pod>) {
        let c = cluster(3, 16);
        let pools = version_pools(&c, Some(&rollout(&[("v1", 80), ("v2", 20)]))).unwrap();
        let mut pods = created(&plan_pods(&c, &pools, &[], at(0)).unwrap(), true);
        pods.iter_mut().for_each(|p| set_started(p, 0));
        (c, pools, pods)
    }

    fn index_of(pods: &[Pod], name: &str) -> usize {
        pods.iter().position(|p| p.name_any() == name).unwrap()
    }

    #[test]
    fn the_failed_only_pod_of_a_pool_gets_a_replacement_before_it_goes() {
        let (c, pools, mut pods) = canary();
        let v2 = index_of(&pods, "demo-v2-0");
        set_ready(&mut pods[v2], false);
        set_started(&mut pods[v2], 5);
        // Within the startup grace it may be starting: nothing yet, and a recheck when it ends.
        let plan = plan_pods(&c, &pools, &pods, at(6)).unwrap();
        assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
        assert_eq!(plan.recheck, Some(Duration::from_secs(4)));
        // Not ready for less than FAILED_AFTER later on: a restart in place, maybe.
        set_started(&mut pods[v2], 56);
        let plan = plan_pods(&c, &pools, &pods, at(60)).unwrap();
        assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
        assert_eq!(plan.recheck, Some(Duration::from_secs(1)));
        // Past both, a replacement at the next index, naming the failed pod; nothing deleted.
        let plan = plan_pods(&c, &pools, &pods, at(61)).unwrap();
        assert_eq!(names(&plan.create), ["demo-v2-1"]);
        assert_eq!(replaces(&plan.create[0]), Some("demo-v2-0"));
        assert!(plan.delete.is_empty(), "{:?}", plan.delete);

        // While the replacement starts: no second one, and the failed pod stays.
        pods.extend(created(&plan, false));
        let plan = plan_pods(&c, &pools, &pods, at(61)).unwrap();
        assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");

        // The replacement serves: the failed pod goes, and no other pod.
        let new = index_of(&pods, "demo-v2-1");
        set_ready(&mut pods[new], true);
        let plan = plan_pods(&c, &pools, &pods, at(62)).unwrap();
        assert_eq!(plan.delete, ["demo-v2-0"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn a_failed_pod_that_comes_back_first_still_gives_way_to_its_replacement() {
        let (c, pools, mut pods) = canary();
        let v2 = index_of(&pods, "demo-v2-0");
        set_ready(&mut pods[v2], false);
        set_started(&mut pods[v2], 20);
        let plan = plan_pods(&c, &pools, &pods, at(60)).unwrap();
        assert_eq!(plan.create.len(), 1);
        pods.extend(created(&plan, false));
        // The old pod is ready again before its replacement: hold, delete nothing.
        set_ready(&mut pods[v2], true);
        let plan = plan_pods(&c, &pools, &pods, at(61)).unwrap();
        assert!(plan.delete.is_empty(), "{:?}", plan.delete);
        // Both ready: the replaced one goes (the replacement holds the failed-over shards).
        let new = index_of(&pods, "demo-v2-1");
        set_ready(&mut pods[new], true);
        let plan = plan_pods(&c, &pools, &pods, at(62)).unwrap();
        assert_eq!(plan.delete, ["demo-v2-0"]);
    }

    #[test]
    fn a_replacement_whose_failed_pod_is_gone_is_an_ordinary_pod() {
        let (c, pools, mut pods) = canary();
        let v2 = index_of(&pods, "demo-v2-0");
        set_ready(&mut pods[v2], false);
        set_started(&mut pods[v2], 20);
        let plan = plan_pods(&c, &pools, &pods, at(60)).unwrap();
        pods.extend(created(&plan, true));
        pods.remove(v2);
        let new = index_of(&pods, "demo-v2-1");
        pods[new].status.as_mut().unwrap().start_time = None;
        set_started(&mut pods[new], 60);
        assert!(plan_pods(&c, &pools, &pods, at(61)).unwrap().is_settled());
        // It fails in turn: it gets its own replacement.
        set_ready(&mut pods[new], false);
        set_started(&mut pods[new], 100);
        let plan = plan_pods(&c, &pools, &pods, at(110)).unwrap();
        assert_eq!(names(&plan.create), ["demo-v2-0"]);
        assert_eq!(replaces(&plan.create[0]), Some("demo-v2-1"));
    }

    #[test]
    fn no_replacement_when_no_pod_of_the_cluster_serves() {
        let (c, pools, mut pods) = canary();
        // etcd down, say: every pod fails readiness at once.
        for pod in &mut pods {
            set_ready(pod, false);
            set_started(pod, 20);
        }
        let plan = plan_pods(&c, &pools, &pods, at(60)).unwrap();
        assert!(plan.create.is_empty(), "{:?}", names(&plan.create));
        assert!(plan.delete.is_empty(), "{:?}", plan.delete);
    }

    #[test]
    fn a_pod_without_a_start_time_or_a_ready_one_has_not_failed() {
        let (_, _, mut pods) = canary();
        assert!(!has_failed(&pods[0], at(60)));
        set_ready(&mut pods[0], false);
        assert!(!has_failed(&pods[0], at(60)), "no start time: not started");
        set_started(&mut pods[0], 0);
        assert!(!has_failed(&pods[0], at(9)));
        assert!(has_failed(&pods[0], at(10)));
        set_started(&mut pods[0], 30);
        assert!(!has_failed(&pods[0], at(34)));
        assert!(has_failed(&pods[0], at(35)));
    }

    #[test]
    fn an_empty_cluster_creates_every_pod() {
        let c = cluster(3, 16);
        let plan = plan_pods(
            &c,
            &version_pools(&c, None).unwrap(),
            &[],
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
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
        let pods = created(
            &plan_pods(&c, &pools, &[], Timestamp::UNIX_EPOCH).unwrap(),
            true,
        );
        let plan = plan_pods(&c, &pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
        assert!(plan.is_settled(), "{plan:?}");
        assert_eq!(plan.ready(), 3);
    }

    #[test]
    fn scale_up_fills_the_lowest_free_indices() {
        let c = cluster(3, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(
            &plan_pods(&c, &pools, &[], Timestamp::UNIX_EPOCH).unwrap(),
            true,
        );
        pods.remove(1);
        let bigger = cluster(4, 16);
        let plan = plan_pods(
            &bigger,
            &version_pools(&bigger, None).unwrap(),
            &pods,
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(names(&plan.create), ["demo-default-1", "demo-default-3"]);
    }

    #[test]
    fn scale_down_removes_unready_first_then_one_ready_pod_at_a_time() {
        let c = cluster(4, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(
            &plan_pods(&c, &pools, &[], Timestamp::UNIX_EPOCH).unwrap(),
            true,
        );
        set_ready(&mut pods[0], false);
        let smaller = cluster(1, 16);
        let small_pools = version_pools(&smaller, None).unwrap();
        let plan = plan_pods(&smaller, &small_pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
        // The unready pod and one ready pod (highest index) go now; the next waits.
        assert_eq!(plan.delete, ["demo-default-0", "demo-default-3"]);

        set_terminating(&mut pods[3]);
        pods.remove(0);
        let plan = plan_pods(&smaller, &small_pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
        assert!(
            plan.delete.is_empty(),
            "waits for the draining pod: {:?}",
            plan.delete
        );
        pods.retain(|p| !is_terminating(p));
        let plan = plan_pods(&smaller, &small_pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(plan.delete, ["demo-default-2"]);
    }

    #[test]
    fn image_change_rolls_one_surge_pod_at_a_time() {
        let c = cluster(2, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(
            &plan_pods(&c, &pools, &[], Timestamp::UNIX_EPOCH).unwrap(),
            true,
        );
        let mut newer = c.clone();
        newer.spec.image = "switchboard/signaling-node:2".into();
        let new_pools = version_pools(&newer, None).unwrap();

        let mut rounds = 0;
        loop {
            let plan = plan_pods(&newer, &new_pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
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
                let waiting = plan_pods(&newer, &new_pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
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
        let mut pods = created(
            &plan_pods(&c, &pools, &[], Timestamp::UNIX_EPOCH).unwrap(),
            true,
        );
        pods[0].status.as_mut().unwrap().phase = Some("Failed".into());
        let plan = plan_pods(&c, &pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(plan.delete, ["demo-default-0"]);
        // The failed pod's name is still taken until it is gone.
        assert_eq!(names(&plan.create), ["demo-default-2"]);

        let mut newer = c.clone();
        newer.spec.image = "switchboard/signaling-node:2".into();
        set_ready(&mut pods[0], false);
        let plan = plan_pods(
            &newer,
            &version_pools(&newer, None).unwrap(),
            &pods,
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(plan.delete, ["demo-default-0"]);
        assert!(plan.create.is_empty());
    }

    #[test]
    fn rollout_pools_get_their_own_pods_and_the_default_pool_retires() {
        let c = cluster(4, 16);
        let old = created(
            &plan_pods(
                &c,
                &version_pools(&c, None).unwrap(),
                &[],
                Timestamp::UNIX_EPOCH,
            )
            .unwrap(),
            true,
        );
        let r = rollout(&[("v1", 75), ("v2", 25)]);
        let pools = version_pools(&c, Some(&r)).unwrap();
        let plan = plan_pods(&c, &pools, &old, Timestamp::UNIX_EPOCH).unwrap();
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
        let plan = plan_pods(&c, &pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
        assert!(plan.create.is_empty());
        assert_eq!(plan.delete, ["demo-default-3"]);
    }

    #[test]
    fn pods_of_other_clusters_are_ignored() {
        let c = cluster(1, 16);
        let pools = version_pools(&c, None).unwrap();
        let mut pods = created(
            &plan_pods(&c, &pools, &[], Timestamp::UNIX_EPOCH).unwrap(),
            true,
        );
        pods[0]
            .labels_mut()
            .insert(labels::CLUSTER.into(), "other".into());
        let plan = plan_pods(&c, &pools, &pods, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(plan.create.len(), 1);
        assert!(plan.delete.is_empty());
    }
}

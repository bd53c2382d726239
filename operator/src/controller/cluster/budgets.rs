//! The cluster's PodDisruptionBudgets: one per version pool, `<cluster>-<version>`, with an
//! integer `minAvailable` the operator keeps in step with the pool's size.
//!
//! Why an integer and not `maxUnavailable`: with `maxUnavailable` (or a percentage) the
//! disruption controller must look the owner's scale up through discovery; a budget created
//! right after the CRDs then fails once (`no matches for kind "SignalingCluster"`), records
//! `disruptionsAllowed: 0` and is not retried while the pods stay unchanged, so every eviction
//! is refused and `kubectl drain` hangs. An integer `minAvailable` over a label selector needs
//! no lookup (docs/operations.md, "Disruption budgets").

use std::collections::BTreeSet;

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::identity;
use super::pod_plan::PoolSummary;
use crate::controller::Result;
use crate::controller::labels::{self, common_labels, selector_labels};
use crate::crd::SignalingCluster;

/// Name of the budget of `version` in `cluster`.
pub fn budget_name(cluster: &str, version: &str) -> String {
    format!("{cluster}-{version}")
}

/// The budgets `cluster` should have for its `pools` (none when disabled in the spec).
pub fn disruption_budgets(
    cluster: &SignalingCluster,
    pools: &[PoolSummary],
) -> Result<Vec<PodDisruptionBudget>> {
    let settings = cluster.spec.disruption_budget.clone().unwrap_or_default();
    if !settings.enabled {
        return Ok(Vec::new());
    }
    let id = identity(cluster)?;
    let max_unavailable = u32::try_from(settings.max_unavailable.max(1)).unwrap_or(1);
    let mut seen = BTreeSet::new();
    let mut budgets = Vec::new();
    for pool in pools {
        if !seen.insert(pool.version.as_str()) {
            continue;
        }
        let mut selector = selector_labels(&id.name);
        selector.insert(labels::VERSION.into(), pool.version.clone());
        let mut meta_labels = common_labels(&id.name, "node");
        meta_labels.insert(labels::VERSION.into(), pool.version.clone());
        let min_available = pool.desired.saturating_sub(max_unavailable);
        budgets.push(PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(budget_name(&id.name, &pool.version)),
                namespace: Some(id.namespace.clone()),
                labels: Some(meta_labels),
                owner_references: Some(vec![id.owner.clone()]),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(
                    i32::try_from(min_available).unwrap_or(i32::MAX),
                )),
                selector: Some(LabelSelector {
                    match_labels: Some(selector),
                    match_expressions: None,
                }),
                // Evicting a not-ready node costs nothing: let node drains proceed.
                unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
                max_unavailable: None,
            }),
            status: None,
        });
    }
    Ok(budgets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cluster::pod_plan::plan_pods;
    use crate::controller::cluster::pods::desired_pod;
    use crate::controller::cluster::pools::version_pools;
    use crate::controller::cluster::testing::{cluster, rollout};
    use crate::crd::DisruptionBudgetSpec;
    use k8s_openapi::jiff::Timestamp;

    fn min_available(pdb: &PodDisruptionBudget) -> Option<IntOrString> {
        pdb.spec.as_ref().and_then(|s| s.min_available.clone())
    }

    #[test]
    fn one_integer_budget_per_pool_in_step_with_its_size() {
        let c = cluster(10, 16);
        let r = rollout(&[("v1", 70), ("v2", 30)]);
        let pools = version_pools(&c, Some(&r)).unwrap();
        let plan = plan_pods(&c, &pools, &[], Timestamp::UNIX_EPOCH).unwrap();
        let budgets = disruption_budgets(&c, &plan.pools).unwrap();
        let names: Vec<_> = budgets
            .iter()
            .map(|b| b.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["demo-v1", "demo-v2"]);
        assert_eq!(min_available(&budgets[0]), Some(IntOrString::Int(6)));
        assert_eq!(min_available(&budgets[1]), Some(IntOrString::Int(2)));
        // No maxUnavailable: that is what needs the scale subresource lookup.
        assert!(
            budgets
                .iter()
                .all(|b| b.spec.as_ref().unwrap().max_unavailable.is_none())
        );

        // The selector picks exactly the pool's pods.
        let pod = desired_pod(&c, &pools[1], 0).unwrap();
        let pod_labels = pod.metadata.labels.unwrap();
        let selector = budgets[1].spec.as_ref().unwrap().selector.clone().unwrap();
        let wanted = selector.match_labels.unwrap();
        assert!(wanted.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(wanted[labels::VERSION], "v2");
        assert_eq!(
            budgets[1].metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
    }

    #[test]
    fn single_node_pools_and_the_toggle() {
        let mut c = cluster(1, 16);
        let pools = version_pools(&c, None).unwrap();
        let plan = plan_pods(&c, &pools, &[], Timestamp::UNIX_EPOCH).unwrap();
        let budgets = disruption_budgets(&c, &plan.pools).unwrap();
        assert_eq!(budgets[0].metadata.name.as_deref(), Some("demo-default"));
        assert_eq!(min_available(&budgets[0]), Some(IntOrString::Int(0)));

        c.spec.replicas = 5;
        c.spec.disruption_budget = Some(DisruptionBudgetSpec {
            enabled: true,
            max_unavailable: 2,
        });
        let plan = plan_pods(
            &c,
            &version_pools(&c, None).unwrap(),
            &[],
            Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        let budgets = disruption_budgets(&c, &plan.pools).unwrap();
        assert_eq!(min_available(&budgets[0]), Some(IntOrString::Int(3)));

        c.spec.disruption_budget = Some(DisruptionBudgetSpec {
            enabled: false,
            max_unavailable: 1,
        });
        assert!(disruption_budgets(&c, &plan.pools).unwrap().is_empty());
    }
}

//! Version pools of a cluster: which versions run, with which image, protocols and how many
//! nodes — from the SignalingCluster alone or together with its ProtocolRollout.

use std::collections::{BTreeMap, BTreeSet};

use crate::controller::{Error, Result};
use crate::crd::{ADMIN_PORT, ProtocolRollout, ProtocolVersion, SignalingCluster};
use crate::placement::pool_sizes;

/// Name of the single version pool of a cluster without a ProtocolRollout.
pub const DEFAULT_VERSION: &str = "default";

/// One version pool: the nodes running one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionPool {
    /// Version name (pod names `<cluster>-<version>-<n>`, label `switchboard.dev/version`).
    pub name: String,
    /// Container image.
    pub image: String,
    /// Protocol versions the pool's nodes accept.
    pub protocols: Vec<ProtocolVersion>,
    /// Weight from the rollout spec (100 without a rollout).
    pub weight: u32,
    /// Number of nodes the pool should run.
    pub replicas: u32,
}

/// Checks what the CRD validation should already have refused, so a cluster created before
/// the rules existed (or with validation off) gets a clear error instead of odd behaviour.
pub fn validate(cluster: &SignalingCluster) -> Result<()> {
    let spec = &cluster.spec;
    let invalid = |message: String| Err(Error::InvalidSpec(message));
    if !(1..=4096).contains(&spec.shards) {
        return invalid(format!(
            "shards must be between 1 and 4096, not {}",
            spec.shards
        ));
    }
    if spec.replicas < 0 {
        return invalid(format!(
            "replicas must not be negative, not {}",
            spec.replicas
        ));
    }
    if !(1..=65535).contains(&spec.port) || spec.port == ADMIN_PORT {
        return invalid(format!("port {} is out of range or reserved", spec.port));
    }
    if spec.image.is_empty() || spec.auth_secret.is_empty() {
        return invalid("image and authSecret must be set".into());
    }
    if spec.etcd.endpoints.is_empty() {
        return invalid("at least one etcd endpoint is required".into());
    }
    Ok(())
}

/// The version pools of `cluster`. Without a rollout: one pool named [`DEFAULT_VERSION`] with
/// the cluster's image and every replica.
///
/// With a rollout, pools follow its versions in spec order. A pool is sized by the spec
/// weights, but while shards are still moving it keeps at least the size of the weights
/// currently applied (`status.versions[].weight`), so an old version keeps its nodes until its
/// shards have left (surge during a rollout, never a squeeze). A paused rollout keeps the
/// applied sizes only, and so does a rolled-back or aborted one: after an automatic rollback the applied
/// weights are the last stable ones, so a version rolled back to weight 0 scales to 0 nodes
/// (until the spec weights are edited, which starts a new rollout).
pub fn version_pools(
    cluster: &SignalingCluster,
    rollout: Option<&ProtocolRollout>,
) -> Result<Vec<VersionPool>> {
    validate(cluster)?;
    let replicas = u32::try_from(cluster.spec.replicas).unwrap_or(0);
    let Some(rollout) = rollout else {
        return Ok(vec![VersionPool {
            name: DEFAULT_VERSION.into(),
            image: cluster.spec.image.clone(),
            protocols: vec![ProtocolVersion::V1, ProtocolVersion::V2],
            weight: 100,
            replicas,
        }]);
    };

    let versions = &rollout.spec.versions;
    let mut names = BTreeSet::new();
    for version in versions {
        if !names.insert(version.name.as_str()) {
            return Err(Error::InvalidSpec(format!(
                "version {:?} is listed twice",
                version.name
            )));
        }
        if !(0..=100).contains(&version.weight) {
            return Err(Error::InvalidSpec(format!(
                "weight of {:?} is out of 0..=100",
                version.name
            )));
        }
    }
    // Where the rollout is heading: the spec, or a promote / abort / rollback in force.
    let spec_weights: Vec<u32> = rollout
        .target_weights()
        .iter()
        .map(|(_, w)| w.clamp(&0, &100).unsigned_abs())
        .collect();
    if spec_weights.iter().all(|w| *w == 0) {
        return Err(Error::InvalidSpec(
            "no version has a positive weight".into(),
        ));
    }

    let status = rollout.status.as_ref();
    let applied: BTreeMap<&str, u32> = status
        .map(|s| {
            s.versions
                .iter()
                .map(|v| (v.name.as_str(), v.weight.max(0).unsigned_abs()))
                .collect()
        })
        .unwrap_or_default();
    let applied_weights: Vec<u32> = versions
        .iter()
        .map(|v| applied.get(v.name.as_str()).copied().unwrap_or(0))
        .collect();
    let has_applied = applied_weights.iter().any(|w| *w > 0);

    let by_spec = pool_sizes(replicas, &spec_weights);
    let by_applied = pool_sizes(replicas, &applied_weights);
    let paused = rollout.is_frozen();

    Ok(versions
        .iter()
        .enumerate()
        .map(|(i, version)| {
            let size = match (has_applied, paused) {
                (false, _) => by_spec[i],
                (true, true) => by_applied[i],
                (true, false) => by_spec[i].max(by_applied[i]),
            };
            VersionPool {
                name: version.name.clone(),
                image: version
                    .image
                    .clone()
                    .unwrap_or_else(|| cluster.spec.image.clone()),
                protocols: version.protocols.clone(),
                weight: spec_weights[i],
                replicas: size,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cluster::testing::{cluster, rollout};
    use crate::crd::{ProtocolRolloutStatus, RolloutPhase, VersionStatus};

    fn sizes(pools: &[VersionPool]) -> Vec<(String, u32)> {
        pools.iter().map(|p| (p.name.clone(), p.replicas)).collect()
    }

    #[test]
    fn without_a_rollout_there_is_one_default_pool() {
        let pools = version_pools(&cluster(5, 16), None).unwrap();
        assert_eq!(sizes(&pools), [(DEFAULT_VERSION.to_string(), 5)]);
        assert_eq!(pools[0].image, "switchboard/signaling-node:1");
    }

    #[test]
    fn rollout_weights_size_the_pools_and_images_default_to_the_cluster() {
        let pools =
            version_pools(&cluster(10, 16), Some(&rollout(&[("v1", 90), ("v2", 10)]))).unwrap();
        assert_eq!(
            sizes(&pools),
            [("v1".to_string(), 9), ("v2".to_string(), 1)]
        );
        assert_eq!(pools[0].image, "switchboard/signaling-node:1");
        assert_eq!(pools[1].image, "switchboard/signaling-node:v2");
    }

    #[test]
    fn applied_weights_keep_old_pools_until_shards_moved() {
        let mut r = rollout(&[("v1", 50), ("v2", 50)]);
        r.status = Some(ProtocolRolloutStatus {
            versions: vec![
                VersionStatus {
                    name: "v1".into(),
                    weight: 90,
                    ..Default::default()
                },
                VersionStatus {
                    name: "v2".into(),
                    weight: 10,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let pools = version_pools(&cluster(10, 16), Some(&r)).unwrap();
        assert_eq!(
            sizes(&pools),
            [("v1".to_string(), 9), ("v2".to_string(), 5)]
        );

        r.spec.paused = true;
        let pools = version_pools(&cluster(10, 16), Some(&r)).unwrap();
        assert_eq!(
            sizes(&pools),
            [("v1".to_string(), 9), ("v2".to_string(), 1)]
        );
    }

    #[test]
    fn a_rolled_back_version_scales_to_its_applied_weight() {
        let mut r = rollout(&[("v1", 50), ("v2", 50)]);
        r.status = Some(ProtocolRolloutStatus {
            phase: RolloutPhase::RolledBack,
            versions: vec![
                VersionStatus {
                    name: "v1".into(),
                    weight: 100,
                    ..Default::default()
                },
                VersionStatus {
                    name: "v2".into(),
                    weight: 0,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let pools = version_pools(&cluster(4, 16), Some(&r)).unwrap();
        assert_eq!(
            sizes(&pools),
            [("v1".to_string(), 4), ("v2".to_string(), 0)]
        );
        // Progressing again (after a spec edit): the spec sizes come back.
        if let Some(status) = r.status.as_mut() {
            status.phase = RolloutPhase::Progressing;
        }
        let pools = version_pools(&cluster(4, 16), Some(&r)).unwrap();
        assert_eq!(
            sizes(&pools),
            [("v1".to_string(), 4), ("v2".to_string(), 2)]
        );
    }

    #[test]
    fn invalid_specs_are_typed_errors() {
        let mut bad = cluster(3, 16);
        bad.spec.shards = 0;
        assert!(matches!(
            version_pools(&bad, None),
            Err(Error::InvalidSpec(_))
        ));
        let mut bad = cluster(3, 16);
        bad.spec.port = 9100;
        assert!(matches!(validate(&bad), Err(Error::InvalidSpec(_))));
        let dup = rollout(&[("v1", 50), ("v1", 50)]);
        assert!(matches!(
            version_pools(&cluster(3, 16), Some(&dup)),
            Err(Error::InvalidSpec(_))
        ));
        let zero = rollout(&[("v1", 0)]);
        assert!(matches!(
            version_pools(&cluster(3, 16), Some(&zero)),
            Err(Error::InvalidSpec(_))
        ));
    }
}

//! The SignalingCluster status from what was observed: counts, the scale selector and the
//! Ready / Progressing / Degraded / ConfigApplied conditions.
//!
//! - Ready: at least one ready node and every shard has a live owner.
//! - Progressing: pods are being created, replaced or removed, or shards are handing off.
//! - Degraded: the last reconcile failed, or shards have no owner although nodes are ready
//!   (a version pool without ready nodes).
//! - ConfigApplied: every ready node acknowledged the config revision written to etcd; the
//!   message names the nodes that have not within the ack deadline.
//! - ClientAccessReady (only with `spec.clientAccess`): its objects exist and the certificate
//!   is valid; otherwise the reason says what is wrong (an invalid template or URL, a
//!   missing or invalid TLS Secret, a certificate for the wrong host).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::access::CLIENT_ACCESS_READY;
use super::access::sync::{AccessReport, TlsState};
use super::config::{ACK_DEADLINE, name_list};
use super::pod_plan::PoolSummary;
use crate::controller::conditions::{self, Status};
use crate::controller::labels::{selector_labels, selector_string};
use crate::crd::{SignalingCluster, SignalingClusterStatus};

/// Condition type: the cluster serves every shard.
pub const READY: &str = "Ready";
/// Condition type: the cluster is changing toward its spec.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: something needs attention.
pub const DEGRADED: &str = "Degraded";
/// Condition type: every ready node runs the current config revision.
pub const CONFIG_APPLIED: &str = "ConfigApplied";

/// A reconcile failure to surface in the Degraded condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// CamelCase reason (from the error's metric label).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `spec.clientAccess` caused it: ClientAccessReady says so too.
    pub client_access: bool,
}

/// What client access looked like in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessObserved {
    /// The entry URL.
    pub entry_url: String,
    /// Nodes with their own URL objects.
    pub nodes: u32,
    /// Why the certificate is not used (reason, message), if it is not.
    pub problem: Option<(String, String)>,
}

impl From<&AccessReport> for AccessObserved {
    fn from(report: &AccessReport) -> Self {
        Self {
            entry_url: report.entry_url.clone(),
            nodes: report.nodes,
            problem: match &report.tls {
                Some(TlsState::Refused(problem)) => {
                    Some((problem.reason().to_string(), problem.to_string()))
                }
                _ => None,
            },
        }
    }
}

/// What the reconciler saw in this pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Per-pool pod counts (from the pod plan).
    pub pools: Vec<PoolSummary>,
    /// Nodes registered as ready in etcd.
    pub ready_nodes: u32,
    /// Shards with a live owner.
    pub shards_assigned: u32,
    /// Shards handing off right now.
    pub handoffs_in_flight: u32,
    /// Config revision written to etcd, if any.
    pub config_revision: Option<i64>,
    /// Ready nodes that acknowledged `config_revision`.
    pub config_acked: u32,
    /// Ready nodes that have not acknowledged `config_revision` within the ack deadline.
    pub config_lagging: Vec<String>,
    /// The failure of this pass, if it failed.
    pub failure: Option<Failure>,
    /// Client access, with `spec.clientAccess`.
    pub client_access: Option<AccessObserved>,
}

/// The status to write for `cluster` given `observed`; conditions keep their transition
/// times from the current status when unchanged, so equal inputs give an equal status.
pub fn cluster_status(
    cluster: &SignalingCluster,
    observed: &Observed,
    now: &Time,
) -> SignalingClusterStatus {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let previous = cluster.status.clone().unwrap_or_default();
    let mut list = previous.conditions;

    let desired = u32::try_from(cluster.spec.replicas).unwrap_or(0);
    let shards = u32::try_from(cluster.spec.shards).unwrap_or(0);
    let ready_pods: u32 = observed.pools.iter().map(|p| p.ready).sum();
    let unassigned = shards.saturating_sub(observed.shards_assigned);

    let (status, reason, message) = if desired == 0 {
        (
            Status::False,
            "ScaledToZero",
            "spec.replicas is 0".to_string(),
        )
    } else if observed.ready_nodes == 0 {
        (
            Status::False,
            "NoReadyNodes",
            format!("0 of {desired} nodes are ready"),
        )
    } else if unassigned > 0 {
        (
            Status::False,
            "ShardsUnassigned",
            format!("{unassigned} of {shards} shards have no live owner"),
        )
    } else {
        (
            Status::True,
            "Serving",
            format!(
                "{} ready nodes serve all {shards} shards",
                observed.ready_nodes
            ),
        )
    };
    conditions::set(&mut list, READY, status, reason, message, generation, now);

    let scaling: Vec<&PoolSummary> = observed
        .pools
        .iter()
        .filter(|p| p.live != p.desired || p.terminating > 0)
        .collect();
    let updating: u32 = observed.pools.iter().map(|p| p.outdated).sum();
    let (status, reason, message) = if updating > 0 {
        (
            Status::True,
            "Updating",
            format!("{updating} pods run an outdated template"),
        )
    } else if let Some(pool) = scaling.first() {
        let message = format!(
            "pool {} has {} of {} pods",
            pool.version, pool.live, pool.desired
        );
        (Status::True, "Scaling", message)
    } else if observed.handoffs_in_flight > 0 {
        (
            Status::True,
            "HandingOff",
            format!("{} shards are handing off", observed.handoffs_in_flight),
        )
    } else if ready_pods < desired {
        (
            Status::True,
            "WaitingForReadiness",
            format!("{ready_pods} of {desired} pods are ready"),
        )
    } else {
        (
            Status::False,
            "Stable",
            "every pool has its size and template".to_string(),
        )
    };
    conditions::set(
        &mut list,
        PROGRESSING,
        status,
        reason,
        message,
        generation,
        now,
    );

    let (status, reason, message) = match &observed.failure {
        Some(failure) => (
            Status::True,
            failure.reason.as_str(),
            failure.message.clone(),
        ),
        None if desired > 0 && observed.ready_nodes > 0 && unassigned > 0 => (
            Status::True,
            "ShardsUnassigned",
            format!("{unassigned} shards have no live owner although nodes are ready"),
        ),
        None => (Status::False, "AsExpected", String::new()),
    };
    conditions::set(
        &mut list, DEGRADED, status, reason, message, generation, now,
    );

    let (status, reason, message) = match observed.config_revision {
        None => (
            Status::Unknown,
            "NotWritten",
            "node configuration not written to etcd yet".to_string(),
        ),
        Some(_) if observed.ready_nodes == 0 => (
            Status::Unknown,
            "NoReadyNodes",
            "no ready node to apply it".to_string(),
        ),
        Some(revision) if observed.config_acked >= observed.ready_nodes => (
            Status::True,
            "AllNodesAcked",
            format!(
                "all {} ready nodes run config revision {revision}",
                observed.ready_nodes
            ),
        ),
        Some(revision) => {
            let mut message = format!(
                "{} of {} ready nodes acked config revision {revision}",
                observed.config_acked, observed.ready_nodes
            );
            if !observed.config_lagging.is_empty() {
                message.push_str(&format!(
                    "; not acked within {}s: {}",
                    ACK_DEADLINE.as_secs(),
                    name_list(&observed.config_lagging)
                ));
            }
            (Status::False, "Pending", message)
        }
    };
    conditions::set(
        &mut list,
        CONFIG_APPLIED,
        status,
        reason,
        message,
        generation,
        now,
    );

    let entry_url = match &observed.client_access {
        Some(access) => {
            let (status, reason, message) = match &access.problem {
                Some((reason, message)) => (Status::False, reason.as_str(), message.clone()),
                None => (
                    Status::True,
                    "Ready",
                    format!(
                        "clients start at {}; {} nodes have their own URL",
                        access.entry_url, access.nodes
                    ),
                ),
            };
            conditions::set(
                &mut list,
                CLIENT_ACCESS_READY,
                status,
                reason,
                message,
                generation,
                now,
            );
            Some(access.entry_url.clone())
        }
        None => {
            list.retain(|c| c.type_ != CLIENT_ACCESS_READY);
            None
        }
    };

    SignalingClusterStatus {
        entry_url,
        conditions: list,
        replicas: i32::try_from(observed.pools.iter().map(|p| p.live).sum::<u32>())
            .unwrap_or(i32::MAX),
        ready_replicas: i32::try_from(ready_pods).unwrap_or(i32::MAX),
        ready_nodes: i32::try_from(observed.ready_nodes).unwrap_or(i32::MAX),
        shards_assigned: i32::try_from(observed.shards_assigned).unwrap_or(i32::MAX),
        config_revision: observed.config_revision.or(previous.config_revision),
        observed_generation: generation,
        selector: Some(selector_string(&selector_labels(name))),
    }
}

/// The current status of `cluster` with Degraded set to `failure` (for a pass that failed
/// before it could observe anything).
pub fn with_failure(
    cluster: &SignalingCluster,
    failure: &Failure,
    now: &Time,
) -> SignalingClusterStatus {
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let mut status = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    conditions::set(
        &mut status.conditions,
        DEGRADED,
        Status::True,
        &failure.reason,
        failure.message.clone(),
        generation,
        now,
    );
    if failure.client_access {
        conditions::set(
            &mut status.conditions,
            CLIENT_ACCESS_READY,
            Status::False,
            &failure.reason,
            failure.message.clone(),
            generation,
            now,
        );
    }
    status.selector = Some(selector_string(&selector_labels(name)));
    status
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::controller::cluster::testing::{cluster, now};

    fn pool(desired: u32, live: u32, ready: u32, outdated: u32) -> PoolSummary {
        PoolSummary {
            version: "default".into(),
            desired,
            live,
            ready,
            outdated,
            terminating: 0,
        }
    }

    fn healthy() -> Observed {
        Observed {
            pools: vec![pool(3, 3, 3, 0)],
            ready_nodes: 3,
            shards_assigned: 16,
            config_revision: Some(7),
            config_acked: 3,
            ..Default::default()
        }
    }

    fn condition<'a>(status: &'a SignalingClusterStatus, type_: &str) -> (&'a str, &'a str) {
        let c = conditions::get(&status.conditions, type_).expect(type_);
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_healthy_cluster_is_ready_stable_and_applied() {
        let c = cluster(3, 16);
        let status = cluster_status(&c, &healthy(), &now());
        assert_eq!(condition(&status, READY), ("True", "Serving"));
        assert_eq!(condition(&status, PROGRESSING), ("False", "Stable"));
        assert_eq!(condition(&status, DEGRADED), ("False", "AsExpected"));
        assert_eq!(
            condition(&status, CONFIG_APPLIED),
            ("True", "AllNodesAcked")
        );
        assert_eq!(
            (
                status.ready_replicas,
                status.ready_nodes,
                status.shards_assigned
            ),
            (3, 3, 16)
        );
        assert_eq!(status.config_revision, Some(7));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/name=signaling-node,switchboard.dev/cluster=demo")
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn recomputing_an_unchanged_state_gives_an_equal_status() {
        let mut c = cluster(3, 16);
        let first = cluster_status(&c, &healthy(), &now());
        c.status = Some(first.clone());
        let later = Time(Timestamp::from_second(1_800_000_000).unwrap());
        assert_eq!(cluster_status(&c, &healthy(), &later), first);
    }

    #[test]
    fn unassigned_shards_are_not_ready_and_degraded() {
        let c = cluster(3, 16);
        let observed = Observed {
            shards_assigned: 12,
            ..healthy()
        };
        let status = cluster_status(&c, &observed, &now());
        assert_eq!(condition(&status, READY), ("False", "ShardsUnassigned"));
        assert_eq!(condition(&status, DEGRADED), ("True", "ShardsUnassigned"));
    }

    #[test]
    fn rolling_and_scaling_are_progressing() {
        let c = cluster(3, 16);
        let updating = Observed {
            pools: vec![pool(3, 4, 3, 2)],
            ..healthy()
        };
        assert_eq!(
            condition(&cluster_status(&c, &updating, &now()), PROGRESSING),
            ("True", "Updating")
        );
        let scaling = Observed {
            pools: vec![pool(3, 2, 2, 0)],
            ..healthy()
        };
        assert_eq!(
            condition(&cluster_status(&c, &scaling, &now()), PROGRESSING),
            ("True", "Scaling")
        );
        let moving = Observed {
            handoffs_in_flight: 2,
            ..healthy()
        };
        assert_eq!(
            condition(&cluster_status(&c, &moving, &now()), PROGRESSING),
            ("True", "HandingOff")
        );
        let starting = Observed {
            pools: vec![pool(3, 3, 1, 0)],
            ..healthy()
        };
        assert_eq!(
            condition(&cluster_status(&c, &starting, &now()), PROGRESSING),
            ("True", "WaitingForReadiness")
        );
    }

    #[test]
    fn config_acks_and_failures_show_up() {
        let c = cluster(3, 16);
        let pending = Observed {
            config_acked: 1,
            ..healthy()
        };
        let status = cluster_status(&c, &pending, &now());
        assert_eq!(condition(&status, CONFIG_APPLIED), ("False", "Pending"));
        let message = &conditions::get(&status.conditions, CONFIG_APPLIED)
            .unwrap()
            .message;
        assert_eq!(message, "1 of 3 ready nodes acked config revision 7");

        let late = Observed {
            config_acked: 1,
            config_lagging: vec!["demo-default-1".into(), "demo-default-2".into()],
            ..healthy()
        };
        let status = cluster_status(&c, &late, &now());
        assert_eq!(
            conditions::get(&status.conditions, CONFIG_APPLIED)
                .unwrap()
                .message,
            "1 of 3 ready nodes acked config revision 7; not acked within 30s: \
             demo-default-1, demo-default-2"
        );

        let unwritten = Observed {
            config_revision: None,
            ..healthy()
        };
        assert_eq!(
            condition(&cluster_status(&c, &unwritten, &now()), CONFIG_APPLIED),
            ("Unknown", "NotWritten")
        );

        let failed = Observed {
            failure: Some(Failure {
                reason: "KubeApi".into(),
                message: "apiserver unavailable".into(),
                client_access: false,
            }),
            ..healthy()
        };
        assert_eq!(
            condition(&cluster_status(&c, &failed, &now()), DEGRADED),
            ("True", "KubeApi")
        );
    }

    #[test]
    fn a_failure_keeps_the_rest_of_the_status() {
        let mut c = cluster(3, 16);
        c.status = Some(cluster_status(&c, &healthy(), &now()));
        let failure = Failure {
            reason: "InvalidSpec".into(),
            message: "bad".into(),
            client_access: false,
        };
        let status = with_failure(&c, &failure, &now());
        assert_eq!(condition(&status, DEGRADED), ("True", "InvalidSpec"));
        assert_eq!(condition(&status, READY), ("True", "Serving"));
        assert_eq!(status.ready_nodes, 3);
        assert!(
            !status
                .conditions
                .iter()
                .any(|c| c.type_ == CLIENT_ACCESS_READY)
        );
    }

    #[test]
    fn client_access_is_reported_in_its_condition_and_the_entry_url() {
        let mut c = cluster(3, 16);
        let serving = Observed {
            client_access: Some(AccessObserved {
                entry_url: "wss://signal.test/ws".into(),
                nodes: 3,
                problem: None,
            }),
            ..healthy()
        };
        let status = cluster_status(&c, &serving, &now());
        assert_eq!(status.entry_url.as_deref(), Some("wss://signal.test/ws"));
        assert_eq!(condition(&status, CLIENT_ACCESS_READY), ("True", "Ready"));
        c.status = Some(status);

        let refused = Observed {
            client_access: Some(AccessObserved {
                problem: Some(("CertificateHostMismatch".into(), "not for x".into())),
                ..serving.client_access.clone().unwrap()
            }),
            ..healthy()
        };
        let status = cluster_status(&c, &refused, &now());
        assert_eq!(
            condition(&status, CLIENT_ACCESS_READY),
            ("False", "CertificateHostMismatch")
        );
        // The cluster still serves (with the last good certificate).
        assert_eq!(condition(&status, READY), ("True", "Serving"));

        let invalid = Failure {
            reason: "UnknownPlaceholder".into(),
            message: "unknown placeholder {podName}".into(),
            client_access: true,
        };
        let status = with_failure(&c, &invalid, &now());
        assert_eq!(
            condition(&status, CLIENT_ACCESS_READY),
            ("False", "UnknownPlaceholder")
        );
        assert_eq!(status.entry_url.as_deref(), Some("wss://signal.test/ws"));

        c.status = Some(status);
        let removed = cluster_status(&c, &healthy(), &now());
        assert!(removed.entry_url.is_none());
        assert!(
            !removed
                .conditions
                .iter()
                .any(|c| c.type_ == CLIENT_ACCESS_READY)
        );
    }

    #[test]
    fn scaled_to_zero_and_no_nodes() {
        let zero = cluster(0, 16);
        let observed = Observed {
            pools: vec![pool(0, 0, 0, 0)],
            ready_nodes: 0,
            shards_assigned: 0,
            ..healthy()
        };
        let status = cluster_status(&zero, &observed, &now());
        assert_eq!(condition(&status, READY), ("False", "ScaledToZero"));
        assert_eq!(condition(&status, DEGRADED), ("False", "AsExpected"));
        let c = cluster(3, 16);
        let none = Observed {
            ready_nodes: 0,
            ..healthy()
        };
        assert_eq!(
            condition(&cluster_status(&c, &none, &now()), READY),
            ("False", "NoReadyNodes")
        );
    }
}

//! Node health as the shard manager judges it: what etcd and the node's Pod say, folded into
//! one verdict per node (pure).
//!
//! | verdict | when | what happens to its shards |
//! |---|---|---|
//! | `Dead` | the failure detector declared its registered process crashed or unresponsive (see the core's detector memory), key gone (lease expired or revoked), Pod deleted, container terminated or restarted (see the core's exit memory), or Pod turned NotReady while the node says Ready | failover at once: lease revoked, shards reassigned with `epoch + 1` |
//! | `Leaving` | node says Draining, its Pod is terminating or carries the drain annotation | handed off (two-phase), never throttled |
//! | `Held` | registered, but its Pod has not passed readiness yet; or (judged by the core) its Pod turned NotReady together with half the fleet or more, or it registered again under a new lease after it was fenced for a NotReady Pod | keeps what it has, gets nothing new |
//! | `Eligible` | registered Ready, Pod (if seen) Ready | may receive shards |
//!
//! A Pod that has never been Ready (a node still starting) is not a failure: only a Ready →
//! NotReady transition of the same container is. A Pod the operator has not seen (no watch, a
//! node outside Kubernetes) is judged by its etcd key alone.

use switchboard_contract::keys::{NodeInfo, NodeState};

/// Why a node was declared dead (the `reason` of a RoomShard's `lastFailover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The detector saw its liveness stream end and its port refuse connections (or another
    /// process answer): the process is gone ([`super::detector`]).
    Crashed,
    /// The detector found it silent and no probe, the operator's or another node's, reached
    /// it ([`super::detector`]).
    Unresponsive,
    /// The node's key vanished: its lease expired (or was revoked by someone else).
    LeaseExpired,
    /// The node's Pod object was deleted.
    PodDeleted,
    /// The node's Pod turned NotReady while the node claimed to be Ready.
    PodNotReady,
    /// The node's container terminated (the process exited).
    ProcessExited,
}

impl Reason {
    /// The spelling used in status, Events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crashed => "Crashed",
            Self::Unresponsive => "Unresponsive",
            Self::LeaseExpired => "LeaseExpired",
            Self::PodDeleted => "PodDeleted",
            Self::PodNotReady => "PodNotReady",
            Self::ProcessExited => "ProcessExited",
        }
    }
}

/// The verdict on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Registered Ready with a Ready Pod: may receive shards.
    Eligible,
    /// Alive but not yet Ready: keeps its shards, receives none.
    Held,
    /// Shutting down (Draining or Pod terminating): its shards are handed off.
    Leaving,
    /// Gone or failed: its shards fail over.
    Dead(Reason),
}

impl Health {
    /// Whether the node may own shards at all (everything but dead).
    pub fn alive(self) -> bool {
        !matches!(self, Self::Dead(_))
    }
}

/// A node's registration as read from etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeObs {
    /// The decoded `nodes/<pod>` value.
    pub info: NodeInfo,
    /// The lease the key is attached to (revoked to fence the node).
    pub lease: i64,
    /// The key's mod revision.
    pub mod_revision: i64,
}

/// What the Pod watch reports about one Pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodObs {
    /// The Pod's uid (a new uid is a new Pod with the same name).
    pub uid: String,
    /// The Ready condition is True.
    pub ready: bool,
    /// `deletionTimestamp` is set.
    pub terminating: bool,
    /// A container is in state `terminated` (or the Pod phase is Succeeded/Failed).
    pub exited: bool,
    /// Sum of container restart counts (a restart is a new process).
    pub restarts: i32,
    /// The Pod carries the drain annotation (`switchboard.dev/drain: "true"`).
    pub drain_requested: bool,
    /// Not Ready although its containers are: the node lifecycle controller marked it so
    /// because its Node stopped reporting (it changes only the Ready condition), which says
    /// nothing about the process.
    pub node_unreachable: bool,
}

/// The operator's memory of one Pod across watch events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodState {
    /// The latest observation.
    pub obs: PodObs,
    /// The Pod object was deleted (seen as a watch delete).
    pub deleted: bool,
    /// The current process has been Ready at least once.
    pub ever_ready: bool,
}

impl PodState {
    /// Whether `obs` shows the process of `previous` gone: the same Pod (uid) with a higher
    /// restart count (the kubelet restarted the container, perhaps before the terminated
    /// state was ever observed) or a container in state `terminated`. The first observation
    /// of a Pod is never an exit (its restarts happened before the operator looked).
    pub fn process_exited(previous: Option<&PodState>, obs: &PodObs) -> bool {
        let restarted = previous
            .is_some_and(|p| !p.deleted && p.obs.uid == obs.uid && obs.restarts > p.obs.restarts);
        restarted || obs.exited
    }

    /// Folds a new observation in, resetting `ever_ready` when the Pod or process changed.
    pub fn observe(previous: Option<&PodState>, obs: PodObs) -> PodState {
        let same_process = previous
            .filter(|p| !p.deleted && p.obs.uid == obs.uid && p.obs.restarts == obs.restarts);
        let ever_ready = obs.ready || same_process.is_some_and(|p| p.ever_ready);
        PodState {
            obs,
            deleted: false,
            ever_ready,
        }
    }
}

/// Judges one node from its etcd key (if present) and its Pod (if seen).
pub fn classify(node: Option<&NodeObs>, pod: Option<&PodState>) -> Health {
    if let Some(pod) = pod {
        if pod.deleted {
            return Health::Dead(Reason::PodDeleted);
        }
        if pod.obs.exited {
            return Health::Dead(Reason::ProcessExited);
        }
    }
    let Some(node) = node else {
        return Health::Dead(Reason::LeaseExpired);
    };
    let draining = node.info.state == NodeState::Draining;
    if let Some(pod) = pod {
        let flapped = pod.ever_ready && !pod.obs.ready && !pod.obs.terminating;
        // An unreachable Node is judged by the node's own lease, which a dead machine loses
        // within seconds: the kubelet going quiet must not move the shards of a live process.
        if flapped && !draining && !pod.obs.node_unreachable {
            return Health::Dead(Reason::PodNotReady);
        }
        if pod.obs.terminating || draining || pod.obs.drain_requested {
            return Health::Leaving;
        }
        if !pod.obs.ready {
            return Health::Held;
        }
        return Health::Eligible;
    }
    if draining {
        Health::Leaving
    } else {
        Health::Eligible
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_contract::keys::Load;

    fn node(state: NodeState) -> NodeObs {
        NodeObs {
            info: NodeInfo {
                url: "ws://127.0.0.1:7000/ws".into(),
                version: "v1".into(),
                protocols: vec![],
                state,
                load: Load::default(),
                error_rate: 0.0,
                started_at_ms: 0,
                liveness: None,
            },
            lease: 7,
            mod_revision: 3,
        }
    }

    fn pod(ready: bool, ever_ready: bool) -> PodState {
        PodState {
            obs: PodObs {
                uid: "u1".into(),
                ready,
                ..Default::default()
            },
            deleted: false,
            ever_ready,
        }
    }

    #[test]
    fn etcd_alone_decides_without_a_pod() {
        assert_eq!(
            classify(Some(&node(NodeState::Ready)), None),
            Health::Eligible
        );
        assert_eq!(
            classify(Some(&node(NodeState::Draining)), None),
            Health::Leaving
        );
        assert_eq!(classify(None, None), Health::Dead(Reason::LeaseExpired));
    }

    #[test]
    fn pod_signals_win_over_a_live_key() {
        let ready = node(NodeState::Ready);
        let mut deleted = pod(true, true);
        deleted.deleted = true;
        assert_eq!(
            classify(Some(&ready), Some(&deleted)),
            Health::Dead(Reason::PodDeleted)
        );
        let mut exited = pod(false, true);
        exited.obs.exited = true;
        assert_eq!(
            classify(Some(&ready), Some(&exited)),
            Health::Dead(Reason::ProcessExited)
        );
        assert_eq!(
            classify(Some(&ready), Some(&pod(false, true))),
            Health::Dead(Reason::PodNotReady)
        );
    }

    #[test]
    fn a_pod_not_ready_because_its_node_is_unreachable_is_held_not_failed() {
        let ready = node(NodeState::Ready);
        let mut unreachable = pod(false, true);
        unreachable.obs.node_unreachable = true;
        assert_eq!(classify(Some(&ready), Some(&unreachable)), Health::Held);
        // The process itself dying still counts: its lease goes, or its container exits.
        assert_eq!(
            classify(None, Some(&unreachable)),
            Health::Dead(Reason::LeaseExpired)
        );
    }

    #[test]
    fn starting_and_draining_pods_are_not_failures() {
        let ready = node(NodeState::Ready);
        assert_eq!(
            classify(Some(&ready), Some(&pod(false, false))),
            Health::Held
        );
        // A draining node's readiness probe fails on purpose: still a handoff.
        assert_eq!(
            classify(Some(&node(NodeState::Draining)), Some(&pod(false, true))),
            Health::Leaving
        );
        let mut terminating = pod(false, true);
        terminating.obs.terminating = true;
        assert_eq!(classify(Some(&ready), Some(&terminating)), Health::Leaving);
        assert_eq!(
            classify(Some(&ready), Some(&pod(true, true))),
            Health::Eligible
        );
    }

    #[test]
    fn a_drain_annotation_makes_a_ready_node_leave_but_not_a_dead_one() {
        let ready = node(NodeState::Ready);
        let mut drained = pod(true, true);
        drained.obs.drain_requested = true;
        assert_eq!(classify(Some(&ready), Some(&drained)), Health::Leaving);
        drained.obs.exited = true;
        assert_eq!(
            classify(Some(&ready), Some(&drained)),
            Health::Dead(Reason::ProcessExited)
        );
        assert_eq!(
            classify(None, Some(&pod(true, true))),
            Health::Dead(Reason::LeaseExpired)
        );
    }

    #[test]
    fn readiness_memory_resets_with_a_new_process() {
        let first = PodState::observe(
            None,
            PodObs {
                uid: "a".into(),
                ready: true,
                ..Default::default()
            },
        );
        assert!(first.ever_ready);
        let flapped = PodState::observe(
            Some(&first),
            PodObs {
                uid: "a".into(),
                ready: false,
                ..Default::default()
            },
        );
        assert!(flapped.ever_ready);
        let restarted = PodState::observe(
            Some(&flapped),
            PodObs {
                uid: "a".into(),
                ready: false,
                restarts: 1,
                ..Default::default()
            },
        );
        assert!(!restarted.ever_ready);
        let replaced = PodState::observe(
            Some(&flapped),
            PodObs {
                uid: "b".into(),
                ..Default::default()
            },
        );
        assert!(!replaced.ever_ready);
    }

    #[test]
    fn a_restart_of_the_same_pod_is_a_process_exit() {
        let obs = |uid: &str, restarts: i32, exited: bool| PodObs {
            uid: uid.into(),
            ready: true,
            exited,
            restarts,
            ..Default::default()
        };
        let first = PodState::observe(None, obs("a", 2, false));
        // Restarts before the operator looked are history, not a signal.
        assert!(!PodState::process_exited(None, &obs("a", 2, false)));
        assert!(!PodState::process_exited(Some(&first), &obs("a", 2, false)));
        assert!(PodState::process_exited(Some(&first), &obs("a", 3, false)));
        assert!(PodState::process_exited(Some(&first), &obs("a", 2, true)));
        // A new Pod with the same name is not a restart of the old process.
        assert!(!PodState::process_exited(Some(&first), &obs("b", 5, false)));
        let mut gone = first.clone();
        gone.deleted = true;
        assert!(!PodState::process_exited(Some(&gone), &obs("a", 3, false)));
    }
}

//! The shard manager's decision core (pure, time injected): folds etcd and Pod observations
//! into node verdicts ([`super::health`]), plans ([`super::plan`]), drives handoffs
//! ([`super::handoff`]) and turns all of it into etcd writes, lease revocations and notices.
//!
//! The core never performs I/O. The shell applies inputs, asks [`Core::decide`] what to do,
//! executes it and reports back with [`Core::written`] / [`Core::conflicted`] /
//! [`Core::revoked`]. Every write carries the mod revision it expects, so a decision made on a
//! stale view fails in etcd instead of clobbering a newer value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use switchboard_contract::keys::{Ack, Assignment, RolloutValue};
use tokio::time::Instant;

use super::handoff::{self, InFlight, Step};
use super::health::{self, Health, NodeObs, PodObs, PodState, Reason};
use super::plan::{self, ANY_POOL, Cause, NodeView, PlanInput};
use super::state::{Change, Input, MoveRequest, Tracked};
use crate::crd::{Failover, MovePhase, MoveRequestStatus, ShardMove};
use crate::placement::ShardId;

/// Tunables of one cluster's manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Shards `0..shard_count` exist.
    pub shard_count: u32,
    /// At most this many rebalancing / version handoffs at once (`maxShardsMoving`).
    pub max_moving: usize,
    /// Phase 3 of a handoff happens at the latest this long after phase 1.
    pub handoff_deadline: Duration,
    /// A pool that has not reached its expected size gets its first shards this long after
    /// its first eligible node appeared (so one early node does not get every shard).
    pub placement_grace: Duration,
    /// A node receives rebalancing handoffs inside its pool only once it has been eligible
    /// this long (hysteresis: no double migration right after a crash and restart).
    pub rebalance_settle: Duration,
    /// A failover whose new owner has not reported serving within this is shown Assigned.
    pub recovery_timeout: Duration,
    /// Acks of nodes gone for this long (and owning nothing) are deleted.
    pub ack_cleanup_after: Duration,
    /// Expected eligible nodes per pool; a pool that has them all opens for placement at
    /// once.
    pub expected_pools: BTreeMap<String, u32>,
    /// A ProtocolRollout refers to the cluster: until its `rollout` key is written, nothing
    /// new is placed (its shards would land in the wrong version pool).
    pub expect_rollout: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            shard_count: 0,
            max_moving: 1,
            handoff_deadline: Duration::from_secs(5),
            placement_grace: Duration::from_secs(3),
            rebalance_settle: Duration::from_secs(10),
            recovery_timeout: Duration::from_secs(30),
            ack_cleanup_after: Duration::from_secs(30),
            expected_pools: BTreeMap::new(),
            expect_rollout: false,
        }
    }
}

/// Why a write is made (drives notices, timers and metrics once it succeeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCause {
    /// Failover away from a dead owner.
    Failover {
        /// The dead owner.
        from: String,
        /// Why it was declared dead.
        reason: Reason,
        /// When the signal was observed.
        signal_at: Instant,
    },
    /// First placement.
    Place,
    /// Handoff phase 1 (or a retarget).
    HandoffStart {
        /// The current owner.
        from: String,
        /// `Drain`, `Rebalance` or `VersionMove`.
        kind: HandoffKind,
    },
    /// Handoff phase 1 of a move requested through the RoomShard annotation.
    Requested {
        /// The current owner.
        from: String,
        /// The request being answered.
        id: String,
    },
    /// Handoff phase 3.
    HandoffFinish {
        /// The previous owner.
        from: String,
        /// `Drain`, `Rebalance` or `VersionMove`.
        kind: HandoffKind,
        /// The owner released it (false: the deadline passed).
        released: bool,
    },
}

/// What kind of handoff (Event reason and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandoffKind {
    /// The owner is draining or its Pod terminating.
    Drain,
    /// Balancing within a pool (new node, scale).
    Rebalance,
    /// Moving to another version pool (rollout weights).
    VersionMove,
    /// Requested by an operator (`kubectl switchboard failover`).
    Requested,
}

impl HandoffKind {
    /// The label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drain => "Drain",
            Self::Rebalance => "Rebalance",
            Self::VersionMove => "VersionMove",
            Self::Requested => "Requested",
        }
    }
}

/// One conditional write of `assignments/<shard>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The shard.
    pub shard: ShardId,
    /// The mod revision the key must still have (0: the key must not exist).
    pub expect: i64,
    /// The new value.
    pub value: Assignment,
    /// Why.
    pub cause: WriteCause,
}

/// Everything the shell should do now, in this order: revoke, write, delete acks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Leases to revoke first (node name, lease id): fencing before failover.
    pub revoke: Vec<(String, i64)>,
    /// Assignment writes.
    pub writes: Vec<Write>,
    /// Acks of departed nodes to delete (pod, mod revision).
    pub delete_acks: Vec<(String, i64)>,
    /// Move requests that cannot be carried out, with the reason (recorded with
    /// [`Core::rejected`]; no I/O besides the status).
    pub rejections: Vec<Rejection>,
}

impl Decision {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.revoke.is_empty()
            && self.writes.is_empty()
            && self.delete_acks.is_empty()
            && self.rejections.is_empty()
    }
}

/// A move request the core refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The shard.
    pub shard: ShardId,
    /// The request.
    pub id: String,
    /// Its owner, if any.
    pub from: Option<String>,
    /// Why.
    pub message: String,
}

/// Something worth an Event and a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A shard was failed over.
    Failover {
        /// The shard.
        shard: ShardId,
        /// The dead owner.
        from: String,
        /// The new owner.
        to: String,
        /// Why.
        reason: Reason,
        /// Signal → new assignment written.
        detected: Duration,
    },
    /// The new owner of a failed-over shard reported serving it.
    Recovered {
        /// The shard.
        shard: ShardId,
        /// The new owner.
        to: String,
        /// Signal → serving.
        total: Duration,
    },
    /// Handoff phase 1 written.
    HandoffStarted {
        /// The shard.
        shard: ShardId,
        /// The owner.
        from: String,
        /// The target.
        to: String,
        /// Kind.
        kind: HandoffKind,
    },
    /// Handoff phase 3 written.
    HandoffFinished {
        /// The shard.
        shard: ShardId,
        /// The old owner.
        from: String,
        /// The new owner.
        to: String,
        /// Kind.
        kind: HandoffKind,
        /// Released in time (false: deadline).
        released: bool,
    },
}

/// A failover whose new owner has not reported serving yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// When the failure signal was observed.
    pub signal_at: Instant,
    /// The epoch the new owner must report.
    pub epoch: u64,
    /// Give up waiting (show Assigned) at this time.
    pub deadline: Instant,
}

/// The last failover of a shard, as shown in its status.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverRecord {
    /// The status field.
    pub last: Failover,
    /// Still waiting for the new owner to serve.
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Signal {
    reason: Reason,
    at: Instant,
}

/// A process exit (container terminated or restarted) of a node that owned shards: the node
/// is dead for those shards even though its restarted process may re-register at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exit {
    /// The lease on the node key when the exit was seen: revoked (once) if the key still
    /// carries it. A lease the restarted process puts later is never revoked for this exit.
    lease: Option<i64>,
    /// The restart count of the Pod when the exit was seen.
    restarts: i32,
    /// A later observation showed the restarted process Ready.
    ready_again: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct HandoffTimer {
    started: Instant,
    kind: HandoffKind,
}

/// The decision core of one cluster's shard manager.
#[derive(Debug, Clone, Default)]
pub struct Core {
    settings: Settings,
    synced: bool,
    nodes: BTreeMap<String, NodeObs>,
    pods: BTreeMap<String, PodState>,
    assignments: BTreeMap<ShardId, Tracked<Assignment>>,
    // Assignment keys whose value does not decode: overwritten (by revision) on placement.
    undecodable: BTreeMap<ShardId, i64>,
    acks: BTreeMap<String, Tracked<Ack>>,
    rollout: Option<RolloutValue>,
    health: BTreeMap<String, Health>,
    signals: BTreeMap<String, Signal>,
    exits: BTreeMap<String, Exit>,
    // The lease a node's key carried when its Pod turned NotReady (while it stays NotReady):
    // only that lease is fenced; a key re-registered under another lease since is held.
    not_ready_leases: BTreeMap<String, i64>,
    // Nodes whose Pod turned NotReady together with half the fleet: held, not fenced, until
    // their Pod is Ready again.
    excused: BTreeSet<String>,
    // Lease a node key carried before it was re-put under another lease, since the node's
    // last Pod observation (a restarted process may register before its restart is seen).
    replaced_leases: BTreeMap<String, i64>,
    revoked: BTreeSet<i64>,
    // The failure detector's verdicts: the registration (incarnation, lease) declared dead
    // and why. A node is dead while its key carries that registration or it has no key; a
    // registration of its own (a restarted process, or the same one registering again after
    // it was fenced) is judged afresh.
    detected: BTreeMap<String, (u64, i64, Reason)>,
    handoffs: BTreeMap<ShardId, HandoffTimer>,
    failovers: BTreeMap<ShardId, FailoverRecord>,
    // The last change of owner of each shard and why (status `lastMove`).
    moves: BTreeMap<ShardId, ShardMove>,
    pool_since: BTreeMap<String, Instant>,
    eligible_since: BTreeMap<String, Instant>,
    gone_since: BTreeMap<String, Instant>,
    rooms: BTreeMap<ShardId, u64>,
    move_requests: BTreeMap<ShardId, MoveRequest>,
    move_results: BTreeMap<ShardId, MoveRequestStatus>,
    // Stored statuses were read: answers given before a restart are known.
    statuses_seen: bool,
}

fn since(now: Instant, then: Instant) -> Duration {
    now.saturating_duration_since(then)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Core {
    /// A core with `settings` that has seen nothing yet.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// The current settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Replaces the settings (cluster or rollout spec changed).
    pub fn set_settings(&mut self, settings: Settings, now: Instant) {
        self.settings = settings;
        self.evaluate(now);
    }

    /// Whether the first full read of etcd arrived (nothing is decided before).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The assignment of `shard`, if any.
    pub fn assignment(&self, shard: ShardId) -> Option<&Assignment> {
        self.assignments.get(&shard).map(|t| &t.value)
    }

    /// Every assignment.
    pub fn assignments(&self) -> impl Iterator<Item = (ShardId, &Assignment)> {
        self.assignments.iter().map(|(s, t)| (*s, &t.value))
    }

    /// The verdict on `node` (dead when unknown).
    pub fn health(&self, node: &str) -> Health {
        self.health
            .get(node)
            .copied()
            .unwrap_or(Health::Dead(Reason::LeaseExpired))
    }

    /// The last failover of `shard`.
    pub fn failover(&self, shard: ShardId) -> Option<&FailoverRecord> {
        self.failovers.get(&shard)
    }

    /// The last change of owner of `shard` and why.
    pub fn last_move(&self, shard: ShardId) -> Option<&ShardMove> {
        self.moves.get(&shard)
    }

    /// The answer to the last move request of `shard`.
    pub fn move_result(&self, shard: ShardId) -> Option<&MoveRequestStatus> {
        self.move_results.get(&shard)
    }

    /// Rooms counted in `shard`.
    pub fn rooms(&self, shard: ShardId) -> u64 {
        self.rooms.get(&shard).copied().unwrap_or(0)
    }

    /// Folds one input in; returns notices it caused (recoveries).
    pub fn apply(&mut self, input: Input, now: Instant) -> Vec<Notice> {
        self.apply_all(vec![input], now)
    }

    /// Folds a burst of inputs in, in order, and re-evaluates once.
    pub fn apply_all(&mut self, inputs: Vec<Input>, now: Instant) -> Vec<Notice> {
        for input in inputs {
            self.ingest(input);
        }
        self.evaluate(now);
        self.check_recoveries(now)
    }

    fn ingest(&mut self, input: Input) {
        match input {
            Input::Reset(changes) => {
                self.nodes.clear();
                self.assignments.clear();
                self.undecodable.clear();
                self.acks.clear();
                self.rollout = None;
                for change in changes {
                    self.change(change, true);
                }
                self.synced = true;
            }
            Input::Changes(changes) => {
                for change in changes {
                    self.change(change, false);
                }
            }
            Input::PodsReset(pods) => {
                let previous = std::mem::take(&mut self.pods);
                for (name, obs) in pods {
                    self.observe_pod(name.clone(), previous.get(&name), obs);
                }
                // Pods that vanished while the watch was down were deleted.
                for (name, mut state) in previous {
                    if let std::collections::btree_map::Entry::Vacant(slot) = self.pods.entry(name)
                    {
                        state.deleted = true;
                        slot.insert(state);
                    }
                }
            }
            Input::Pod(name, obs) => {
                let previous = self.pods.get(&name).cloned();
                self.observe_pod(name, previous.as_ref(), obs);
            }
            Input::PodGone(name) => {
                let entry = self.pods.entry(name).or_default();
                entry.deleted = true;
            }
            Input::Rooms(rooms) => self.rooms = rooms,
            Input::Detected {
                node,
                incarnation,
                lease,
                reason,
            } => {
                // A verdict about a registration the key no longer carries is stale.
                let current = self
                    .nodes
                    .get(&node)
                    .map(|n| (self.incarnation_of(&node), n.lease));
                if current.is_none_or(|c| c == (Some(incarnation), lease)) {
                    self.detected.insert(node, (incarnation, lease, reason));
                }
            }
            Input::MoveRequests(requests) => self.move_requests = requests,
            Input::StoredStatuses(statuses) => {
                self.statuses_seen = true;
                for (shard, status) in statuses {
                    if let Some(answer) = status.last_move_request {
                        self.move_results.entry(shard).or_insert(answer);
                    }
                    if let Some(last) = status.last_failover {
                        self.failovers.entry(shard).or_insert(FailoverRecord {
                            last,
                            pending: None,
                        });
                    }
                    if let Some(last) = status.last_move {
                        self.moves.entry(shard).or_insert(last);
                    }
                }
            }
        }
    }

    /// Folds one Pod observation in and remembers a process exit of a node owning shards.
    fn observe_pod(&mut self, name: String, previous: Option<&PodState>, obs: PodObs) {
        let owns = self.assignments.values().any(|a| a.value.node == name);
        if owns && PodState::process_exited(previous, &obs) {
            let lease = self
                .replaced_leases
                .get(&name)
                .copied()
                .or_else(|| self.nodes.get(&name).map(|n| n.lease));
            let exit = self.exits.entry(name.clone()).or_insert(Exit {
                lease,
                restarts: obs.restarts,
                ready_again: false,
            });
            exit.restarts = exit.restarts.max(obs.restarts);
            exit.ready_again = false;
        } else if let Some(exit) = self.exits.get_mut(&name) {
            exit.ready_again = obs.ready && !obs.exited && obs.restarts >= exit.restarts;
        }
        self.replaced_leases.remove(&name);
        let state = PodState::observe(previous, obs);
        self.pods.insert(name, state);
    }

    fn change(&mut self, change: Change, reset: bool) {
        match change {
            Change::Node(name, obs) => {
                let stale = self
                    .nodes
                    .get(&name)
                    .is_some_and(|n| n.mod_revision > obs.mod_revision && !reset);
                if !stale {
                    if let Some(old) = self.nodes.get(&name)
                        && old.lease != obs.lease
                    {
                        self.replaced_leases
                            .entry(name.clone())
                            .or_insert(old.lease);
                    }
                    self.nodes.insert(name, obs);
                }
            }
            Change::NodeGone(name) => {
                self.nodes.remove(&name);
            }
            Change::Assignment(shard, value, revision) => {
                let known = self.revision_of(shard);
                if !reset && known > revision {
                    return;
                }
                match value {
                    Some(value) => {
                        self.undecodable.remove(&shard);
                        self.assignments.insert(
                            shard,
                            Tracked {
                                value,
                                mod_revision: revision,
                            },
                        );
                    }
                    None => {
                        self.assignments.remove(&shard);
                        self.undecodable.insert(shard, revision);
                    }
                }
            }
            Change::AssignmentGone(shard, revision) => {
                if self.revision_of(shard) <= revision {
                    self.assignments.remove(&shard);
                    self.undecodable.remove(&shard);
                }
            }
            Change::Ack(name, ack) => {
                self.acks.insert(name, ack);
            }
            Change::AckGone(name) => {
                self.acks.remove(&name);
            }
            Change::Rollout(value) => self.rollout = Some(value),
            Change::RolloutGone => self.rollout = None,
        }
    }

    /// The process incarnation `node`'s registration names, if it has one.
    fn incarnation_of(&self, node: &str) -> Option<u64> {
        self.nodes
            .get(node)
            .and_then(|n| n.info.liveness.as_ref())
            .map(|l| l.incarnation)
    }

    /// The liveness endpoints and leases of the registered nodes (what the detector
    /// watches).
    pub fn liveness_endpoints(
        &self,
    ) -> BTreeMap<String, (switchboard_contract::liveness::Endpoint, i64)> {
        self.nodes
            .iter()
            .filter_map(|(name, n)| Some((name.clone(), (n.info.liveness.clone()?, n.lease))))
            .collect()
    }

    fn revision_of(&self, shard: ShardId) -> i64 {
        self.assignments
            .get(&shard)
            .map(|t| t.mod_revision)
            .or_else(|| self.undecodable.get(&shard).copied())
            .unwrap_or(0)
    }

    /// Recomputes verdicts, failure signals and timers after a change.
    fn evaluate(&mut self, now: Instant) {
        let mut names: BTreeSet<String> = self.nodes.keys().cloned().collect();
        names.extend(self.pods.keys().cloned());
        for assignment in self.assignments.values() {
            names.insert(assignment.value.node.clone());
            if let Some(target) = &assignment.value.handoff_to {
                names.insert(target.clone());
            }
        }
        // An exit is settled once its node owns no shard (they failed over), once the
        // restarted process has turned Ready (no other node could take them: it keeps them),
        // or when the Pod is gone (a deletion is judged on its own).
        // A detector verdict ends when another incarnation registered under the name, or
        // when nothing refers to the node any more.
        let nodes = &self.nodes;
        let assignments = &self.assignments;
        self.detected
            .retain(|name, (incarnation, lease, _)| match nodes.get(name) {
                Some(n) => {
                    n.lease == *lease
                        && n.info.liveness.as_ref().map(|l| l.incarnation) == Some(*incarnation)
                }
                None => assignments
                    .values()
                    .any(|a| a.value.node == *name || a.value.handoff_to.as_deref() == Some(name)),
            });
        let pods = &self.pods;
        self.exits.retain(|name, exit| {
            let owns = assignments.values().any(|a| a.value.node == *name);
            let recovered = exit.ready_again || pods.get(name).is_none_or(|p| p.deleted);
            owns && !recovered
        });
        let verdicts: Vec<(String, Health)> = names
            .into_iter()
            .map(|name| {
                let verdict = self.verdict(&name);
                (name, verdict)
            })
            .collect();
        self.excuse_correlated_not_ready(&verdicts);
        let mut health = BTreeMap::new();
        for (name, verdict) in verdicts {
            let verdict = self.judge_not_ready(&name, verdict);
            match verdict {
                Health::Dead(reason) => {
                    self.signals
                        .entry(name.clone())
                        .or_insert(Signal { reason, at: now });
                }
                _ => {
                    self.signals.remove(&name);
                }
            }
            health.insert(name, verdict);
        }
        self.signals.retain(|name, _| health.contains_key(name));
        self.not_ready_leases
            .retain(|name, _| health.contains_key(name));
        self.excused.retain(|name| health.contains_key(name));
        self.health = health;
        // Deleted Pods are forgotten once nothing refers to their node any more.
        let referenced: BTreeSet<&str> = self
            .assignments
            .values()
            .flat_map(|a| {
                std::iter::once(a.value.node.as_str()).chain(a.value.handoff_to.as_deref())
            })
            .collect();
        let nodes = &self.nodes;
        self.pods.retain(|name, pod| {
            !pod.deleted || nodes.contains_key(name) || referenced.contains(name.as_str())
        });

        // Handoff timers follow the assignments (a handoff found after a restart starts now).
        let in_flight: BTreeMap<ShardId, HandoffKind> = self
            .assignments
            .iter()
            .filter_map(|(shard, a)| {
                let target = a.value.handoff_to.as_deref()?;
                Some((*shard, self.handoff_kind(&a.value, target)))
            })
            .collect();
        self.handoffs
            .retain(|shard, _| in_flight.contains_key(shard));
        for (shard, kind) in in_flight {
            self.handoffs
                .entry(shard)
                .or_insert(HandoffTimer { started: now, kind });
        }

        // Pools: when each first had an eligible node.
        let eligible = self.eligible_per_pool();
        self.pool_since
            .retain(|pool, _| eligible.contains_key(pool));
        for pool in eligible.keys() {
            self.pool_since.entry(pool.clone()).or_insert(now);
        }
        // Nodes: when each turned eligible (again).
        let health = &self.health;
        self.eligible_since
            .retain(|name, _| health.get(name) == Some(&Health::Eligible));
        for (name, verdict) in &self.health {
            if *verdict == Health::Eligible {
                self.eligible_since.entry(name.clone()).or_insert(now);
            }
        }
        // Departed nodes, for ack cleanup.
        let gone: Vec<String> = self
            .acks
            .keys()
            .filter(|pod| !self.nodes.contains_key(*pod) && !referenced.contains(pod.as_str()))
            .cloned()
            .collect();
        self.gone_since.retain(|pod, _| gone.contains(pod));
        for pod in gone {
            self.gone_since.entry(pod).or_insert(now);
        }
    }

    /// Correlated NotReady: when at least half of the nodes with a Pod (two or more) turn
    /// NotReady together, the cause is common to them (etcd down, a network cut), not the
    /// nodes, and fencing them all would only move every shard to whichever node turns Ready
    /// first. Those nodes are excused until their Pod is Ready again (see
    /// [`Core::judge_not_ready`]). The same idea as the kube-controller-manager's
    /// unhealthy-zone threshold.
    fn excuse_correlated_not_ready(&mut self, verdicts: &[(String, Health)]) {
        let not_ready: Vec<&String> = verdicts
            .iter()
            .filter(|(_, v)| *v == Health::Dead(Reason::PodNotReady))
            .map(|(name, _)| name)
            .collect();
        let with_pods = verdicts
            .iter()
            .filter(|(name, _)| self.pods.contains_key(name))
            .count();
        if not_ready.len() >= 2 && not_ready.len() * 2 >= with_pods {
            self.excused.extend(not_ready.into_iter().cloned());
        }
    }

    /// A `PodNotReady` verdict made `Held` (keeps what it has, gets nothing new; a node that
    /// really died still loses its lease) when the node is excused (it went NotReady with
    /// half the fleet) or registered again under a new lease after it was fenced for it: that
    /// is a new incarnation that can reach etcd, and fencing it again would keep its Pod
    /// NotReady after an etcd outage (docs/reliability.md). Other verdicts pass and clear both
    /// memories.
    fn judge_not_ready(&mut self, name: &str, verdict: Health) -> Health {
        if verdict == Health::Dead(Reason::LeaseExpired) {
            // The key vanished (its lease expired or was revoked). While the Pod stays
            // NotReady keep both memories, with no lease at all when there was none (0 is no
            // etcd lease id): the next registration is a new incarnation, not a new failure,
            // since each fence would keep a Pod that is not Ready yet NotReady longer.
            if self
                .pods
                .get(name)
                .is_some_and(|p| p.ever_ready && !p.obs.ready)
            {
                self.not_ready_leases.entry(name.to_string()).or_insert(0);
            }
            return verdict;
        }
        if verdict != Health::Dead(Reason::PodNotReady) {
            self.excused.remove(name);
            self.not_ready_leases.remove(name);
            return verdict;
        }
        if self.excused.contains(name) {
            return Health::Held;
        }
        let Some(node) = self.nodes.get(name) else {
            return verdict;
        };
        let first = *self
            .not_ready_leases
            .entry(name.to_string())
            .or_insert(node.lease);
        if first == node.lease {
            verdict
        } else {
            Health::Held
        }
    }

    /// The verdict on `name` from its key, its Pod, its exit memory and the leases revoked.
    fn verdict(&self, name: &str) -> Health {
        let node = self.nodes.get(name);
        let verdict = health::classify(node, self.pods.get(name));
        if let Some((_, _, reason)) = self.detected.get(name)
            && verdict != Health::Dead(Reason::PodDeleted)
        {
            // Kept only while the key carries the dead incarnation or is gone (`evaluate`).
            Health::Dead(*reason)
        } else if self.exits.contains_key(name) && verdict != Health::Dead(Reason::PodDeleted) {
            Health::Dead(Reason::ProcessExited)
        } else if node.is_some_and(|n| self.revoked.contains(&n.lease)) && verdict.alive() {
            // Fenced: its key is about to vanish.
            Health::Dead(Reason::LeaseExpired)
        } else {
            verdict
        }
    }

    fn handoff_kind(&self, assignment: &Assignment, target: &str) -> HandoffKind {
        if self.health.get(&assignment.node) == Some(&Health::Leaving) {
            return HandoffKind::Drain;
        }
        let target_version = self.nodes.get(target).map(|n| n.info.version.as_str());
        if self.rollout.is_some() && target_version.is_some_and(|v| v != assignment.version) {
            HandoffKind::VersionMove
        } else {
            HandoffKind::Rebalance
        }
    }

    fn views(&self) -> BTreeMap<String, NodeView> {
        self.health
            .iter()
            .map(|(name, health)| {
                let node = self.nodes.get(name);
                let version = node.map(|n| n.info.version.clone()).unwrap_or_default();
                let load = node.map(|n| n.info.load.connections).unwrap_or(0);
                (
                    name.clone(),
                    NodeView {
                        version,
                        health: *health,
                        load,
                    },
                )
            })
            .collect()
    }

    fn pool_of(&self, version: &str) -> String {
        if self.rollout.is_some() {
            version.to_string()
        } else {
            ANY_POOL.to_string()
        }
    }

    fn eligible_per_pool(&self) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for (name, health) in &self.health {
            if *health != Health::Eligible {
                continue;
            }
            if let Some(node) = self.nodes.get(name) {
                *counts.entry(self.pool_of(&node.info.version)).or_insert(0) += 1;
            }
        }
        counts
    }

    fn open_pools(&self, now: Instant) -> BTreeSet<String> {
        if self.settings.expect_rollout && self.rollout.is_none() {
            return BTreeSet::new();
        }
        self.eligible_per_pool()
            .into_iter()
            .filter(|(pool, count)| {
                let full = self
                    .settings
                    .expected_pools
                    .get(pool)
                    .is_some_and(|expected| count >= expected);
                let waited = self
                    .pool_since
                    .get(pool)
                    .is_some_and(|t| since(now, *t) >= self.settings.placement_grace);
                full || waited
            })
            .map(|(pool, _)| pool)
            .collect()
    }

    /// What to do now.
    pub fn decide(&self, now: Instant) -> Decision {
        let mut decision = Decision::default();
        if !self.synced {
            return decision;
        }
        let views = self.views();
        let assignments: BTreeMap<ShardId, Assignment> = self
            .assignments
            .iter()
            .map(|(s, t)| (*s, t.value.clone()))
            .collect();
        let open = self.open_pools(now);
        let moving = self
            .handoffs
            .iter()
            .filter(|(shard, timer)| {
                timer.kind != HandoffKind::Drain
                    && self
                        .assignments
                        .get(shard)
                        .is_some_and(|a| self.health(&a.value.node).alive())
            })
            .count();
        let surplus: BTreeSet<String> = self
            .eligible_per_pool()
            .into_iter()
            .filter(|(pool, count)| {
                self.settings
                    .expected_pools
                    .get(pool)
                    .is_some_and(|expected| count > expected)
            })
            .map(|(pool, _)| pool)
            .collect();
        let input = PlanInput {
            surplus_pools: &surplus,
            shard_count: self.settings.shard_count,
            assignments: &assignments,
            nodes: &views,
            shard_versions: self.rollout.as_ref().map(|r| &r.shard_versions),
            open_pools: &open,
            rebalance_budget: self.settings.max_moving.saturating_sub(moving),
            pinned: &self.pinned(),
            settling: &self.settling(now),
        };
        let planned = plan::plan(&input);
        // Fence every dead owner whose key still exists, whether or not its shards can move
        // now: it was declared dead and must stop writing.
        let mut revoke: BTreeMap<String, i64> = BTreeMap::new();
        for assignment in self.assignments.values() {
            let owner = &assignment.value.node;
            if self.health(owner).alive() {
                continue;
            }
            let Some(node) = self.nodes.get(owner) else {
                continue;
            };
            // After a process exit only the lease seen at the exit is fenced, and only while
            // the key still carries it: the restarted process's own lease is left alone.
            let fence = match self.exits.get(owner) {
                Some(exit) => exit.lease.filter(|l| *l == node.lease),
                None => Some(node.lease),
            };
            if let Some(lease) = fence
                && !self.revoked.contains(&lease)
            {
                revoke.insert(owner.clone(), lease);
            }
        }
        for m in &planned.moves {
            let current = self.assignments.get(&m.shard);
            let version = |node: &str| {
                views
                    .get(node)
                    .map(|v| v.version.clone())
                    .unwrap_or_default()
            };
            let write = match m.cause {
                Cause::Failover => {
                    let Some(current) = current else { continue };
                    let from = current.value.node.clone();
                    let signal = self.signals.get(&from).copied().unwrap_or(Signal {
                        reason: Reason::LeaseExpired,
                        at: now,
                    });
                    Write {
                        shard: m.shard,
                        expect: current.mod_revision,
                        value: Assignment {
                            node: m.to.clone(),
                            epoch: current.value.epoch + 1,
                            version: version(&m.to),
                            handoff_to: None,
                        },
                        cause: WriteCause::Failover {
                            from,
                            reason: signal.reason,
                            signal_at: signal.at,
                        },
                    }
                }
                Cause::Place => Write {
                    shard: m.shard,
                    expect: self.revision_of(m.shard),
                    value: Assignment {
                        node: m.to.clone(),
                        epoch: 1,
                        version: version(&m.to),
                        handoff_to: None,
                    },
                    cause: WriteCause::Place,
                },
                Cause::Evacuate | Cause::Rebalance => {
                    let Some(current) = current else { continue };
                    let mut value = current.value.clone();
                    value.handoff_to = Some(m.to.clone());
                    Write {
                        shard: m.shard,
                        expect: current.mod_revision,
                        cause: WriteCause::HandoffStart {
                            from: value.node.clone(),
                            kind: self.handoff_kind(&current.value, &m.to),
                        },
                        value,
                    }
                }
            };
            decision.writes.push(write);
        }
        decision.revoke = revoke.into_iter().collect();
        let planned_shards: BTreeSet<ShardId> = planned.moves.iter().map(|m| m.shard).collect();
        for (shard, request) in self.unanswered_requests() {
            if planned_shards.contains(&shard) {
                continue;
            }
            match self.request_target(shard, request) {
                Ok(None) => {}
                Ok(Some((current, to))) => {
                    let mut value = current.value.clone();
                    value.handoff_to = Some(to);
                    decision.writes.push(Write {
                        shard,
                        expect: current.mod_revision,
                        cause: WriteCause::Requested {
                            from: value.node.clone(),
                            id: request.id.clone(),
                        },
                        value,
                    });
                }
                Err(message) => decision.rejections.push(Rejection {
                    shard,
                    id: request.id.clone(),
                    from: self.assignments.get(&shard).map(|a| a.value.node.clone()),
                    message,
                }),
            }
        }

        for (shard, timer) in &self.handoffs {
            let Some(current) = self.assignments.get(shard) else {
                continue;
            };
            let a = &current.value;
            let Some(target) = a.handoff_to.as_deref() else {
                continue;
            };
            if !self.health(&a.node).alive() {
                continue; // failover (planned above)
            }
            let released = self
                .acks
                .get(&a.node)
                .and_then(|ack| ack.value.released.get(shard))
                .is_some_and(|epoch| *epoch == a.epoch);
            let facts = InFlight {
                owner: &a.node,
                target,
                target_eligible: self.health(target) == Health::Eligible,
                released,
                expired: since(now, timer.started) >= self.settings.handoff_deadline,
                desired: planned.desired.get(shard).and_then(|d| d.as_deref()),
            };
            let write = match handoff::step(facts) {
                Step::Wait => continue,
                Step::Finish { to } => Write {
                    shard: *shard,
                    expect: current.mod_revision,
                    value: Assignment {
                        epoch: a.epoch + 1,
                        version: self
                            .nodes
                            .get(&to)
                            .map(|n| n.info.version.clone())
                            .unwrap_or_else(|| a.version.clone()),
                        handoff_to: None,
                        node: to,
                    },
                    cause: WriteCause::HandoffFinish {
                        from: a.node.clone(),
                        kind: timer.kind,
                        released,
                    },
                },
                Step::Retarget { to } => {
                    let mut value = a.clone();
                    value.handoff_to = Some(to);
                    Write {
                        shard: *shard,
                        expect: current.mod_revision,
                        value,
                        cause: WriteCause::HandoffStart {
                            from: a.node.clone(),
                            kind: timer.kind,
                        },
                    }
                }
            };
            decision.writes.push(write);
        }

        for (pod, at) in &self.gone_since {
            if since(now, *at) >= self.settings.ack_cleanup_after
                && let Some(ack) = self.acks.get(pod)
            {
                decision.delete_acks.push((pod.clone(), ack.mod_revision));
            }
        }
        decision
    }

    /// Requests whose id has no answer yet.
    fn unanswered_requests(&self) -> impl Iterator<Item = (ShardId, &MoveRequest)> {
        self.move_requests
            .iter()
            .filter(|_| self.statuses_seen)
            .filter(|(shard, request)| {
                self.move_results
                    .get(shard)
                    .is_none_or(|answer| answer.id != request.id)
            })
            .map(|(shard, request)| (*shard, request))
    }

    /// Shards moved on request that stay where they were moved while the request stands
    /// (rebalancing inside their pool does not take them back), and shards with a request
    /// not answered yet (it decides where they go).
    fn pinned(&self) -> BTreeSet<ShardId> {
        let pending: Vec<ShardId> = self.unanswered_requests().map(|(s, _)| s).collect();
        self.move_results
            .iter()
            .filter(|(shard, answer)| {
                answer.phase == MovePhase::Completed
                    && self
                        .move_requests
                        .get(shard)
                        .is_some_and(|r| r.id == answer.id)
                    && self
                        .assignments
                        .get(shard)
                        .is_some_and(|a| Some(&a.value.node) == answer.to.as_ref())
            })
            .map(|(shard, _)| *shard)
            .chain(pending)
            .collect()
    }

    /// Where a requested move of `shard` goes: `Ok(None)` to wait (a handoff of the shard is
    /// in flight), `Err` with the reason when it cannot be done.
    #[allow(clippy::type_complexity)]
    fn request_target(
        &self,
        shard: ShardId,
        request: &MoveRequest,
    ) -> Result<Option<(&Tracked<Assignment>, String)>, String> {
        if shard >= self.settings.shard_count {
            return Err(format!(
                "shard {shard} does not exist (the cluster has {} shards)",
                self.settings.shard_count
            ));
        }
        let Some(current) = self.assignments.get(&shard) else {
            return Err(format!("shard {shard} has no owner yet"));
        };
        if current.value.handoff_to.is_some() || self.handoffs.contains_key(&shard) {
            return Ok(None);
        }
        let owner = current.value.node.as_str();
        match self.health(owner) {
            Health::Dead(reason) => {
                return Err(format!(
                    "owner {owner} is down ({}); the shard fails over on its own",
                    reason.as_str()
                ));
            }
            Health::Leaving => {
                return Err(format!(
                    "owner {owner} is draining; the shard is handed off already"
                ));
            }
            Health::Held | Health::Eligible => {}
        }
        let owner_pool = self.pool_of(&current.value.version);
        if let Some(to) = request.to.as_deref() {
            if to == owner {
                return Err(format!("{to} owns shard {shard} already"));
            }
            if self.health(to) != Health::Eligible {
                return Err(format!("{to} is not a live node that may take shards"));
            }
            let version = self
                .nodes
                .get(to)
                .map(|n| n.info.version.clone())
                .unwrap_or_default();
            if self.pool_of(&version) != owner_pool {
                return Err(format!(
                    "{to} runs version {version}; shard {shard} is served by version {}",
                    current.value.version
                ));
            }
            return Ok(Some((current, to.to_string())));
        }
        let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
        for a in self.assignments.values() {
            let holder = a.value.handoff_to.as_deref().unwrap_or(&a.value.node);
            *owned.entry(holder).or_insert(0) += 1;
        }
        self.nodes
            .iter()
            .filter(|(name, node)| {
                name.as_str() != owner
                    && self.health(name) == Health::Eligible
                    && self.pool_of(&node.info.version) == owner_pool
            })
            .min_by_key(|(name, node)| {
                (
                    owned.get(name.as_str()).copied().unwrap_or(0),
                    node.info.load.connections,
                    name.as_str(),
                )
            })
            .map(|(name, _)| Some((current, name.clone())))
            .ok_or_else(|| {
                format!(
                    "no other live node of version {} can take shard {shard}",
                    current.value.version
                )
            })
    }

    /// Records refused move requests (their status answer).
    pub fn rejected(&mut self, rejections: Vec<Rejection>, wall: &Time) {
        for r in rejections {
            self.move_results.insert(
                r.shard,
                MoveRequestStatus {
                    id: r.id,
                    phase: MovePhase::Rejected,
                    from: r.from,
                    to: None,
                    message: r.message,
                    at: wall.clone(),
                },
            );
        }
    }

    /// The next time something becomes due without any input (deadlines, grace periods).
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        let mut times: Vec<Instant> = Vec::new();
        times.extend(
            self.handoffs
                .values()
                .map(|t| t.started + self.settings.handoff_deadline),
        );
        times.extend(
            self.failovers
                .values()
                .filter_map(|f| f.pending.as_ref().map(|p| p.deadline)),
        );
        if self.has_unplaced() {
            times.extend(
                self.pool_since
                    .values()
                    .map(|t| *t + self.settings.placement_grace),
            );
        }
        times.extend(
            self.gone_since
                .values()
                .map(|t| *t + self.settings.ack_cleanup_after),
        );
        times.extend(
            self.eligible_since
                .values()
                .map(|t| *t + self.settings.rebalance_settle),
        );
        times.into_iter().filter(|t| *t > now).min()
    }

    /// Nodes eligible for less than `rebalance_settle`.
    fn settling(&self, now: Instant) -> BTreeSet<String> {
        self.eligible_since
            .iter()
            .filter(|(_, t)| since(now, **t) < self.settings.rebalance_settle)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn has_unplaced(&self) -> bool {
        (0..self.settings.shard_count).any(|s| !self.assignments.contains_key(&s))
    }

    /// Records a revoked (or already gone) lease.
    pub fn revoked(&mut self, lease: i64, now: Instant) {
        self.revoked.insert(lease);
        // Keep the set bounded: only leases of keys still present matter.
        let live: BTreeSet<i64> = self.nodes.values().map(|n| n.lease).collect();
        self.revoked.retain(|l| live.contains(l) || *l == lease);
        self.evaluate(now);
    }

    /// Records writes that committed at `revision`; returns their notices.
    pub fn written(
        &mut self,
        writes: Vec<Write>,
        revision: i64,
        now: Instant,
        wall: &Time,
    ) -> Vec<Notice> {
        let mut notices = Vec::new();
        for write in writes {
            let shard = write.shard;
            let to = write.value.node.clone();
            let epoch = write.value.epoch;
            let target = write.value.handoff_to.clone();
            self.undecodable.remove(&shard);
            self.assignments.insert(
                shard,
                Tracked {
                    value: write.value,
                    mod_revision: revision,
                },
            );
            match write.cause {
                WriteCause::Failover {
                    from,
                    reason,
                    signal_at,
                } => {
                    let detected = since(now, signal_at);
                    self.moves.insert(
                        shard,
                        ShardMove {
                            from: from.clone(),
                            to: to.clone(),
                            reason: reason.as_str().to_string(),
                            kind: "Failover".into(),
                            epoch: i64::try_from(epoch).unwrap_or(i64::MAX),
                            at: wall.clone(),
                        },
                    );
                    self.failovers.insert(
                        shard,
                        FailoverRecord {
                            last: Failover {
                                from: from.clone(),
                                to: to.clone(),
                                reason: reason.as_str().to_string(),
                                detected_ms: millis(detected),
                                recovered_ms: None,
                                at: wall.clone(),
                            },
                            pending: Some(Pending {
                                signal_at,
                                epoch,
                                deadline: now + self.settings.recovery_timeout,
                            }),
                        },
                    );
                    self.handoffs.remove(&shard);
                    if let Some(answer) = self
                        .move_results
                        .get_mut(&shard)
                        .filter(|a| a.phase == MovePhase::Moving)
                    {
                        answer.phase = MovePhase::Failed;
                        answer.message = format!(
                            "{from} failed during the move ({}); the shard failed over to {to}",
                            reason.as_str()
                        );
                        answer.to = Some(to.clone());
                        answer.at = wall.clone();
                    }
                    notices.push(Notice::Failover {
                        shard,
                        from,
                        to,
                        reason,
                        detected,
                    });
                }
                WriteCause::Place => {}
                WriteCause::Requested { from, id } => {
                    let kind = HandoffKind::Requested;
                    let timer = self
                        .handoffs
                        .entry(shard)
                        .or_insert(HandoffTimer { started: now, kind });
                    timer.kind = kind;
                    self.move_results.insert(
                        shard,
                        MoveRequestStatus {
                            id,
                            phase: MovePhase::Moving,
                            from: Some(from.clone()),
                            to: target.clone(),
                            message: String::new(),
                            at: wall.clone(),
                        },
                    );
                    notices.push(Notice::HandoffStarted {
                        shard,
                        from,
                        to: target.unwrap_or_default(),
                        kind,
                    });
                }
                WriteCause::HandoffStart { from, kind } => {
                    let timer = self
                        .handoffs
                        .entry(shard)
                        .or_insert(HandoffTimer { started: now, kind });
                    timer.kind = kind;
                    notices.push(Notice::HandoffStarted {
                        shard,
                        from,
                        to: target.unwrap_or_default(),
                        kind,
                    });
                }
                WriteCause::HandoffFinish {
                    from,
                    kind,
                    released,
                } => {
                    self.handoffs.remove(&shard);
                    if from != to {
                        self.moves.insert(
                            shard,
                            ShardMove {
                                from: from.clone(),
                                to: to.clone(),
                                reason: kind.as_str().to_string(),
                                kind: "Handoff".into(),
                                epoch: i64::try_from(epoch).unwrap_or(i64::MAX),
                                at: wall.clone(),
                            },
                        );
                    }
                    if let Some(answer) = self
                        .move_results
                        .get_mut(&shard)
                        .filter(|a| a.phase == MovePhase::Moving)
                    {
                        answer.phase = MovePhase::Completed;
                        answer.to = Some(to.clone());
                        answer.at = wall.clone();
                    }
                    notices.push(Notice::HandoffFinished {
                        shard,
                        from,
                        to,
                        kind,
                        released,
                    });
                }
            }
        }
        self.evaluate(now);
        notices.extend(self.check_recoveries(now));
        notices
    }

    /// Records the current values of keys whose write failed its compare.
    pub fn conflicted(&mut self, current: Vec<Change>, now: Instant) {
        for change in current {
            self.change(change, true);
        }
        self.evaluate(now);
    }

    /// Forgets an ack that was deleted.
    pub fn ack_deleted(&mut self, pod: &str, now: Instant) {
        self.acks.remove(pod);
        self.evaluate(now);
    }

    fn check_recoveries(&mut self, now: Instant) -> Vec<Notice> {
        let mut notices = Vec::new();
        for (shard, record) in &mut self.failovers {
            let Some(pending) = &record.pending else {
                continue;
            };
            let to = record.last.to.as_str();
            let current = self.assignments.get(shard).map(|t| &t.value);
            let still_ours = current.is_some_and(|a| a.node == to && a.epoch == pending.epoch);
            if !still_ours || now >= pending.deadline {
                record.pending = None;
                continue;
            }
            let serving = self
                .acks
                .get(to)
                .and_then(|ack| ack.value.serving.get(shard))
                .is_some_and(|epoch| *epoch >= pending.epoch);
            if serving {
                let total = since(now, pending.signal_at);
                record.last.recovered_ms = Some(millis(total));
                record.pending = None;
                notices.push(Notice::Recovered {
                    shard: *shard,
                    to: to.to_string(),
                    total,
                });
            }
        }
        notices
    }
}

#[cfg(test)]
mod tests;

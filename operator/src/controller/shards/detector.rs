//! Failure detection that waits for neither the kubelet nor the lease (pure, time injected;
//! docs/architecture.md, "Failure detection"). The shell ([`super::detector_io`]) holds one
//! liveness stream open to every registered node and feeds what happens on it here; this
//! module decides.
//!
//! - **Crashed**: another incarnation answered (the process restarted), at once; or the
//!   stream ended without the node's goodbye and reconnecting was refused (nothing listens any
//!   more: the kernel closed a dead process's sockets) and the other nodes asked to probe it
//!   were refused too (a reset injected on the operator's path alone is vetoed by them; a
//!   refusal comes back within a round trip, so this costs milliseconds).
//! - **Unresponsive**: the stream is silent for [`Timing::suspect_after`] → a suspicion,
//!   which asks for corroboration: a fresh connection of the operator's own and indirect
//!   probes through up to [`PROBE_PEERS`] other nodes. The node is declared dead when it has
//!   been silent for [`Timing::dead_after`] and every probe came back empty. One probe that
//!   reaches it vetoes the suspicion (the trouble is between the operator and the node: a
//!   partition the clients may not share); the veto holds for [`Timing::veto_hold`].
//! - **Local health**: a detector that was itself starved (its tick came more than
//!   [`Timing::observer_lag`] late, a paused process or a stepped monotonic clock) restarts
//!   every silence count instead of accusing everyone; and when half the watched nodes or more
//!   (two or more) fall silent together, the cause is common (the operator's own network, a
//!   machine-wide stall): nobody is suspected, the lease and the Pod still judge them.
//!
//! A wrong verdict costs a migration, never a split brain: the failover that follows revokes
//! the node's lease and writes the shard under `epoch + 1`, which fences every later write of
//! the accused node.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// Other nodes asked to probe a suspect.
pub const PROBE_PEERS: usize = 2;

/// The detector's clock settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Silence that raises a suspicion (and starts the probes).
    pub suspect_after: Duration,
    /// Silence after which a suspect whose probes all failed is declared dead.
    pub dead_after: Duration,
    /// How long a probe may take to see a beat.
    pub probe_timeout: Duration,
    /// A tick this late means the detector itself was not running: silences restart.
    pub observer_lag: Duration,
    /// After a veto, no new suspicion of the node for this long.
    pub veto_hold: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            suspect_after: Duration::from_millis(300),
            dead_after: Duration::from_millis(550),
            probe_timeout: Duration::from_millis(250),
            observer_lag: Duration::from_millis(250),
            veto_hold: Duration::from_secs(2),
        }
    }
}

/// Why a node was declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// Its stream ended and its port refuses connections, or another incarnation answers.
    Crashed,
    /// Silent past [`Timing::dead_after`], and no probe reached it.
    Unresponsive,
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A beat arrived, from this incarnation.
    Reachable(u64),
    /// The connection was refused (nothing listens).
    Refused,
    /// No beat within the timeout, or the node could not be reached.
    Unreachable,
    /// The prober itself did not answer (a peer probe that failed): no vote.
    NoAnswer,
}

/// Who probed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prober {
    /// The operator's own fresh connection.
    Operator,
    /// Another node, by pod name.
    Peer(String),
}

/// Something seen on a node's stream or about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stream opened and announced this incarnation.
    Connected(u64),
    /// Bytes arrived on the stream.
    Heard,
    /// The node said goodbye (clean shutdown): its end is no crash.
    Bye,
    /// The stream ended (EOF, reset, error) without a goodbye.
    Closed,
    /// Connecting to the stream was refused.
    Refused,
    /// Connecting to the stream failed otherwise (timeout, no route).
    Unreachable,
    /// A probe's answer.
    Probe(Prober, ProbeOutcome),
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Probe `node` through each of `via`, and with a fresh connection of the operator's own
    /// when `own`.
    Probe {
        /// The suspect.
        node: String,
        /// Peers to ask (pod names).
        via: Vec<String>,
        /// Whether the operator probes too (not after its own connection was refused).
        own: bool,
    },
}

/// A verdict worth a metric and a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Declared dead.
    Dead {
        /// The node.
        node: String,
        /// The incarnation that died.
        incarnation: u64,
        /// The lease of its registration.
        lease: i64,
        /// Why.
        cause: Cause,
        /// Silence at the verdict (zero for a crash).
        silent: Duration,
    },
    /// A suspicion was raised.
    Suspected {
        /// The node.
        node: String,
    },
    /// A suspicion ended because a probe reached the node.
    Vetoed {
        /// The node.
        node: String,
        /// Who reached it.
        by: Prober,
    },
    /// A suspicion ended because the stream spoke again.
    Cleared {
        /// The node.
        node: String,
    },
    /// The stream broke but the same process answered at once (a flapping connection).
    Flapped {
        /// The node.
        node: String,
    },
    /// The detector was not running for a while: every silence restarted.
    Starved {
        /// How late the tick was.
        late: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ground {
    /// The stream fell silent.
    Silent,
    /// The stream ended and the operator's reconnect was refused.
    Refused,
}

#[derive(Debug, Clone)]
struct Suspicion {
    since: Instant,
    ground: Ground,
    own: Option<ProbeOutcome>,
    peers: BTreeMap<String, Option<ProbeOutcome>>,
}

impl Suspicion {
    /// Every peer that answered found the node unreachable (peers that could not answer do
    /// not vote; with none able to, the operator's own evidence decides).
    fn peers_agree(&self) -> bool {
        self.peers.values().all(|o| {
            matches!(
                o,
                Some(ProbeOutcome::Unreachable | ProbeOutcome::Refused | ProbeOutcome::NoAnswer)
            )
        })
    }
}

#[derive(Debug, Clone)]
struct Watched {
    /// The incarnation registered in etcd (what a verdict is about).
    incarnation: u64,
    /// The lease of that registration: a process that registers again (after it was fenced)
    /// is watched afresh.
    lease: i64,
    /// The incarnation the stream announced, once it did.
    seen: Option<u64>,
    last_heard: Instant,
    /// The stream ended without a goodbye; reconnecting is under way.
    closed: bool,
    bye: bool,
    suspicion: Option<Suspicion>,
    veto_until: Option<Instant>,
    dead: Option<Cause>,
}

/// The detector of one cluster.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    timing: Timing,
    nodes: BTreeMap<String, Watched>,
    last_tick: Option<Instant>,
    findings: Vec<Finding>,
    actions: Vec<Action>,
}

impl Detector {
    /// A detector with `timing` watching nobody.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            ..Self::default()
        }
    }

    /// The timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Watches `node`'s registration: process `incarnation` under `lease` (another
    /// incarnation or lease starts afresh).
    pub fn watch(&mut self, node: &str, incarnation: u64, lease: i64, now: Instant) {
        if self
            .nodes
            .get(node)
            .is_some_and(|w| w.incarnation == incarnation && w.lease == lease)
        {
            return;
        }
        // The same process registering again keeps its open stream.
        let seen = self
            .nodes
            .get(node)
            .filter(|w| w.incarnation == incarnation)
            .and_then(|w| w.seen);
        self.nodes.insert(
            node.to_string(),
            Watched {
                incarnation,
                lease,
                seen,
                last_heard: now,
                closed: false,
                bye: false,
                suspicion: None,
                veto_until: None,
                dead: None,
            },
        );
    }

    /// Stops watching `node` (its registration is gone).
    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// Nodes watched, with their registered incarnation.
    pub fn watched(&self) -> impl Iterator<Item = (&str, u64)> {
        self.nodes.iter().map(|(n, w)| (n.as_str(), w.incarnation))
    }

    /// The verdict on `node`'s registration, if it was declared dead.
    pub fn dead(&self, node: &str) -> Option<(u64, Cause)> {
        let w = self.nodes.get(node)?;
        w.dead.map(|cause| (w.incarnation, cause))
    }

    /// Whether `node` is under suspicion.
    pub fn suspected(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|w| w.suspicion.is_some())
    }

    /// What happened since the last call (verdicts, suspicions, vetoes).
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// The probes to make now.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn declare(
        findings: &mut Vec<Finding>,
        node: &str,
        w: &mut Watched,
        cause: Cause,
        silent: Duration,
    ) {
        w.dead = Some(cause);
        w.suspicion = None;
        findings.push(Finding::Dead {
            node: node.to_string(),
            incarnation: w.incarnation,
            lease: w.lease,
            cause,
            silent,
        });
    }

    /// Up to [`PROBE_PEERS`] other nodes that can probe `node` (streaming, not suspected).
    fn peers_for(&self, node: &str, now: Instant) -> Vec<String> {
        let timing = self.timing;
        self.nodes
            .iter()
            .filter(|(n, w)| {
                n.as_str() != node
                    && w.dead.is_none()
                    && w.suspicion.is_none()
                    && w.seen.is_some()
                    && !w.bye
                    && !w.closed
                    && now.saturating_duration_since(w.last_heard) < timing.suspect_after
            })
            .take(PROBE_PEERS)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Raises a suspicion of `node` on `ground` and asks for the probes.
    fn suspect(&mut self, node: &str, ground: Ground, now: Instant) {
        let via = self.peers_for(node, now);
        let Some(w) = self.nodes.get_mut(node) else {
            return;
        };
        let own = match ground {
            Ground::Silent => None,
            Ground::Refused => Some(ProbeOutcome::Refused),
        };
        w.suspicion = Some(Suspicion {
            since: now,
            ground,
            own,
            peers: via.iter().map(|p| (p.clone(), None)).collect(),
        });
        self.findings.push(Finding::Suspected {
            node: node.to_string(),
        });
        self.actions.push(Action::Probe {
            node: node.to_string(),
            via,
            own: ground == Ground::Silent,
        });
        // With nobody to ask, a refusal after the stream ended is all the evidence there is.
        self.decide(node, now);
    }

    /// Folds in an event about `node`.
    pub fn observe(&mut self, node: &str, event: Event, now: Instant) {
        let Some(w) = self.nodes.get_mut(node) else {
            return;
        };
        if w.dead.is_some() {
            return;
        }
        match event {
            Event::Connected(incarnation) => {
                if incarnation != w.incarnation {
                    // Another process answers under this name: the registered one is gone
                    // (a restarted process registers its own incarnation shortly).
                    if w.seen.is_some() {
                        Self::declare(&mut self.findings, node, w, Cause::Crashed, Duration::ZERO);
                    }
                    return;
                }
                if w.closed {
                    self.findings.push(Finding::Flapped {
                        node: node.to_string(),
                    });
                }
                w.seen = Some(incarnation);
                w.closed = false;
                w.last_heard = now;
                Self::clear(node, w, &mut self.findings);
            }
            Event::Heard => {
                if w.seen.is_some() {
                    w.last_heard = now;
                    Self::clear(node, w, &mut self.findings);
                }
            }
            Event::Bye => w.bye = true,
            Event::Closed => {
                if !w.bye {
                    w.closed = true;
                }
            }
            Event::Refused => {
                // Refused after the stream was open: perhaps nothing listens where the process
                // did; the other nodes say whether it is so for them too.
                let refused_suspicion = w
                    .suspicion
                    .as_ref()
                    .is_some_and(|s| s.ground == Ground::Refused);
                let held = w.veto_until.is_some_and(|t| now < t);
                if w.seen.is_some() && !w.bye && w.closed && !refused_suspicion && !held {
                    self.suspect(node, Ground::Refused, now);
                }
            }
            Event::Unreachable => {}
            Event::Probe(by, outcome) => self.probed(node, by, outcome, now),
        }
    }

    fn clear(node: &str, w: &mut Watched, findings: &mut Vec<Finding>) {
        if w.suspicion.take().is_some() {
            findings.push(Finding::Cleared {
                node: node.to_string(),
            });
        }
    }

    fn probed(&mut self, node: &str, by: Prober, outcome: ProbeOutcome, now: Instant) {
        let veto_hold = self.timing.veto_hold;
        let Some(w) = self.nodes.get_mut(node) else {
            return;
        };
        let Some(suspicion) = w.suspicion.as_mut() else {
            return;
        };
        match outcome {
            ProbeOutcome::Reachable(incarnation) if incarnation == w.incarnation => {
                w.suspicion = None;
                w.veto_until = Some(now + veto_hold);
                // The process answers: count its silence from now (its stream is reopened
                // by the shell).
                w.last_heard = now;
                self.findings.push(Finding::Vetoed {
                    node: node.to_string(),
                    by,
                });
                return;
            }
            ProbeOutcome::Reachable(_) => {
                // Another incarnation answers: the watched process is gone.
                let silent = now.saturating_duration_since(w.last_heard);
                Self::declare(&mut self.findings, node, w, Cause::Crashed, silent);
                return;
            }
            _ => {}
        }
        match by {
            Prober::Operator => suspicion.own = Some(outcome),
            Prober::Peer(peer) => {
                if let Some(slot) = suspicion.peers.get_mut(&peer) {
                    *slot = Some(outcome);
                }
            }
        }
        self.decide(node, now);
    }

    /// Declares `node` dead if its suspicion has all the evidence it needs.
    fn decide(&mut self, node: &str, now: Instant) {
        let dead_after = self.timing.dead_after;
        let Some(w) = self.nodes.get_mut(node) else {
            return;
        };
        let Some(s) = &w.suspicion else {
            return;
        };
        let silence = now.saturating_duration_since(w.last_heard);
        let cause = match s.ground {
            // Refused by the operator and by every peer that answered: gone.
            Ground::Refused if s.peers_agree() => Some(Cause::Crashed),
            // Silent for the whole window, and nobody reached it.
            Ground::Silent
                if silence >= dead_after
                    && matches!(
                        s.own,
                        Some(ProbeOutcome::Unreachable | ProbeOutcome::Refused)
                    )
                    && s.peers_agree() =>
            {
                Some(if s.own == Some(ProbeOutcome::Refused) {
                    Cause::Crashed
                } else {
                    Cause::Unresponsive
                })
            }
            _ => None,
        };
        if let Some(cause) = cause {
            Self::declare(&mut self.findings, node, w, cause, silence);
        }
    }

    /// Advances time: restarts silences after a stall of the detector itself, raises
    /// suspicions of silent nodes and declares the dead (probes to make: [`Self::take_actions`]).
    pub fn tick(&mut self, now: Instant) {
        let timing = self.timing;
        if let Some(last) = self.last_tick.replace(now) {
            let gap = now.saturating_duration_since(last);
            if gap > timing.observer_lag {
                self.findings.push(Finding::Starved { late: gap });
                for w in self.nodes.values_mut() {
                    w.last_heard = w.last_heard.max(now);
                    w.suspicion = None;
                }
                return;
            }
        }
        let silent = |w: &Watched| {
            w.seen.is_some()
                && !w.bye
                && w.dead.is_none()
                && now.saturating_duration_since(w.last_heard) >= timing.suspect_after
        };
        let silent_count = self.nodes.values().filter(|w| silent(w)).count();
        if silent_count >= 2 && silent_count * 2 >= self.nodes.len() {
            // A common cause: no suspicion of silence stands; the lease and the Pod judge.
            for (node, w) in &mut self.nodes {
                if w.suspicion
                    .as_ref()
                    .is_some_and(|s| s.ground == Ground::Silent)
                {
                    w.suspicion = None;
                    self.findings.push(Finding::Cleared { node: node.clone() });
                }
            }
            return;
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for node in names {
            let Some(w) = self.nodes.get_mut(&node) else {
                continue;
            };
            if let Some(s) = &w.suspicion {
                if now.saturating_duration_since(s.since)
                    > timing.probe_timeout * 4 + timing.dead_after
                {
                    // The probes never came back: ask again.
                    w.suspicion = None;
                } else {
                    self.decide(&node, now);
                }
                continue;
            }
            if silent(w) && w.veto_until.is_none_or(|t| now >= t) {
                self.suspect(&node, Ground::Silent, now);
            }
        }
    }
}

#[cfg(test)]
mod tests;

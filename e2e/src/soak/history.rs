//! The soak's history checker: pure functions over what every client saw and what etcd
//! recorded, returning each broken promise as a minimal timeline.
//!
//! Promises checked:
//! - every acknowledged transition is durable: each event a client saw was written to etcd
//!   as that very event (some room snapshot in the revision history holds it under its seq,
//!   so a loss is found even after the snapshot's ring of recent events rotated), the final
//!   snapshot's `last_seq` is not behind it, and every acknowledged join is a member at the end;
//! - no seq of a room is ever rewritten: etcd's history never holds two events under one seq;
//! - per client and room, event seqs are gapless and never go backwards, and a seq is
//!   delivered twice only as the replay after a resume;
//! - no shard accepted writes from two owners in overlapping epochs: every room write carries
//!   the `(node, epoch)` of the assignment in force at its etcd revision;
//! - every client session ends normally or resumes (a fresh session after a reconnect is a
//!   lost session);
//! - the checks on the run's clock in [`super::windows`]: every failed call step is explained
//!   by a fault, and no deposed owner relays after its shard's new owner was assigned.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::event_log::{self, EventLog};
use super::windows::{self, FaultWindow, TimedAssignment};

/// One event as a client (or a snapshot) saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenEvent {
    /// Room id.
    pub room: String,
    /// Seq in the room's event log.
    pub seq: u64,
    /// Kind name (`member_joined`, `call_state`, ...).
    pub kind: String,
    /// User the event is about.
    pub user: String,
    /// Call id (call events).
    pub call_id: String,
    /// New call state (call events).
    pub state: String,
}

impl fmt::Display for SeenEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{} {} {}", self.room, self.seq, self.kind, self.user)?;
        if !self.call_id.is_empty() {
            write!(f, " call {} -> {}", self.call_id, self.state)?;
        }
        Ok(())
    }
}

/// A client-visible operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A request sent (free text: `invite bob`, `offer c1`, ...).
    Send(String),
    /// A request acknowledged by the server (free text).
    Ack(String),
    /// A join acknowledged: the room's last seq at that moment.
    Joined {
        /// Room id.
        room: String,
        /// `Joined.last_seq`.
        last_seq: u64,
    },
    /// A room event delivered.
    Event(SeenEvent),
    /// The library reconnected; `resumed` is the new Welcome's flag.
    Reconnected {
        /// Whether the earlier session was resumed.
        resumed: bool,
        /// Node now serving the session.
        node: String,
    },
    /// A relayed call frame (Invite, InviteResult, Offer, Answer, ICE, Hangup) delivered by
    /// `node`, the node serving the session when it arrived.
    Relay {
        /// Room id.
        room: String,
        /// Frame type name.
        frame: String,
        /// Call id.
        call: String,
        /// Serving node.
        node: String,
    },
    /// A call gave up a step; it was started (its Invite sent) at `started_ms`.
    CallFailed {
        /// When the call's Invite was sent (ms since the run started).
        started_ms: u64,
        /// The step that failed and why.
        reason: String,
    },
    /// The session ended: `normal` when the application closed it.
    Closed {
        /// Closed by the application (not by an error).
        normal: bool,
        /// Why (error text or close code).
        detail: String,
    },
}

/// One operation with its client and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// Client name (user id).
    pub client: String,
    /// What happened.
    pub op: Op,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>7} ms  {:<10} ", self.at_ms, self.client)?;
        match &self.op {
            Op::Send(s) => write!(f, "send {s}"),
            Op::Ack(s) => write!(f, "ack  {s}"),
            Op::Joined { room, last_seq } => write!(f, "joined {room} at seq {last_seq}"),
            Op::Event(e) => write!(f, "event {e}"),
            Op::Reconnected { resumed, node } => {
                write!(f, "reconnected to {node} (resumed: {resumed})")
            }
            Op::Relay {
                room,
                frame,
                call,
                node,
            } => write!(f, "relay {frame} {room} call {call} from {node}"),
            Op::CallFailed { started_ms, reason } => {
                write!(f, "call started at {started_ms} ms failed: {reason}")
            }
            Op::Closed { normal, detail } => write!(f, "closed (normal: {normal}) {detail}"),
        }
    }
}

/// A room's final state as read from its etcd snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalRoom {
    /// Latest event seq.
    pub last_seq: u64,
    /// Member user ids.
    pub members: BTreeSet<String>,
    /// The snapshot's recent events.
    pub recent: Vec<SeenEvent>,
}

/// A write to `assignments/<shard>` at an etcd revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentWrite {
    /// etcd revision of the write.
    pub revision: i64,
    /// Shard index.
    pub shard: u32,
    /// Owner named.
    pub node: String,
    /// Fencing epoch.
    pub epoch: u64,
}

/// A write to `rooms/<shard>/<room>` at an etcd revision (writer and epoch from the snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomWrite {
    /// etcd revision of the write.
    pub revision: i64,
    /// Shard index (from the key).
    pub shard: u32,
    /// Room id.
    pub room: String,
    /// Writer node (snapshot metadata).
    pub node: String,
    /// Writer epoch (snapshot).
    pub epoch: u64,
}

/// Everything the checker looks at.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Client operations in the order they were recorded.
    pub records: Vec<Record>,
    /// Final room states by room id.
    pub finals: BTreeMap<String, FinalRoom>,
    /// Every assignment write, any order.
    pub assignments: Vec<AssignmentWrite>,
    /// Every room write, any order.
    pub room_writes: Vec<RoomWrite>,
    /// Every event the room snapshots held over the revision history.
    pub log: EventLog,
    /// When each injected fault was active, on the run's clock.
    pub faults: Vec<FaultWindow>,
    /// Assignment writes as a live watch saw them, on the run's clock.
    pub owners: Vec<TimedAssignment>,
    /// Shards of the run cluster (to find a room's shard).
    pub shard_count: u32,
}

/// Which promise broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An acknowledged transition is missing from the final state.
    LostWrite,
    /// A client saw a gap in a room's event seqs.
    SeqGap,
    /// A client saw a room's seq go backwards (or a seq reused for another event).
    SeqBackwards,
    /// A room write by someone other than the shard's owner at that revision.
    SplitBrain,
    /// A session neither ended normally nor resumed.
    LostSession,
    /// A client got a seq again without a resume in between.
    DuplicateSeq,
    /// etcd's history holds two different events under one seq of a room.
    RewrittenSeq,
    /// A call step failed while no fault was active.
    UnexplainedCallFailure,
    /// A node relayed a call frame after its shard had been assigned to another node.
    DeposedRelay,
}

impl Kind {
    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::LostWrite => "lost-write",
            Kind::SeqGap => "seq-gap",
            Kind::SeqBackwards => "seq-backwards",
            Kind::SplitBrain => "split-brain",
            Kind::LostSession => "lost-session",
            Kind::DuplicateSeq => "duplicate-seq",
            Kind::RewrittenSeq => "rewritten-seq",
            Kind::UnexplainedCallFailure => "unexplained-call-failure",
            Kind::DeposedRelay => "deposed-relay",
        }
    }
}

/// One broken promise with the few lines that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which promise.
    pub kind: Kind,
    /// One-line summary.
    pub summary: String,
    /// The minimal timeline (records or etcd writes), oldest first.
    pub timeline: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "VIOLATION {}: {}", self.kind.name(), self.summary)?;
        for line in &self.timeline {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

/// Checks every promise; an empty result means the history is clean.
pub fn check(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    out.extend(check_seqs(&history.records));
    out.extend(check_durable(
        &history.records,
        &history.finals,
        &history.log,
    ));
    out.extend(event_log::check_rewrites(&history.log));
    out.extend(check_fencing(&history.assignments, &history.room_writes));
    out.extend(check_sessions(&history.records));
    out.extend(windows::check_call_failures(&history.records, &history.faults).violations);
    out.extend(windows::check_relays(
        &history.records,
        &history.owners,
        history.shard_count,
    ));
    out
}

/// Same content, ignoring the room and seq.
pub fn same_event(a: &SeenEvent, b: &SeenEvent) -> bool {
    a.kind == b.kind && a.user == b.user && a.call_id == b.call_id && a.state == b.state
}

/// Per client and room: gapless, never backwards, a seq again only as the replay after a
/// resume; a seq seen by two clients names one event.
pub fn check_seqs(records: &[Record]) -> Vec<Violation> {
    let mut out = Vec::new();
    // (client, room) -> (last seq, index of the record that set it)
    let mut last: BTreeMap<(&str, &str), (u64, usize)> = BTreeMap::new();
    // (room, seq) -> first record that showed it
    let mut first_seen: BTreeMap<(&str, u64), usize> = BTreeMap::new();
    // (client, room, seq) -> index of the record that last showed it to the client
    let mut seen_by: BTreeMap<(&str, &str, u64), usize> = BTreeMap::new();
    // client -> index of its latest resumed Welcome
    let mut resumed_at: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, rec) in records.iter().enumerate() {
        match &rec.op {
            Op::Reconnected { resumed: true, .. } => {
                resumed_at.insert(rec.client.as_str(), i);
            }
            Op::Joined { room, last_seq } => {
                let key = (rec.client.as_str(), room.as_str());
                match last.get(&key) {
                    Some(&(prev, at)) if *last_seq < prev => out.push(Violation {
                        kind: Kind::SeqBackwards,
                        summary: format!(
                            "{} rejoined {room} at seq {last_seq} after seeing seq {prev}",
                            rec.client
                        ),
                        timeline: vec![records[at].to_string(), rec.to_string()],
                    }),
                    _ => {
                        last.insert(key, (*last_seq, i));
                    }
                }
            }
            Op::Event(ev) => {
                if let Some(&j) = first_seen.get(&(ev.room.as_str(), ev.seq)) {
                    if let Op::Event(other) = &records[j].op
                        && !same_event(other, ev)
                    {
                        out.push(Violation {
                            kind: Kind::SeqBackwards,
                            summary: format!(
                                "seq {} of room {} names two different events",
                                ev.seq, ev.room
                            ),
                            timeline: vec![records[j].to_string(), rec.to_string()],
                        });
                    }
                } else {
                    first_seen.insert((ev.room.as_str(), ev.seq), i);
                }
                let key = (rec.client.as_str(), ev.room.as_str());
                let before = seen_by.insert((rec.client.as_str(), ev.room.as_str(), ev.seq), i);
                let dup = before.is_some();
                if let Some(j) = before {
                    let replay = resumed_at.get(rec.client.as_str()).is_some_and(|&r| r > j);
                    if !replay {
                        out.push(Violation {
                            kind: Kind::DuplicateSeq,
                            summary: format!(
                                "{} got seq {} of room {} twice without a resume between",
                                rec.client, ev.seq, ev.room
                            ),
                            timeline: vec![records[j].to_string(), rec.to_string()],
                        });
                    }
                }
                match last.get(&key).copied() {
                    None => {
                        last.insert(key, (ev.seq, i));
                    }
                    Some((prev, at)) => {
                        if ev.seq == prev + 1 {
                            last.insert(key, (ev.seq, i));
                        } else if ev.seq > prev + 1 {
                            out.push(Violation {
                                kind: Kind::SeqGap,
                                summary: format!(
                                    "{} saw room {} jump from seq {prev} to {} ({} missing)",
                                    rec.client,
                                    ev.room,
                                    ev.seq,
                                    ev.seq - prev - 1
                                ),
                                timeline: vec![records[at].to_string(), rec.to_string()],
                            });
                            last.insert(key, (ev.seq, i));
                        } else if !dup {
                            out.push(Violation {
                                kind: Kind::SeqBackwards,
                                summary: format!(
                                    "{} saw room {} go back from seq {prev} to {}",
                                    rec.client, ev.room, ev.seq
                                ),
                                timeline: vec![records[at].to_string(), rec.to_string()],
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Every event a client saw was written to etcd as that event and is covered by the final
/// snapshot; acknowledged joins stay.
pub fn check_durable(
    records: &[Record],
    finals: &BTreeMap<String, FinalRoom>,
    log: &EventLog,
) -> Vec<Violation> {
    let mut out = Vec::new();
    // room -> (max seq seen, record index)
    let mut max_seen: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    // (client, room) -> record index of its last acknowledged join
    let mut joins: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, rec) in records.iter().enumerate() {
        match &rec.op {
            Op::Joined { room, last_seq } => {
                joins.insert((rec.client.as_str(), room.as_str()), i);
                let e = max_seen.entry(room.as_str()).or_insert((0, i));
                if *last_seq > e.0 {
                    *e = (*last_seq, i);
                }
            }
            Op::Event(ev) => {
                let e = max_seen.entry(ev.room.as_str()).or_insert((0, i));
                if ev.seq > e.0 {
                    *e = (ev.seq, i);
                }
                if ev.kind == "member_left" {
                    joins.remove(&(ev.user.as_str(), ev.room.as_str()));
                }
                match log.get(&ev.room, ev.seq) {
                    None => out.push(Violation {
                        kind: Kind::LostWrite,
                        summary: format!(
                            "room {} seq {}: no snapshot in etcd's history holds it",
                            ev.room, ev.seq
                        ),
                        timeline: vec![rec.to_string()],
                    }),
                    Some(stored) if !same_event(&stored.event, ev) => out.push(Violation {
                        kind: Kind::LostWrite,
                        summary: format!(
                            "room {} seq {}: etcd's history holds another event",
                            ev.room, ev.seq
                        ),
                        timeline: vec![
                            rec.to_string(),
                            format!(
                                "   rev {:>6}  snapshot has {}",
                                stored.revision, stored.event
                            ),
                        ],
                    }),
                    Some(_) => {}
                }
            }
            _ => {}
        }
    }
    for (room, (seq, at)) in max_seen {
        let fin = finals.get(room);
        let final_seq = fin.map_or(0, |f| f.last_seq);
        if seq > final_seq {
            out.push(Violation {
                kind: Kind::LostWrite,
                summary: format!(
                    "room {room}: clients saw seq {seq}, the final snapshot ends at {final_seq}{}",
                    if fin.is_none() { " (no snapshot)" } else { "" }
                ),
                timeline: vec![
                    records[at].to_string(),
                    format!("   final  etcd       room {room} last_seq {final_seq}"),
                ],
            });
        }
    }
    for ((client, room), at) in joins {
        let present = finals.get(room).is_some_and(|f| f.members.contains(client));
        if !present {
            out.push(Violation {
                kind: Kind::LostWrite,
                summary: format!(
                    "{client} joined {room} (acknowledged) and is not a member at the end"
                ),
                timeline: vec![
                    records[at].to_string(),
                    format!(
                        "   final  etcd       room {room} members {:?}",
                        finals.get(room).map(|f| &f.members)
                    ),
                ],
            });
        }
    }
    out
}

/// Every room write carries the `(node, epoch)` of the assignment in force at its revision,
/// and no epoch of a shard ever had two writers.
pub fn check_fencing(assignments: &[AssignmentWrite], writes: &[RoomWrite]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut by_shard: BTreeMap<u32, Vec<&AssignmentWrite>> = BTreeMap::new();
    for a in assignments {
        by_shard.entry(a.shard).or_default().push(a);
    }
    for list in by_shard.values_mut() {
        list.sort_by_key(|a| a.revision);
    }
    let mut writers: BTreeMap<(u32, u64), (&str, &RoomWrite)> = BTreeMap::new();
    let mut sorted: Vec<&RoomWrite> = writes.iter().collect();
    sorted.sort_by_key(|w| w.revision);
    for w in sorted {
        let in_force = by_shard
            .get(&w.shard)
            .and_then(|l| l.iter().rev().find(|a| a.revision < w.revision));
        let line = |w: &RoomWrite| {
            format!(
                "rev {:>6}  room write {}/{} by {} at epoch {}",
                w.revision, w.shard, w.room, w.node, w.epoch
            )
        };
        match in_force {
            None => out.push(Violation {
                kind: Kind::SplitBrain,
                summary: format!("shard {} written before any assignment", w.shard),
                timeline: vec![line(w)],
            }),
            Some(a) if a.node != w.node || a.epoch != w.epoch => out.push(Violation {
                kind: Kind::SplitBrain,
                summary: format!(
                    "shard {}: {} wrote at epoch {} while {} owned it at epoch {}",
                    w.shard, w.node, w.epoch, a.node, a.epoch
                ),
                timeline: vec![
                    format!(
                        "rev {:>6}  assignment {} -> {} epoch {}",
                        a.revision, a.shard, a.node, a.epoch
                    ),
                    line(w),
                ],
            }),
            Some(_) => {}
        }
        match writers.get(&(w.shard, w.epoch)) {
            Some((node, first)) if *node != w.node => out.push(Violation {
                kind: Kind::SplitBrain,
                summary: format!(
                    "shard {} epoch {} written by both {} and {}",
                    w.shard, w.epoch, node, w.node
                ),
                timeline: vec![line(first), line(w)],
            }),
            Some(_) => {}
            None => {
                writers.insert((w.shard, w.epoch), (w.node.as_str(), w));
            }
        }
    }
    out
}

/// Whether a client whose records so far are `before` (its indices) had no room to lose at a
/// reconnect: since its previous reconnect it saw no room event and at most one `Joined` per
/// room. The client library re-sends a join that was refused (1010) over a fresh connection
/// and reports that join's `Joined` before the reconnect's `Welcome`, so one `Joined` may
/// belong to the new session; a session that held a room shows that room's `Joined` twice
/// (its own and the rejoin's) or its events.
fn held_no_room(records: &[Record], before: &[usize]) -> bool {
    let since = before
        .iter()
        .rposition(|&i| matches!(records[i].op, Op::Reconnected { .. }))
        .map_or(0, |p| p + 1);
    let mut joined = BTreeSet::new();
    for &i in &before[since..] {
        match &records[i].op {
            Op::Event(_) => return false,
            Op::Joined { room, .. } if !joined.insert(room.as_str()) => return false,
            _ => {}
        }
    }
    true
}

/// Every session either ends normally or resumes after each reconnect, unless it had no room
/// to lose ([`held_no_room`]).
pub fn check_sessions(records: &[Record]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut clients: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, rec) in records.iter().enumerate() {
        clients.entry(rec.client.as_str()).or_default().push(i);
    }
    for (client, idx) in clients {
        for (k, &i) in idx.iter().enumerate() {
            if let Op::Reconnected { resumed: false, .. } = records[i].op
                && !held_no_room(records, &idx[..k])
            {
                out.push(Violation {
                    kind: Kind::LostSession,
                    summary: format!("{client} reconnected to a fresh session (not resumed)"),
                    timeline: context(records, &idx, i),
                });
            }
        }
        let end = idx
            .iter()
            .rev()
            .find(|&&i| matches!(records[i].op, Op::Closed { .. } | Op::Reconnected { .. }));
        match end.map(|&i| (i, &records[i].op)) {
            Some((i, Op::Closed { normal: false, .. })) => out.push(Violation {
                kind: Kind::LostSession,
                summary: format!("{client}'s session ended abnormally and did not resume"),
                timeline: context(records, &idx, i),
            }),
            Some((_, Op::Closed { normal: true, .. })) => {}
            _ => out.push(Violation {
                kind: Kind::LostSession,
                summary: format!("{client}'s session has no recorded end"),
                timeline: idx
                    .iter()
                    .rev()
                    .take(3)
                    .rev()
                    .map(|&i| records[i].to_string())
                    .collect(),
            }),
        }
    }
    out
}

/// The client's records just before and at `i` (at most 3 lines).
fn context(records: &[Record], idx: &[usize], i: usize) -> Vec<String> {
    let pos = idx.iter().position(|&j| j == i).unwrap_or(0);
    idx[pos.saturating_sub(2)..=pos]
        .iter()
        .map(|&j| records[j].to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(room: &str, seq: u64, kind: &str, user: &str) -> SeenEvent {
        SeenEvent {
            room: room.into(),
            seq,
            kind: kind.into(),
            user: user.into(),
            call_id: String::new(),
            state: String::new(),
        }
    }

    fn rec(at_ms: u64, client: &str, op: Op) -> Record {
        Record {
            at_ms,
            client: client.into(),
            op,
        }
    }

    fn joined(at: u64, client: &str, room: &str, seq: u64) -> Record {
        rec(
            at,
            client,
            Op::Joined {
                room: room.into(),
                last_seq: seq,
            },
        )
    }

    fn closed(at: u64, client: &str) -> Record {
        rec(
            at,
            client,
            Op::Closed {
                normal: true,
                detail: String::new(),
            },
        )
    }

    fn final_room(last_seq: u64, members: &[&str], recent: Vec<SeenEvent>) -> FinalRoom {
        FinalRoom {
            last_seq,
            members: members.iter().map(|m| m.to_string()).collect(),
            recent,
        }
    }

    /// A clean two-client history: alice joins, bob joins, both see seq 2, both close.
    fn fin(h: &mut History) -> &mut FinalRoom {
        h.finals.entry("r".into()).or_default()
    }

    fn clean() -> History {
        let records = vec![
            joined(1, "alice", "r", 1),
            joined(2, "bob", "r", 2),
            rec(3, "alice", Op::Event(ev("r", 2, "member_joined", "bob"))),
            rec(4, "bob", Op::Event(ev("r", 3, "call_state", "alice"))),
            rec(4, "alice", Op::Event(ev("r", 3, "call_state", "alice"))),
            rec(
                5,
                "bob",
                Op::Reconnected {
                    resumed: true,
                    node: "n2".into(),
                },
            ),
            rec(6, "bob", Op::Event(ev("r", 3, "call_state", "alice"))),
            closed(7, "alice"),
            closed(7, "bob"),
        ];
        let mut h = History {
            records,
            ..History::default()
        };
        h.finals.insert(
            "r".into(),
            final_room(
                3,
                &["alice", "bob"],
                vec![ev("r", 3, "call_state", "alice")],
            ),
        );
        h.assignments = vec![
            AssignmentWrite {
                revision: 10,
                shard: 1,
                node: "n1".into(),
                epoch: 1,
            },
            AssignmentWrite {
                revision: 20,
                shard: 1,
                node: "n2".into(),
                epoch: 2,
            },
        ];
        h.log.add(11, ev("r", 2, "member_joined", "bob"));
        h.log.add(11, ev("r", 3, "call_state", "alice"));
        h.log.add(21, ev("r", 3, "call_state", "alice"));
        h.shard_count = 16;
        h.room_writes = vec![
            RoomWrite {
                revision: 11,
                shard: 1,
                room: "r".into(),
                node: "n1".into(),
                epoch: 1,
            },
            RoomWrite {
                revision: 21,
                shard: 1,
                room: "r".into(),
                node: "n2".into(),
                epoch: 2,
            },
        ];
        h
    }

    fn kinds(h: &History) -> Vec<Kind> {
        check(h).into_iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let v = check(&clean());
        assert!(v.is_empty(), "{v:#?}");
    }

    #[test]
    fn a_seq_gap_is_reported_with_both_records() {
        let mut h = clean();
        h.records.insert(
            5,
            rec(4, "alice", Op::Event(ev("r", 5, "member_left", "x"))),
        );
        fin(&mut h).last_seq = 5;
        h.log.add(30, ev("r", 5, "member_left", "x"));
        let v = check(&h);
        assert_eq!(
            v.iter().map(|v| v.kind).collect::<Vec<_>>(),
            vec![Kind::SeqGap]
        );
        assert_eq!(v[0].timeline.len(), 2);
        assert!(v[0].timeline[1].contains("r#5"), "{}", v[0]);
    }

    #[test]
    fn a_seq_reused_for_another_event_is_reported() {
        let mut h = clean();
        // bob's replay after resume shows a different event under seq 3.
        h.records[6] = rec(6, "bob", Op::Event(ev("r", 3, "member_left", "alice")));
        assert!(kinds(&h).contains(&Kind::SeqBackwards), "{:?}", kinds(&h));
    }

    #[test]
    fn a_rejoin_behind_a_seen_seq_goes_backwards() {
        let mut h = clean();
        h.records.insert(7, joined(6, "alice", "r", 1));
        assert_eq!(kinds(&h), vec![Kind::SeqBackwards]);
    }

    #[test]
    fn an_acknowledged_event_missing_from_the_final_snapshot_is_a_lost_write() {
        let mut h = clean();
        {
            let f = fin(&mut h);
            f.last_seq = 2;
            f.recent.clear();
        }
        let v = check(&h);
        assert_eq!(
            v.iter().map(|v| v.kind).collect::<Vec<_>>(),
            vec![Kind::LostWrite]
        );
        assert!(v[0].summary.contains("saw seq 3"), "{}", v[0]);
    }

    #[test]
    fn a_seen_event_that_etcd_holds_differently_is_a_lost_write_and_a_rewrite() {
        let mut h = clean();
        h.log = EventLog::default();
        h.log.add(11, ev("r", 2, "member_joined", "bob"));
        h.log.add(11, ev("r", 3, "member_left", "bob"));
        h.log.add(21, ev("r", 3, "call_state", "alice"));
        let v = check(&h);
        let kinds: Vec<Kind> = v.iter().map(|v| v.kind).collect();
        // Each of the three sightings of seq 3, and the rewrite itself.
        assert_eq!(
            kinds,
            vec![
                Kind::LostWrite,
                Kind::LostWrite,
                Kind::LostWrite,
                Kind::RewrittenSeq
            ],
            "{v:#?}"
        );
        assert!(v[0].timeline[1].contains("member_left"), "{}", v[0]);
    }

    #[test]
    fn a_seen_event_no_snapshot_ever_held_is_a_lost_write_after_the_ring_rotated() {
        let mut h = clean();
        // The final snapshot's ring no longer holds seq 2, and no earlier snapshot did.
        h.log = EventLog::default();
        h.log.add(11, ev("r", 3, "call_state", "alice"));
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(v[0].kind, Kind::LostWrite);
        assert!(v[0].summary.contains("seq 2: no snapshot"), "{}", v[0]);
    }

    #[test]
    fn a_duplicate_seq_without_a_resume_is_a_violation() {
        let mut h = clean();
        // alice gets seq 3 again with no reconnect between.
        h.records.insert(
            5,
            rec(4, "alice", Op::Event(ev("r", 3, "call_state", "alice"))),
        );
        let v = check(&h);
        assert_eq!(
            v.iter().map(|v| v.kind).collect::<Vec<_>>(),
            vec![Kind::DuplicateSeq],
            "{v:#?}"
        );
        assert!(v[0].summary.contains("alice got seq 3"), "{}", v[0]);
    }

    #[test]
    fn a_replay_after_a_resume_is_not_a_duplicate_but_a_second_one_is() {
        let mut h = clean();
        // bob's replay after the resume (record 6) is fine; once more later is not.
        h.records.insert(
            7,
            rec(6, "bob", Op::Event(ev("r", 3, "call_state", "alice"))),
        );
        assert_eq!(kinds(&h), vec![Kind::DuplicateSeq]);
    }

    #[test]
    fn the_run_clock_checks_are_part_of_the_history_check() {
        let mut h = clean();
        h.records.insert(
            7,
            rec(
                6,
                "alice",
                Op::CallFailed {
                    started_ms: 5,
                    reason: "no Answer".into(),
                },
            ),
        );
        h.records.insert(
            7,
            rec(
                6,
                "alice",
                Op::Relay {
                    room: "r".into(),
                    frame: "offer".into(),
                    call: "c1".into(),
                    node: "n1".into(),
                },
            ),
        );
        assert_eq!(
            kinds(&h),
            vec![Kind::UnexplainedCallFailure, Kind::DeposedRelay]
        );
    }

    #[test]
    fn an_acknowledged_join_missing_at_the_end_is_a_lost_write() {
        let mut h = clean();
        {
            let f = fin(&mut h);
            f.members.remove("bob");
        }
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].summary.contains("bob joined r"), "{}", v[0]);
    }

    #[test]
    fn a_member_that_left_need_not_be_present() {
        let mut h = clean();
        h.records.insert(
            7,
            rec(6, "alice", Op::Event(ev("r", 4, "member_left", "bob"))),
        );
        h.records.insert(
            8,
            rec(6, "bob", Op::Event(ev("r", 4, "member_left", "bob"))),
        );
        h.finals
            .insert("r".into(), final_room(4, &["alice"], vec![]));
        h.log.add(30, ev("r", 4, "member_left", "bob"));
        let v = check(&h);
        assert!(v.is_empty(), "{v:#?}");
    }

    #[test]
    fn a_write_by_the_old_owner_after_the_epoch_bump_is_split_brain() {
        let mut h = clean();
        h.room_writes.push(RoomWrite {
            revision: 22,
            shard: 1,
            room: "r".into(),
            node: "n1".into(),
            epoch: 1,
        });
        let v = check(&h);
        assert_eq!(
            v.iter().map(|v| v.kind).collect::<Vec<_>>(),
            vec![Kind::SplitBrain]
        );
        assert!(v[0].timeline[0].contains("n2 epoch 2"), "{}", v[0]);
        assert!(v[0].timeline[1].contains("by n1 at epoch 1"), "{}", v[0]);
    }

    #[test]
    fn two_writers_claiming_one_epoch_is_split_brain() {
        let v = check_fencing(
            &[AssignmentWrite {
                revision: 1,
                shard: 0,
                node: "a".into(),
                epoch: 1,
            }],
            &[
                RoomWrite {
                    revision: 2,
                    shard: 0,
                    room: "r".into(),
                    node: "a".into(),
                    epoch: 1,
                },
                RoomWrite {
                    revision: 3,
                    shard: 0,
                    room: "q".into(),
                    node: "b".into(),
                    epoch: 1,
                },
            ],
        );
        let kinds: Vec<Kind> = v.iter().map(|v| v.kind).collect();
        assert_eq!(kinds, vec![Kind::SplitBrain, Kind::SplitBrain], "{v:#?}");
        assert!(v[1].summary.contains("both a and b"));
    }

    #[test]
    fn a_room_write_before_any_assignment_is_split_brain() {
        let v = check_fencing(
            &[],
            &[RoomWrite {
                revision: 2,
                shard: 0,
                room: "r".into(),
                node: "a".into(),
                epoch: 1,
            }],
        );
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn a_fresh_session_for_a_refused_join_loses_nothing() {
        let welcome = |at| {
            rec(
                at,
                "g1",
                Op::Reconnected {
                    resumed: false,
                    node: "n1".into(),
                },
            )
        };
        // The join was refused (1010) and sent again on a fresh connection: its Joined comes
        // before the reconnect's Welcome.
        let records = vec![joined(10, "g1", "r", 2), welcome(11), closed(30, "g1")];
        assert!(
            check_sessions(&records).is_empty(),
            "{:#?}",
            check_sessions(&records)
        );
        // A session that held the room: its own Joined, the rejoin's Joined, then the Welcome.
        let records = vec![
            joined(10, "g1", "r", 2),
            joined(20, "g1", "r", 5),
            welcome(21),
            closed(30, "g1"),
        ];
        assert_eq!(check_sessions(&records).len(), 1);
        // A session that saw the room's events held it.
        let records = vec![
            joined(10, "g1", "r", 2),
            rec(12, "g1", Op::Event(ev("r", 3, "member_joined", "h1"))),
            welcome(13),
            closed(30, "g1"),
        ];
        assert_eq!(check_sessions(&records).len(), 1);
    }

    #[test]
    fn a_fresh_session_after_a_reconnect_is_a_lost_session() {
        let mut h = clean();
        h.records[5] = rec(
            5,
            "bob",
            Op::Reconnected {
                resumed: false,
                node: "n2".into(),
            },
        );
        let v = check(&h);
        assert_eq!(
            v.iter().map(|v| v.kind).collect::<Vec<_>>(),
            // bob's replay then repeats seq 3 without a resume.
            vec![Kind::DuplicateSeq, Kind::LostSession]
        );
        assert!(
            v[1].timeline
                .last()
                .is_some_and(|l| l.contains("resumed: false"))
        );
    }

    #[test]
    fn an_abnormal_end_or_no_end_is_a_lost_session() {
        let mut h = clean();
        h.records[7] = rec(
            7,
            "alice",
            Op::Closed {
                normal: false,
                detail: "gave up reconnecting".into(),
            },
        );
        h.records.pop();
        let v = check(&h);
        let kinds: Vec<Kind> = v.iter().map(|v| v.kind).collect();
        assert_eq!(kinds, vec![Kind::LostSession, Kind::LostSession], "{v:#?}");
    }
}

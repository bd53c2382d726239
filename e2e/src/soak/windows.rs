//! The checks that need the run's clock: a failed call step must overlap a fault's window,
//! and no node may relay a call frame after its shard was assigned to another node.
//!
//! The ownership timeline comes from a live watch of `assignments/` in the soak process, so
//! the assignment and the client's receipt of a relay are stamped by one clock. A handoff
//! writes the new owner only after the old one released the shard (its clients already
//! migrated), and a failover only after the old owner's lease expired (it fenced itself at
//! the latest then), so any relay from the old owner after that write is a deposed relay.

use std::collections::BTreeMap;

use super::history::{Kind, Op, Record, Violation};
use switchboard_contract::shard::shard_of;

/// Slack for the two clocks' readers: the watch delivers an assignment and the client task
/// records a frame each a little after the fact, on a loaded two-core machine.
pub const RELAY_MARGIN_MS: u64 = 250;
/// How late the ownership watch may stamp an assignment: a node serves a shard as soon as its
/// assignment commits, and on a loaded machine etcd delivered that commit to the soak's watch
/// up to 1.5 s later (seed 20261125 on the real node). A node that relays a frame and is
/// assigned the shard within this lag after it is taken for its new owner.
pub const WATCH_LAG_MS: u64 = 2_000;

/// When one fault was active, on the run's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    /// Injected at (ms since the run started).
    pub from_ms: u64,
    /// Healed, recovered and settled by (ms since the run started).
    pub to_ms: u64,
    /// Which fault, for the report.
    pub what: String,
}

/// An assignment as the live watch saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedAssignment {
    /// Seen at (ms since the run started).
    pub at_ms: u64,
    /// Shard index.
    pub shard: u32,
    /// Owner named.
    pub node: String,
    /// Fencing epoch.
    pub epoch: u64,
}

/// Failed call steps, split by whether a fault explains them.
#[derive(Debug, Clone, Default)]
pub struct CallFailures {
    /// Failures whose call overlapped a fault's window.
    pub explained: usize,
    /// One violation per failure no fault explains.
    pub violations: Vec<Violation>,
}

/// Classifies every failed call: explained when the call's life (Invite sent → given up)
/// overlaps a fault's window.
pub fn check_call_failures(records: &[Record], faults: &[FaultWindow]) -> CallFailures {
    let mut out = CallFailures::default();
    for rec in records {
        let Op::CallFailed { started_ms, .. } = &rec.op else {
            continue;
        };
        let explained = faults
            .iter()
            .any(|w| w.from_ms <= rec.at_ms && w.to_ms >= *started_ms);
        if explained {
            out.explained += 1;
            continue;
        }
        let nearest = faults
            .iter()
            .min_by_key(|w| w.from_ms.abs_diff(rec.at_ms))
            .map_or("no fault in the run".to_string(), |w| {
                format!(
                    "nearest fault: {} active {}–{} ms",
                    w.what, w.from_ms, w.to_ms
                )
            });
        out.violations.push(Violation {
            kind: Kind::UnexplainedCallFailure,
            summary: format!(
                "{}'s call failed between {} and {} ms with no fault active",
                rec.client, started_ms, rec.at_ms
            ),
            timeline: vec![rec.to_string(), format!("   {nearest}")],
        });
    }
    out
}

/// Every relayed frame delivered by a node other than its shard's owner as assigned at least
/// [`RELAY_MARGIN_MS`] before, unless the shard was assigned to that node from the margin
/// before the frame to [`WATCH_LAG_MS`] after it (a new owner serves right after its
/// assignment, which the watch may stamp late); one violation per
/// (node, shard, epoch in force), with a count, and one for relays before any owner was seen.
pub fn check_relays(
    records: &[Record],
    owners: &[TimedAssignment],
    shard_count: u32,
) -> Vec<Violation> {
    let mut by_shard: BTreeMap<u32, Vec<&TimedAssignment>> = BTreeMap::new();
    for a in owners {
        by_shard.entry(a.shard).or_default().push(a);
    }
    for list in by_shard.values_mut() {
        list.sort_by_key(|a| a.at_ms);
    }
    // (relaying node, shard, epoch of the owner in force) -> (first relay, owner, count)
    let mut found: BTreeMap<(&str, u32, u64), (&Record, &TimedAssignment, usize)> = BTreeMap::new();
    let mut unowned = Vec::new();
    for rec in records {
        let Op::Relay { room, node, .. } = &rec.op else {
            continue;
        };
        let shard = shard_of(room, shard_count.max(1));
        let list = by_shard.get(&shard).map_or(&[][..], Vec::as_slice);
        let in_force = list
            .iter()
            .rev()
            .find(|a| a.at_ms + RELAY_MARGIN_MS <= rec.at_ms);
        // The shard moved to this node just now: the watch may have seen it late.
        let just_assigned = list.iter().any(|a| {
            a.node == *node
                && a.at_ms + RELAY_MARGIN_MS > rec.at_ms
                && a.at_ms <= rec.at_ms + WATCH_LAG_MS
        });
        if just_assigned {
            continue;
        }
        match in_force {
            // The watch starts before the fleet is deployed: every relay has an owner.
            None => unowned.push(Violation {
                kind: Kind::DeposedRelay,
                summary: format!(
                    "{node} relayed a frame of shard {shard} before any owner was seen"
                ),
                timeline: vec![rec.to_string()],
            }),
            Some(owner) if owner.node != *node => {
                found
                    .entry((node.as_str(), shard, owner.epoch))
                    .or_insert((rec, owner, 0))
                    .2 += 1;
            }
            Some(_) => {}
        }
    }
    unowned.truncate(1);
    unowned.extend(
        found
            .into_iter()
            .map(|((node, shard, epoch), (first, owner, count))| Violation {
                kind: Kind::DeposedRelay,
                summary: format!(
                    "{node} relayed {count} frame(s) of shard {shard} after it was assigned to {} \
                 at epoch {epoch}",
                    owner.node
                ),
                timeline: vec![
                    format!(
                        "{:>7} ms  assignment {shard} -> {} epoch {epoch} (watch)",
                        owner.at_ms, owner.node
                    ),
                    first.to_string(),
                ],
            }),
    );
    unowned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(at_ms: u64, started_ms: u64) -> Record {
        Record {
            at_ms,
            client: "h0".into(),
            op: Op::CallFailed {
                started_ms,
                reason: "no Answer".into(),
            },
        }
    }

    fn window(from_ms: u64, to_ms: u64) -> FaultWindow {
        FaultWindow {
            from_ms,
            to_ms,
            what: "kill-9-node".into(),
        }
    }

    #[test]
    fn a_call_overlapping_a_fault_is_explained() {
        let faults = [window(5_000, 8_000)];
        // Started before the fault, failed during it; started during it, failed after it.
        let out = check_call_failures(&[failed(6_000, 4_000), failed(20_000, 7_900)], &faults);
        assert_eq!(out.explained, 2);
        assert!(out.violations.is_empty(), "{:#?}", out.violations);
    }

    #[test]
    fn a_call_failing_between_faults_is_a_violation() {
        let faults = [window(5_000, 8_000), window(30_000, 32_000)];
        let out = check_call_failures(&[failed(12_000, 9_000), failed(4_999, 1_000)], &faults);
        assert_eq!(out.explained, 0);
        assert_eq!(out.violations.len(), 2);
        assert_eq!(out.violations[0].kind, Kind::UnexplainedCallFailure);
        assert!(
            out.violations[0].timeline[1].contains("5000–8000"),
            "{}",
            out.violations[0]
        );
    }

    const SHARDS: u32 = 4;

    fn relay(at_ms: u64, room: &str, node: &str) -> Record {
        Record {
            at_ms,
            client: "g0".into(),
            op: Op::Relay {
                room: room.into(),
                frame: "offer".into(),
                call: "c1".into(),
                node: node.into(),
            },
        }
    }

    fn owner(at_ms: u64, room: &str, node: &str, epoch: u64) -> TimedAssignment {
        TimedAssignment {
            at_ms,
            shard: shard_of(room, SHARDS),
            node: node.into(),
            epoch,
        }
    }

    #[test]
    fn relays_from_the_owner_in_force_are_fine() {
        let owners = [owner(0, "r", "n1", 1), owner(5_000, "r", "n2", 2)];
        let records = [
            relay(300, "r", "n1"),
            relay(4_900, "r", "n1"),
            // Within the margin of the new assignment: the frame may have been sent before it.
            relay(5_000 + RELAY_MARGIN_MS - 1, "r", "n1"),
            // The new owner serving right after its assignment (seen by the watch late).
            relay(5_000 - WATCH_LAG_MS, "r", "n2"),
            relay(5_010, "r", "n2"),
            relay(6_000, "r", "n2"),
        ];
        assert!(check_relays(&records, &owners, SHARDS).is_empty());
    }

    #[test]
    fn relays_from_a_deposed_owner_are_one_violation_with_a_count() {
        let owners = [owner(0, "r", "n1", 1), owner(5_000, "r", "n2", 2)];
        let records = [
            relay(4_000, "r", "n1"),
            relay(7_000, "r", "n1"),
            relay(7_100, "r", "n1"),
        ];
        let v = check_relays(&records, &owners, SHARDS);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert_eq!(v[0].kind, Kind::DeposedRelay);
        assert!(
            v[0].summary.starts_with("n1 relayed 2 frame(s)"),
            "{}",
            v[0]
        );
        assert!(v[0].timeline[0].contains("-> n2 epoch 2"), "{}", v[0]);
        assert!(v[0].timeline[1].contains("7000 ms"), "{}", v[0]);
    }

    #[test]
    fn a_relay_longer_than_the_watch_lag_before_its_assignment_is_a_violation() {
        let owners = [owner(0, "r", "n1", 1), owner(5_000, "r", "n2", 2)];
        let records = [relay(5_000 - WATCH_LAG_MS - 1, "r", "n2")];
        let v = check_relays(&records, &owners, SHARDS);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(
            v[0].summary.starts_with("n2 relayed 1 frame(s)"),
            "{}",
            v[0]
        );
    }

    #[test]
    fn a_relay_before_any_observed_assignment_is_a_violation() {
        let owners = [owner(5_000, "r", "n2", 2)];
        let records = [relay(100, "r", "n1"), relay(200, "r", "n1")];
        let v = check_relays(&records, &owners, SHARDS);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].summary.contains("before any owner"), "{}", v[0]);
    }
}

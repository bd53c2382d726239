//! Every event a run's room snapshots ever held, read from etcd's revision history: each
//! snapshot carries only a ring of recent events, but every commit writes one, so together
//! they hold each committed event under its seq. A seq that two snapshots fill differently
//! was rewritten.

use std::collections::BTreeMap;

use super::history::{Kind, SeenEvent, Violation, same_event};

/// Different versions of one seq kept as evidence at most (the first is always kept).
pub const MAX_REWRITES: usize = 3;

/// One seq of a room as the history holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The event as first written.
    pub event: SeenEvent,
    /// Revision of the first snapshot that held it.
    pub revision: i64,
    /// Later snapshots that held another event under the same seq (bounded).
    pub rewrites: Vec<(i64, SeenEvent)>,
}

/// Every event of every room snapshot in the history, by room and seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLog {
    entries: BTreeMap<(String, u64), Logged>,
}

impl EventLog {
    /// Adds an event held by the snapshot written at `revision` (call in revision order).
    pub fn add(&mut self, revision: i64, event: SeenEvent) {
        let key = (event.room.clone(), event.seq);
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key,
                    Logged {
                        event,
                        revision,
                        rewrites: Vec::new(),
                    },
                );
            }
            Some(logged) => {
                let known = same_event(&logged.event, &event)
                    || logged.rewrites.iter().any(|(_, e)| same_event(e, &event));
                if !known && logged.rewrites.len() < MAX_REWRITES {
                    logged.rewrites.push((revision, event));
                }
            }
        }
    }

    /// Forgets a room whose key was deleted: a room created again under the same id starts
    /// its seqs anew (a client that was still in it sees them go backwards).
    pub fn forget_room(&mut self, room: &str) {
        self.entries.retain(|(r, _), _| r != room);
    }

    /// The seq `seq` of `room`, if some snapshot held it.
    pub fn get(&self, room: &str, seq: u64) -> Option<&Logged> {
        self.entries.get(&(room.to_string(), seq))
    }

    /// Seqs held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no seq is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Every seq the history holds two different events under.
pub fn check_rewrites(log: &EventLog) -> Vec<Violation> {
    log.entries
        .values()
        .filter(|l| !l.rewrites.is_empty())
        .map(|l| {
            let mut timeline = vec![format!("rev {:>6}  snapshot has {}", l.revision, l.event)];
            timeline.extend(
                l.rewrites
                    .iter()
                    .map(|(rev, e)| format!("rev {rev:>6}  snapshot has {e}")),
            );
            Violation {
                kind: Kind::RewrittenSeq,
                summary: format!(
                    "room {} seq {} was written as {} different events",
                    l.event.room,
                    l.event.seq,
                    l.rewrites.len() + 1
                ),
                timeline,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, kind: &str) -> SeenEvent {
        SeenEvent {
            room: "r".into(),
            seq,
            kind: kind.into(),
            user: "alice".into(),
            call_id: String::new(),
            state: String::new(),
        }
    }

    #[test]
    fn the_same_event_in_many_snapshots_is_one_entry() {
        let mut log = EventLog::default();
        for rev in 1..=5 {
            log.add(rev, ev(1, "member_joined"));
            log.add(rev, ev(2, "call_state"));
        }
        assert_eq!(log.len(), 2);
        assert_eq!(log.get("r", 1).map(|l| l.revision), Some(1));
        assert!(check_rewrites(&log).is_empty());
    }

    #[test]
    fn another_event_under_a_written_seq_is_a_rewrite_with_both_revisions() {
        let mut log = EventLog::default();
        log.add(10, ev(7, "call_state"));
        log.add(12, ev(7, "call_state"));
        log.add(20, ev(7, "member_left"));
        let v = check_rewrites(&log);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, Kind::RewrittenSeq);
        assert!(v[0].timeline[0].contains("rev     10"), "{}", v[0]);
        assert!(v[0].timeline[1].contains("rev     20"), "{}", v[0]);
    }

    #[test]
    fn rewrites_kept_are_bounded() {
        let mut log = EventLog::default();
        log.add(1, ev(1, "k0"));
        for i in 1..50 {
            log.add(i + 1, ev(1, &format!("k{i}")));
        }
        assert_eq!(
            log.get("r", 1).map(|l| l.rewrites.len()),
            Some(MAX_REWRITES)
        );
    }

    #[test]
    fn a_deleted_room_starts_over() {
        let mut log = EventLog::default();
        log.add(1, ev(1, "member_joined"));
        log.forget_room("r");
        log.add(5, ev(1, "call_state"));
        assert!(check_rewrites(&log).is_empty());
        assert_eq!(log.get("r", 1).map(|l| l.revision), Some(5));
    }
}

//! The client's session bookkeeping (pure, no I/O): request ids, the rooms joined and the
//! last event seq seen in each, the calls this client takes part in, and resume parameters.

use std::collections::{BTreeMap, HashMap, VecDeque};

use switchboard_protocol::{Event, EventKind, Message, Resume};

/// Most calls tracked at once; the oldest is forgotten beyond this.
pub const MAX_CALLS: usize = 1024;

/// What the client knows about one call it takes part in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// Room the call lives in.
    pub room: String,
    /// The other party's user id.
    pub peer: String,
}

/// The calls this client takes part in, bounded to [`MAX_CALLS`] (oldest forgotten first).
#[derive(Debug, Default)]
pub struct CallTable {
    calls: HashMap<String, CallInfo>,
    order: VecDeque<String>,
}

impl CallTable {
    /// Records (or updates) a call.
    pub fn insert(&mut self, call_id: &str, info: CallInfo) {
        if self.calls.insert(call_id.to_string(), info).is_none() {
            self.order.push_back(call_id.to_string());
        }
        while self.calls.len() > MAX_CALLS {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.calls.remove(&oldest);
                }
                None => break,
            }
        }
    }

    /// The call, if known.
    pub fn get(&self, call_id: &str) -> Option<&CallInfo> {
        self.calls.get(call_id)
    }

    /// Forgets a call.
    pub fn remove(&mut self, call_id: &str) {
        if self.calls.remove(call_id).is_some() {
            self.order.retain(|id| id != call_id);
        }
    }

    /// Number of calls tracked.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is tracked.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Learns about calls from an incoming frame (invites to us, relays on calls we did not
    /// start ourselves) and forgets ended ones.
    pub fn observe(&mut self, msg: &Message, me: &str) {
        let peer_of = |from: &str, to: &str| {
            if from == me {
                to.to_string()
            } else {
                from.to_string()
            }
        };
        match msg {
            Message::Invite(i) => self.insert(
                &i.call_id,
                CallInfo {
                    room: i.room.clone(),
                    peer: peer_of(&i.from, &i.to),
                },
            ),
            Message::Offer(s) | Message::Answer(s) if self.get(&s.call_id).is_none() => self
                .insert(
                    &s.call_id,
                    CallInfo {
                        room: s.room.clone(),
                        peer: peer_of(&s.from, &s.to),
                    },
                ),
            Message::Hangup(h) => self.remove(&h.call_id),
            Message::InviteResult(r) if !r.accepted => self.remove(&r.call_id),
            Message::Event(e) if e.kind == EventKind::CallState && is_terminal_state(&e.state) => {
                self.remove(&e.call_id)
            }
            _ => {}
        }
    }
}

/// Whether a call-state name (as carried in `Event.state`) is terminal.
pub fn is_terminal_state(state: &str) -> bool {
    state.eq_ignore_ascii_case("ended") || state.eq_ignore_ascii_case("failed")
}

/// Per-room event positions and the joined-room set.
#[derive(Debug, Default, Clone)]
pub struct Rooms {
    seqs: BTreeMap<String, u64>,
}

impl Rooms {
    /// Marks `room` joined with its log at `last_seq`.
    pub fn joined(&mut self, room: &str, last_seq: u64) {
        let seq = self.seqs.entry(room.to_string()).or_insert(0);
        *seq = (*seq).max(last_seq);
    }

    /// Forgets `room`.
    pub fn left(&mut self, room: &str) {
        self.seqs.remove(room);
    }

    /// Forgets every room.
    pub fn clear(&mut self) {
        self.seqs.clear();
    }

    /// Rooms currently joined.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.seqs.keys().map(String::as_str)
    }

    /// Whether `room` is joined.
    pub fn contains(&self, room: &str) -> bool {
        self.seqs.contains_key(room)
    }

    /// Last seq seen in `room`.
    pub fn seq(&self, room: &str) -> Option<u64> {
        self.seqs.get(room).copied()
    }

    /// Records an event; returns `false` when it is a duplicate (a replay of an event already
    /// seen, seq not above the room's last), which the client then drops.
    pub fn observe_event(&mut self, event: &Event) -> bool {
        match self.seqs.get_mut(&event.room) {
            Some(seq) if event.seq != 0 && event.seq <= *seq => false,
            Some(seq) => {
                *seq = (*seq).max(event.seq);
                true
            }
            // Events of rooms we are not (or no longer) in pass through untracked.
            None => true,
        }
    }

    /// The `last_seq` to resume from: the smallest over joined rooms, so no room misses an
    /// event (replays of already-seen events are dropped by [`Rooms::observe_event`]).
    pub fn resume_seq(&self) -> u64 {
        self.seqs.values().copied().min().unwrap_or(0)
    }

    /// The resume parameters for session `session`.
    pub fn resume(&self, session: &str) -> Resume {
        Resume {
            session: session.to_string(),
            last_seq: self.resume_seq(),
        }
    }
}

/// Request ids: non-zero, increasing, wrapping past `u32::MAX` back to 1 (0 means "none").
#[derive(Debug, Clone)]
pub struct RequestIds {
    next: u32,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self { next: 1 }
    }
}

impl RequestIds {
    /// The next id.
    pub fn next_id(&mut self) -> u32 {
        let id = self.next;
        self.next = self.next.checked_add(1).unwrap_or(1);
        id
    }
}

/// A fresh call id: `c-` and 16 random hex digits.
pub fn new_call_id() -> String {
    format!("c-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{Hangup, Invite};

    fn event(room: &str, seq: u64) -> Event {
        Event {
            room: room.into(),
            seq,
            kind: EventKind::MemberJoined,
            user: "u".into(),
            call_id: String::new(),
            state: String::new(),
            at_ms: 0,
        }
    }

    #[test]
    fn call_table_learns_and_forgets() {
        let mut calls = CallTable::default();
        let invite = Message::Invite(Invite {
            request_id: 0,
            room: "r".into(),
            call_id: "c1".into(),
            from: "alice".into(),
            to: "bob".into(),
        });
        calls.observe(&invite, "bob");
        assert_eq!(calls.get("c1").unwrap().peer, "alice");
        assert_eq!(calls.get("c1").unwrap().room, "r");
        calls.observe(
            &Message::Hangup(Hangup {
                request_id: 0,
                room: "r".into(),
                call_id: "c1".into(),
                from: "alice".into(),
                reason: String::new(),
            }),
            "bob",
        );
        assert!(calls.is_empty());
    }

    #[test]
    fn terminal_call_state_forgets_the_call() {
        let mut calls = CallTable::default();
        calls.insert(
            "c",
            CallInfo {
                room: "r".into(),
                peer: "p".into(),
            },
        );
        let mut e = event("r", 1);
        e.kind = EventKind::CallState;
        e.call_id = "c".into();
        e.state = "Connected".into();
        calls.observe(&Message::Event(e.clone()), "me");
        assert_eq!(calls.len(), 1);
        e.state = "Ended".into();
        calls.observe(&Message::Event(e), "me");
        assert!(calls.is_empty());
    }

    #[test]
    fn call_table_is_bounded() {
        let mut calls = CallTable::default();
        for i in 0..(MAX_CALLS + 10) {
            calls.insert(
                &format!("c{i}"),
                CallInfo {
                    room: "r".into(),
                    peer: "p".into(),
                },
            );
        }
        assert_eq!(calls.len(), MAX_CALLS);
        assert!(calls.get("c0").is_none());
        assert!(calls.get(&format!("c{}", MAX_CALLS + 9)).is_some());
    }

    #[test]
    fn replayed_events_are_dropped_and_resume_uses_the_lowest_room() {
        let mut rooms = Rooms::default();
        rooms.joined("a", 10);
        rooms.joined("b", 3);
        assert!(rooms.observe_event(&event("a", 11)));
        assert!(!rooms.observe_event(&event("a", 11)));
        assert!(!rooms.observe_event(&event("a", 5)));
        assert!(rooms.observe_event(&event("b", 4)));
        assert!(rooms.observe_event(&event("elsewhere", 1)));
        assert_eq!(rooms.seq("a"), Some(11));
        assert_eq!(
            rooms.resume("s1"),
            Resume {
                session: "s1".into(),
                last_seq: 4
            }
        );
        rooms.left("b");
        assert_eq!(rooms.resume_seq(), 11);
        rooms.clear();
        assert_eq!(rooms.resume_seq(), 0);
    }

    #[test]
    fn request_ids_skip_zero() {
        let mut ids = RequestIds { next: u32::MAX };
        assert_eq!(ids.next_id(), u32::MAX);
        assert_eq!(ids.next_id(), 1);
        assert_eq!(ids.next_id(), 2);
    }

    #[test]
    fn call_ids_are_unique() {
        assert_ne!(new_call_id(), new_call_id());
        assert!(new_call_id().starts_with("c-"));
    }
}

//! Encoding and decoding of durable room snapshots (`schemas/snapshot.fbs`, FlatBuffers
//! `switchboard.snapshot.RoomSnapshot`): what a room commits to its [`crate::store::RoomStore`]
//! after every transition and what a node taking a shard over restores rooms from.

use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};

use crate::call::{Call, CallEvent, CallState, Transition};
use switchboard_contract::shard::ShardId;
use switchboard_protocol::generated::snapshot as fb;
use switchboard_protocol::{Event, EventKind};

use super::log::EventLog;
use super::state::{Member, Presence, RoomState};

/// Snapshot format this build writes and the newest it reads.
pub const FORMAT: u16 = 1;

/// Largest snapshot accepted when decoding (etcd's default value limit is 1.5 MiB).
pub const MAX_SNAPSHOT_LEN: usize = 1536 * 1024;

/// Why a snapshot could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a valid RoomSnapshot FlatBuffer.
    #[error("invalid room snapshot: {0}")]
    Invalid(String),
    /// Written by a newer format.
    #[error("room snapshot format {0} is newer than this node understands ({FORMAT})")]
    UnsupportedFormat(u16),
    /// A field has a value this node does not know.
    #[error("room snapshot field {field}: unknown value {value:?}")]
    UnknownValue {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// Larger than [`MAX_SNAPSHOT_LEN`].
    #[error("room snapshot of {0} bytes is too large")]
    TooLarge(usize),
}

/// Metadata stored alongside the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Writer node name.
    pub node: String,
    /// When it was written (Unix ms).
    pub written_at_ms: u64,
}

fn call_event_by_name(name: &str) -> Option<CallEvent> {
    CallEvent::ALL.into_iter().find(|e| e.name() == name)
}

/// Encodes `state` (reusing `fbb`'s buffer) and returns the bytes.
pub fn encode(
    fbb: &mut FlatBufferBuilder<'static>,
    state: &RoomState,
    meta: &SnapshotMeta,
) -> Vec<u8> {
    fbb.reset();
    let members: Vec<WIPOffset<fb::Member>> = state
        .members()
        .map(|m| {
            let user = fbb.create_string(&m.user);
            let session = fbb.create_string(&m.session);
            let (connected, since) = match m.presence {
                Presence::Connected => (true, 0),
                Presence::Suspended { since_ms } => (false, since_ms),
            };
            fb::Member::create(
                fbb,
                &fb::MemberArgs {
                    user: Some(user),
                    session: Some(session),
                    joined_at_ms: m.joined_at_ms,
                    connected,
                    suspended_since_ms: since,
                },
            )
        })
        .collect();
    let calls: Vec<WIPOffset<fb::Call>> = state
        .calls()
        .map(|entry| {
            let c = &entry.call;
            let last = c.last_transition.as_ref().map(|t| {
                let from = fbb.create_string(t.from.name());
                let event = fbb.create_string(t.event.name());
                let to = fbb.create_string(t.to.name());
                let cause = fbb.create_string(&t.cause);
                fb::Transition::create(
                    fbb,
                    &fb::TransitionArgs {
                        from: Some(from),
                        event: Some(event),
                        to: Some(to),
                        at_ms: t.at_ms,
                        cause: Some(cause),
                    },
                )
            });
            let id = fbb.create_string(&c.id);
            let room = fbb.create_string(&c.room);
            let inviter = fbb.create_string(&c.inviter);
            let invitee = fbb.create_string(&c.invitee);
            let st = fbb.create_string(c.state.name());
            fb::Call::create(
                fbb,
                &fb::CallArgs {
                    id: Some(id),
                    room: Some(room),
                    inviter: Some(inviter),
                    invitee: Some(invitee),
                    state: Some(st),
                    created_at_ms: c.created_at_ms,
                    entered_at_ms: c.entered_at_ms,
                    last_transition: last,
                },
            )
        })
        .collect();
    let events: Vec<WIPOffset<fb::Event>> = state
        .log()
        .recent()
        .map(|e| {
            let user = fbb.create_string(&e.user);
            let call_id = fbb.create_string(&e.call_id);
            let st = fbb.create_string(&e.state);
            fb::Event::create(
                fbb,
                &fb::EventArgs {
                    seq: e.seq,
                    kind: e.kind.as_u8(),
                    user: Some(user),
                    call_id: Some(call_id),
                    state: Some(st),
                    at_ms: e.at_ms,
                },
            )
        })
        .collect();
    let members = fbb.create_vector(&members);
    let calls = fbb.create_vector(&calls);
    let events = fbb.create_vector(&events);
    let room = fbb.create_string(state.room());
    let node = fbb.create_string(&meta.node);
    let root = fb::RoomSnapshot::create(
        fbb,
        &fb::RoomSnapshotArgs {
            format: FORMAT,
            room: Some(room),
            shard: state.shard(),
            epoch: state.epoch(),
            last_seq: state.log().last_seq(),
            members: Some(members),
            calls: Some(calls),
            recent_events: Some(events),
            node: Some(node),
            written_at_ms: meta.written_at_ms,
        },
    );
    fb::finish_room_snapshot_buffer(fbb, root);
    fbb.finished_data().to_vec()
}

/// A decoded snapshot, before it becomes a live [`RoomState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Room id.
    pub room: String,
    /// Shard the writer filed it under.
    pub shard: ShardId,
    /// Writer's epoch.
    pub epoch: u64,
    /// Latest event seq.
    pub last_seq: u64,
    /// Members as stored.
    pub members: Vec<Member>,
    /// Live calls as stored.
    pub calls: Vec<Call>,
    /// Recent events, oldest first.
    pub recent_events: Vec<Event>,
    /// Writer metadata.
    pub meta: SnapshotMeta,
}

impl Decoded {
    /// The live room state: under `epoch` (the new owner's), with at most `event_ring`
    /// events, members suspended and negotiation clocks restarted at `now_ms`.
    pub fn into_state(self, epoch: u64, event_ring: usize, now_ms: u64) -> RoomState {
        let log = EventLog::restore(event_ring, self.last_seq, self.recent_events);
        RoomState::from_parts(
            self.room,
            self.shard,
            epoch,
            self.members,
            self.calls,
            log,
            now_ms,
        )
    }
}

fn text(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

fn state_by_name(field: &'static str, name: Option<&str>) -> Result<CallState, SnapshotError> {
    let name = name.unwrap_or_default();
    CallState::from_name(name).ok_or_else(|| SnapshotError::UnknownValue {
        field,
        value: name.to_owned(),
    })
}

/// Verifies and decodes a snapshot.
pub fn decode(bytes: &[u8]) -> Result<Decoded, SnapshotError> {
    if bytes.len() > MAX_SNAPSHOT_LEN {
        return Err(SnapshotError::TooLarge(bytes.len()));
    }
    let opts = VerifierOptions {
        max_depth: 16,
        max_tables: 1_000_000,
        max_apparent_size: 4 * MAX_SNAPSHOT_LEN,
        ignore_missing_null_terminator: false,
    };
    // Checked by hand: the generated helper asserts (panics) on short input.
    if bytes.get(4..8) != Some(fb::ROOM_SNAPSHOT_IDENTIFIER.as_bytes()) {
        return Err(SnapshotError::Invalid("missing SBRS identifier".into()));
    }
    let root = fb::root_as_room_snapshot_with_opts(&opts, bytes)
        .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    if root.format() > FORMAT {
        return Err(SnapshotError::UnsupportedFormat(root.format()));
    }
    let members = root
        .members()
        .iter()
        .flatten()
        .map(|m| Member {
            user: text(m.user()),
            session: text(m.session()),
            joined_at_ms: m.joined_at_ms(),
            presence: if m.connected() {
                Presence::Connected
            } else {
                Presence::Suspended {
                    since_ms: m.suspended_since_ms(),
                }
            },
        })
        .collect();
    let mut calls = Vec::new();
    for c in root.calls().iter().flatten() {
        let last_transition = match c.last_transition() {
            None => None,
            Some(t) => {
                let event_name = t.event().unwrap_or_default();
                Some(Transition {
                    from: state_by_name("transition.from", t.from())?,
                    event: call_event_by_name(event_name).ok_or_else(|| {
                        SnapshotError::UnknownValue {
                            field: "transition.event",
                            value: event_name.to_owned(),
                        }
                    })?,
                    to: state_by_name("transition.to", t.to())?,
                    at_ms: t.at_ms(),
                    cause: text(t.cause()),
                })
            }
        };
        calls.push(Call {
            id: text(c.id()),
            room: text(c.room()),
            inviter: text(c.inviter()),
            invitee: text(c.invitee()),
            state: state_by_name("call.state", c.state())?,
            created_at_ms: c.created_at_ms(),
            entered_at_ms: c.entered_at_ms(),
            last_transition,
        });
    }
    let room = text(root.room());
    let mut recent_events = Vec::new();
    for e in root.recent_events().iter().flatten() {
        recent_events.push(Event {
            room: room.clone(),
            seq: e.seq(),
            kind: EventKind::from_u8(e.kind()).ok_or_else(|| SnapshotError::UnknownValue {
                field: "event.kind",
                value: e.kind().to_string(),
            })?,
            user: text(e.user()),
            call_id: text(e.call_id()),
            state: text(e.state()),
            at_ms: e.at_ms(),
        });
    }
    Ok(Decoded {
        room,
        shard: root.shard(),
        epoch: root.epoch(),
        last_seq: root.last_seq(),
        members,
        calls,
        recent_events,
        meta: SnapshotMeta {
            node: text(root.node()),
            written_at_ms: root.written_at_ms(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::state::Limits;
    use switchboard_protocol::{Invite, InviteResult};

    fn sample() -> RoomState {
        let limits = Limits::default();
        let mut room = RoomState::new("room-1", 5, 3, &limits);
        room.join("alice", "s1", 1, 10, &limits);
        room.join("bob", "s2", 1, 11, &limits);
        room.invite(
            "alice",
            "s1",
            Invite {
                call_id: "c1".into(),
                to: "bob".into(),
                ..Default::default()
            },
            12,
            &limits,
        );
        room.invite_result(
            "bob",
            "s2",
            InviteResult {
                call_id: "c1".into(),
                accepted: true,
                ..Default::default()
            },
            13,
        );
        room.detach("bob", "s2", 14);
        room
    }

    #[test]
    fn round_trip_preserves_everything() {
        let room = sample();
        let meta = SnapshotMeta {
            node: "n1".into(),
            written_at_ms: 99,
        };
        let mut fbb = FlatBufferBuilder::new();
        let bytes = encode(&mut fbb, &room, &meta);
        let d = decode(&bytes).unwrap();
        assert_eq!(d.room, "room-1");
        assert_eq!(
            (d.shard, d.epoch, d.last_seq),
            (5, 3, room.log().last_seq())
        );
        assert_eq!(d.meta, meta);
        assert_eq!(d.members, room.members().cloned().collect::<Vec<_>>());
        assert_eq!(
            d.calls,
            room.calls().map(|c| c.call.clone()).collect::<Vec<_>>()
        );
        assert_eq!(
            d.recent_events,
            room.log().recent().cloned().collect::<Vec<_>>()
        );
        let restored = d.into_state(4, 256, 500);
        assert_eq!(restored.epoch(), 4);
        assert_eq!(restored.log().last_seq(), room.log().last_seq());
        assert_eq!(
            restored.member("alice").unwrap().presence,
            Presence::Suspended { since_ms: 500 }
        );
        assert_eq!(
            restored.member("bob").unwrap().presence,
            Presence::Suspended { since_ms: 14 }
        );
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(b"not a flatbuffer at all").is_err());
        let mut fbb = FlatBufferBuilder::new();
        let mut bytes = encode(
            &mut fbb,
            &sample(),
            &SnapshotMeta {
                node: String::new(),
                written_at_ms: 0,
            },
        );
        for i in (0..bytes.len()).step_by(7) {
            bytes[i] ^= 0x5a;
            let _ = decode(&bytes);
        }
        assert!(matches!(
            decode(&vec![0; MAX_SNAPSHOT_LEN + 1]),
            Err(SnapshotError::TooLarge(_))
        ));
    }
}

//! The pure decision logic of one room: members, calls and the event log. No I/O, no clock:
//! every method takes `now_ms` and returns an [`Outcome`] saying what must be committed and
//! what must be sent to whom; the actor (`room::actor`) does the committing and sending.
//!
//! How the room drives a call (see `session` for the table):
//! - Invite → `Invite` (Inviting); when the invitee is connected the Invite frame is queued to
//!   it and `Ring` follows at once (Ringing). A suspended invitee gets it when it resumes.
//! - InviteResult from the invitee → `Accept` (Negotiating) or `Reject` (Ended).
//! - Hangup from a party → `Cancel` by the inviter / `Reject` by the invitee while
//!   Inviting/Ringing, `Hangup` otherwise.
//! - Offer/Answer/ICE are relays: validated (call exists, sender is a party, the table allows
//!   the event, SDP looks like SDP) but not committed. ICE is relayed in Negotiating and
//!   Connected (late trickle). `IceComplete` (Connected) is applied once an answer was relayed
//!   and both parties sent end-of-candidates (an empty candidate), and that is committed.
//! - Deadlines → `Timeout` (Failed); a suspended member whose resume window passed is removed
//!   and its calls get `PeerLost` (Failed). Leaving ends one's calls like a Hangup.
//! - Resume: calls of the resumed member in Negotiating restart negotiation: their
//!   end-of-candidates/answer progress is reset, their negotiation clock restarts, and a
//!   CallState "negotiating" event is logged — clients treat that event for a call they are in
//!   as "send a new offer" (the inviter offers). Connected calls stay as they are.
//!
//! Terminal calls leave the room once their final event is logged, so call ids can be reused.

mod calls;
mod members;
mod seats;

pub use calls::{IceMsg, check_sdp, split_batch};
pub use seats::SeatMap;

use crate::call::{
    Call, CallEvent, CallState, InvalidTransition, Timeouts, Transition, next_state,
};
use crate::config::Tunables;
use switchboard_contract::shard::ShardId;
use switchboard_protocol::{ErrorCode, Event, EventKind, Message};

use super::log::EventLog;

/// Longest room, call or user id accepted (bytes).
pub const MAX_ID_LEN: usize = 128;

/// The limits a room enforces, taken from the live [`Tunables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum members.
    pub max_members: usize,
    /// Maximum live calls.
    pub max_calls: usize,
    /// Largest SDP accepted, bytes.
    pub max_sdp_bytes: usize,
    /// Call timeouts.
    pub timeouts: Timeouts,
    /// How long a suspended member keeps its seat, ms.
    pub resume_window_ms: u64,
    /// Recent events retained.
    pub event_ring: usize,
}

impl From<&Tunables> for Limits {
    fn from(t: &Tunables) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            max_members: t.max_room_members,
            max_calls: t.max_room_calls,
            max_sdp_bytes: t.max_sdp_bytes,
            timeouts: Timeouts {
                invite_ms: ms(t.invite_timeout),
                negotiation_ms: ms(t.negotiation_timeout),
            },
            resume_window_ms: ms(t.resume_window),
            event_ring: t.event_ring,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&Tunables::default())
    }
}

/// Whether a member has a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A connection is attached.
    Connected,
    /// The connection dropped at `since_ms`; the seat is kept for the resume window.
    Suspended {
        /// When the member was suspended.
        since_ms: u64,
    },
}

/// One seat in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// User id.
    pub user: String,
    /// Session the seat belongs to.
    pub session: String,
    /// When the member joined.
    pub joined_at_ms: u64,
    /// Connected or suspended.
    pub presence: Presence,
}

/// A live call plus its ephemeral negotiation progress (not part of snapshots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEntry {
    /// The call and its state machine.
    pub call: Call,
    /// An answer was relayed in the current negotiation.
    pub answered: bool,
    /// The inviter sent end-of-candidates.
    pub inviter_ice_done: bool,
    /// The invitee sent end-of-candidates.
    pub invitee_ice_done: bool,
}

impl CallEntry {
    /// A call with fresh negotiation progress.
    pub fn new(call: Call) -> Self {
        Self {
            call,
            answered: false,
            inviter_ice_done: false,
            invitee_ice_done: false,
        }
    }

    fn reset_negotiation(&mut self) {
        self.answered = false;
        self.inviter_ice_done = false;
        self.invitee_ice_done = false;
    }

    fn is_party(&self, user: &str) -> bool {
        self.call.inviter == user || self.call.invitee == user
    }

    fn other_party(&self, user: &str) -> &str {
        if self.call.inviter == user {
            &self.call.invitee
        } else {
            &self.call.inviter
        }
    }
}

/// Who a delivery goes to (only connected members receive anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// One member.
    User(String),
    /// Every member but one.
    AllExcept(String),
    /// Every member.
    All,
}

/// One message to send after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Recipients.
    pub to: Dest,
    /// The message.
    pub msg: Message,
}

/// A refusal, sent to the requester as an Error frame (the room is unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomError {
    /// Wire error code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

impl RoomError {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<InvalidTransition> for RoomError {
    fn from(e: InvalidTransition) -> Self {
        RoomError::new(e.error_code(), e.to_string())
    }
}

/// What a command decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The durable state changed: commit the snapshot before any delivery.
    pub commit: bool,
    /// Messages to send, in order, once committed.
    pub deliveries: Vec<Delivery>,
    /// Call transitions applied (metrics, traces), including relay self-transitions.
    pub transitions: Vec<Transition>,
    /// The command was refused.
    pub error: Option<RoomError>,
    /// A member (user, session) that now has a live connection: attach the requester's peer.
    pub attached: Option<(String, String)>,
    /// The session a newer join took the seat from.
    pub replaced: Option<String>,
    /// Members that left the room.
    pub removed: Vec<Member>,
}

impl Outcome {
    fn refused(error: RoomError) -> Self {
        Self {
            error: Some(error),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone)]
struct Checkpoint {
    members: SeatMap<Member>,
    calls: SeatMap<CallEntry>,
}

/// The state of one room.
#[derive(Debug, Clone)]
pub struct RoomState {
    room: String,
    shard: ShardId,
    epoch: u64,
    members: SeatMap<Member>,
    calls: SeatMap<CallEntry>,
    log: EventLog,
    checkpoint: Option<Checkpoint>,
}

fn not_member() -> RoomError {
    RoomError::new(ErrorCode::InvalidTransition, "not a member of this room")
}

fn no_call(id: &str) -> RoomError {
    RoomError::new(
        ErrorCode::InvalidTransition,
        format!("no live call {id:?} in this room"),
    )
}

fn not_party() -> RoomError {
    RoomError::new(ErrorCode::InvalidTransition, "not a party of this call")
}

/// Whether `id` is a usable room/call/user id.
pub fn check_id(what: &str, id: &str) -> Result<(), RoomError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(RoomError::new(
            ErrorCode::BadFrame,
            format!("{what} id must be 1..={MAX_ID_LEN} bytes"),
        ));
    }
    Ok(())
}

impl RoomState {
    /// An empty room.
    pub fn new(room: impl Into<String>, shard: ShardId, epoch: u64, limits: &Limits) -> Self {
        Self {
            room: room.into(),
            shard,
            epoch,
            members: SeatMap::new(),
            calls: SeatMap::new(),
            log: EventLog::new(limits.event_ring),
            checkpoint: None,
        }
    }

    /// A room rebuilt from its parts (snapshot decoding). Members that were connected on the
    /// previous owner become suspended at `now_ms` (their connections died with it), and
    /// calls in Negotiating get a fresh negotiation clock.
    pub fn from_parts(
        room: String,
        shard: ShardId,
        epoch: u64,
        members: Vec<Member>,
        calls: Vec<Call>,
        log: EventLog,
        now_ms: u64,
    ) -> Self {
        let members = members
            .into_iter()
            .map(|mut m| {
                if m.presence == Presence::Connected {
                    m.presence = Presence::Suspended { since_ms: now_ms };
                }
                (m.user.clone(), m)
            })
            .collect();
        let calls = calls
            .into_iter()
            .filter(|c| !c.is_terminal())
            .map(|mut c| {
                if c.state == CallState::Negotiating {
                    c.entered_at_ms = now_ms;
                }
                (c.id.clone(), CallEntry::new(c))
            })
            .collect();
        Self {
            room,
            shard,
            epoch,
            members,
            calls,
            log,
            checkpoint: None,
        }
    }

    /// Room id.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// Shard of the room.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// Assignment epoch the room was created or restored under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Members by user id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member.
    pub fn member(&self, user: &str) -> Option<&Member> {
        self.members.get(user)
    }

    /// Live calls by id.
    pub fn calls(&self) -> impl Iterator<Item = &CallEntry> {
        self.calls.values()
    }

    /// One live call.
    pub fn call(&self, id: &str) -> Option<&CallEntry> {
        self.calls.get(id)
    }

    /// The event log.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Whether no member is left (the room should stop).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Starts a unit of work that [`RoomState::rollback`] undoes.
    pub fn begin(&mut self) {
        self.log.mark();
        self.checkpoint = Some(Checkpoint {
            members: self.members.clone(),
            calls: self.calls.clone(),
        });
    }

    /// Undoes everything since [`RoomState::begin`] (the commit failed).
    pub fn rollback(&mut self) {
        if let Some(cp) = self.checkpoint.take() {
            self.members = cp.members;
            self.calls = cp.calls;
            self.log.rollback();
        }
    }

    /// Drops the checkpoint (the commit succeeded).
    pub fn settle(&mut self) {
        self.checkpoint = None;
    }

    fn member_names(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    fn is_member(&self, user: &str, session: &str) -> bool {
        self.members.get(user).is_some_and(|m| m.session == session)
    }

    fn is_connected(&self, user: &str) -> bool {
        self.members
            .get(user)
            .is_some_and(|m| m.presence == Presence::Connected)
    }

    fn push_event(&mut self, out: &mut Outcome, to: Dest, event: Event) {
        let event = self.log.append(event);
        out.commit = true;
        out.deliveries.push(Delivery {
            to,
            msg: Message::Event(event),
        });
    }

    /// Logs a member event about `user`.
    fn member_event(
        &mut self,
        out: &mut Outcome,
        to: Dest,
        kind: EventKind,
        user: &str,
        now_ms: u64,
    ) {
        let event = Event {
            room: self.room.clone(),
            seq: 0,
            kind,
            user: user.to_owned(),
            call_id: String::new(),
            state: String::new(),
            at_ms: now_ms,
        };
        self.push_event(out, to, event);
    }

    /// Logs a call's new `state` (`user` is the inviter).
    fn call_event(
        &mut self,
        out: &mut Outcome,
        to: Dest,
        user: &str,
        call_id: &str,
        state: &str,
        now_ms: u64,
    ) {
        let event = Event {
            room: self.room.clone(),
            seq: 0,
            kind: EventKind::CallState,
            user: user.to_owned(),
            call_id: call_id.to_owned(),
            state: state.to_owned(),
            at_ms: now_ms,
        };
        self.push_event(out, to, event);
    }

    /// Applies `event` to call `id`, logs the new state, and drops the call if it ended.
    fn transition(
        &mut self,
        out: &mut Outcome,
        id: &str,
        event: CallEvent,
        now_ms: u64,
        cause: &str,
    ) -> Result<(), InvalidTransition> {
        let Some(entry) = self.calls.get_mut(id) else {
            return Ok(());
        };
        let t = entry.call.apply(event, now_ms, cause)?;
        let to = t.to;
        let user = entry.call.inviter.clone();
        out.transitions.push(t);
        self.call_event(out, Dest::All, &user, id, to.name(), now_ms);
        if to.is_terminal() {
            self.calls.remove(id);
        }
        Ok(())
    }

    /// Ends every live call of `user` with `pick(state, is_inviter)`.
    fn end_calls_of(
        &mut self,
        out: &mut Outcome,
        user: &str,
        now_ms: u64,
        cause: &str,
        pick: impl Fn(CallState, bool) -> CallEvent,
    ) {
        let ids: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.is_party(user))
            .map(|c| c.call.id.clone())
            .collect();
        for id in ids {
            let Some(entry) = self.calls.get(&id) else {
                continue;
            };
            let event = pick(entry.call.state, entry.call.inviter == user);
            let event = if next_state(entry.call.state, event).is_some() {
                event
            } else {
                CallEvent::PeerLost
            };
            // PeerLost is allowed from every non-terminal state, so this cannot fail.
            let _ = self.transition(out, &id, event, now_ms, cause);
        }
    }

    /// The earliest instant (ms) something times out, if anything can.
    pub fn next_deadline(&self, limits: &Limits) -> Option<u64> {
        let calls = self
            .calls
            .values()
            .filter_map(|c| c.call.deadline_ms(&limits.timeouts));
        let members = self.members.values().filter_map(|m| match m.presence {
            Presence::Suspended { since_ms } => {
                Some(since_ms.saturating_add(limits.resume_window_ms))
            }
            Presence::Connected => None,
        });
        calls.chain(members).min()
    }

    /// Applies every deadline that passed by `now_ms`.
    pub fn tick(&mut self, now_ms: u64, limits: &Limits) -> Outcome {
        let mut out = Outcome::default();
        let expired_calls: Vec<String> = self
            .calls
            .values()
            .filter(|c| {
                c.call
                    .deadline_ms(&limits.timeouts)
                    .is_some_and(|d| d <= now_ms)
            })
            .map(|c| c.call.id.clone())
            .collect();
        for id in expired_calls {
            let _ = self.transition(&mut out, &id, CallEvent::Timeout, now_ms, "deadline passed");
        }
        let lost: Vec<String> = self
            .members
            .values()
            .filter(|m| match m.presence {
                Presence::Suspended { since_ms } => {
                    since_ms.saturating_add(limits.resume_window_ms) <= now_ms
                }
                Presence::Connected => false,
            })
            .map(|m| m.user.clone())
            .collect();
        for user in lost {
            self.end_calls_of(&mut out, &user, now_ms, "resume window passed", |_, _| {
                CallEvent::PeerLost
            });
            self.member_event(&mut out, Dest::All, EventKind::MemberLeft, &user, now_ms);
            if let Some(m) = self.members.remove(&user) {
                out.removed.push(m);
            }
        }
        out
    }

    /// Applies a new event-ring capacity (hot reload).
    pub fn set_limits(&mut self, limits: &Limits) {
        self.log.set_capacity(limits.event_ring);
    }
}

#[cfg(test)]
mod tests;

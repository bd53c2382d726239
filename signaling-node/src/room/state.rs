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

use std::collections::BTreeMap;

use crate::config::Tunables;
use crate::protocol::{
    ErrorCode, Event, EventKind, Hangup, IceBatch, IceCandidate, Invite, InviteResult, Joined,
    Message, Sdp,
};
use crate::session::{
    Call, CallEvent, CallState, InvalidTransition, Timeouts, Transition, next_state,
};
use crate::shard::ShardId;

use super::log::{EventLog, Replay};

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
    members: BTreeMap<String, Member>,
    calls: BTreeMap<String, CallEntry>,
}

/// The state of one room.
#[derive(Debug, Clone)]
pub struct RoomState {
    room: String,
    shard: ShardId,
    epoch: u64,
    members: BTreeMap<String, Member>,
    calls: BTreeMap<String, CallEntry>,
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

/// Whether `sdp` looks like a session description within `max` bytes.
pub fn check_sdp(sdp: &str, max: usize) -> Result<(), RoomError> {
    if sdp.len() > max {
        return Err(RoomError::new(
            ErrorCode::InvalidSdp,
            format!("SDP of {} bytes exceeds {max}", sdp.len()),
        ));
    }
    if !sdp.starts_with("v=0") {
        return Err(RoomError::new(
            ErrorCode::InvalidSdp,
            "SDP must start with \"v=0\"",
        ));
    }
    Ok(())
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
            members: BTreeMap::new(),
            calls: BTreeMap::new(),
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

    /// `user` joins with `session`.
    pub fn join(
        &mut self,
        user: &str,
        session: &str,
        request_id: u32,
        now_ms: u64,
        limits: &Limits,
    ) -> Outcome {
        let mut out = Outcome::default();
        match self.members.get_mut(user) {
            Some(m) if m.session == session => {
                if m.presence != Presence::Connected {
                    m.presence = Presence::Connected;
                    self.member_event(
                        &mut out,
                        Dest::AllExcept(user.to_owned()),
                        EventKind::MemberResumed,
                        user,
                        now_ms,
                    );
                }
            }
            Some(m) => {
                out.replaced = Some(std::mem::replace(&mut m.session, session.to_owned()));
                m.presence = Presence::Connected;
                self.member_event(
                    &mut out,
                    Dest::AllExcept(user.to_owned()),
                    EventKind::MemberJoined,
                    user,
                    now_ms,
                );
            }
            None => {
                if self.members.len() >= limits.max_members {
                    return Outcome::refused(RoomError::new(
                        ErrorCode::RoomFull,
                        format!("room is full ({} members)", limits.max_members),
                    ));
                }
                self.members.insert(
                    user.to_owned(),
                    Member {
                        user: user.to_owned(),
                        session: session.to_owned(),
                        joined_at_ms: now_ms,
                        presence: Presence::Connected,
                    },
                );
                self.member_event(
                    &mut out,
                    Dest::AllExcept(user.to_owned()),
                    EventKind::MemberJoined,
                    user,
                    now_ms,
                );
            }
        }
        out.attached = Some((user.to_owned(), session.to_owned()));
        // The joiner learns the room from Joined (members and the seq of its own join).
        out.deliveries.insert(
            0,
            Delivery {
                to: Dest::User(user.to_owned()),
                msg: Message::Joined(Joined {
                    request_id,
                    room: self.room.clone(),
                    members: self.member_names(),
                    last_seq: self.log.last_seq(),
                }),
            },
        );
        self.deliver_pending_invites(&mut out, user, now_ms);
        out
    }

    /// `user` leaves; its calls end.
    pub fn leave(&mut self, user: &str, session: &str, now_ms: u64) -> Outcome {
        if !self.is_member(user, session) {
            return Outcome::refused(not_member());
        }
        let mut out = Outcome::default();
        self.end_calls_of(
            &mut out,
            user,
            now_ms,
            "left the room",
            |state, inviter| match state {
                CallState::Inviting | CallState::Ringing if inviter => CallEvent::Cancel,
                CallState::Inviting | CallState::Ringing => CallEvent::Reject,
                _ => CallEvent::Hangup,
            },
        );
        // The leaver gets its MemberLeft as the acknowledgement.
        self.member_event(&mut out, Dest::All, EventKind::MemberLeft, user, now_ms);
        if let Some(m) = self.members.remove(user) {
            out.removed.push(m);
        }
        out
    }

    /// `user`'s connection dropped: its seat is kept for the resume window.
    pub fn detach(&mut self, user: &str, session: &str, now_ms: u64) -> Outcome {
        let mut out = Outcome::default();
        let Some(m) = self.members.get_mut(user) else {
            return out;
        };
        if m.session != session || m.presence != Presence::Connected {
            return out;
        }
        m.presence = Presence::Suspended { since_ms: now_ms };
        self.member_event(
            &mut out,
            Dest::AllExcept(user.to_owned()),
            EventKind::MemberSuspended,
            user,
            now_ms,
        );
        out
    }

    /// `user` resumes `session` after seeing events up to `last_seq`: the missed events are
    /// replayed to it (with a Joined resync first if some were evicted).
    pub fn resume(&mut self, user: &str, session: &str, last_seq: u64, now_ms: u64) -> Outcome {
        if !self.is_member(user, session) {
            return Outcome::refused(RoomError::new(
                ErrorCode::AuthFailed,
                "session is not a member of this room",
            ));
        }
        let mut out = Outcome::default();
        let mut scratch = Outcome::default();
        if let Some(m) = self.members.get_mut(user)
            && m.presence != Presence::Connected
        {
            m.presence = Presence::Connected;
            self.member_event(
                &mut scratch,
                Dest::AllExcept(user.to_owned()),
                EventKind::MemberResumed,
                user,
                now_ms,
            );
        }
        let renegotiate: Vec<String> = self
            .calls
            .values()
            .filter(|c| c.is_party(user) && c.call.state == CallState::Negotiating)
            .map(|c| c.call.id.clone())
            .collect();
        for id in renegotiate {
            let Some(entry) = self.calls.get_mut(&id) else {
                continue;
            };
            entry.reset_negotiation();
            entry.call.entered_at_ms = now_ms;
            let inviter = entry.call.inviter.clone();
            self.call_event(
                &mut scratch,
                Dest::AllExcept(user.to_owned()),
                &inviter,
                &id,
                CallState::Negotiating.name(),
                now_ms,
            );
        }
        out.commit = scratch.commit;
        out.attached = Some((user.to_owned(), session.to_owned()));
        // Replay (which includes the events just logged) goes to the resumer first.
        let replay = self.log.since(last_seq);
        let (gap, events) = match replay {
            Replay::Complete(events) => (false, events),
            Replay::Gap(events) => (true, events),
        };
        if gap {
            out.deliveries.push(Delivery {
                to: Dest::User(user.to_owned()),
                msg: Message::Joined(Joined {
                    request_id: 0,
                    room: self.room.clone(),
                    members: self.member_names(),
                    last_seq: self.log.last_seq(),
                }),
            });
        }
        let replayed: Vec<Delivery> = events
            .into_iter()
            .map(|e| Delivery {
                to: Dest::User(user.to_owned()),
                msg: Message::Event(e.clone()),
            })
            .collect();
        out.deliveries.extend(replayed);
        out.deliveries.extend(scratch.deliveries);
        self.deliver_pending_invites(&mut out, user, now_ms);
        out
    }

    /// Queues invites still waiting for `user` (it was suspended when invited) and rings.
    fn deliver_pending_invites(&mut self, out: &mut Outcome, user: &str, now_ms: u64) {
        let pending: Vec<(String, String)> = self
            .calls
            .values()
            .filter(|c| c.call.invitee == user && c.call.state == CallState::Inviting)
            .map(|c| (c.call.id.clone(), c.call.inviter.clone()))
            .collect();
        for (id, inviter) in pending {
            out.deliveries.push(Delivery {
                to: Dest::User(user.to_owned()),
                msg: Message::Invite(Invite {
                    request_id: 0,
                    room: self.room.clone(),
                    call_id: id.clone(),
                    from: inviter,
                    to: user.to_owned(),
                }),
            });
            let _ = self.transition(out, &id, CallEvent::Ring, now_ms, "invite delivered");
        }
    }

    /// An Invite from `user`.
    pub fn invite(
        &mut self,
        user: &str,
        session: &str,
        msg: Invite,
        now_ms: u64,
        limits: &Limits,
    ) -> Outcome {
        if !self.is_member(user, session) {
            return Outcome::refused(not_member());
        }
        if let Err(e) = check_id("call", &msg.call_id) {
            return Outcome::refused(e);
        }
        if msg.to == user || !self.members.contains_key(&msg.to) {
            return Outcome::refused(RoomError::new(
                ErrorCode::InvalidTransition,
                format!("{:?} is not another member of this room", msg.to),
            ));
        }
        if self.calls.contains_key(&msg.call_id) {
            return Outcome::refused(RoomError::new(
                ErrorCode::InvalidTransition,
                format!("call {:?} already exists", msg.call_id),
            ));
        }
        if self.calls.len() >= limits.max_calls {
            return Outcome::refused(RoomError::new(
                ErrorCode::RoomFull,
                format!("room has the maximum of {} live calls", limits.max_calls),
            ));
        }
        let call = Call::new(&msg.call_id, &self.room, user, &msg.to, now_ms);
        self.calls.insert(msg.call_id.clone(), CallEntry::new(call));
        let mut out = Outcome::default();
        // Idle → Inviting is always allowed for a new call.
        let _ = self.transition(&mut out, &msg.call_id, CallEvent::Invite, now_ms, "invite");
        if self.is_connected(&msg.to) {
            self.deliver_pending_invites(&mut out, &msg.to, now_ms);
        }
        out
    }

    /// An InviteResult from `user` (the invitee).
    pub fn invite_result(
        &mut self,
        user: &str,
        session: &str,
        msg: InviteResult,
        now_ms: u64,
    ) -> Outcome {
        if !self.is_member(user, session) {
            return Outcome::refused(not_member());
        }
        let Some(entry) = self.calls.get(&msg.call_id) else {
            return Outcome::refused(no_call(&msg.call_id));
        };
        if entry.call.invitee != user {
            return Outcome::refused(RoomError::new(
                ErrorCode::InvalidTransition,
                "only the invitee answers an invite",
            ));
        }
        let inviter = entry.call.inviter.clone();
        let event = if msg.accepted {
            CallEvent::Accept
        } else {
            CallEvent::Reject
        };
        let mut out = Outcome::default();
        let cause = if msg.accepted { "accepted" } else { "rejected" };
        if let Err(e) = self.transition(&mut out, &msg.call_id, event, now_ms, cause) {
            return Outcome::refused(e.into());
        }
        out.deliveries.insert(
            0,
            Delivery {
                to: Dest::User(inviter.clone()),
                msg: Message::InviteResult(InviteResult {
                    request_id: 0,
                    room: self.room.clone(),
                    from: user.to_owned(),
                    to: inviter,
                    ..msg
                }),
            },
        );
        out
    }

    /// A Hangup from a party.
    pub fn hangup(&mut self, user: &str, session: &str, msg: Hangup, now_ms: u64) -> Outcome {
        if !self.is_member(user, session) {
            return Outcome::refused(not_member());
        }
        let Some(entry) = self.calls.get(&msg.call_id) else {
            return Outcome::refused(no_call(&msg.call_id));
        };
        if !entry.is_party(user) {
            return Outcome::refused(not_party());
        }
        let other = entry.other_party(user).to_owned();
        let is_inviter = entry.call.inviter == user;
        let event = match entry.call.state {
            CallState::Inviting | CallState::Ringing if is_inviter => CallEvent::Cancel,
            CallState::Inviting | CallState::Ringing => CallEvent::Reject,
            _ => CallEvent::Hangup,
        };
        let mut out = Outcome::default();
        if let Err(e) = self.transition(&mut out, &msg.call_id, event, now_ms, "hangup") {
            return Outcome::refused(e.into());
        }
        out.deliveries.insert(
            0,
            Delivery {
                to: Dest::User(other),
                msg: Message::Hangup(Hangup {
                    request_id: 0,
                    room: self.room.clone(),
                    from: user.to_owned(),
                    ..msg
                }),
            },
        );
        out
    }

    /// Validates a relay on call `id` from `user` for `event`; returns the other party.
    fn relay_target(
        &self,
        user: &str,
        session: &str,
        id: &str,
        event: Option<CallEvent>,
    ) -> Result<(String, CallState), RoomError> {
        if !self.is_member(user, session) {
            return Err(not_member());
        }
        let entry = self.calls.get(id).ok_or_else(|| no_call(id))?;
        if !entry.is_party(user) {
            return Err(not_party());
        }
        let state = entry.call.state;
        let allowed = match event {
            Some(event) => next_state(state, event).is_some(),
            None => matches!(state, CallState::Negotiating | CallState::Connected),
        };
        if !allowed {
            let event = event.map_or("ice candidate", CallEvent::name);
            return Err(RoomError::new(
                ErrorCode::InvalidTransition,
                format!("{event} is not allowed in state {state}"),
            ));
        }
        Ok((entry.other_party(user).to_owned(), state))
    }

    /// An Offer (`answer == false`) or Answer from a party.
    pub fn sdp(
        &mut self,
        user: &str,
        session: &str,
        msg: Sdp,
        answer: bool,
        now_ms: u64,
        limits: &Limits,
    ) -> Outcome {
        let event = if answer {
            CallEvent::Answer
        } else {
            CallEvent::Offer
        };
        let (other, state) = match self.relay_target(user, session, &msg.call_id, Some(event)) {
            Ok(t) => t,
            Err(e) => return Outcome::refused(e),
        };
        if let Err(e) = check_sdp(&msg.sdp, limits.max_sdp_bytes) {
            return Outcome::refused(e);
        }
        if let Some(entry) = self.calls.get_mut(&msg.call_id) {
            if answer {
                entry.answered = true;
            } else {
                // A new offer starts a new round of candidates.
                entry.reset_negotiation();
            }
        }
        let relayed = Sdp {
            request_id: 0,
            room: self.room.clone(),
            from: user.to_owned(),
            to: other.clone(),
            ..msg
        };
        let mut out = Outcome::default();
        out.transitions.push(Transition {
            from: state,
            event,
            to: state,
            at_ms: now_ms,
            cause: format!("{event} from {user}"),
        });
        out.deliveries.push(Delivery {
            to: Dest::User(other),
            msg: if answer {
                Message::Answer(relayed)
            } else {
                Message::Offer(relayed)
            },
        });
        out
    }

    /// An IceCandidate (or, from a v2 client, an IceBatch) from a party.
    pub fn ice(&mut self, user: &str, session: &str, msg: IceMsg, now_ms: u64) -> Outcome {
        let (other, state) = match self.relay_target(user, session, msg.call_id(), None) {
            Ok(t) => t,
            Err(e) => return Outcome::refused(e),
        };
        let end = msg.has_end_of_candidates();
        let call_id = msg.call_id().to_owned();
        let mut out = Outcome::default();
        out.deliveries.push(Delivery {
            to: Dest::User(other.clone()),
            msg: msg.relayed(&self.room, user, &other),
        });
        if end && state == CallState::Negotiating {
            let complete = match self.calls.get_mut(&call_id) {
                Some(entry) => {
                    if entry.call.inviter == user {
                        entry.inviter_ice_done = true;
                    } else {
                        entry.invitee_ice_done = true;
                    }
                    entry.answered && entry.inviter_ice_done && entry.invitee_ice_done
                }
                None => false,
            };
            if complete {
                let _ = self.transition(
                    &mut out,
                    &call_id,
                    CallEvent::IceComplete,
                    now_ms,
                    "both peers sent end-of-candidates",
                );
            }
        }
        out
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

/// An ICE relay in either wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceMsg {
    /// One candidate (v1 and v2).
    One(IceCandidate),
    /// Several candidates (v2).
    Batch(IceBatch),
}

impl IceMsg {
    fn call_id(&self) -> &str {
        match self {
            IceMsg::One(m) => &m.call_id,
            IceMsg::Batch(m) => &m.call_id,
        }
    }

    fn has_end_of_candidates(&self) -> bool {
        match self {
            IceMsg::One(m) => m.is_end_of_candidates(),
            IceMsg::Batch(m) => m.candidates.iter().any(|c| c.candidate.is_empty()),
        }
    }

    fn relayed(self, room: &str, from: &str, to: &str) -> Message {
        match self {
            IceMsg::One(m) => Message::IceCandidate(IceCandidate {
                room: room.to_owned(),
                from: from.to_owned(),
                to: to.to_owned(),
                ..m
            }),
            IceMsg::Batch(m) => Message::IceBatch(IceBatch {
                room: room.to_owned(),
                from: from.to_owned(),
                to: to.to_owned(),
                ..m
            }),
        }
    }
}

/// The IceCandidate frames a v1 recipient gets for a batch.
pub fn split_batch(batch: &IceBatch) -> Vec<Message> {
    batch
        .candidates
        .iter()
        .map(|c| {
            Message::IceCandidate(IceCandidate {
                room: batch.room.clone(),
                call_id: batch.call_id.clone(),
                from: batch.from.clone(),
                to: batch.to.clone(),
                candidate: c.candidate.clone(),
                sdp_mid: c.sdp_mid.clone(),
                sdp_mline_index: c.sdp_mline_index,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;

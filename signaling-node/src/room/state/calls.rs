//! Call commands of a room: invites, answers, hangups and the SDP/ICE relays.

use crate::call::{Call, CallEvent, CallState, Transition, next_state};
use switchboard_protocol::{
    ErrorCode, Hangup, IceBatch, IceCandidate, Invite, InviteResult, Message, Sdp,
};

use super::{
    CallEntry, Delivery, Dest, Limits, Outcome, RoomError, RoomState, check_id, no_call,
    not_member, not_party,
};

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

impl RoomState {
    /// Queues invites still waiting for `user` (it was suspended when invited) and rings.
    pub(super) fn deliver_pending_invites(&mut self, out: &mut Outcome, user: &str, now_ms: u64) {
        // Ringing too: the Invite frame was queued to a connection that may have dropped before
        // it was written (a relay is not a room event, so the replay does not carry it); an
        // invitee that already had it just sees the same call id again.
        let pending: Vec<(String, String, CallState)> = self
            .calls
            .values()
            .filter(|c| {
                c.call.invitee == user
                    && matches!(c.call.state, CallState::Inviting | CallState::Ringing)
            })
            .map(|c| (c.call.id.clone(), c.call.inviter.clone(), c.call.state))
            .collect();
        for (id, inviter, state) in pending {
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
            if state == CallState::Inviting {
                let _ = self.transition(out, &id, CallEvent::Ring, now_ms, "invite delivered");
            }
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

//! Membership commands of a room: join, leave, a dropped connection, and resume with replay.

use crate::call::{CallEvent, CallState};
use switchboard_protocol::{ErrorCode, EventKind, Joined, Message};

use super::{Delivery, Dest, Limits, Member, Outcome, Presence, RoomError, RoomState, not_member};
use crate::room::log::Replay;

impl RoomState {
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
    /// replayed to it, or, if some were evicted, a Joined resync followed only by the events
    /// this resume logs.
    pub fn resume(&mut self, user: &str, session: &str, last_seq: u64, now_ms: u64) -> Outcome {
        if !self.is_member(user, session) {
            return Outcome::refused(RoomError::new(
                ErrorCode::AuthFailed,
                "session is not a member of this room",
            ));
        }
        let mut out = Outcome::default();
        let mut scratch = Outcome::default();
        let before_resume = self.log.last_seq();
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
        let events = match replay {
            Replay::Complete(events) => events,
            Replay::Gap(events) => {
                // The snapshot stands for everything up to `before_resume`, so only what this
                // resume logged follows it; older ring events would repeat seqs the client has.
                out.deliveries.push(Delivery {
                    to: Dest::User(user.to_owned()),
                    msg: Message::Joined(Joined {
                        request_id: 0,
                        room: self.room.clone(),
                        members: self.member_names(),
                        last_seq: before_resume,
                    }),
                });
                events
                    .into_iter()
                    .filter(|e| e.seq > before_resume)
                    .collect()
            }
        };
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
}

//! Which refused requests the client sends again by itself (pure, time passed in): a room
//! between owners answers 1006 (the node follows it with `Migrate`) or 1010 (retry), and
//! neither may reach the application as a failure (docs/protocol.md, "Retryable refusals").
//!
//! Tracked are the requests whose refusal rolls nothing forward: `Invite`, `InviteResult`,
//! `Hangup` and `Leave` (each commits a room transition, so a refusal means it did not
//! happen). A 1006 keeps the request until the session is resumed on the room's new node; a
//! 1010 sends it again after a backoff, a bounded number of times. Offer, Answer and ICE are
//! not re-sent: a resumed room restarts negotiation itself. Joins are the driver's own
//! pending table.

use std::collections::VecDeque;
use std::time::Duration;

use switchboard_protocol::{ErrorCode, ErrorFrame, Message};
use tokio::time::Instant;

/// Most sent requests remembered for a possible refusal; older ones are forgotten (their
/// refusal is then handed to the application).
pub const MAX_TRACKED: usize = 64;

/// What to do with an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a retryable refusal of a tracked request: the application gets the frame.
    Deliver,
    /// Kept: sent again once the session is resumed where the room lives now.
    AfterMove,
    /// Kept: sent again at this time.
    Later(Instant),
    /// A 1006 without a request (a resume or an ICE frame the room refused): the `Migrate`
    /// that follows moves the client; nothing to send again.
    Ignore,
}

#[derive(Debug, Clone, PartialEq)]
struct Tracked {
    id: u32,
    msg: Message,
    attempts: u32,
}

/// The client's retry bookkeeping.
#[derive(Debug, Default)]
pub struct Retries {
    sent: VecDeque<Tracked>,
    after_move: Vec<Tracked>,
    later: Vec<(Instant, Tracked)>,
}

/// The request id of a request the client retries, or `None` for anything else.
fn retryable_id(msg: &Message) -> Option<u32> {
    let id = match msg {
        Message::Invite(m) => m.request_id,
        Message::InviteResult(m) => m.request_id,
        Message::Hangup(m) => m.request_id,
        Message::Leave(m) => m.request_id,
        _ => return None,
    };
    (id != 0).then_some(id)
}

impl Retries {
    /// Remembers a request that was just written (a retry, tracked again when it was taken
    /// out, keeps its attempt count).
    pub fn sent(&mut self, msg: &Message) {
        let Some(id) = retryable_id(msg) else {
            return;
        };
        let attempts = self
            .sent
            .iter()
            .find(|t| t.id == id)
            .map_or(0, |t| t.attempts);
        self.track(msg.clone(), attempts);
    }

    fn track(&mut self, msg: Message, attempts: u32) {
        let Some(id) = retryable_id(&msg) else {
            return;
        };
        self.sent.retain(|t| t.id != id);
        self.sent.push_back(Tracked { id, msg, attempts });
        while self.sent.len() > MAX_TRACKED {
            self.sent.pop_front();
        }
    }

    /// Decides about an `Error` frame received at `now`; `backoff(n)` is the wait before the
    /// n-th retry and `max_attempts` the most retries of one request.
    pub fn refused(
        &mut self,
        error: &ErrorFrame,
        now: Instant,
        backoff: impl Fn(u32) -> Duration,
        max_attempts: u32,
    ) -> Refusal {
        let code = ErrorCode::from_code(error.code);
        if error.request_id == 0 {
            return if code == Some(ErrorCode::NotOwner) {
                Refusal::Ignore
            } else {
                Refusal::Deliver
            };
        }
        let Some(at) = self.sent.iter().position(|t| t.id == error.request_id) else {
            return Refusal::Deliver;
        };
        match code {
            Some(ErrorCode::NotOwner) => {
                if let Some(tracked) = self.sent.remove(at) {
                    self.after_move.push(tracked);
                }
                Refusal::AfterMove
            }
            Some(ErrorCode::Draining) => {
                let Some(mut tracked) = self.sent.remove(at) else {
                    return Refusal::Deliver;
                };
                if tracked.attempts >= max_attempts {
                    return Refusal::Deliver;
                }
                tracked.attempts += 1;
                let due = now + backoff(tracked.attempts);
                self.later.push((due, tracked));
                Refusal::Later(due)
            }
            _ => {
                self.sent.remove(at);
                Refusal::Deliver
            }
        }
    }

    /// When the next delayed retry is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.later.iter().map(|(due, _)| *due).min()
    }

    /// The delayed retries due at `now`, in the order they were refused (tracked again).
    pub fn take_due(&mut self, now: Instant) -> Vec<Message> {
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.later)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.later = waiting;
        self.resend(due.into_iter().map(|(_, t)| t).collect())
    }

    /// After a new Welcome: what to send again on the new connection. A resumed session gets
    /// every kept request (those waiting for a backoff too: a new node is a new chance); a
    /// session the server lost gets none (its rooms are joined afresh, and requests about
    /// its old calls mean nothing there).
    pub fn take_on_welcome(&mut self, resumed: bool) -> Vec<Message> {
        let mut kept: Vec<Tracked> = std::mem::take(&mut self.after_move);
        kept.extend(std::mem::take(&mut self.later).into_iter().map(|(_, t)| t));
        self.sent.clear();
        if !resumed {
            if !kept.is_empty() {
                tracing::info!(
                    requests = kept.len(),
                    "session not resumed; refused requests are not sent again"
                );
            }
            return Vec::new();
        }
        self.resend(kept)
    }

    fn resend(&mut self, kept: Vec<Tracked>) -> Vec<Message> {
        kept.into_iter()
            .map(|t| {
                let msg = t.msg.clone();
                self.track(t.msg, t.attempts);
                msg
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{Hangup, Invite, Sdp};

    fn invite(id: u32) -> Message {
        Message::Invite(Invite {
            request_id: id,
            room: "r".into(),
            call_id: format!("c{id}"),
            from: "a".into(),
            to: "b".into(),
        })
    }

    fn error(code: ErrorCode, id: u32) -> ErrorFrame {
        ErrorFrame {
            code: code.code(),
            message: String::new(),
            request_id: id,
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_moved_room_keeps_the_request_until_the_session_resumes() {
        let mut r = Retries::default();
        let now = Instant::now();
        r.sent(&invite(3));
        assert_eq!(
            r.refused(&error(ErrorCode::NotOwner, 3), now, |_| MS, 5),
            Refusal::AfterMove
        );
        assert_eq!(r.take_on_welcome(true), vec![invite(3)]);
        assert!(r.take_on_welcome(true).is_empty(), "sent once");
        // Sent again, it is tracked again: refused again, kept again.
        r.sent(&invite(4));
        r.refused(&error(ErrorCode::NotOwner, 4), now, |_| MS, 5);
        assert!(
            r.take_on_welcome(false).is_empty(),
            "a lost session drops them"
        );
    }

    #[test]
    fn retry_later_is_bounded() {
        let mut r = Retries::default();
        let now = Instant::now();
        r.sent(&invite(1));
        for attempt in 1..=2u32 {
            let got = r.refused(&error(ErrorCode::Draining, 1), now, |n| MS * n, 2);
            assert_eq!(got, Refusal::Later(now + MS * attempt));
            assert_eq!(r.next_due(), Some(now + MS * attempt));
            assert!(r.take_due(now).is_empty(), "not due yet");
            assert_eq!(r.take_due(now + MS * attempt), vec![invite(1)]);
        }
        assert_eq!(
            r.refused(&error(ErrorCode::Draining, 1), now, |_| MS, 2),
            Refusal::Deliver,
            "the third refusal reaches the application"
        );
        assert_eq!(r.next_due(), None);
    }

    #[test]
    fn other_refusals_and_untracked_requests_reach_the_application() {
        let mut r = Retries::default();
        let now = Instant::now();
        r.sent(&invite(1));
        assert_eq!(
            r.refused(&error(ErrorCode::InvalidTransition, 1), now, |_| MS, 5),
            Refusal::Deliver
        );
        assert_eq!(
            r.refused(&error(ErrorCode::NotOwner, 9), now, |_| MS, 5),
            Refusal::Deliver,
            "not a request we sent"
        );
        let offer = Message::Offer(Sdp {
            request_id: 2,
            room: "r".into(),
            call_id: "c".into(),
            from: "a".into(),
            to: "b".into(),
            sdp: "v=0".into(),
        });
        r.sent(&offer);
        assert_eq!(
            r.refused(&error(ErrorCode::NotOwner, 2), now, |_| MS, 5),
            Refusal::Deliver,
            "relays are not tracked"
        );
        assert_eq!(
            r.refused(&error(ErrorCode::NotOwner, 0), now, |_| MS, 5),
            Refusal::Ignore
        );
        assert_eq!(
            r.refused(&error(ErrorCode::Draining, 0), now, |_| MS, 5),
            Refusal::Deliver
        );
    }

    #[test]
    fn tracking_is_bounded() {
        let mut r = Retries::default();
        for id in 1..=(MAX_TRACKED as u32 + 10) {
            r.sent(&Message::Hangup(Hangup {
                request_id: id,
                room: "r".into(),
                call_id: "c".into(),
                from: "a".into(),
                reason: String::new(),
            }));
        }
        assert_eq!(r.sent.len(), MAX_TRACKED);
        assert_eq!(
            r.refused(&error(ErrorCode::NotOwner, 1), Instant::now(), |_| MS, 5),
            Refusal::Deliver,
            "the oldest was forgotten"
        );
    }
}

//! The call state machine (docs/protocol.md): a static transition table, the [`Call`] it drives,
//! and per-state deadlines. Pure and serializable: no I/O, no clock — callers pass `at_ms`.
//!
//! ```text
//! Idle ─Invite→ Inviting ─Ring→ Ringing ─Accept→ Negotiating ─IceComplete→ Connected
//!                  │  Cancel/Reject │ Cancel/Reject   │ Offer/Answer (stay)  │ Offer/Answer (stay)
//!                  └──────────────→ Ended ←──────────────── Hangup (any non-terminal state)
//! Timeout (Inviting, Ringing, Negotiating) and PeerLost (any non-terminal state) → Failed
//! ```
//!
//! How the room drives it:
//! - `Invite` when the inviter's Invite is accepted by the room; `Ring` once the invite has
//!   been delivered to the invitee; `Accept` / `Reject` on the invitee's InviteResult
//!   (`Reject` is also allowed in Inviting, for the room refusing delivery itself);
//!   `Cancel` when the inviter hangs up before the invitee answered.
//! - `Offer` / `Answer` for each relayed SDP; in Connected they are a renegotiation and the
//!   call stays Connected.
//! - `IceComplete` once both peers have sent end-of-candidates (an empty candidate) after an
//!   answer; the room tracks that, the table only moves Negotiating → Connected.
//! - `Timeout` when [`Call::deadline_ms`] has passed; `PeerLost` when a peer's connection is
//!   gone for good (not merely suspended for resume).
//!
//! A self-transition (Offer/Answer) does not restart the state's clock: a peer cannot keep a
//! call in Negotiating forever by sending offers.

mod table;

pub use table::{TRANSITIONS, next_state};

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use switchboard_protocol::ErrorCode;

/// State of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Created, no invite sent yet.
    Idle,
    /// Invite accepted by the room, not yet delivered to the invitee.
    Inviting,
    /// Invite delivered; waiting for the invitee's answer.
    Ringing,
    /// Accepted; SDP and ICE are being exchanged.
    Negotiating,
    /// Both peers finished ICE; media flows elsewhere.
    Connected,
    /// Ended normally (hangup, reject, cancel). Terminal.
    Ended,
    /// Ended abnormally (timeout, peer lost). Terminal.
    Failed,
}

impl CallState {
    /// Every state.
    pub const ALL: [CallState; 7] = [
        CallState::Idle,
        CallState::Inviting,
        CallState::Ringing,
        CallState::Negotiating,
        CallState::Connected,
        CallState::Ended,
        CallState::Failed,
    ];

    /// Lowercase name, used in Event frames and as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            CallState::Idle => "idle",
            CallState::Inviting => "inviting",
            CallState::Ringing => "ringing",
            CallState::Negotiating => "negotiating",
            CallState::Connected => "connected",
            CallState::Ended => "ended",
            CallState::Failed => "failed",
        }
    }

    /// Parses a name produced by [`CallState::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether the call is over (no event is accepted any more).
    pub fn is_terminal(self) -> bool {
        matches!(self, CallState::Ended | CallState::Failed)
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something that happens to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEvent {
    /// The inviter invited the invitee.
    Invite,
    /// The invite was delivered to the invitee.
    Ring,
    /// The invitee accepted.
    Accept,
    /// The invitee (or the room on its behalf) rejected.
    Reject,
    /// The inviter withdrew the invite.
    Cancel,
    /// An SDP offer was relayed.
    Offer,
    /// An SDP answer was relayed.
    Answer,
    /// Both peers sent end-of-candidates after an answer.
    IceComplete,
    /// A peer hung up.
    Hangup,
    /// The current state's deadline passed.
    Timeout,
    /// A peer's connection is gone for good.
    PeerLost,
}

impl CallEvent {
    /// Every event.
    pub const ALL: [CallEvent; 11] = [
        CallEvent::Invite,
        CallEvent::Ring,
        CallEvent::Accept,
        CallEvent::Reject,
        CallEvent::Cancel,
        CallEvent::Offer,
        CallEvent::Answer,
        CallEvent::IceComplete,
        CallEvent::Hangup,
        CallEvent::Timeout,
        CallEvent::PeerLost,
    ];

    /// snake_case name, used in logs and traces.
    pub fn name(self) -> &'static str {
        match self {
            CallEvent::Invite => "invite",
            CallEvent::Ring => "ring",
            CallEvent::Accept => "accept",
            CallEvent::Reject => "reject",
            CallEvent::Cancel => "cancel",
            CallEvent::Offer => "offer",
            CallEvent::Answer => "answer",
            CallEvent::IceComplete => "ice_complete",
            CallEvent::Hangup => "hangup",
            CallEvent::Timeout => "timeout",
            CallEvent::PeerLost => "peer_lost",
        }
    }
}

impl fmt::Display for CallEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One applied transition: what the room appends to its event log and counts in
/// `switchboard_session_transitions_total{from,to}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// State before.
    pub from: CallState,
    /// Event applied.
    pub event: CallEvent,
    /// State after (equal to `from` for renegotiation self-transitions).
    pub to: CallState,
    /// When, in milliseconds (the caller's clock).
    pub at_ms: u64,
    /// Why (free text: who sent what, which deadline passed).
    pub cause: String,
}

/// The event is not allowed in the call's current state; the call is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error, Serialize, Deserialize)]
#[error("call event {event} is not allowed in state {state}")]
pub struct InvalidTransition {
    /// The call's state.
    pub state: CallState,
    /// The refused event.
    pub event: CallEvent,
}

impl InvalidTransition {
    /// The error code for the `Error` frame: 1004 invalid state transition.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::InvalidTransition
    }
}

/// Per-state timeouts, configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// How long a call may stay in Inviting, and then in Ringing.
    pub invite_ms: u64,
    /// How long a call may stay in Negotiating.
    pub negotiation_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            invite_ms: 30_000,
            negotiation_ms: 15_000,
        }
    }
}

/// One call between an inviter and an invitee in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Call id (chosen by the inviter, unique in the room).
    pub id: String,
    /// Room id.
    pub room: String,
    /// User id of the inviter.
    pub inviter: String,
    /// User id of the invitee.
    pub invitee: String,
    /// Current state.
    pub state: CallState,
    /// When the call was created (ms).
    pub created_at_ms: u64,
    /// When the call entered its current state (ms); self-transitions do not move it.
    pub entered_at_ms: u64,
    /// The last applied transition, if any.
    pub last_transition: Option<Transition>,
}

impl Call {
    /// A new call in [`CallState::Idle`].
    pub fn new(
        id: impl Into<String>,
        room: impl Into<String>,
        inviter: impl Into<String>,
        invitee: impl Into<String>,
        at_ms: u64,
    ) -> Self {
        Self {
            id: id.into(),
            room: room.into(),
            inviter: inviter.into(),
            invitee: invitee.into(),
            state: CallState::Idle,
            created_at_ms: at_ms,
            entered_at_ms: at_ms,
            last_transition: None,
        }
    }

    /// Applies `event` at `at_ms`. On success the call is in the new state and the
    /// transition is returned; otherwise the call is unchanged.
    pub fn apply(
        &mut self,
        event: CallEvent,
        at_ms: u64,
        cause: impl Into<String>,
    ) -> Result<Transition, InvalidTransition> {
        let from = self.state;
        let to = next_state(from, event).ok_or(InvalidTransition { state: from, event })?;
        if to != from {
            self.entered_at_ms = at_ms;
        }
        self.state = to;
        let transition = Transition {
            from,
            event,
            to,
            at_ms,
            cause: cause.into(),
        };
        self.last_transition = Some(transition.clone());
        Ok(transition)
    }

    /// When the current state times out (ms), or `None` if it has no timeout
    /// (Idle, Connected, terminal states). At or after it, apply [`CallEvent::Timeout`].
    pub fn deadline_ms(&self, timeouts: &Timeouts) -> Option<u64> {
        let limit = match self.state {
            CallState::Inviting | CallState::Ringing => timeouts.invite_ms,
            CallState::Negotiating => timeouts.negotiation_ms,
            CallState::Idle | CallState::Connected | CallState::Ended | CallState::Failed => {
                return None;
            }
        };
        Some(self.entered_at_ms.saturating_add(limit))
    }

    /// Whether the call is over.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }
}

#[cfg(test)]
mod tests;

//! The transition table of the call state machine: data, not nested ifs.

use super::{CallEvent, CallState};

use CallEvent as E;
use CallState as S;

/// Every allowed `(from, event, to)`; any pair not listed is an invalid transition.
pub static TRANSITIONS: &[(CallState, CallEvent, CallState)] = &[
    // Inviting.
    (S::Idle, E::Invite, S::Inviting),
    (S::Inviting, E::Ring, S::Ringing),
    (S::Inviting, E::Reject, S::Ended),
    (S::Inviting, E::Cancel, S::Ended),
    (S::Ringing, E::Accept, S::Negotiating),
    (S::Ringing, E::Reject, S::Ended),
    (S::Ringing, E::Cancel, S::Ended),
    // Negotiation, and renegotiation once connected.
    (S::Negotiating, E::Offer, S::Negotiating),
    (S::Negotiating, E::Answer, S::Negotiating),
    (S::Negotiating, E::IceComplete, S::Connected),
    (S::Connected, E::Offer, S::Connected),
    (S::Connected, E::Answer, S::Connected),
    // Hangup from any non-terminal state.
    (S::Idle, E::Hangup, S::Ended),
    (S::Inviting, E::Hangup, S::Ended),
    (S::Ringing, E::Hangup, S::Ended),
    (S::Negotiating, E::Hangup, S::Ended),
    (S::Connected, E::Hangup, S::Ended),
    // Timeouts: only states with a deadline.
    (S::Inviting, E::Timeout, S::Failed),
    (S::Ringing, E::Timeout, S::Failed),
    (S::Negotiating, E::Timeout, S::Failed),
    // Peer lost from any non-terminal state.
    (S::Idle, E::PeerLost, S::Failed),
    (S::Inviting, E::PeerLost, S::Failed),
    (S::Ringing, E::PeerLost, S::Failed),
    (S::Negotiating, E::PeerLost, S::Failed),
    (S::Connected, E::PeerLost, S::Failed),
];

/// The state `event` leads to from `from`, or `None` if the table has no such row.
pub fn next_state(from: CallState, event: CallEvent) -> Option<CallState> {
    TRANSITIONS
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
}

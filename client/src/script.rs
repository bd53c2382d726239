//! The scripted co-host flow as a pure step machine, shared by `signaling-node client --script`,
//! `--demo` and the bench: it consumes incoming messages and says what to send next; the
//! runner does the I/O (and picks the SDP and candidate payloads).
//!
//! Host: invite → (InviteResult accepted) offer → (Answer) candidates + end-of-candidates →
//! (Connected) hold → hangup. Guest: (Invite) accept → (Offer) answer + candidates +
//! end-of-candidates → (Connected) → (Hangup) done.
//!
//! "Connected" is the server's `Event CallState Connected` for the call; with `events: false`
//! (a relay without a state machine, like the bench baseline) it is "our end-of-candidates sent
//! and the peer's received".

use std::time::Duration;

use switchboard_protocol::{EventKind, Message};

use super::state::is_terminal_state;

/// Which side of the co-host flow this script plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Invites `invitee`, offers, and hangs up after holding the connected call for `hold`.
    Host {
        /// Who to invite.
        invitee: String,
        /// How long to stay connected before hanging up.
        hold: Duration,
    },
    /// Waits for an invitation, accepts and answers, waits for the hangup.
    Guest,
}

/// What the runner must do next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Invite the peer; report the new call id with [`Script::invited`].
    Invite {
        /// The invitee.
        to: String,
    },
    /// Accept the invitation.
    Accept {
        /// The call.
        call_id: String,
    },
    /// Send an SDP offer.
    Offer {
        /// The call.
        call_id: String,
    },
    /// Send an SDP answer.
    Answer {
        /// The call.
        call_id: String,
    },
    /// Send `count` ICE candidates, then end-of-candidates.
    Candidates {
        /// The call.
        call_id: String,
        /// How many candidates.
        count: u16,
    },
    /// Wait this long, then call [`Script::held`].
    Hold(Duration),
    /// Hang the call up.
    Hangup {
        /// The call.
        call_id: String,
    },
}

/// Where the script is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started.
    Start,
    /// Host: invitation sent, waiting for the InviteResult.
    AwaitInviteResult,
    /// Host: offer sent, waiting for the Answer.
    AwaitAnswer,
    /// Guest: waiting for an invitation.
    AwaitInvite,
    /// Guest: accepted, waiting for the offer.
    AwaitOffer,
    /// Candidates sent, waiting for the call to connect.
    AwaitConnected,
    /// Host: connected, holding the call.
    Holding,
    /// Guest: connected, waiting for the hangup.
    AwaitHangup,
    /// The flow completed.
    Done,
}

impl Phase {
    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Start => "starting",
            Phase::AwaitInviteResult => "waiting for the guest to accept",
            Phase::AwaitAnswer => "waiting for the answer",
            Phase::AwaitInvite => "waiting for an invitation",
            Phase::AwaitOffer => "waiting for the offer",
            Phase::AwaitConnected => "waiting for the call to connect",
            Phase::Holding => "holding the call",
            Phase::AwaitHangup => "waiting for the host to hang up",
            Phase::Done => "done",
        }
    }
}

/// Why a script failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The guest rejected the invitation.
    #[error("the invitation was rejected: {0}")]
    Rejected(String),
    /// The call ended or failed before the flow completed.
    #[error("the call {state} before the flow completed")]
    CallEnded {
        /// The terminal state reported.
        state: String,
    },
    /// The peer hung up before the flow completed.
    #[error("the peer hung up early ({0})")]
    PeerHungUp(String),
    /// The server answered with an Error frame.
    #[error("server error {code}: {message}")]
    Server {
        /// Numeric error code.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The runner reported something out of order (a bug in the runner).
    #[error("script misuse: {0}")]
    Misuse(&'static str),
}

/// One side of one co-host flow.
#[derive(Debug, Clone)]
pub struct Script {
    role: Role,
    phase: Phase,
    call_id: Option<String>,
    candidates: u16,
    events: bool,
    own_eoc_sent: bool,
    peer_eoc_seen: bool,
}

impl Script {
    /// A host script inviting `invitee`, sending `candidates` candidates, holding `hold`.
    pub fn host(invitee: &str, hold: Duration, candidates: u16) -> Self {
        Self::new(
            Role::Host {
                invitee: invitee.to_string(),
                hold,
            },
            candidates,
        )
    }

    /// A guest script sending `candidates` candidates.
    pub fn guest(candidates: u16) -> Self {
        Self::new(Role::Guest, candidates)
    }

    fn new(role: Role, candidates: u16) -> Self {
        Self {
            role,
            phase: Phase::Start,
            call_id: None,
            candidates,
            events: true,
            own_eoc_sent: false,
            peer_eoc_seen: false,
        }
    }

    /// Treats "both sides sent end-of-candidates" as connected instead of waiting for the
    /// server's CallState event (for relays without a state machine).
    pub fn without_events(mut self) -> Self {
        self.events = false;
        self
    }

    /// The role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The call id, once known.
    pub fn call_id(&self) -> Option<&str> {
        self.call_id.as_deref()
    }

    /// Whether the flow completed.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The first steps.
    pub fn start(&mut self) -> Vec<Step> {
        if self.phase != Phase::Start {
            return Vec::new();
        }
        match &self.role {
            Role::Host { invitee, .. } => {
                self.phase = Phase::AwaitInviteResult;
                vec![Step::Invite {
                    to: invitee.clone(),
                }]
            }
            Role::Guest => {
                self.phase = Phase::AwaitInvite;
                Vec::new()
            }
        }
    }

    /// The host's runner reports the call id `invite` returned.
    pub fn invited(&mut self, call_id: &str) -> Result<(), ScriptError> {
        match (&self.role, self.phase, &self.call_id) {
            (Role::Host { .. }, Phase::AwaitInviteResult, None) => {
                self.call_id = Some(call_id.to_string());
                Ok(())
            }
            _ => Err(ScriptError::Misuse(
                "invited() outside the host's invite step",
            )),
        }
    }

    /// The runner reports that the [`Step::Candidates`] step (with end-of-candidates) was sent.
    pub fn candidates_sent(&mut self) -> Vec<Step> {
        self.own_eoc_sent = true;
        self.check_connected_without_events()
    }

    /// The host's runner reports the hold elapsed.
    pub fn held(&mut self) -> Vec<Step> {
        match (&self.role, self.phase, &self.call_id) {
            (Role::Host { .. }, Phase::Holding, Some(call_id)) => {
                let call_id = call_id.clone();
                self.phase = Phase::Done;
                vec![Step::Hangup { call_id }]
            }
            _ => Vec::new(),
        }
    }

    /// Feeds one incoming message; returns the steps it triggers.
    pub fn on_message(&mut self, msg: &Message) -> Result<Vec<Step>, ScriptError> {
        if let Message::Error(error) = msg {
            return Err(ScriptError::Server {
                code: error.code,
                message: error.message.clone(),
            });
        }
        if self.phase == Phase::Done {
            return Ok(Vec::new());
        }
        // Guest: an invitation starts the flow.
        if let (Role::Guest, Phase::AwaitInvite, Message::Invite(invite)) =
            (&self.role, self.phase, msg)
        {
            self.call_id = Some(invite.call_id.clone());
            self.phase = Phase::AwaitOffer;
            return Ok(vec![Step::Accept {
                call_id: invite.call_id.clone(),
            }]);
        }
        let Some(call_id) = self.call_id.clone() else {
            return Ok(Vec::new());
        };
        if message_call_id(msg) != Some(call_id.as_str()) {
            return Ok(Vec::new());
        }
        let host = matches!(self.role, Role::Host { .. });
        match msg {
            Message::InviteResult(result) if host && self.phase == Phase::AwaitInviteResult => {
                if !result.accepted {
                    return Err(ScriptError::Rejected(result.reason.clone()));
                }
                self.phase = Phase::AwaitAnswer;
                Ok(vec![Step::Offer { call_id }])
            }
            Message::Answer(_) if host && self.phase == Phase::AwaitAnswer => {
                self.phase = Phase::AwaitConnected;
                Ok(vec![Step::Candidates {
                    call_id,
                    count: self.candidates,
                }])
            }
            Message::Offer(_) if !host && self.phase == Phase::AwaitOffer => {
                self.phase = Phase::AwaitConnected;
                Ok(vec![
                    Step::Answer {
                        call_id: call_id.clone(),
                    },
                    Step::Candidates {
                        call_id,
                        count: self.candidates,
                    },
                ])
            }
            Message::IceCandidate(c) if c.candidate.is_empty() => {
                self.peer_eoc_seen = true;
                Ok(self.check_connected_without_events())
            }
            Message::Event(event) if event.kind == EventKind::CallState => {
                if event.state.eq_ignore_ascii_case("connected") && self.events {
                    Ok(self.connected())
                } else if is_terminal_state(&event.state) {
                    self.ended(&event.state)
                } else {
                    Ok(Vec::new())
                }
            }
            Message::Hangup(hangup) => {
                if !host && matches!(self.phase, Phase::AwaitHangup | Phase::AwaitConnected) {
                    self.phase = Phase::Done;
                    Ok(Vec::new())
                } else {
                    Err(ScriptError::PeerHungUp(hangup.reason.clone()))
                }
            }
            _ => Ok(Vec::new()),
        }
    }

    fn ended(&mut self, state: &str) -> Result<Vec<Step>, ScriptError> {
        // The guest may see the call end (the host's hangup) as an event before the Hangup.
        if matches!(self.role, Role::Guest)
            && self.phase == Phase::AwaitHangup
            && state.eq_ignore_ascii_case("ended")
        {
            self.phase = Phase::Done;
            return Ok(Vec::new());
        }
        Err(ScriptError::CallEnded {
            state: state.to_string(),
        })
    }

    fn check_connected_without_events(&mut self) -> Vec<Step> {
        if !self.events && self.own_eoc_sent && self.peer_eoc_seen {
            self.connected()
        } else {
            Vec::new()
        }
    }

    fn connected(&mut self) -> Vec<Step> {
        if self.phase != Phase::AwaitConnected {
            return Vec::new();
        }
        match &self.role {
            Role::Host { hold, .. } => {
                self.phase = Phase::Holding;
                vec![Step::Hold(*hold)]
            }
            Role::Guest => {
                self.phase = Phase::AwaitHangup;
                Vec::new()
            }
        }
    }
}

/// The call id a message is about, if any.
pub fn message_call_id(msg: &Message) -> Option<&str> {
    match msg {
        Message::Invite(m) => Some(&m.call_id),
        Message::InviteResult(m) => Some(&m.call_id),
        Message::Offer(m) | Message::Answer(m) => Some(&m.call_id),
        Message::IceCandidate(m) => Some(&m.call_id),
        Message::IceBatch(m) => Some(&m.call_id),
        Message::Hangup(m) => Some(&m.call_id),
        Message::Event(m) if !m.call_id.is_empty() => Some(&m.call_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{
        ErrorFrame, Event, Hangup, IceCandidate, Invite, InviteResult, Sdp,
    };

    fn invite(call: &str) -> Message {
        Message::Invite(Invite {
            request_id: 0,
            room: "r".into(),
            call_id: call.into(),
            from: "host".into(),
            to: "guest".into(),
        })
    }

    fn result(call: &str, accepted: bool) -> Message {
        Message::InviteResult(InviteResult {
            request_id: 0,
            room: "r".into(),
            call_id: call.into(),
            from: "guest".into(),
            to: "host".into(),
            accepted,
            reason: if accepted {
                String::new()
            } else {
                "busy".into()
            },
        })
    }

    fn sdp(call: &str) -> Sdp {
        Sdp {
            request_id: 0,
            room: "r".into(),
            call_id: call.into(),
            from: String::new(),
            to: String::new(),
            sdp: "v=0".into(),
        }
    }

    fn state(call: &str, state: &str) -> Message {
        Message::Event(Event {
            room: "r".into(),
            seq: 1,
            kind: EventKind::CallState,
            user: String::new(),
            call_id: call.into(),
            state: state.into(),
            at_ms: 0,
        })
    }

    fn eoc(call: &str) -> Message {
        Message::IceCandidate(IceCandidate {
            room: "r".into(),
            call_id: call.into(),
            from: String::new(),
            to: String::new(),
            candidate: String::new(),
            sdp_mid: String::new(),
            sdp_mline_index: 0,
        })
    }

    fn hangup(call: &str) -> Message {
        Message::Hangup(Hangup {
            request_id: 0,
            room: "r".into(),
            call_id: call.into(),
            from: "host".into(),
            reason: "done".into(),
        })
    }

    #[test]
    fn host_and_guest_complete_the_flow() {
        let hold = Duration::from_secs(2);
        let mut host = Script::host("guest", hold, 2);
        let mut guest = Script::guest(3);
        assert_eq!(host.start(), vec![Step::Invite { to: "guest".into() }]);
        assert_eq!(guest.start(), vec![]);
        host.invited("c1").unwrap();

        assert_eq!(
            guest.on_message(&invite("c1")).unwrap(),
            vec![Step::Accept {
                call_id: "c1".into()
            }]
        );
        assert_eq!(
            host.on_message(&result("c1", true)).unwrap(),
            vec![Step::Offer {
                call_id: "c1".into()
            }]
        );
        assert_eq!(
            guest.on_message(&Message::Offer(sdp("c1"))).unwrap(),
            vec![
                Step::Answer {
                    call_id: "c1".into()
                },
                Step::Candidates {
                    call_id: "c1".into(),
                    count: 3
                }
            ]
        );
        assert!(guest.candidates_sent().is_empty());
        assert_eq!(
            host.on_message(&Message::Answer(sdp("c1"))).unwrap(),
            vec![Step::Candidates {
                call_id: "c1".into(),
                count: 2
            }]
        );
        assert!(host.candidates_sent().is_empty());
        // Other calls' events are ignored.
        assert!(
            host.on_message(&state("other", "Failed"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            host.on_message(&state("c1", "Connected")).unwrap(),
            vec![Step::Hold(hold)]
        );
        assert!(
            guest
                .on_message(&state("c1", "Connected"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(guest.phase(), Phase::AwaitHangup);
        assert_eq!(
            host.held(),
            vec![Step::Hangup {
                call_id: "c1".into()
            }]
        );
        assert!(host.is_done());
        assert!(guest.on_message(&hangup("c1")).unwrap().is_empty());
        assert!(guest.is_done());
    }

    #[test]
    fn without_events_connects_on_both_end_of_candidates() {
        let mut host = Script::host("guest", Duration::ZERO, 1).without_events();
        host.start();
        host.invited("c").unwrap();
        host.on_message(&result("c", true)).unwrap();
        host.on_message(&Message::Answer(sdp("c"))).unwrap();
        assert!(host.on_message(&eoc("c")).unwrap().is_empty());
        assert_eq!(host.candidates_sent(), vec![Step::Hold(Duration::ZERO)]);
        // The server's event is not needed (and not used) in this mode.
        assert!(
            host.on_message(&state("c", "Connected"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn rejection_errors_and_early_hangups_fail_the_script() {
        let mut host = Script::host("guest", Duration::ZERO, 1);
        host.start();
        host.invited("c").unwrap();
        assert_eq!(
            host.on_message(&result("c", false)),
            Err(ScriptError::Rejected("busy".into()))
        );

        let mut host = Script::host("guest", Duration::ZERO, 1);
        host.start();
        host.invited("c").unwrap();
        assert!(matches!(
            host.on_message(&hangup("c")),
            Err(ScriptError::PeerHungUp(_))
        ));

        let mut guest = Script::guest(1);
        guest.start();
        guest.on_message(&invite("c")).unwrap();
        assert!(matches!(
            guest.on_message(&state("c", "Failed")),
            Err(ScriptError::CallEnded { .. })
        ));
        let err = Message::Error(ErrorFrame {
            code: 1004,
            message: "bad".into(),
            request_id: 3,
        });
        assert!(matches!(
            guest.on_message(&err),
            Err(ScriptError::Server { code: 1004, .. })
        ));
    }

    #[test]
    fn guest_treats_ended_event_after_connect_as_done() {
        let mut guest = Script::guest(0);
        guest.start();
        guest.on_message(&invite("c")).unwrap();
        guest.on_message(&Message::Offer(sdp("c"))).unwrap();
        guest.candidates_sent();
        guest.on_message(&state("c", "Connected")).unwrap();
        assert!(guest.on_message(&state("c", "Ended")).unwrap().is_empty());
        assert!(guest.is_done());
    }

    #[test]
    fn misuse_is_reported() {
        let mut guest = Script::guest(0);
        assert!(guest.invited("c").is_err());
        let mut host = Script::host("g", Duration::ZERO, 0);
        assert!(host.held().is_empty());
        host.start();
        host.invited("c").unwrap();
        assert!(host.invited("c2").is_err());
        // Out-of-order frames do not advance the script.
        assert!(
            host.on_message(&Message::Answer(sdp("c")))
                .unwrap()
                .is_empty()
        );
        assert_eq!(host.phase(), Phase::AwaitInviteResult);
    }
}

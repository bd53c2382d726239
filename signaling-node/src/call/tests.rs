//! State machine tests: every table row, every refused pair, deadlines and serde.

use std::collections::HashSet;

use super::*;

/// The allowed rows as this test expects them, written independently of the table.
fn expected(from: CallState, event: CallEvent) -> Option<CallState> {
    use CallEvent as E;
    use CallState as S;
    if from.is_terminal() {
        return None;
    }
    match (from, event) {
        (_, E::Hangup) => Some(S::Ended),
        (_, E::PeerLost) => Some(S::Failed),
        (S::Inviting | S::Ringing | S::Negotiating, E::Timeout) => Some(S::Failed),
        (S::Idle, E::Invite) => Some(S::Inviting),
        (S::Inviting, E::Ring) => Some(S::Ringing),
        (S::Inviting | S::Ringing, E::Reject | E::Cancel) => Some(S::Ended),
        (S::Ringing, E::Accept) => Some(S::Negotiating),
        (S::Negotiating, E::Offer | E::Answer) => Some(S::Negotiating),
        (S::Negotiating, E::IceComplete) => Some(S::Connected),
        (S::Connected, E::Offer | E::Answer) => Some(S::Connected),
        _ => None,
    }
}

fn call_in(state: CallState) -> Call {
    let mut call = Call::new("c1", "room-1", "alice", "bob", 1_000);
    // Drive it there through the table so the fixture is a reachable call.
    let path: &[CallEvent] = match state {
        CallState::Idle => &[],
        CallState::Inviting => &[CallEvent::Invite],
        CallState::Ringing => &[CallEvent::Invite, CallEvent::Ring],
        CallState::Negotiating => &[CallEvent::Invite, CallEvent::Ring, CallEvent::Accept],
        CallState::Connected => &[
            CallEvent::Invite,
            CallEvent::Ring,
            CallEvent::Accept,
            CallEvent::Offer,
            CallEvent::Answer,
            CallEvent::IceComplete,
        ],
        CallState::Ended => &[CallEvent::Hangup],
        CallState::Failed => &[CallEvent::PeerLost],
    };
    for (i, event) in path.iter().enumerate() {
        call.apply(*event, 1_000 + i as u64, "setup")
            .expect("path is allowed");
    }
    assert_eq!(call.state, state);
    call
}

#[test]
fn table_matches_the_design_for_every_pair() {
    for from in CallState::ALL {
        for event in CallEvent::ALL {
            assert_eq!(
                next_state(from, event),
                expected(from, event),
                "{from} + {event}"
            );
        }
    }
}

#[test]
fn table_has_no_duplicate_pairs() {
    let mut seen = HashSet::new();
    for (from, event, _) in TRANSITIONS {
        assert!(
            seen.insert((*from, *event)),
            "duplicate row {from} + {event}"
        );
    }
}

#[test]
fn every_allowed_row_applies_and_records_the_transition() {
    for &(from, event, to) in TRANSITIONS {
        let mut call = call_in(from);
        let before_entered = call.entered_at_ms;
        let t = call
            .apply(event, 50_000, "because")
            .expect("row is allowed");
        assert_eq!(
            t,
            Transition {
                from,
                event,
                to,
                at_ms: 50_000,
                cause: "because".into()
            }
        );
        assert_eq!(call.state, to);
        assert_eq!(call.last_transition.as_ref(), Some(&t));
        if from == to {
            assert_eq!(
                call.entered_at_ms, before_entered,
                "{from} + {event} keeps the clock"
            );
        } else {
            assert_eq!(call.entered_at_ms, 50_000);
        }
    }
}

#[test]
fn every_disallowed_pair_is_refused_and_changes_nothing() {
    let mut refused = 0;
    for from in CallState::ALL {
        for event in CallEvent::ALL {
            if next_state(from, event).is_some() {
                continue;
            }
            let mut call = call_in(from);
            let before = call.clone();
            let err = call
                .apply(event, 99_000, "nope")
                .expect_err("pair is not allowed");
            assert_eq!(err, InvalidTransition { state: from, event });
            assert_eq!(err.error_code(), ErrorCode::InvalidTransition);
            assert_eq!(err.error_code().code(), 1004);
            assert_eq!(call, before, "{from} + {event} changed the call");
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        CallState::ALL.len() * CallEvent::ALL.len() - TRANSITIONS.len()
    );
}

#[test]
fn terminal_states_accept_nothing() {
    for state in [CallState::Ended, CallState::Failed] {
        assert!(state.is_terminal());
        for event in CallEvent::ALL {
            assert_eq!(next_state(state, event), None);
        }
    }
    assert!(!CallState::Connected.is_terminal());
}

#[test]
fn accept_only_from_ringing() {
    for state in CallState::ALL {
        let allowed = next_state(state, CallEvent::Accept).is_some();
        assert_eq!(allowed, state == CallState::Ringing, "{state}");
    }
}

#[test]
fn full_call_happy_path_then_hangup() {
    let mut call = Call::new("c1", "room-1", "alice", "bob", 0);
    let steps = [
        (CallEvent::Invite, CallState::Inviting),
        (CallEvent::Ring, CallState::Ringing),
        (CallEvent::Accept, CallState::Negotiating),
        (CallEvent::Offer, CallState::Negotiating),
        (CallEvent::Answer, CallState::Negotiating),
        (CallEvent::IceComplete, CallState::Connected),
        (CallEvent::Offer, CallState::Connected),
        (CallEvent::Answer, CallState::Connected),
        (CallEvent::Hangup, CallState::Ended),
    ];
    for (i, (event, state)) in steps.into_iter().enumerate() {
        call.apply(event, i as u64 * 10, event.name())
            .expect("allowed");
        assert_eq!(call.state, state);
    }
    assert!(call.is_terminal());
}

#[test]
fn deadlines_follow_the_state_and_its_timeout() {
    let timeouts = Timeouts {
        invite_ms: 30_000,
        negotiation_ms: 15_000,
    };
    assert_eq!(Timeouts::default(), timeouts);
    let mut call = Call::new("c1", "room-1", "alice", "bob", 100);
    assert_eq!(call.deadline_ms(&timeouts), None);
    call.apply(CallEvent::Invite, 1_000, "").expect("allowed");
    assert_eq!(call.deadline_ms(&timeouts), Some(31_000));
    call.apply(CallEvent::Ring, 2_000, "").expect("allowed");
    assert_eq!(call.deadline_ms(&timeouts), Some(32_000));
    call.apply(CallEvent::Accept, 5_000, "").expect("allowed");
    assert_eq!(call.deadline_ms(&timeouts), Some(20_000));
    // Offers do not restart the negotiation clock.
    call.apply(CallEvent::Offer, 9_000, "").expect("allowed");
    assert_eq!(call.deadline_ms(&timeouts), Some(20_000));
    let mut timed_out = call.clone();
    timed_out
        .apply(CallEvent::Timeout, 20_000, "negotiation timeout")
        .expect("allowed");
    assert_eq!(timed_out.state, CallState::Failed);
    assert_eq!(timed_out.deadline_ms(&timeouts), None);
    call.apply(CallEvent::IceComplete, 10_000, "")
        .expect("allowed");
    assert_eq!(call.deadline_ms(&timeouts), None);
    assert_eq!(
        call.apply(CallEvent::Timeout, 40_000, ""),
        Err(InvalidTransition {
            state: CallState::Connected,
            event: CallEvent::Timeout
        })
    );
}

#[test]
fn custom_timeouts_and_saturation() {
    let timeouts = Timeouts {
        invite_ms: 5,
        negotiation_ms: u64::MAX,
    };
    let mut call = call_in(CallState::Ringing);
    let entered = call.entered_at_ms;
    assert_eq!(call.deadline_ms(&timeouts), Some(entered + 5));
    call.apply(CallEvent::Accept, 7, "").expect("allowed");
    assert_eq!(call.deadline_ms(&timeouts), Some(u64::MAX));
}

#[test]
fn every_state_with_a_deadline_can_time_out() {
    let timeouts = Timeouts::default();
    for state in CallState::ALL {
        let has_deadline = call_in(state).deadline_ms(&timeouts).is_some();
        let can_time_out = next_state(state, CallEvent::Timeout).is_some();
        assert_eq!(has_deadline, can_time_out, "{state}");
    }
}

#[test]
fn names_are_unique_and_parse_back() {
    for state in CallState::ALL {
        assert_eq!(CallState::from_name(state.name()), Some(state));
        assert_eq!(state.to_string(), state.name());
    }
    assert_eq!(CallState::from_name("bogus"), None);
    let names: HashSet<_> = CallEvent::ALL.iter().map(|e| e.name()).collect();
    assert_eq!(names.len(), CallEvent::ALL.len());
}

#[test]
fn serde_round_trip() {
    let mut call = call_in(CallState::Negotiating);
    call.apply(CallEvent::Offer, 77, "offer from alice")
        .expect("allowed");
    let json = serde_json::to_string(&call).expect("serializes");
    assert!(json.contains("\"state\":\"negotiating\""), "{json}");
    let back: Call = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, call);

    let timeouts = Timeouts {
        invite_ms: 1,
        negotiation_ms: 2,
    };
    let back: Timeouts =
        serde_json::from_str(&serde_json::to_string(&timeouts).expect("ser")).expect("de");
    assert_eq!(back, timeouts);
    let partial: Timeouts = serde_json::from_str(r#"{"invite_ms":5}"#).expect("de");
    assert_eq!(partial.negotiation_ms, Timeouts::default().negotiation_ms);

    let err = InvalidTransition {
        state: CallState::Ended,
        event: CallEvent::Offer,
    };
    let back: InvalidTransition =
        serde_json::from_str(&serde_json::to_string(&err).expect("ser")).expect("de");
    assert_eq!(back, err);
    assert_eq!(
        err.to_string(),
        "call event offer is not allowed in state ended"
    );
}

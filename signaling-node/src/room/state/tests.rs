//! Pure tests of the room decision logic.

use super::*;
use crate::call::{Call, CallEvent, CallState, Timeouts};
use switchboard_protocol::{Candidate, Hangup, IceBatch, IceCandidate, Invite, InviteResult, Sdp};

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n";

fn limits() -> Limits {
    Limits {
        max_members: 3,
        max_calls: 2,
        max_sdp_bytes: 256,
        timeouts: Timeouts {
            invite_ms: 1_000,
            negotiation_ms: 2_000,
        },
        resume_window_ms: 5_000,
        event_ring: 16,
    }
}

fn room_with(users: &[&str]) -> RoomState {
    let mut room = RoomState::new("r", 3, 7, &limits());
    for u in users {
        let out = room.join(u, &format!("s-{u}"), 1, 0, &limits());
        assert!(out.error.is_none());
    }
    room
}

fn events(out: &Outcome) -> Vec<(EventKind, String, String)> {
    out.deliveries
        .iter()
        .filter_map(|d| match &d.msg {
            Message::Event(e) => Some((e.kind, e.user.clone(), e.state.clone())),
            _ => None,
        })
        .collect()
}

fn states(out: &Outcome) -> Vec<String> {
    events(out)
        .into_iter()
        .filter(|(k, _, _)| *k == EventKind::CallState)
        .map(|(_, _, s)| s)
        .collect()
}

fn invite(room: &mut RoomState, call: &str) -> Outcome {
    room.invite(
        "alice",
        "s-alice",
        Invite {
            request_id: 9,
            room: "r".into(),
            call_id: call.into(),
            from: "forged".into(),
            to: "bob".into(),
        },
        10,
        &limits(),
    )
}

fn accept(room: &mut RoomState, call: &str, accepted: bool) -> Outcome {
    room.invite_result(
        "bob",
        "s-bob",
        InviteResult {
            request_id: 2,
            room: "r".into(),
            call_id: call.into(),
            from: "x".into(),
            to: "alice".into(),
            accepted,
            reason: String::new(),
        },
        20,
    )
}

fn sdp(room: &mut RoomState, from: &str, call: &str, answer: bool, body: &str) -> Outcome {
    room.sdp(
        from,
        &format!("s-{from}"),
        Sdp {
            request_id: 3,
            room: "r".into(),
            call_id: call.into(),
            from: "forged".into(),
            to: String::new(),
            sdp: body.into(),
        },
        answer,
        30,
        &limits(),
    )
}

fn ice(room: &mut RoomState, from: &str, call: &str, candidate: &str) -> Outcome {
    room.ice(
        from,
        &format!("s-{from}"),
        IceMsg::One(IceCandidate {
            room: "r".into(),
            call_id: call.into(),
            candidate: candidate.into(),
            ..Default::default()
        }),
        40,
    )
}

fn negotiating(call: &str) -> RoomState {
    let mut room = room_with(&["alice", "bob"]);
    invite(&mut room, call);
    accept(&mut room, call, true);
    room
}

#[test]
fn join_assigns_gapless_seqs_and_tells_the_others() {
    let mut room = room_with(&["alice"]);
    let out = room.join("bob", "s-bob", 5, 100, &limits());
    assert!(out.commit);
    assert_eq!(out.attached, Some(("bob".into(), "s-bob".into())));
    let Message::Joined(joined) = &out.deliveries[0].msg else {
        panic!("first delivery is Joined: {out:?}");
    };
    assert_eq!(out.deliveries[0].to, Dest::User("bob".into()));
    assert_eq!(joined.request_id, 5);
    assert_eq!(joined.members, vec!["alice".to_owned(), "bob".to_owned()]);
    assert_eq!(joined.last_seq, 2);
    assert_eq!(out.deliveries[1].to, Dest::AllExcept("bob".into()));
    assert_eq!(
        events(&out),
        vec![(EventKind::MemberJoined, "bob".into(), String::new())]
    );
    // Joining again with the same session is idempotent and commits nothing.
    let again = room.join("bob", "s-bob", 6, 101, &limits());
    assert!(!again.commit);
    assert_eq!(room.log().last_seq(), 2);
}

#[test]
fn full_room_refuses_with_1005() {
    let mut room = room_with(&["a", "b", "c"]);
    let out = room.join("d", "s-d", 1, 0, &limits());
    assert_eq!(out.error.unwrap().code, ErrorCode::RoomFull);
    assert!(!out.commit);
    assert_eq!(room.members().count(), 3);
}

#[test]
fn newer_session_takes_the_seat() {
    let mut room = room_with(&["alice"]);
    let out = room.join("alice", "s-new", 1, 0, &limits());
    assert_eq!(out.replaced.as_deref(), Some("s-alice"));
    assert_eq!(room.member("alice").unwrap().session, "s-new");
}

#[test]
fn co_host_flow_reaches_connected_and_ends() {
    let mut room = room_with(&["alice", "bob"]);
    let out = invite(&mut room, "c1");
    assert!(out.commit);
    assert_eq!(states(&out), vec!["inviting", "ringing"]);
    let forwarded = out
        .deliveries
        .iter()
        .find_map(|d| match &d.msg {
            Message::Invite(i) => Some((d.to.clone(), i.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(forwarded.0, Dest::User("bob".into()));
    assert_eq!(forwarded.1.from, "alice", "from is overwritten");

    let out = accept(&mut room, "c1", true);
    assert_eq!(states(&out), vec!["negotiating"]);
    assert!(
        matches!(&out.deliveries[0].msg, Message::InviteResult(r) if r.from == "bob" && r.accepted)
    );
    assert_eq!(out.deliveries[0].to, Dest::User("alice".into()));

    let out = sdp(&mut room, "alice", "c1", false, SDP);
    assert!(!out.commit, "relays are not committed");
    assert!(
        matches!(&out.deliveries[0].msg, Message::Offer(s) if s.from == "alice" && s.to == "bob")
    );
    assert_eq!(out.transitions.len(), 1);
    let out = sdp(&mut room, "bob", "c1", true, SDP);
    assert!(matches!(&out.deliveries[0].msg, Message::Answer(_)));

    assert!(
        !ice(
            &mut room,
            "alice",
            "c1",
            "candidate:1 1 udp 1 1.2.3.4 5 typ host"
        )
        .commit
    );
    assert!(!ice(&mut room, "alice", "c1", "").commit);
    let out = ice(&mut room, "bob", "c1", "");
    assert!(out.commit);
    assert_eq!(states(&out), vec!["connected"]);
    assert_eq!(room.call("c1").unwrap().call.state, CallState::Connected);

    // Late candidates are still relayed once connected.
    let out = ice(&mut room, "bob", "c1", "candidate:2");
    assert!(out.error.is_none() && !out.commit);

    let out = room.hangup(
        "bob",
        "s-bob",
        Hangup {
            request_id: 4,
            room: "r".into(),
            call_id: "c1".into(),
            from: String::new(),
            reason: "bye".into(),
        },
        50,
    );
    assert_eq!(states(&out), vec!["ended"]);
    assert!(matches!(&out.deliveries[0].msg, Message::Hangup(h) if h.from == "bob"));
    assert!(room.call("c1").is_none(), "ended calls leave the room");
    // Seqs stayed gapless throughout.
    let seqs: Vec<u64> = room.log().recent().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn invalid_transitions_are_1004_and_change_nothing() {
    let mut room = room_with(&["alice", "bob", "carol"]);
    invite(&mut room, "c1");
    let before = room.log().last_seq();
    // Offer while ringing.
    let out = sdp(&mut room, "alice", "c1", false, SDP);
    assert_eq!(out.error.unwrap().code, ErrorCode::InvalidTransition);
    // The inviter cannot accept its own invite.
    let out = room.invite_result(
        "alice",
        "s-alice",
        InviteResult {
            call_id: "c1".into(),
            accepted: true,
            ..Default::default()
        },
        0,
    );
    assert_eq!(out.error.unwrap().code, ErrorCode::InvalidTransition);
    // Not a party.
    let out = ice(&mut room, "carol", "c1", "x");
    assert_eq!(out.error.unwrap().code, ErrorCode::InvalidTransition);
    // Unknown call, duplicate call id, invitee not in room, wrong session.
    assert!(sdp(&mut room, "alice", "nope", false, SDP).error.is_some());
    assert!(invite(&mut room, "c1").error.is_some());
    let out = room.invite(
        "alice",
        "s-alice",
        Invite {
            call_id: "c2".into(),
            to: "zed".into(),
            ..Default::default()
        },
        0,
        &limits(),
    );
    assert_eq!(out.error.unwrap().code, ErrorCode::InvalidTransition);
    assert!(room.leave("alice", "s-wrong", 0).error.is_some());
    assert_eq!(room.log().last_seq(), before);
    assert_eq!(room.call("c1").unwrap().call.state, CallState::Ringing);
}

#[test]
fn bad_sdp_is_1001() {
    let mut room = negotiating("c1");
    let out = sdp(&mut room, "alice", "c1", false, "hello");
    assert_eq!(out.error.unwrap().code, ErrorCode::InvalidSdp);
    let big = format!("v=0\r\n{}", "a".repeat(300));
    let out = sdp(&mut room, "alice", "c1", false, &big);
    assert_eq!(out.error.unwrap().code, ErrorCode::InvalidSdp);
}

#[test]
fn call_limit_is_1005() {
    let mut room = room_with(&["alice", "bob"]);
    assert!(invite(&mut room, "c1").error.is_none());
    assert!(invite(&mut room, "c2").error.is_none());
    assert_eq!(
        invite(&mut room, "c3").error.unwrap().code,
        ErrorCode::RoomFull
    );
}

#[test]
fn ice_complete_needs_an_answer_and_both_ends() {
    let mut room = negotiating("c1");
    sdp(&mut room, "alice", "c1", false, SDP);
    ice(&mut room, "alice", "c1", "");
    let out = ice(&mut room, "bob", "c1", "");
    assert!(!out.commit, "no answer yet");
    // End-of-candidates sent before the answer still count (the offerer often finishes
    // gathering first); completion waits for the answer.
    sdp(&mut room, "bob", "c1", true, SDP);
    assert!(ice(&mut room, "alice", "c1", "").commit);
    assert_eq!(room.call("c1").unwrap().call.state, CallState::Connected);

    // A new offer starts a new round: ends from before it no longer count.
    let mut room = negotiating("c2");
    sdp(&mut room, "alice", "c2", false, SDP);
    ice(&mut room, "bob", "c2", "");
    sdp(&mut room, "alice", "c2", false, SDP);
    sdp(&mut room, "bob", "c2", true, SDP);
    assert!(!ice(&mut room, "alice", "c2", "").commit);
    assert!(ice(&mut room, "bob", "c2", "").commit);
}

#[test]
fn batched_end_of_candidates_counts_and_v1_split() {
    let mut room = negotiating("c1");
    sdp(&mut room, "alice", "c1", false, SDP);
    sdp(&mut room, "bob", "c1", true, SDP);
    ice(&mut room, "alice", "c1", "");
    let batch = IceBatch {
        room: "r".into(),
        call_id: "c1".into(),
        from: "forged".into(),
        to: String::new(),
        candidates: vec![
            Candidate {
                candidate: "candidate:1".into(),
                sdp_mid: "0".into(),
                sdp_mline_index: 0,
            },
            Candidate::default(),
        ],
    };
    let out = room.ice("bob", "s-bob", IceMsg::Batch(batch), 5);
    assert!(out.commit);
    let Message::IceBatch(relayed) = &out.deliveries[0].msg else {
        panic!("batch relayed as a batch");
    };
    assert_eq!(relayed.from, "bob");
    let split = split_batch(relayed);
    assert_eq!(split.len(), 2);
    assert!(
        matches!(&split[1], Message::IceCandidate(c) if c.is_end_of_candidates() && c.from == "bob")
    );
}

#[test]
fn hangup_while_ringing_is_cancel_or_reject() {
    let mut room = room_with(&["alice", "bob"]);
    invite(&mut room, "c1");
    let out = room.hangup(
        "alice",
        "s-alice",
        Hangup {
            call_id: "c1".into(),
            ..Default::default()
        },
        0,
    );
    assert_eq!(out.transitions[0].event, CallEvent::Cancel);
    invite(&mut room, "c2");
    let out = accept(&mut room, "c2", false);
    assert_eq!(out.transitions[0].event, CallEvent::Reject);
    assert_eq!(states(&out), vec!["ended"]);
}

#[test]
fn leaving_ends_calls_and_acks_with_member_left() {
    let mut room = negotiating("c1");
    let out = room.leave("bob", "s-bob", 99);
    assert!(out.commit);
    assert_eq!(
        events(&out),
        vec![
            (EventKind::CallState, "alice".into(), "ended".into()),
            (EventKind::MemberLeft, "bob".into(), String::new())
        ]
    );
    assert_eq!(out.deliveries.last().unwrap().to, Dest::All);
    assert_eq!(out.removed.len(), 1);
    assert!(room.call("c1").is_none());
    room.leave("alice", "s-alice", 100);
    assert!(room.is_empty());
}

#[test]
fn timeouts_fail_calls() {
    let mut room = room_with(&["alice", "bob"]);
    invite(&mut room, "c1");
    // Ringing since 10, invite timeout 1000.
    assert_eq!(room.next_deadline(&limits()), Some(1_010));
    assert!(!room.tick(1_009, &limits()).commit);
    let out = room.tick(1_010, &limits());
    assert_eq!(states(&out), vec!["failed"]);
    assert_eq!(out.transitions[0].event, CallEvent::Timeout);
    assert_eq!(room.next_deadline(&limits()), None);

    let mut room = negotiating("c2");
    assert_eq!(room.next_deadline(&limits()), Some(2_020));
    assert_eq!(states(&room.tick(2_020, &limits())), vec!["failed"]);
}

#[test]
fn suspended_member_resumes_with_replay_and_renegotiation() {
    let mut room = negotiating("c1");
    let seen = room.log().last_seq();
    let out = room.detach("bob", "s-bob", 100);
    assert!(out.commit);
    assert_eq!(out.deliveries[0].to, Dest::AllExcept("bob".into()));
    // A stale detach is a no-op.
    assert!(!room.detach("bob", "s-other", 101).commit);
    // Something happens while bob is away.
    room.join("carol", "s-carol", 1, 150, &limits());
    assert_eq!(
        room.next_deadline(&limits()),
        Some(2_020),
        "negotiation (2020) comes before resume expiry (5100)"
    );

    let out = room.resume("bob", "s-bob", seen, 200);
    assert!(out.commit);
    assert_eq!(out.attached, Some(("bob".into(), "s-bob".into())));
    let to_bob: Vec<(EventKind, String)> = out
        .deliveries
        .iter()
        .filter(|d| d.to == Dest::User("bob".into()))
        .filter_map(|d| match &d.msg {
            Message::Event(e) => Some((e.kind, e.state.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        to_bob,
        vec![
            (EventKind::MemberSuspended, String::new()),
            (EventKind::MemberJoined, String::new()),
            (EventKind::MemberResumed, String::new()),
            (EventKind::CallState, "negotiating".into()),
        ]
    );
    let to_others = out
        .deliveries
        .iter()
        .filter(|d| d.to == Dest::AllExcept("bob".into()))
        .count();
    assert_eq!(to_others, 2);
    assert_eq!(room.call("c1").unwrap().call.entered_at_ms, 200);
    assert_eq!(room.call("c1").unwrap().call.state, CallState::Negotiating);
}

#[test]
fn resume_after_eviction_sends_a_resync() {
    let mut room = room_with(&["alice", "bob"]);
    room.detach("bob", "s-bob", 1);
    for i in 0..20 {
        room.join(
            &format!("u{i}"),
            "s",
            0,
            2,
            &Limits {
                max_members: 100,
                ..limits()
            },
        );
    }
    let before = room.log().last_seq();
    let out = room.resume("bob", "s-bob", 1, 3);
    let to_bob: Vec<&Message> = out
        .deliveries
        .iter()
        .filter(|d| d.to == Dest::User("bob".into()))
        .map(|d| &d.msg)
        .collect();
    assert!(
        matches!(to_bob[0], Message::Joined(j) if j.request_id == 0 && j.last_seq == before),
        "the resync comes first and stands for the log before the resume: {to_bob:?}"
    );
    // Only the resume's own MemberResumed follows it: nothing at or below the snapshot's seq.
    let after: Vec<(EventKind, u64)> = to_bob[1..]
        .iter()
        .filter_map(|m| match m {
            Message::Event(e) => Some((e.kind, e.seq)),
            _ => None,
        })
        .collect();
    assert_eq!(after, vec![(EventKind::MemberResumed, before + 1)]);
    assert!(room.resume("bob", "s-nope", 1, 3).error.is_some());
}

#[test]
fn resume_window_expiry_is_peer_lost() {
    let mut room = negotiating("c1");
    room.detach("bob", "s-bob", 100);
    let deadline = room.next_deadline(&limits()).unwrap();
    assert_eq!(deadline, 2_020, "negotiation deadline comes first");
    room.tick(2_020, &limits());
    let mut room = room_with(&["alice", "bob"]);
    invite(&mut room, "c1");
    accept(&mut room, "c1", true);
    sdp(&mut room, "alice", "c1", false, SDP);
    sdp(&mut room, "bob", "c1", true, SDP);
    ice(&mut room, "alice", "c1", "");
    ice(&mut room, "bob", "c1", "");
    room.detach("bob", "s-bob", 100);
    assert_eq!(room.next_deadline(&limits()), Some(5_100));
    let out = room.tick(5_100, &limits());
    assert_eq!(out.transitions[0].event, CallEvent::PeerLost);
    assert_eq!(states(&out), vec!["failed"]);
    assert_eq!(out.removed[0].user, "bob");
    assert!(room.member("bob").is_none());
}

#[test]
fn pending_invite_rings_on_resume() {
    let mut room = room_with(&["alice", "bob"]);
    room.detach("bob", "s-bob", 1);
    let out = invite(&mut room, "c1");
    assert_eq!(states(&out), vec!["inviting"]);
    let out = room.resume("bob", "s-bob", room.log().last_seq(), 2);
    assert!(
        out.deliveries
            .iter()
            .any(|d| matches!(&d.msg, Message::Invite(i) if i.from == "alice"))
    );
    assert_eq!(room.call("c1").unwrap().call.state, CallState::Ringing);
}

#[test]
fn a_ringing_invitee_that_resumes_gets_the_invite_again() {
    // The Invite frame may have gone to a connection that dropped; the call is committed
    // Ringing and a replay carries only room events, so resuming must ring again
    // (docs/reliability.md, finding 3).
    let mut room = room_with(&["alice", "bob"]);
    invite(&mut room, "c1");
    assert_eq!(room.call("c1").unwrap().call.state, CallState::Ringing);
    room.detach("bob", "s-bob", 1);
    let seq = room.log().last_seq();
    let out = room.resume("bob", "s-bob", seq, 2);
    let invites: Vec<_> = out
        .deliveries
        .iter()
        .filter(|d| matches!(&d.msg, Message::Invite(i) if i.call_id == "c1" && i.from == "alice"))
        .collect();
    assert_eq!(invites.len(), 1, "{:?}", out.deliveries);
    assert!(matches!(&invites[0].to, Dest::User(u) if u == "bob"));
    assert_eq!(room.call("c1").unwrap().call.state, CallState::Ringing);
    assert!(states(&out).is_empty(), "no new call transition: {out:?}");
}

#[test]
fn rollback_restores_members_calls_and_log() {
    let mut room = room_with(&["alice", "bob"]);
    let seq = room.log().last_seq();
    room.begin();
    invite(&mut room, "c1");
    room.join("carol", "s-carol", 1, 0, &limits());
    room.rollback();
    assert_eq!(room.log().last_seq(), seq);
    assert!(room.call("c1").is_none());
    assert!(room.member("carol").is_none());
    // The next event reuses the rolled-back seq: still gapless.
    let out = room.join("carol", "s-carol", 1, 0, &limits());
    assert!(matches!(&out.deliveries[0].msg, Message::Joined(j) if j.last_seq == seq + 1));
}

#[test]
fn restore_suspends_connected_members_and_refreshes_negotiation() {
    let room = negotiating("c1");
    let members: Vec<Member> = room.members().cloned().collect();
    let calls: Vec<Call> = room.calls().map(|c| c.call.clone()).collect();
    let log = room.log().clone();
    let restored = RoomState::from_parts("r".into(), 3, 8, members, calls, log, 9_000);
    assert!(
        restored
            .members()
            .all(|m| m.presence == Presence::Suspended { since_ms: 9_000 })
    );
    assert_eq!(restored.call("c1").unwrap().call.entered_at_ms, 9_000);
    assert_eq!(restored.epoch(), 8);
}

#[test]
fn an_idle_room_keeps_exactly_sized_seats() {
    // Memory regression guard: every idle room holds these for the life of its members.
    let mut room = room_with(&["alice", "bob"]);
    assert_eq!(room.members.capacity(), 2);
    assert_eq!(room.calls.capacity(), 0);
    room.begin();
    invite(&mut room, "c1");
    room.settle();
    assert_eq!(room.calls.capacity(), 1);
    assert!(
        room.checkpoint.is_none(),
        "a settled room keeps no checkpoint copy"
    );
}

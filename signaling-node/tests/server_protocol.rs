//! Server integration tests over real sockets: the co-host call flow, version negotiation,
//! and every bad-input case (each gets its Error code or close code while the other
//! connections keep working).

mod common;

use common::*;
use switchboard_protocol::auth::{self, Claims, JwtSecret, RoomGrant};
use switchboard_protocol::{
    Candidate, ErrorCode, EventKind, FrameType, Hangup, Hello, IceBatch, IceCandidate, Invite,
    InviteResult, Join, Leave, Message, Ping, ProtocolVersion, Sdp,
};

fn invite(room: &str, call: &str, to: &str) -> Message {
    Message::Invite(Invite {
        request_id: 10,
        room: room.into(),
        call_id: call.into(),
        from: "someone-else".into(),
        to: to.into(),
    })
}

fn answer_invite(room: &str, call: &str, accepted: bool) -> Message {
    Message::InviteResult(InviteResult {
        request_id: 11,
        room: room.into(),
        call_id: call.into(),
        from: String::new(),
        to: String::new(),
        accepted,
        reason: String::new(),
    })
}

fn sdp(room: &str, call: &str, body: &str) -> Sdp {
    Sdp {
        request_id: 12,
        room: room.into(),
        call_id: call.into(),
        from: "forged".into(),
        to: String::new(),
        sdp: body.into(),
    }
}

fn ice(room: &str, call: &str, candidate: &str) -> Message {
    Message::IceCandidate(IceCandidate {
        room: room.into(),
        call_id: call.into(),
        from: "forged".into(),
        to: String::new(),
        candidate: candidate.into(),
        sdp_mid: "0".into(),
        sdp_mline_index: 0,
    })
}

/// Two hosts in `room` with a call `c1` in Negotiating; events consumed.
async fn negotiating(node: &TestNode, room: &str) -> (Client, Client) {
    let mut alice = node.client("alice", &[room]).await;
    let mut bob = node.client("bob", &[room]).await;
    alice.join(room, 1).await;
    bob.join(room, 1).await;
    alice
        .expect_member_event(EventKind::MemberJoined, "bob")
        .await;
    alice.send(&invite(room, "c1", "bob")).await;
    for c in [&mut alice] {
        c.expect_call_state("c1", "inviting").await;
        c.expect_call_state("c1", "ringing").await;
    }
    // The invitee sees the call become Inviting, then the Invite, then Ringing.
    bob.expect_call_state("c1", "inviting").await;
    assert!(matches!(bob.recv().await, Message::Invite(_)));
    bob.expect_call_state("c1", "ringing").await;
    bob.send(&answer_invite(room, "c1", true)).await;
    assert!(matches!(alice.recv().await, Message::InviteResult(r) if r.accepted));
    alice.expect_call_state("c1", "negotiating").await;
    bob.expect_call_state("c1", "negotiating").await;
    (alice, bob)
}

#[tokio::test]
async fn co_host_call_flow_end_to_end() {
    let node = TestNode::start(|_| {}).await;
    let mut alice = node.client("alice", &["stage"]).await;
    let mut bob = node.client("bob", &["*"]).await;
    assert_eq!(alice.version.as_deref(), Some("switchboard.v2"));
    let w = alice.welcome.clone().unwrap();
    assert_eq!(
        (w.version, w.node.as_str(), w.heartbeat_ms, w.resumed),
        (2, "test-node", 30_000, false)
    );
    assert_eq!(w.session.len(), 32);

    let joined = alice.join("stage", 7).await;
    assert_eq!((joined.request_id, joined.last_seq), (7, 1));
    assert_eq!(joined.members, vec!["alice".to_string()]);
    let joined = bob.join("stage", 8).await;
    assert_eq!(joined.members, vec!["alice".to_string(), "bob".to_string()]);
    assert_eq!(joined.last_seq, 2);
    let e = alice
        .expect_member_event(EventKind::MemberJoined, "bob")
        .await;
    assert_eq!(e.seq, 2);

    // Invite → Inviting, delivered → Ringing.
    alice.send(&invite("stage", "c1", "bob")).await;
    assert_eq!(alice.expect_call_state("c1", "inviting").await.seq, 3);
    assert_eq!(alice.expect_call_state("c1", "ringing").await.seq, 4);
    assert_eq!(bob.expect_call_state("c1", "inviting").await.seq, 3);
    let Message::Invite(inv) = bob.recv().await else {
        panic!("bob gets the invite")
    };
    assert_eq!(
        (inv.from.as_str(), inv.to.as_str(), inv.call_id.as_str()),
        ("alice", "bob", "c1")
    );
    assert_eq!(bob.expect_call_state("c1", "ringing").await.seq, 4);
    // Accept → Negotiating.
    bob.send(&answer_invite("stage", "c1", true)).await;
    let Message::InviteResult(r) = alice.recv().await else {
        panic!("alice gets the answer")
    };
    assert!(r.accepted);
    assert_eq!(r.from, "bob");
    for c in [&mut alice, &mut bob] {
        c.expect_call_state("c1", "negotiating").await;
    }
    // Offer / answer relayed with `from` overwritten.
    alice.send(&Message::Offer(sdp("stage", "c1", SDP))).await;
    let Message::Offer(o) = bob.recv().await else {
        panic!("offer relayed")
    };
    assert_eq!(
        (o.from.as_str(), o.to.as_str(), o.sdp.as_str()),
        ("alice", "bob", SDP)
    );
    bob.send(&Message::Answer(sdp("stage", "c1", SDP))).await;
    assert!(matches!(alice.recv().await, Message::Answer(a) if a.from == "bob"));
    // Trickle ICE, then end-of-candidates from both → Connected.
    alice
        .send(&ice(
            "stage",
            "c1",
            "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
        ))
        .await;
    assert!(
        matches!(bob.recv().await, Message::IceCandidate(c) if c.from == "alice" && !c.candidate.is_empty())
    );
    alice.send(&ice("stage", "c1", "")).await;
    assert!(matches!(bob.recv().await, Message::IceCandidate(c) if c.is_end_of_candidates()));
    bob.send(&ice("stage", "c1", "")).await;
    assert!(matches!(alice.recv().await, Message::IceCandidate(c) if c.from == "bob"));
    for c in [&mut alice, &mut bob] {
        c.expect_call_state("c1", "connected").await;
    }
    // Hangup → Ended.
    bob.send(&Message::Hangup(Hangup {
        request_id: 13,
        room: "stage".into(),
        call_id: "c1".into(),
        from: String::new(),
        reason: "done".into(),
    }))
    .await;
    assert!(
        matches!(alice.recv().await, Message::Hangup(h) if h.from == "bob" && h.reason == "done")
    );
    let ended = alice.expect_call_state("c1", "ended").await;
    bob.expect_call_state("c1", "ended").await;
    assert_eq!(ended.seq, 7, "seqs are gapless");

    // Leave → MemberLeft to everyone (the leaver's acknowledgement).
    bob.send(&Message::Leave(Leave {
        request_id: 14,
        room: "stage".into(),
    }))
    .await;
    bob.expect_member_event(EventKind::MemberLeft, "bob").await;
    alice
        .expect_member_event(EventKind::MemberLeft, "bob")
        .await;

    let m = node.metrics();
    assert!(
        m.contains(
            "switchboard_session_transitions_total{from=\"negotiating\",to=\"connected\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains("switchboard_frames_in_total{type=\"offer\"} 1"));
    assert!(node.metric("switchboard_join_latency_seconds_count") >= 2.0);
    assert_eq!(node.metric("switchboard_rooms "), 1.0);
    // The room's snapshot is in the store.
    let shard = node.registry().shard_of("stage");
    let rooms = signaling_node::store::RoomStore::load_shard(&*node.store, shard)
        .await
        .unwrap();
    assert_eq!(rooms.len(), 1);
    // Last member leaves → the room stops and its snapshot is removed.
    alice
        .send(&Message::Leave(Leave {
            request_id: 15,
            room: "stage".into(),
        }))
        .await;
    alice
        .expect_member_event(EventKind::MemberLeft, "alice")
        .await;
    alice.ping(1).await;
    assert!(
        signaling_node::store::RoomStore::load_shard(&*node.store, shard)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(node.registry().room_count(), 0);
}

#[tokio::test]
async fn v1_peer_gets_a_batch_as_single_candidates_and_v1_cannot_send_batches() {
    let node = TestNode::start(|_| {}).await;
    let mut alice = node.client("alice", &["r"]).await;
    let mut bob = node.client_v1("bob", &["r"]).await;
    assert_eq!(bob.version.as_deref(), Some("switchboard.v1"));
    assert_eq!(bob.welcome.as_ref().unwrap().version, 1);
    alice.join("r", 1).await;
    bob.join("r", 1).await;
    alice
        .expect_member_event(EventKind::MemberJoined, "bob")
        .await;
    alice.send(&invite("r", "c1", "bob")).await;
    bob.recv_until(|m| matches!(m, Message::Invite(_)).then_some(()))
        .await;
    bob.send(&answer_invite("r", "c1", true)).await;
    bob.recv_until(|m| matches!(m, Message::Event(e) if e.state == "negotiating").then_some(()))
        .await;
    alice
        .recv_until(|m| matches!(m, Message::Event(e) if e.state == "negotiating").then_some(()))
        .await;

    let batch = Message::IceBatch(IceBatch {
        room: "r".into(),
        call_id: "c1".into(),
        from: String::new(),
        to: String::new(),
        candidates: vec![
            Candidate {
                candidate: "candidate:1".into(),
                sdp_mid: "0".into(),
                sdp_mline_index: 0,
            },
            Candidate {
                candidate: "candidate:2".into(),
                sdp_mid: "0".into(),
                sdp_mline_index: 0,
            },
        ],
    });
    alice.send(&batch).await;
    for expected in ["candidate:1", "candidate:2"] {
        assert!(
            matches!(bob.recv().await, Message::IceCandidate(c) if c.candidate == expected && c.from == "alice")
        );
    }
    // v1 sender: IceBatch is refused with 1009.
    bob.send(&batch).await;
    assert_eq!(
        bob.expect_error().await.code,
        ErrorCode::VersionUnsupported.code()
    );
    bob.send(&ice("r", "c1", "candidate:3")).await;
    assert!(matches!(alice.recv().await, Message::IceCandidate(c) if c.candidate == "candidate:3"));
}

#[tokio::test]
async fn version_negotiation() {
    let node = TestNode::start(|_| {}).await;
    let both = Client::connect(node.addr, &["switchboard.v1", "switchboard.v2"]).await;
    assert_eq!(both.version.as_deref(), Some("switchboard.v2"));
    let only_v1 = Client::connect(node.addr, &["switchboard.v1"]).await;
    assert_eq!(only_v1.version.as_deref(), Some("switchboard.v1"));
    let mixed = Client::connect(node.addr, &["chat", "switchboard.v1"]).await;
    assert_eq!(mixed.version.as_deref(), Some("switchboard.v1"));

    // X-Proto-Version: the server answers the version in the same header.
    let mut x = Client::try_connect(node.addr, &[], &[("x-proto-version", "1")])
        .await
        .unwrap();
    assert_eq!(x.version, None);
    let w = x.hello(&token("u", &["*"]), None).await;
    assert_eq!(w.version, ProtocolVersion::V1.as_u8());

    // Nothing in common → 426 with the supported list.
    for (protocols, headers) in [
        (vec!["switchboard.v9"], vec![]),
        (vec![], vec![("x-proto-version", "7")]),
        (vec![], vec![]),
    ] {
        match Client::try_connect(node.addr, &protocols, &headers).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 426);
                assert_eq!(
                    resp.headers()["x-supported-protocols"],
                    "switchboard.v2, switchboard.v1"
                );
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("switchboard.v2, switchboard.v1"), "{body}");
            }
            other => panic!("expected 426, got {:?}", other.map(|c| c.version)),
        }
    }
    // Wrong path → 404.
    let req = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut r = format!("ws://{}/other", node.addr)
            .into_client_request()
            .unwrap();
        r.headers_mut()
            .insert("sec-websocket-protocol", "switchboard.v2".parse().unwrap());
        r
    };
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected 404, got ok={}", other.is_ok()),
    }
    assert!(node.metric("switchboard_handshake_failures_total{reason=\"version\"}") >= 3.0);
}

fn raw_frame(type_byte: u8, body: &[u8]) -> Vec<u8> {
    let len = (1 + body.len() + 4) as u32;
    let mut out = len.to_be_bytes().to_vec();
    out.push(type_byte);
    out.extend_from_slice(body);
    let mut h = crc32fast::Hasher::new();
    h.update(&[type_byte]);
    h.update(body);
    out.extend_from_slice(&h.finalize().to_be_bytes());
    out
}

fn ping_bytes() -> Vec<u8> {
    switchboard_protocol::Encoder::new()
        .encode_to_vec(&Message::Ping(Ping { nonce: 1 }))
        .unwrap()
}

#[tokio::test]
async fn each_bad_frame_gets_1008_and_others_keep_working() {
    let node = TestNode::start(|t| t.max_bad_frames = 100).await;
    let mut bystander = node.client("bystander", &["*"]).await;
    let mut bad = node.client("mallory", &["*"]).await;
    let valid = ping_bytes();
    let mut crc_broken = valid.clone();
    *crc_broken.last_mut().unwrap() ^= 0xff;
    let mut two = valid.clone();
    two.extend_from_slice(&valid);
    let truncated = valid[..valid.len() - 3].to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length < 5", vec![0, 0, 0, 3, 14, 0, 0]),
        ("crc mismatch", crc_broken),
        ("unknown type", raw_frame(99, &[])),
        (
            "unverifiable body",
            raw_frame(FrameType::Join as u8, &[0xff; 12]),
        ),
        ("two frames in one message", two),
        ("truncated", truncated),
        ("empty message", vec![]),
    ];
    for (i, (name, bytes)) in cases.into_iter().enumerate() {
        bad.send_raw(bytes).await;
        let err = bad.expect_error().await;
        assert_eq!(err.code, ErrorCode::BadFrame.code(), "{name}: {err:?}");
        bad.ping(i as u64).await;
        bystander.ping(100 + i as u64).await;
    }
    // A text message.
    use futures::SinkExt;
    bad.ws
        .send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    assert_eq!(bad.expect_error().await.code, ErrorCode::BadFrame.code());
    // Server-only frame types from a client.
    bad.send(&Message::Hello(Hello::default())).await;
    assert_eq!(bad.expect_error().await.code, ErrorCode::BadFrame.code());
    bad.ping(50).await;
    assert!(node.metric("switchboard_frame_errors_total{code=\"1008\"}") >= 9.0);
    assert!(node.metric("switchboard_frames_in_total{type=\"unknown\"}") >= 1.0);
}

#[tokio::test]
async fn repeated_bad_frames_close_1002_and_oversized_closes_1009() {
    let node = TestNode::start(|t| t.max_bad_frames = 3).await;
    let mut bystander = node.client("bystander", &["*"]).await;
    let mut bad = node.client("mallory", &["*"]).await;
    for _ in 0..3 {
        bad.send_raw(vec![0, 0, 0, 1, 0]).await;
    }
    assert_eq!(bad.expect_close().await, Some(1002));

    // A length field above 64 KiB.
    let mut big_len = node.client("mallory2", &["*"]).await;
    big_len
        .send_raw(vec![0x00, 0x01, 0x00, 0x01, 14, 0, 0, 0, 0])
        .await;
    let err = big_len.expect_error().await;
    assert_eq!(err.code, ErrorCode::BadFrame.code());
    assert_eq!(big_len.expect_close().await, Some(1009));

    // A WebSocket message above the frame cap.
    let mut huge = node.client("mallory3", &["*"]).await;
    huge.send_raw(vec![0; 70_000]).await;
    assert_eq!(huge.expect_close().await, Some(1009));

    bystander.ping(1).await;
}

#[tokio::test]
async fn frames_before_hello_and_hello_timeout() {
    let node = TestNode::start(|t| t.hello_timeout = std::time::Duration::from_millis(1000)).await;
    let mut early = Client::connect(node.addr, &["switchboard.v2"]).await;
    early
        .send(&Message::Join(Join {
            request_id: 1,
            room: "r".into(),
        }))
        .await;
    assert_eq!(early.expect_error().await.code, ErrorCode::BadFrame.code());
    // Still allowed to say Hello afterwards.
    early.hello(&token("u", &["*"]), None).await;
    early.ping(1).await;

    let mut silent = Client::connect(node.addr, &["switchboard.v2"]).await;
    let err = silent.expect_error().await;
    assert_eq!(err.code, ErrorCode::Timeout.code());
    assert_eq!(silent.expect_close().await, Some(1008));
    early.ping(2).await;
}

#[tokio::test]
async fn bad_tokens_get_1003_then_close_1008() {
    let node = TestNode::start(|_| {}).await;
    let mut bystander = node.client("bystander", &["*"]).await;
    let now = auth::unix_now();
    let expired = auth::mint(&secret(), &Claims::new("u", RoomGrant::Any, now - 7200, 60));
    let forged = auth::mint(
        &JwtSecret::new(b"not-the-secret".to_vec()).unwrap(),
        &Claims::new("u", RoomGrant::Any, now, 60),
    );
    for (name, token) in [
        ("expired", expired),
        ("forged", forged),
        ("garbage", "x.y.z".to_string()),
    ] {
        let mut c = Client::connect(node.addr, &["switchboard.v2"]).await;
        c.send(&Message::Hello(Hello {
            token,
            versions: vec![2],
            resume: None,
        }))
        .await;
        let err = c.expect_error().await;
        assert_eq!(err.code, ErrorCode::AuthFailed.code(), "{name}");
        assert_eq!(c.expect_close().await, Some(1008), "{name}");
        bystander.ping(1).await;
    }
    // A token for another room: Join is refused with 1003, the connection stays.
    let mut c = node.client("u", &["room-a"]).await;
    c.send(&Message::Join(Join {
        request_id: 4,
        room: "room-b".into(),
    }))
    .await;
    let err = c.expect_error().await;
    assert_eq!(
        (err.code, err.request_id),
        (ErrorCode::AuthFailed.code(), 4)
    );
    c.join("room-a", 5).await;
    // Hello offering only a version other than the negotiated one.
    let mut c = Client::connect(node.addr, &["switchboard.v1"]).await;
    c.send(&Message::Hello(Hello {
        token: token("u", &["*"]),
        versions: vec![2],
        resume: None,
    }))
    .await;
    assert_eq!(
        c.expect_error().await.code,
        ErrorCode::VersionUnsupported.code()
    );
    assert_eq!(c.expect_close().await, Some(1002));
}

#[tokio::test]
async fn invalid_transition_1004_and_invalid_sdp_1001() {
    let node = TestNode::start(|_| {}).await;
    let mut alice = node.client("alice", &["r"]).await;
    let mut bob = node.client("bob", &["r"]).await;
    alice.join("r", 1).await;
    bob.join("r", 1).await;
    alice
        .expect_member_event(EventKind::MemberJoined, "bob")
        .await;
    alice.send(&invite("r", "c1", "bob")).await;
    alice.expect_call_state("c1", "inviting").await;
    alice.expect_call_state("c1", "ringing").await;
    // Offer while ringing: 1004, nothing relayed.
    alice.send(&Message::Offer(sdp("r", "c1", SDP))).await;
    let err = alice.expect_error().await;
    assert_eq!(
        (err.code, err.request_id),
        (ErrorCode::InvalidTransition.code(), 12)
    );
    // Not joined / unknown call.
    alice.send(&invite("elsewhere", "c2", "bob")).await;
    assert_eq!(
        alice.expect_error().await.code,
        ErrorCode::InvalidTransition.code()
    );

    bob.recv_until(|m| matches!(m, Message::Event(e) if e.state == "ringing").then_some(()))
        .await;
    bob.send(&answer_invite("r", "c1", true)).await;
    alice
        .recv_until(|m| matches!(m, Message::Event(e) if e.state == "negotiating").then_some(()))
        .await;
    alice
        .send(&Message::Offer(sdp("r", "c1", "not an sdp")))
        .await;
    let err = alice.expect_error().await;
    assert_eq!(err.code, ErrorCode::InvalidSdp.code());
    alice.send(&Message::Offer(sdp("r", "c1", SDP))).await;
    bob.recv_until(|m| matches!(m, Message::Offer(o) if o.sdp == SDP).then_some(()))
        .await;
}

#[tokio::test]
async fn flooding_is_rate_limited_with_1007_then_closed_1008() {
    let node = TestNode::start(|t| {
        t.rate_limit = 1;
        t.rate_burst = 5;
        t.flood_close_after = 20;
    })
    .await;
    let mut bystander = node.client("bystander", &["*"]).await;
    let mut flooder = node.client("flooder", &["*"]).await;
    let ping = ping_bytes();
    for _ in 0..8 {
        flooder.send_raw(ping.clone()).await;
    }
    let mut pongs = 0;
    let err = loop {
        match flooder.recv().await {
            Message::Pong(_) => pongs += 1,
            Message::Error(e) => break e,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(err.code, ErrorCode::RateLimited.code());
    assert!(pongs <= 5, "{pongs} pongs");
    bystander.ping(1).await;
    for _ in 0..30 {
        flooder.send_raw(ping.clone()).await;
    }
    assert_eq!(flooder.expect_close().await, Some(1008));
    bystander.ping(2).await;
}

#[tokio::test]
async fn room_size_limit_is_1005() {
    let node = TestNode::start(|t| t.max_room_members = 2).await;
    let mut a = node.client("a", &["*"]).await;
    let mut b = node.client("b", &["*"]).await;
    let mut c = node.client("c", &["*"]).await;
    a.join("r", 1).await;
    b.join("r", 1).await;
    c.send(&Message::Join(Join {
        request_id: 9,
        room: "r".into(),
    }))
    .await;
    let err = c.expect_error().await;
    assert_eq!((err.code, err.request_id), (ErrorCode::RoomFull.code(), 9));
}

#[tokio::test]
async fn negotiation_ready_pair_survives_a_bad_neighbour() {
    let node = TestNode::start(|_| {}).await;
    let (mut alice, mut bob) = negotiating(&node, "r").await;
    let mut noisy = node.client("noisy", &["*"]).await;
    noisy.send_raw(vec![1, 2, 3]).await;
    noisy.expect_error().await;
    alice.send(&Message::Offer(sdp("r", "c1", SDP))).await;
    assert!(matches!(bob.recv().await, Message::Offer(_)));
}

/// Routes every room of shard `remote_shard` to another node and `unavailable_shard` nowhere.
struct SplitOwnership {
    remote_shard: u32,
    unavailable_shard: u32,
}

impl signaling_node::routing::OwnershipView for SplitOwnership {
    fn owner_of(&self, shard: u32) -> signaling_node::routing::Ownership {
        use signaling_node::routing::Ownership;
        if shard == self.remote_shard {
            Ownership::Remote {
                url: "ws://owner.example:7000/ws".into(),
            }
        } else if shard == self.unavailable_shard {
            Ownership::Unavailable
        } else {
            Ownership::Local { epoch: 3 }
        }
    }

    fn shard_count(&self) -> u32 {
        16
    }
}

fn room_in_shard(shard: u32) -> String {
    (0..)
        .map(|i| format!("room-{i}"))
        .find(|r| switchboard_contract::shard::shard_of(r, 16) == shard)
        .unwrap()
}

#[tokio::test]
async fn rooms_owned_elsewhere_are_redirected_before_anything_else() {
    let store = std::sync::Arc::new(signaling_node::store::MemoryStore::new());
    let ownership: signaling_node::routing::SharedOwnership = std::sync::Arc::new(SplitOwnership {
        remote_shard: 1,
        unavailable_shard: 2,
    });
    let node = TestNode::start_full(settings(|_| {}), store.clone(), store, ownership).await;
    let (remote, unavailable, local) = (room_in_shard(1), room_in_shard(2), room_in_shard(3));

    // Hello with a token naming a remote room: Redirect, then close, no Welcome.
    let mut c = Client::connect(node.addr, &["switchboard.v2"]).await;
    c.send(&Message::Hello(Hello {
        token: token("u", &[&remote]),
        versions: vec![],
        resume: None,
    }))
    .await;
    let Message::Redirect(r) = c.recv().await else {
        panic!("expected Redirect")
    };
    assert_eq!(
        (r.room.as_str(), r.url.as_str()),
        (remote.as_str(), "ws://owner.example:7000/ws")
    );
    assert_eq!(c.expect_close().await, Some(1000));

    // A room whose shard has no owner right now: 1010, retry later.
    let mut c = Client::connect(node.addr, &["switchboard.v2"]).await;
    c.send(&Message::Hello(Hello {
        token: token("u", &[&unavailable]),
        versions: vec![],
        resume: None,
    }))
    .await;
    assert_eq!(c.expect_error().await.code, ErrorCode::Draining.code());
    assert_eq!(c.expect_close().await, Some(1013));

    // With a "*" token, routing happens per Join; the connection stays usable.
    let mut c = node.client("u", &["*"]).await;
    c.send(&Message::Join(Join {
        request_id: 5,
        room: remote.clone(),
    }))
    .await;
    let Message::Redirect(r) = c.recv().await else {
        panic!("expected Redirect")
    };
    assert_eq!(r.request_id, 5);
    c.send(&Message::Join(Join {
        request_id: 6,
        room: unavailable,
    }))
    .await;
    let err = c.expect_error().await;
    assert_eq!((err.code, err.request_id), (ErrorCode::Draining.code(), 6));
    c.join(&local, 7).await;
    let info = node
        .registry()
        .room(&local)
        .unwrap()
        .inspect()
        .await
        .unwrap();
    assert_eq!(
        info.epoch, 3,
        "rooms carry the epoch of their shard's owner"
    );
}

#[tokio::test]
async fn room_limit_per_node_is_1010() {
    let node = TestNode::start(|t| t.max_rooms = 1).await;
    let mut c = node.client("u", &["*"]).await;
    c.join("first", 1).await;
    c.send(&Message::Join(Join {
        request_id: 2,
        room: "second".into(),
    }))
    .await;
    let err = c.expect_error().await;
    assert_eq!((err.code, err.request_id), (ErrorCode::Draining.code(), 2));
}

//! Codec tests: fixed round trips of every frame type and hand-written bad frames.

use super::*;

/// One example of every frame type with non-default values.
pub(super) fn samples() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            token: "tok.en.sig".into(),
            versions: vec![2, 1],
            resume: Some(Resume {
                session: "s-1".into(),
                last_seq: 42,
            }),
        }),
        Message::Welcome(Welcome {
            session: "s-1".into(),
            version: 2,
            node: "node-a".into(),
            heartbeat_ms: 15_000,
            resumed: true,
        }),
        Message::Join(Join {
            request_id: 1,
            room: "room-1".into(),
        }),
        Message::Joined(Joined {
            request_id: 1,
            room: "room-1".into(),
            members: vec!["alice".into(), "bob".into()],
            last_seq: 7,
        }),
        Message::Leave(Leave {
            request_id: 2,
            room: "room-1".into(),
        }),
        Message::Invite(Invite {
            request_id: 3,
            room: "room-1".into(),
            call_id: "c1".into(),
            from: "alice".into(),
            to: "bob".into(),
        }),
        Message::InviteResult(InviteResult {
            request_id: 4,
            room: "room-1".into(),
            call_id: "c1".into(),
            from: "bob".into(),
            to: "alice".into(),
            accepted: true,
            reason: "ok".into(),
        }),
        Message::Offer(Sdp {
            request_id: 5,
            room: "room-1".into(),
            call_id: "c1".into(),
            from: "alice".into(),
            to: "bob".into(),
            sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n".into(),
        }),
        Message::Answer(Sdp {
            request_id: 6,
            room: "room-1".into(),
            call_id: "c1".into(),
            from: "bob".into(),
            to: "alice".into(),
            sdp: "v=0\r\n".into(),
        }),
        Message::IceCandidate(IceCandidate {
            room: "room-1".into(),
            call_id: "c1".into(),
            from: "alice".into(),
            to: "bob".into(),
            candidate: "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host".into(),
            sdp_mid: "0".into(),
            sdp_mline_index: 0,
        }),
        Message::IceBatch(IceBatch {
            room: "room-1".into(),
            call_id: "c1".into(),
            from: "bob".into(),
            to: "alice".into(),
            candidates: vec![
                Candidate {
                    candidate: "candidate:2 1 udp 1 127.0.0.2 5001 typ host".into(),
                    sdp_mid: "0".into(),
                    sdp_mline_index: 0,
                },
                Candidate {
                    candidate: String::new(),
                    sdp_mid: "1".into(),
                    sdp_mline_index: 1,
                },
            ],
        }),
        Message::Hangup(Hangup {
            request_id: 7,
            room: "room-1".into(),
            call_id: "c1".into(),
            from: "alice".into(),
            reason: "bye".into(),
        }),
        Message::Event(Event {
            room: "room-1".into(),
            seq: 9,
            kind: EventKind::CallState,
            user: "alice".into(),
            call_id: "c1".into(),
            state: "connected".into(),
            at_ms: 1_700_000_000_000,
        }),
        Message::Ping(Ping { nonce: u64::MAX }),
        Message::Pong(Pong { nonce: 1 }),
        Message::Redirect(Redirect {
            request_id: 8,
            room: "room-2".into(),
            url: "ws://127.0.0.2:7000/ws".into(),
        }),
        Message::Migrate(Migrate {
            room: "room-2".into(),
            url: "ws://127.0.0.3:7000/ws".into(),
            resume_token: "rt".into(),
        }),
        Message::Error(ErrorFrame {
            code: ErrorCode::InvalidTransition.code(),
            message: "no".into(),
            request_id: 9,
        }),
    ]
}

/// The default (all-empty) value of every frame type.
fn empty_samples() -> Vec<Message> {
    vec![
        Message::Hello(Hello::default()),
        Message::Welcome(Welcome::default()),
        Message::Join(Join::default()),
        Message::Joined(Joined::default()),
        Message::Leave(Leave::default()),
        Message::Invite(Invite::default()),
        Message::InviteResult(InviteResult::default()),
        Message::Offer(Sdp::default()),
        Message::Answer(Sdp::default()),
        Message::IceCandidate(IceCandidate::default()),
        Message::IceBatch(IceBatch::default()),
        Message::Hangup(Hangup::default()),
        Message::Event(Event::default()),
        Message::Ping(Ping::default()),
        Message::Pong(Pong::default()),
        Message::Redirect(Redirect::default()),
        Message::Migrate(Migrate::default()),
        Message::Error(ErrorFrame::default()),
    ]
}

#[test]
fn samples_cover_every_frame_type_in_order() {
    let types: Vec<_> = samples().iter().map(Message::frame_type).collect();
    assert_eq!(types, FrameType::ALL);
    let types: Vec<_> = empty_samples().iter().map(Message::frame_type).collect();
    assert_eq!(types, FrameType::ALL);
}

#[test]
fn every_sample_round_trips_through_one_encoder() {
    let mut enc = Encoder::new();
    for msg in samples().into_iter().chain(empty_samples()) {
        let bytes = enc.encode(&msg).expect("sample fits").to_vec();
        assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
        assert_eq!(usize::from(bytes[4]), usize::from(msg.frame_type().as_u8()));
        let view = decode_view(&bytes).expect("valid frame");
        assert_eq!(view.frame_type(), msg.frame_type());
        assert_eq!(view.to_owned(), msg);
        assert_eq!(decode(&bytes), Ok(msg.clone()));
        assert_eq!(enc.encode_to_vec(&msg), Ok(bytes));
    }
}

#[test]
fn view_reads_fields_in_place() {
    let mut enc = Encoder::new();
    let msg = &samples()[7];
    let bytes = enc.encode(msg).expect("fits").to_vec();
    let FrameView::Offer(offer) = decode_view(&bytes).expect("valid") else {
        panic!("expected an offer view");
    };
    assert_eq!(offer.call_id(), Some("c1"));
    assert_eq!(offer.request_id(), 5);
    // The string is borrowed from the frame bytes, not copied.
    let sdp = offer.sdp().expect("sdp present");
    let range = bytes.as_ptr_range();
    assert!(range.contains(&sdp.as_ptr()));
    assert_eq!(decode_view(&bytes).expect("valid").room(), Some("room-1"));
}

#[test]
fn unknown_event_kind_is_an_invalid_body() {
    let mut enc = Encoder::new();
    let mut bytes = enc
        .encode(&Message::Event(Event {
            kind: EventKind::MemberResumed,
            ..Event::default()
        }))
        .expect("fits")
        .to_vec();
    // The only byte with value 4 in a default event's body is the kind; set it to 9 and
    // fix the CRC so the verifier, not the CRC, has to notice.
    let body_end = bytes.len() - CRC_LEN;
    let pos = bytes[5..body_end]
        .iter()
        .position(|&b| b == 4)
        .expect("kind byte present")
        + 5;
    bytes[pos] = 9;
    let crc = crc32fast::hash(&bytes[LEN_PREFIX..body_end]);
    bytes[body_end..].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        decode(&bytes),
        Err(FrameError::InvalidBody {
            frame_type: FrameType::Event,
            reason: "unknown event kind 9".into()
        })
    );
}

#[test]
fn garbage_body_with_valid_crc_is_an_invalid_body() {
    let mut bytes = Vec::new();
    let body = [0xffu8; 16];
    bytes.extend_from_slice(&((1 + body.len() + CRC_LEN) as u32).to_be_bytes());
    bytes.push(FrameType::Join.as_u8());
    bytes.extend_from_slice(&body);
    let crc = crc32fast::hash(&bytes[LEN_PREFIX..]);
    bytes.extend_from_slice(&crc.to_be_bytes());
    match decode(&bytes) {
        Err(FrameError::InvalidBody { frame_type, reason }) => {
            assert_eq!(frame_type, FrameType::Join);
            assert!(!reason.is_empty());
            assert!(!reason.contains('\n'));
        }
        other => panic!("expected InvalidBody, got {other:?}"),
    }
}

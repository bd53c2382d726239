//! Property and mutation tests of the codec: round trips of every frame type with arbitrary
//! fields, arbitrary and mutated bytes, and size limits on both sides.

use flatbuffers::FlatBufferBuilder;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;

use super::generated as wire;
use super::*;

/// Strings: empty, short unicode (any printable char, multi-byte included), arbitrary.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        3 => "\\PC{0,24}",
        1 => any::<String>(),
    ]
}

/// An SDP-sized string.
fn long_text() -> impl Strategy<Value = String> {
    prop_oneof![text(), "\\PC{100,2000}"]
}

fn resume() -> impl Strategy<Value = Resume> {
    (text(), any::<u64>()).prop_map(|(session, last_seq)| Resume { session, last_seq })
}

fn hello() -> impl Strategy<Value = Message> {
    (
        text(),
        vec(any::<u8>(), 0..8),
        proptest::option::of(resume()),
    )
        .prop_map(|(token, versions, resume)| {
            Message::Hello(Hello {
                token,
                versions,
                resume,
            })
        })
}

fn welcome() -> impl Strategy<Value = Message> {
    (text(), any::<u8>(), text(), any::<u32>(), any::<bool>()).prop_map(
        |(session, version, node, heartbeat_ms, resumed)| {
            Message::Welcome(Welcome {
                session,
                version,
                node,
                heartbeat_ms,
                resumed,
            })
        },
    )
}

fn join() -> impl Strategy<Value = Message> {
    (any::<u32>(), text()).prop_map(|(request_id, room)| Message::Join(Join { request_id, room }))
}

fn joined() -> impl Strategy<Value = Message> {
    (any::<u32>(), text(), vec(text(), 0..20), any::<u64>()).prop_map(
        |(request_id, room, members, last_seq)| {
            Message::Joined(Joined {
                request_id,
                room,
                members,
                last_seq,
            })
        },
    )
}

fn leave() -> impl Strategy<Value = Message> {
    (any::<u32>(), text()).prop_map(|(request_id, room)| Message::Leave(Leave { request_id, room }))
}

fn invite() -> impl Strategy<Value = Message> {
    (any::<u32>(), text(), text(), text(), text()).prop_map(
        |(request_id, room, call_id, from, to)| {
            Message::Invite(Invite {
                request_id,
                room,
                call_id,
                from,
                to,
            })
        },
    )
}

fn invite_result() -> impl Strategy<Value = Message> {
    (
        any::<u32>(),
        text(),
        text(),
        text(),
        text(),
        any::<bool>(),
        text(),
    )
        .prop_map(|(request_id, room, call_id, from, to, accepted, reason)| {
            Message::InviteResult(InviteResult {
                request_id,
                room,
                call_id,
                from,
                to,
                accepted,
                reason,
            })
        })
}

fn sdp() -> impl Strategy<Value = Sdp> {
    (any::<u32>(), text(), text(), text(), text(), long_text()).prop_map(
        |(request_id, room, call_id, from, to, sdp)| Sdp {
            request_id,
            room,
            call_id,
            from,
            to,
            sdp,
        },
    )
}

fn ice_candidate() -> impl Strategy<Value = Message> {
    (text(), text(), text(), text(), text(), text(), any::<u32>()).prop_map(
        |(room, call_id, from, to, candidate, sdp_mid, sdp_mline_index)| {
            Message::IceCandidate(IceCandidate {
                room,
                call_id,
                from,
                to,
                candidate,
                sdp_mid,
                sdp_mline_index,
            })
        },
    )
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (text(), text(), any::<u32>()).prop_map(|(candidate, sdp_mid, sdp_mline_index)| Candidate {
        candidate,
        sdp_mid,
        sdp_mline_index,
    })
}

fn ice_batch() -> impl Strategy<Value = Message> {
    (text(), text(), text(), text(), vec(candidate(), 0..16)).prop_map(
        |(room, call_id, from, to, candidates)| {
            Message::IceBatch(IceBatch {
                room,
                call_id,
                from,
                to,
                candidates,
            })
        },
    )
}

fn hangup() -> impl Strategy<Value = Message> {
    (any::<u32>(), text(), text(), text(), text()).prop_map(
        |(request_id, room, call_id, from, reason)| {
            Message::Hangup(Hangup {
                request_id,
                room,
                call_id,
                from,
                reason,
            })
        },
    )
}

fn event() -> impl Strategy<Value = Message> {
    (
        text(),
        any::<u64>(),
        prop::sample::select(EventKind::ALL.to_vec()),
        text(),
        text(),
        text(),
        any::<u64>(),
    )
        .prop_map(|(room, seq, kind, user, call_id, state, at_ms)| {
            Message::Event(Event {
                room,
                seq,
                kind,
                user,
                call_id,
                state,
                at_ms,
            })
        })
}

fn redirect() -> impl Strategy<Value = Message> {
    (any::<u32>(), text(), text()).prop_map(|(request_id, room, url)| {
        Message::Redirect(Redirect {
            request_id,
            room,
            url,
        })
    })
}

fn migrate() -> impl Strategy<Value = Message> {
    (text(), text(), text()).prop_map(|(room, url, resume_token)| {
        Message::Migrate(Migrate {
            room,
            url,
            resume_token,
        })
    })
}

fn error_frame() -> impl Strategy<Value = Message> {
    (any::<u16>(), text(), any::<u32>()).prop_map(|(code, message, request_id)| {
        Message::Error(ErrorFrame {
            code,
            message,
            request_id,
        })
    })
}

/// Any message of any frame type.
fn message() -> impl Strategy<Value = Message> {
    Union::new(vec![
        hello().boxed(),
        welcome().boxed(),
        join().boxed(),
        joined().boxed(),
        leave().boxed(),
        invite().boxed(),
        invite_result().boxed(),
        sdp().prop_map(Message::Offer).boxed(),
        sdp().prop_map(Message::Answer).boxed(),
        ice_candidate().boxed(),
        ice_batch().boxed(),
        hangup().boxed(),
        event().boxed(),
        any::<u64>()
            .prop_map(|nonce| Message::Ping(Ping { nonce }))
            .boxed(),
        any::<u64>()
            .prop_map(|nonce| Message::Pong(Pong { nonce }))
            .boxed(),
        redirect().boxed(),
        migrate().boxed(),
        error_frame().boxed(),
    ])
}

/// Encodes, checks the frame header, decodes both ways and compares.
fn assert_round_trip(enc: &mut Encoder, msg: &Message) -> Result<(), TestCaseError> {
    let bytes = enc.encode(msg).expect("generated messages fit").to_vec();
    prop_assert!(bytes.len() <= LEN_PREFIX + MAX_FRAME_LEN);
    prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
    prop_assert_eq!(bytes[LEN_PREFIX], msg.frame_type().as_u8());
    let view = decode_view(&bytes).expect("encoded frames verify");
    prop_assert_eq!(view.frame_type(), msg.frame_type());
    prop_assert_eq!(&view.to_owned(), msg);
    prop_assert_eq!(&decode(&bytes).expect("decodes"), msg);
    Ok(())
}

/// Builds one frame around an arbitrary body with a correct CRC.
fn raw_frame(type_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + FRAME_OVERHEAD);
    out.extend_from_slice(&((1 + body.len() + CRC_LEN) as u32).to_be_bytes());
    out.push(type_byte);
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(&out[LEN_PREFIX..]).to_be_bytes());
    out
}

macro_rules! round_trip_tests {
    ($($name:ident => $strategy:expr;)*) => {
        proptest! {
            $(
                #[test]
                fn $name(msg in $strategy) {
                    assert_round_trip(&mut Encoder::new(), &msg)?;
                }
            )*
        }
    };
}

round_trip_tests! {
    round_trip_hello => hello();
    round_trip_welcome => welcome();
    round_trip_join => join();
    round_trip_joined => joined();
    round_trip_leave => leave();
    round_trip_invite => invite();
    round_trip_invite_result => invite_result();
    round_trip_offer => sdp().prop_map(Message::Offer);
    round_trip_answer => sdp().prop_map(Message::Answer);
    round_trip_ice_candidate => ice_candidate();
    round_trip_ice_batch => ice_batch();
    round_trip_hangup => hangup();
    round_trip_event => event();
    round_trip_ping => any::<u64>().prop_map(|nonce| Message::Ping(Ping { nonce }));
    round_trip_pong => any::<u64>().prop_map(|nonce| Message::Pong(Pong { nonce }));
    round_trip_redirect => redirect();
    round_trip_migrate => migrate();
    round_trip_error => error_frame();
}

proptest! {
    #[test]
    fn one_encoder_round_trips_any_sequence(msgs in vec(message(), 1..12)) {
        let mut enc = Encoder::new();
        for msg in &msgs {
            assert_round_trip(&mut enc, msg)?;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let decoded = decode(&bytes);
        let _ = frame_len(&bytes);
        if let Err(e) = decoded {
            prop_assert_eq!(e.error_code(), ErrorCode::BadFrame);
        }
    }

    #[test]
    fn arbitrary_body_with_valid_crc_never_panics(
        type_byte in any::<u8>(),
        body in vec(any::<u8>(), 0..512),
    ) {
        let bytes = raw_frame(type_byte, &body);
        prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
        match decode(&bytes) {
            Ok(msg) => {
                // Whatever verified must survive a re-encode.
                prop_assert_eq!(msg.frame_type().as_u8(), type_byte);
                let again = Encoder::new().encode_to_vec(&msg).expect("fits");
                prop_assert_eq!(decode(&again), Ok(msg));
            }
            Err(FrameError::UnknownType(t)) => {
                prop_assert_eq!(t, type_byte);
                prop_assert!(FrameType::try_from(t).is_err());
            }
            Err(FrameError::InvalidBody { frame_type, .. }) => {
                prop_assert_eq!(frame_type.as_u8(), type_byte);
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn any_flipped_byte_is_detected(
        msg in message(),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = Encoder::new().encode_to_vec(&msg).expect("fits");
        let i = index.index(bytes.len());
        bytes[i] ^= flip;
        let err = decode(&bytes).expect_err("a corrupted frame must not decode");
        if i >= LEN_PREFIX {
            // CRC-32 detects every burst of up to 32 bits.
            let is_crc_mismatch = matches!(err, FrameError::CrcMismatch { .. });
            prop_assert!(is_crc_mismatch, "{err:?}");
        } else {
            let is_length_error = matches!(
                err,
                FrameError::TooShort { .. }
                    | FrameError::TooLong { .. }
                    | FrameError::Truncated { .. }
                    | FrameError::TrailingBytes { .. }
            );
            prop_assert!(is_length_error, "{err:?}");
        }
    }

    #[test]
    fn a_wrong_length_field_is_detected(msg in message(), new_len in any::<u32>()) {
        let mut bytes = Encoder::new().encode_to_vec(&msg).expect("fits");
        let real = bytes.len() - LEN_PREFIX;
        prop_assume!(new_len as usize != real);
        bytes[..LEN_PREFIX].copy_from_slice(&new_len.to_be_bytes());
        let new_len = new_len as usize;
        let err = decode(&bytes).expect_err("wrong length must not decode");
        let expected = if new_len < MIN_FRAME_LEN {
            FrameError::TooShort { len: new_len }
        } else if new_len > MAX_FRAME_LEN {
            FrameError::TooLong { len: new_len }
        } else if new_len > real {
            FrameError::Truncated { expected: LEN_PREFIX + new_len, actual: bytes.len() }
        } else {
            FrameError::TrailingBytes { frame_len: LEN_PREFIX + new_len, extra: real - new_len }
        };
        prop_assert_eq!(err, expected);
    }

    #[test]
    fn truncation_is_detected(msg in message(), cut in any::<prop::sample::Index>()) {
        let bytes = Encoder::new().encode_to_vec(&msg).expect("fits");
        let cut = cut.index(bytes.len());
        let err = decode(&bytes[..cut]).expect_err("truncated frame must not decode");
        let expected = if cut < LEN_PREFIX { LEN_PREFIX + MIN_FRAME_LEN } else { bytes.len() };
        prop_assert_eq!(err, FrameError::Truncated { expected, actual: cut });
        prop_assert_eq!(frame_len(&bytes[..cut]), Ok(None));
    }

    #[test]
    fn appended_bytes_are_detected(msg in message(), extra in vec(any::<u8>(), 1..64)) {
        let mut bytes = Encoder::new().encode_to_vec(&msg).expect("fits");
        let frame = bytes.len();
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(
            decode(&bytes),
            Err(FrameError::TrailingBytes { frame_len: frame, extra: extra.len() })
        );
        // On a byte stream the same buffer is one whole frame followed by more data.
        prop_assert_eq!(frame_len(&bytes), Ok(Some(frame)));
    }

    #[test]
    fn oversize_length_fields_are_refused(len in (MAX_FRAME_LEN as u32 + 1)..=u32::MAX, tail in vec(any::<u8>(), 0..32)) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tail);
        let err = decode(&bytes).expect_err("oversize");
        prop_assert_eq!(&err, &FrameError::TooLong { len: len as usize });
        prop_assert_eq!(err.closes_connection(), Some(1009));
        prop_assert_eq!(frame_len(&bytes), Err(err));
    }
}

/// The largest `sdp` that still fits in one frame, found by bisection.
fn largest_fitting_sdp(enc: &mut Encoder) -> usize {
    let offer = |n: usize| {
        Message::Offer(Sdp {
            sdp: "a".repeat(n),
            ..Sdp::default()
        })
    };
    let (mut lo, mut hi) = (0, MAX_FRAME_LEN);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if enc.encode(&offer(mid)).is_ok() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[test]
fn frames_right_at_the_limit_fit_and_one_byte_more_is_refused() {
    let mut enc = Encoder::new();
    let n = largest_fitting_sdp(&mut enc);
    // Only a few bytes of table overhead around the string.
    assert!(n > MAX_BODY_LEN - 64, "largest sdp {n}");
    let fits = Message::Offer(Sdp {
        sdp: "é".repeat(n / 2) + &"a".repeat(n % 2),
        ..Sdp::default()
    });
    let bytes = enc.encode(&fits).expect("fits").to_vec();
    assert!(bytes.len() <= LEN_PREFIX + MAX_FRAME_LEN);
    assert!(bytes.len() >= LEN_PREFIX + MAX_FRAME_LEN - 8);
    assert_eq!(decode(&bytes), Ok(fits));

    let too_big = Message::Offer(Sdp {
        sdp: "a".repeat(n + 1),
        ..Sdp::default()
    });
    match enc.encode(&too_big) {
        Err(EncodeError::TooLarge { frame_type, len }) => {
            assert_eq!(frame_type, FrameType::Offer);
            assert!(len > MAX_FRAME_LEN);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The encoder is still usable after a refusal.
    let ping = Message::Ping(Ping { nonce: 3 });
    assert_eq!(decode(enc.encode(&ping).expect("fits")), Ok(ping));
}

#[test]
fn oversized_messages_of_every_variable_kind_are_refused_at_encode() {
    let big = "x".repeat(MAX_FRAME_LEN);
    let many: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let cases = [
        Message::Hello(Hello {
            token: big.clone(),
            ..Hello::default()
        }),
        Message::Joined(Joined {
            members: many,
            ..Joined::default()
        }),
        Message::IceBatch(IceBatch {
            candidates: vec![Candidate::default(); 20_000],
            ..IceBatch::default()
        }),
        Message::Answer(Sdp {
            sdp: big.clone(),
            ..Sdp::default()
        }),
        Message::Error(ErrorFrame {
            message: big.clone(),
            ..ErrorFrame::default()
        }),
        // Many small fields that only together exceed the limit: refused after building.
        Message::IceBatch(IceBatch {
            candidates: vec![
                Candidate {
                    candidate: "c".repeat(200),
                    sdp_mid: "m".repeat(100),
                    sdp_mline_index: 1,
                };
                220
            ],
            ..IceBatch::default()
        }),
    ];
    let mut enc = Encoder::new();
    for msg in &cases {
        match enc.encode(msg) {
            Err(EncodeError::TooLarge { frame_type, len }) => {
                assert_eq!(frame_type, msg.frame_type());
                assert!(len > MAX_FRAME_LEN, "{frame_type}: {len}");
            }
            Ok(bytes) => panic!("{} encoded to {} bytes", msg.frame_type(), bytes.len()),
        }
    }
}

#[test]
fn shared_offsets_cannot_inflate_a_small_frame() {
    // A hostile Joined whose member list points 8,000 times at one 7 KiB string: 40 KiB on
    // the wire, 56 MB if copied out. The verifier's apparent-size cap refuses it.
    let mut fbb = FlatBufferBuilder::new();
    let s = fbb.create_string(&"m".repeat(7 * 1024));
    let members = fbb.create_vector(&vec![s; 8_000]);
    let root = wire::Joined::create(
        &mut fbb,
        &wire::JoinedArgs {
            members: Some(members),
            ..Default::default()
        },
    );
    fbb.finish_minimal(root);
    let bytes = raw_frame(FrameType::Joined.as_u8(), fbb.finished_data());
    assert!(bytes.len() <= LEN_PREFIX + MAX_FRAME_LEN);
    match decode(&bytes) {
        Err(FrameError::InvalidBody { frame_type, reason }) => {
            assert_eq!(frame_type, FrameType::Joined);
            assert!(reason.to_lowercase().contains("apparent"), "{reason}");
        }
        other => panic!("expected InvalidBody, got {other:?}"),
    }
}

#[test]
fn a_legitimate_full_batch_passes_the_verifier_limits() {
    // Many tiny tables sharing one vtable: the densest legitimate body.
    let msg = Message::IceBatch(IceBatch {
        candidates: vec![
            Candidate {
                candidate: "c".into(),
                sdp_mid: "0".into(),
                sdp_mline_index: 1,
            };
            1_500
        ],
        ..IceBatch::default()
    });
    let mut enc = Encoder::new();
    let bytes = enc.encode(&msg).expect("fits").to_vec();
    assert!(bytes.len() > MAX_FRAME_LEN / 2, "{}", bytes.len());
    assert_eq!(decode(&bytes), Ok(msg));
}

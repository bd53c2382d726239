//! Zero-copy decoding: [`decode_view`] checks the frame, verifies the body with the
//! FlatBuffers verifier under tight limits, and returns a [`FrameView`] that reads fields in
//! place; [`FrameView::to_owned`] converts to an owned [`Message`].

use flatbuffers::{Follow, Verifiable, VerifierOptions};

use super::frame::{FrameError, MAX_FRAME_LEN, split_frame};
use super::generated as wire;
use super::message::{
    Candidate, ErrorFrame, Event, EventKind, Hangup, Hello, IceBatch, IceCandidate, Invite,
    InviteResult, Join, Joined, Leave, Message, Migrate, Ping, Pong, Redirect, Resume, Sdp,
    Welcome,
};
use super::types::FrameType;

/// Verifier limits. The deepest legitimate body is IceBatch → candidates → Candidate, and a
/// legitimate body has no shared sub-objects, so its apparent size stays near its real size
/// (shared vtables add a little). The apparent-size cap also bounds what
/// [`FrameView::to_owned`] can allocate when a hostile body points many offsets at one
/// large string.
const VERIFIER: VerifierOptions = VerifierOptions {
    max_depth: 8,
    max_tables: MAX_FRAME_LEN / 4,
    max_apparent_size: 4 * MAX_FRAME_LEN,
    ignore_missing_null_terminator: false,
};

/// A verified frame whose body is read in place.
#[derive(Debug, Clone, Copy)]
pub enum FrameView<'a> {
    /// [`FrameType::Hello`]
    Hello(wire::Hello<'a>),
    /// [`FrameType::Welcome`]
    Welcome(wire::Welcome<'a>),
    /// [`FrameType::Join`]
    Join(wire::Join<'a>),
    /// [`FrameType::Joined`]
    Joined(wire::Joined<'a>),
    /// [`FrameType::Leave`]
    Leave(wire::Leave<'a>),
    /// [`FrameType::Invite`]
    Invite(wire::Invite<'a>),
    /// [`FrameType::InviteResult`]
    InviteResult(wire::InviteResult<'a>),
    /// [`FrameType::Offer`]
    Offer(wire::Offer<'a>),
    /// [`FrameType::Answer`]
    Answer(wire::Answer<'a>),
    /// [`FrameType::IceCandidate`]
    IceCandidate(wire::IceCandidate<'a>),
    /// [`FrameType::IceBatch`]
    IceBatch(wire::IceBatch<'a>),
    /// [`FrameType::Hangup`]
    Hangup(wire::Hangup<'a>),
    /// [`FrameType::Event`]; its `kind` is known to be a valid [`EventKind`].
    Event(wire::Event<'a>),
    /// [`FrameType::Ping`]
    Ping(wire::Ping<'a>),
    /// [`FrameType::Pong`]
    Pong(wire::Pong<'a>),
    /// [`FrameType::Redirect`]
    Redirect(wire::Redirect<'a>),
    /// [`FrameType::Migrate`]
    Migrate(wire::Migrate<'a>),
    /// [`FrameType::Error`]
    Error(wire::Error<'a>),
}

/// Verifies `body` as a root table `T`.
fn root<'a, T>(frame_type: FrameType, body: &'a [u8]) -> Result<T::Inner, FrameError>
where
    T: 'a + Follow<'a> + Verifiable,
{
    flatbuffers::root_with_opts::<T>(&VERIFIER, body).map_err(|e| FrameError::InvalidBody {
        frame_type,
        // The verifier's message ends with a multi-line trace; the first line says it all.
        reason: e.to_string().lines().next().unwrap_or_default().to_owned(),
    })
}

/// Verifies a whole message (exactly one frame) and returns a zero-copy view of the body.
pub fn decode_view(bytes: &[u8]) -> Result<FrameView<'_>, FrameError> {
    let (frame_type, body) = split_frame(bytes)?;
    let view = match frame_type {
        FrameType::Hello => FrameView::Hello(root::<wire::Hello>(frame_type, body)?),
        FrameType::Welcome => FrameView::Welcome(root::<wire::Welcome>(frame_type, body)?),
        FrameType::Join => FrameView::Join(root::<wire::Join>(frame_type, body)?),
        FrameType::Joined => FrameView::Joined(root::<wire::Joined>(frame_type, body)?),
        FrameType::Leave => FrameView::Leave(root::<wire::Leave>(frame_type, body)?),
        FrameType::Invite => FrameView::Invite(root::<wire::Invite>(frame_type, body)?),
        FrameType::InviteResult => {
            FrameView::InviteResult(root::<wire::InviteResult>(frame_type, body)?)
        }
        FrameType::Offer => FrameView::Offer(root::<wire::Offer>(frame_type, body)?),
        FrameType::Answer => FrameView::Answer(root::<wire::Answer>(frame_type, body)?),
        FrameType::IceCandidate => {
            FrameView::IceCandidate(root::<wire::IceCandidate>(frame_type, body)?)
        }
        FrameType::IceBatch => FrameView::IceBatch(root::<wire::IceBatch>(frame_type, body)?),
        FrameType::Hangup => FrameView::Hangup(root::<wire::Hangup>(frame_type, body)?),
        FrameType::Event => {
            let event = root::<wire::Event>(frame_type, body)?;
            // FlatBuffers enums are open; refuse kinds this version does not know so that
            // to_owned cannot fail.
            if EventKind::from_u8(event.kind().0).is_none() {
                return Err(FrameError::InvalidBody {
                    frame_type,
                    reason: format!("unknown event kind {}", event.kind().0),
                });
            }
            FrameView::Event(event)
        }
        FrameType::Ping => FrameView::Ping(root::<wire::Ping>(frame_type, body)?),
        FrameType::Pong => FrameView::Pong(root::<wire::Pong>(frame_type, body)?),
        FrameType::Redirect => FrameView::Redirect(root::<wire::Redirect>(frame_type, body)?),
        FrameType::Migrate => FrameView::Migrate(root::<wire::Migrate>(frame_type, body)?),
        FrameType::Error => FrameView::Error(root::<wire::Error>(frame_type, body)?),
    };
    Ok(view)
}

/// [`decode_view`] followed by [`FrameView::to_owned`].
pub fn decode(bytes: &[u8]) -> Result<Message, FrameError> {
    decode_view(bytes).map(|view| view.to_owned())
}

/// An absent string reads as empty.
fn own(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

impl FrameView<'_> {
    /// The frame type of the viewed frame.
    pub fn frame_type(&self) -> FrameType {
        match self {
            FrameView::Hello(_) => FrameType::Hello,
            FrameView::Welcome(_) => FrameType::Welcome,
            FrameView::Join(_) => FrameType::Join,
            FrameView::Joined(_) => FrameType::Joined,
            FrameView::Leave(_) => FrameType::Leave,
            FrameView::Invite(_) => FrameType::Invite,
            FrameView::InviteResult(_) => FrameType::InviteResult,
            FrameView::Offer(_) => FrameType::Offer,
            FrameView::Answer(_) => FrameType::Answer,
            FrameView::IceCandidate(_) => FrameType::IceCandidate,
            FrameView::IceBatch(_) => FrameType::IceBatch,
            FrameView::Hangup(_) => FrameType::Hangup,
            FrameView::Event(_) => FrameType::Event,
            FrameView::Ping(_) => FrameType::Ping,
            FrameView::Pong(_) => FrameType::Pong,
            FrameView::Redirect(_) => FrameType::Redirect,
            FrameView::Migrate(_) => FrameType::Migrate,
            FrameView::Error(_) => FrameType::Error,
        }
    }

    /// The room the frame is about, for the frame types that name one.
    pub fn room(&self) -> Option<&str> {
        match self {
            FrameView::Join(m) => m.room(),
            FrameView::Joined(m) => m.room(),
            FrameView::Leave(m) => m.room(),
            FrameView::Invite(m) => m.room(),
            FrameView::InviteResult(m) => m.room(),
            FrameView::Offer(m) => m.room(),
            FrameView::Answer(m) => m.room(),
            FrameView::IceCandidate(m) => m.room(),
            FrameView::IceBatch(m) => m.room(),
            FrameView::Hangup(m) => m.room(),
            FrameView::Event(m) => m.room(),
            FrameView::Redirect(m) => m.room(),
            FrameView::Migrate(m) => m.room(),
            FrameView::Hello(_)
            | FrameView::Welcome(_)
            | FrameView::Ping(_)
            | FrameView::Pong(_)
            | FrameView::Error(_) => None,
        }
    }

    /// Copies the viewed frame into an owned [`Message`].
    pub fn to_owned(&self) -> Message {
        match *self {
            FrameView::Hello(m) => Message::Hello(Hello {
                token: own(m.token()),
                versions: m.versions().map(|v| v.bytes().to_vec()).unwrap_or_default(),
                resume: m.resume().map(|r| Resume {
                    session: own(r.session()),
                    last_seq: r.last_seq(),
                }),
            }),
            FrameView::Welcome(m) => Message::Welcome(Welcome {
                session: own(m.session()),
                version: m.version(),
                node: own(m.node()),
                heartbeat_ms: m.heartbeat_ms(),
                resumed: m.resumed(),
            }),
            FrameView::Join(m) => Message::Join(Join {
                request_id: m.request_id(),
                room: own(m.room()),
            }),
            FrameView::Joined(m) => Message::Joined(Joined {
                request_id: m.request_id(),
                room: own(m.room()),
                members: m
                    .members()
                    .map(|v| v.iter().map(str::to_owned).collect())
                    .unwrap_or_default(),
                last_seq: m.last_seq(),
            }),
            FrameView::Leave(m) => Message::Leave(Leave {
                request_id: m.request_id(),
                room: own(m.room()),
            }),
            FrameView::Invite(m) => Message::Invite(Invite {
                request_id: m.request_id(),
                room: own(m.room()),
                call_id: own(m.call_id()),
                from: own(m.from()),
                to: own(m.to()),
            }),
            FrameView::InviteResult(m) => Message::InviteResult(InviteResult {
                request_id: m.request_id(),
                room: own(m.room()),
                call_id: own(m.call_id()),
                from: own(m.from()),
                to: own(m.to()),
                accepted: m.accepted(),
                reason: own(m.reason()),
            }),
            FrameView::Offer(m) => Message::Offer(Sdp {
                request_id: m.request_id(),
                room: own(m.room()),
                call_id: own(m.call_id()),
                from: own(m.from()),
                to: own(m.to()),
                sdp: own(m.sdp()),
            }),
            FrameView::Answer(m) => Message::Answer(Sdp {
                request_id: m.request_id(),
                room: own(m.room()),
                call_id: own(m.call_id()),
                from: own(m.from()),
                to: own(m.to()),
                sdp: own(m.sdp()),
            }),
            FrameView::IceCandidate(m) => Message::IceCandidate(IceCandidate {
                room: own(m.room()),
                call_id: own(m.call_id()),
                from: own(m.from()),
                to: own(m.to()),
                candidate: own(m.candidate()),
                sdp_mid: own(m.sdp_mid()),
                sdp_mline_index: m.sdp_mline_index(),
            }),
            FrameView::IceBatch(m) => Message::IceBatch(IceBatch {
                room: own(m.room()),
                call_id: own(m.call_id()),
                from: own(m.from()),
                to: own(m.to()),
                candidates: m
                    .candidates()
                    .map(|v| {
                        v.iter()
                            .map(|c| Candidate {
                                candidate: own(c.candidate()),
                                sdp_mid: own(c.sdp_mid()),
                                sdp_mline_index: c.sdp_mline_index(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            FrameView::Hangup(m) => Message::Hangup(Hangup {
                request_id: m.request_id(),
                room: own(m.room()),
                call_id: own(m.call_id()),
                from: own(m.from()),
                reason: own(m.reason()),
            }),
            FrameView::Event(m) => Message::Event(Event {
                room: own(m.room()),
                seq: m.seq(),
                // decode_view refused unknown kinds.
                kind: EventKind::from_u8(m.kind().0).unwrap_or_default(),
                user: own(m.user()),
                call_id: own(m.call_id()),
                state: own(m.state()),
                at_ms: m.at_ms(),
            }),
            FrameView::Ping(m) => Message::Ping(Ping { nonce: m.nonce() }),
            FrameView::Pong(m) => Message::Pong(Pong { nonce: m.nonce() }),
            FrameView::Redirect(m) => Message::Redirect(Redirect {
                request_id: m.request_id(),
                room: own(m.room()),
                url: own(m.url()),
            }),
            FrameView::Migrate(m) => Message::Migrate(Migrate {
                room: own(m.room()),
                url: own(m.url()),
                resume_token: own(m.resume_token()),
            }),
            FrameView::Error(m) => Message::Error(ErrorFrame {
                code: m.code(),
                message: own(m.message()),
                request_id: m.request_id(),
            }),
        }
    }
}

//! Owned messages: the convenient, allocating form of every frame, for clients, tests and
//! snapshots. On the wire an empty string or list is simply absent, so absent decodes as
//! empty.

use serde::{Deserialize, Serialize};

use super::types::FrameType;

/// Session resume request carried in [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resume {
    /// Session id from an earlier [`Welcome`].
    pub session: String,
    /// Last room event sequence number the client has seen.
    pub last_seq: u64,
}

/// Client greeting, the first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hello {
    /// Join token (JWT HS256).
    pub token: String,
    /// Protocol version numbers the client speaks.
    pub versions: Vec<u8>,
    /// Resume an earlier session instead of starting a new one.
    pub resume: Option<Resume>,
}

/// Server answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Welcome {
    /// Session id (use it to resume).
    pub session: String,
    /// Negotiated protocol version number.
    pub version: u8,
    /// Name of the node serving the connection.
    pub node: String,
    /// Heartbeat interval the client must keep.
    pub heartbeat_ms: u32,
    /// Whether an earlier session was resumed.
    pub resumed: bool,
}

/// Join a room.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Join {
    /// Client request id, echoed in the answer.
    pub request_id: u32,
    /// Room id.
    pub room: String,
}

/// Room joined.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Joined {
    /// Request id of the [`Join`].
    pub request_id: u32,
    /// Room id.
    pub room: String,
    /// User ids of the current members.
    pub members: Vec<String>,
    /// Sequence number of the room's last event.
    pub last_seq: u64,
}

/// Leave a room.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Leave {
    /// Client request id.
    pub request_id: u32,
    /// Room id.
    pub room: String,
}

/// Invite a room member into a call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Invite {
    /// Client request id.
    pub request_id: u32,
    /// Room id.
    pub room: String,
    /// Call id chosen by the inviter.
    pub call_id: String,
    /// Inviter (overwritten by the server with the sender's user id).
    pub from: String,
    /// Invitee user id.
    pub to: String,
}

/// Accept or reject an [`Invite`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InviteResult {
    /// Client request id.
    pub request_id: u32,
    /// Room id.
    pub room: String,
    /// Call id.
    pub call_id: String,
    /// Sender (overwritten by the server with the sender's user id).
    pub from: String,
    /// Recipient user id.
    pub to: String,
    /// Accepted (true) or rejected.
    pub accepted: bool,
    /// Why it was rejected.
    pub reason: String,
}

/// An SDP offer or answer ([`Message::Offer`] / [`Message::Answer`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sdp {
    /// Client request id.
    pub request_id: u32,
    /// Room id.
    pub room: String,
    /// Call id.
    pub call_id: String,
    /// Sender (overwritten by the server with the sender's user id).
    pub from: String,
    /// Recipient user id.
    pub to: String,
    /// The session description.
    pub sdp: String,
}

/// One trickled ICE candidate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IceCandidate {
    /// Room id.
    pub room: String,
    /// Call id.
    pub call_id: String,
    /// Sender (overwritten by the server with the sender's user id).
    pub from: String,
    /// Recipient user id.
    pub to: String,
    /// Candidate line; empty means end of candidates for that peer.
    pub candidate: String,
    /// Media stream identification tag.
    pub sdp_mid: String,
    /// Index of the m-line the candidate belongs to.
    pub sdp_mline_index: u32,
}

impl IceCandidate {
    /// Whether this is the end-of-candidates marker (empty candidate).
    pub fn is_end_of_candidates(&self) -> bool {
        self.candidate.is_empty()
    }
}

/// One candidate inside an [`IceBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Candidate {
    /// Candidate line; empty means end of candidates.
    pub candidate: String,
    /// Media stream identification tag.
    pub sdp_mid: String,
    /// Index of the m-line the candidate belongs to.
    pub sdp_mline_index: u32,
}

/// Several ICE candidates in one frame (protocol v2 only).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IceBatch {
    /// Room id.
    pub room: String,
    /// Call id.
    pub call_id: String,
    /// Sender (overwritten by the server with the sender's user id).
    pub from: String,
    /// Recipient user id.
    pub to: String,
    /// The candidates, in order.
    pub candidates: Vec<Candidate>,
}

/// End a call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hangup {
    /// Client request id.
    pub request_id: u32,
    /// Room id.
    pub room: String,
    /// Call id.
    pub call_id: String,
    /// Sender (overwritten by the server with the sender's user id).
    pub from: String,
    /// Why the call ends.
    pub reason: String,
}

/// Kind of a room [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[repr(u8)]
pub enum EventKind {
    /// A member joined the room.
    #[default]
    MemberJoined = 0,
    /// A member left the room.
    MemberLeft = 1,
    /// A call changed state (`Event.state` is the new state's name).
    CallState = 2,
    /// A member's connection dropped; its seat is kept for resume.
    MemberSuspended = 3,
    /// A suspended member resumed.
    MemberResumed = 4,
}

impl EventKind {
    /// Every kind in wire order.
    pub const ALL: [EventKind; 5] = [
        EventKind::MemberJoined,
        EventKind::MemberLeft,
        EventKind::CallState,
        EventKind::MemberSuspended,
        EventKind::MemberResumed,
    ];

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Maps a wire value back to its kind.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value)).copied()
    }

    /// Low-cardinality snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::MemberJoined => "member_joined",
            EventKind::MemberLeft => "member_left",
            EventKind::CallState => "call_state",
            EventKind::MemberSuspended => "member_suspended",
            EventKind::MemberResumed => "member_resumed",
        }
    }
}

/// A room event with its sequence number in the room's event log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Event {
    /// Room id.
    pub room: String,
    /// Sequence number in the room's event log.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// User the event is about.
    pub user: String,
    /// Call the event is about (for `CallState`).
    pub call_id: String,
    /// New call state name (for `CallState`).
    pub state: String,
    /// When it happened, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Heartbeat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the [`Pong`].
    pub nonce: u64,
}

/// Heartbeat answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pong {
    /// Nonce of the [`Ping`].
    pub nonce: u64,
}

/// The room is owned by another node: reconnect there.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Redirect {
    /// Request id of the request being redirected.
    pub request_id: u32,
    /// Room id.
    pub room: String,
    /// WebSocket URL of the owner.
    pub url: String,
}

/// The room is moving to another node: reconnect there and resume.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Migrate {
    /// Room id.
    pub room: String,
    /// WebSocket URL of the new owner.
    pub url: String,
    /// Token to resume the session there.
    pub resume_token: String,
}

/// An error report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// Numeric error code (see [`super::ErrorCode`]); unknown codes are kept as they are.
    pub code: u16,
    /// Human-readable message.
    pub message: String,
    /// Request id of the request this answers, 0 for none.
    pub request_id: u32,
}

/// Any frame in owned form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// [`FrameType::Hello`]
    Hello(Hello),
    /// [`FrameType::Welcome`]
    Welcome(Welcome),
    /// [`FrameType::Join`]
    Join(Join),
    /// [`FrameType::Joined`]
    Joined(Joined),
    /// [`FrameType::Leave`]
    Leave(Leave),
    /// [`FrameType::Invite`]
    Invite(Invite),
    /// [`FrameType::InviteResult`]
    InviteResult(InviteResult),
    /// [`FrameType::Offer`]
    Offer(Sdp),
    /// [`FrameType::Answer`]
    Answer(Sdp),
    /// [`FrameType::IceCandidate`]
    IceCandidate(IceCandidate),
    /// [`FrameType::IceBatch`]
    IceBatch(IceBatch),
    /// [`FrameType::Hangup`]
    Hangup(Hangup),
    /// [`FrameType::Event`]
    Event(Event),
    /// [`FrameType::Ping`]
    Ping(Ping),
    /// [`FrameType::Pong`]
    Pong(Pong),
    /// [`FrameType::Redirect`]
    Redirect(Redirect),
    /// [`FrameType::Migrate`]
    Migrate(Migrate),
    /// [`FrameType::Error`]
    Error(ErrorFrame),
}

impl Message {
    /// The frame type this message is sent as.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Message::Hello(_) => FrameType::Hello,
            Message::Welcome(_) => FrameType::Welcome,
            Message::Join(_) => FrameType::Join,
            Message::Joined(_) => FrameType::Joined,
            Message::Leave(_) => FrameType::Leave,
            Message::Invite(_) => FrameType::Invite,
            Message::InviteResult(_) => FrameType::InviteResult,
            Message::Offer(_) => FrameType::Offer,
            Message::Answer(_) => FrameType::Answer,
            Message::IceCandidate(_) => FrameType::IceCandidate,
            Message::IceBatch(_) => FrameType::IceBatch,
            Message::Hangup(_) => FrameType::Hangup,
            Message::Event(_) => FrameType::Event,
            Message::Ping(_) => FrameType::Ping,
            Message::Pong(_) => FrameType::Pong,
            Message::Redirect(_) => FrameType::Redirect,
            Message::Migrate(_) => FrameType::Migrate,
            Message::Error(_) => FrameType::Error,
        }
    }

    /// The request id the message carries or answers, if its frame type has one.
    pub fn request_id(&self) -> Option<u32> {
        match self {
            Message::Join(m) => Some(m.request_id),
            Message::Joined(m) => Some(m.request_id),
            Message::Leave(m) => Some(m.request_id),
            Message::Invite(m) => Some(m.request_id),
            Message::InviteResult(m) => Some(m.request_id),
            Message::Offer(m) | Message::Answer(m) => Some(m.request_id),
            Message::Hangup(m) => Some(m.request_id),
            Message::Redirect(m) => Some(m.request_id),
            Message::Error(m) => Some(m.request_id),
            Message::Hello(_)
            | Message::Welcome(_)
            | Message::IceCandidate(_)
            | Message::IceBatch(_)
            | Message::Event(_)
            | Message::Ping(_)
            | Message::Pong(_)
            | Message::Migrate(_) => None,
        }
    }

    /// Bytes of variable-length payload (strings, lists): a lower bound of the body size,
    /// used to refuse hopelessly large messages before building them.
    pub(crate) fn payload_len(&self) -> usize {
        fn s(parts: &[&str]) -> usize {
            parts.iter().map(|p| p.len()).sum()
        }
        match self {
            Message::Hello(m) => {
                m.token.len() + m.versions.len() + m.resume.as_ref().map_or(0, |r| r.session.len())
            }
            Message::Welcome(m) => s(&[&m.session, &m.node]),
            Message::Join(m) => m.room.len(),
            Message::Joined(m) => {
                m.room.len() + m.members.iter().map(|x| x.len() + 4).sum::<usize>()
            }
            Message::Leave(m) => m.room.len(),
            Message::Invite(m) => s(&[&m.room, &m.call_id, &m.from, &m.to]),
            Message::InviteResult(m) => s(&[&m.room, &m.call_id, &m.from, &m.to, &m.reason]),
            Message::Offer(m) | Message::Answer(m) => {
                s(&[&m.room, &m.call_id, &m.from, &m.to, &m.sdp])
            }
            Message::IceCandidate(m) => s(&[
                &m.room,
                &m.call_id,
                &m.from,
                &m.to,
                &m.candidate,
                &m.sdp_mid,
            ]),
            Message::IceBatch(m) => {
                s(&[&m.room, &m.call_id, &m.from, &m.to])
                    + m.candidates
                        .iter()
                        .map(|c| c.candidate.len() + c.sdp_mid.len() + 4)
                        .sum::<usize>()
            }
            Message::Hangup(m) => s(&[&m.room, &m.call_id, &m.from, &m.reason]),
            Message::Event(m) => s(&[&m.room, &m.user, &m.call_id, &m.state]),
            Message::Ping(_) | Message::Pong(_) => 0,
            Message::Redirect(m) => s(&[&m.room, &m.url]),
            Message::Migrate(m) => s(&[&m.room, &m.url, &m.resume_token]),
            Message::Error(m) => m.message.len(),
        }
    }
}

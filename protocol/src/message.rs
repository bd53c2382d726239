//! Owned messages: the convenient, allocating form of every frame, for clients, tests and
//! snapshots, one struct per frame (the [`crate::Message`] enum over them comes from the
//! frame table). On the wire an empty string or list is simply absent, so absent decodes as empty.

use serde::{Deserialize, Serialize};

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

//! The Switchboard wire protocol: frame layout and codec, error codes, protocol versions,
//! owned messages and the committed FlatBuffers code generated from `schemas/signaling.fbs`.
//!
//! A frame is `length u32 BE | type u8 | FlatBuffers body | crc32 BE` (DESIGN.md §2); the
//! type byte selects the body's root table. [`decode_view`] verifies one whole message and
//! reads it in place; [`decode`] also copies it into an owned [`Message`]; [`Encoder`]
//! reuses its buffers between messages.

mod encode;
mod frame;
pub mod generated;
mod message;
mod types;
mod view;

pub use encode::{EncodeError, Encoder};
pub use frame::{
    CRC_LEN, FRAME_OVERHEAD, FrameError, LEN_PREFIX, MAX_BODY_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN,
    frame_len,
};
pub use message::{
    Candidate, ErrorFrame, Event, EventKind, Hangup, Hello, IceBatch, IceCandidate, Invite,
    InviteResult, Join, Joined, Leave, Message, Migrate, Ping, Pong, Redirect, Resume, Sdp,
    Welcome,
};
pub use types::{ErrorCode, FrameType, ProtocolVersion};
pub use view::{FrameView, decode, decode_view};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

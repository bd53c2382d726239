//! The Switchboard wire protocol, shared by the node and every client: frame layout and codec,
//! error codes, protocol versions, owned messages, join tokens ([`auth`]), the W3C trace
//! context a connection carries ([`traceparent`]) and the committed
//! FlatBuffers code generated from `schemas/*.fbs`.
//!
//! A frame is `length u32 BE | type u8 | FlatBuffers body | crc32 BE` (docs/protocol.md); the
//! type byte selects the body's root table. [`decode_view`] verifies one whole message and
//! reads it in place; [`decode`] also copies it into an owned [`Message`]; [`Encoder`]
//! reuses its buffers between messages.
//!
//! Decisions worth knowing:
//! - The CRC is checked before the type byte, so any corruption of type or body reads as
//!   [`FrameError::CrcMismatch`]; only then is the body verified as the type's root table.
//! - The FlatBuffers verifier runs with tight limits (depth 8, at most one table per 4 body
//!   bytes, apparent size at most 4 × [`MAX_FRAME_LEN`]), so a small hostile frame cannot
//!   make [`FrameView::to_owned`] allocate much more than its own size.
//! - Empty strings and lists are not written; an absent field reads as empty. An `Event`
//!   with an unknown `kind` is refused at decode, so `to_owned` cannot fail.
//! - [`Encoder::encode`] refuses a message whose frame would exceed [`MAX_FRAME_LEN`]
//!   ([`EncodeError::TooLarge`]) instead of sending a frame every receiver must reject.
// Denied rather than forbidden: the FlatBuffers code generated into `generated` reads
// verified buffers with `unsafe` and is the single module allowed to (see there).
#![deny(unsafe_code)]

pub mod auth;
mod encode;
mod fields;
mod frame;
mod frames;
pub mod generated;
mod message;
pub mod traceparent;
mod types;
mod view;

pub use encode::{EncodeError, Encoder};
pub use frame::{
    CRC_LEN, FRAME_OVERHEAD, FrameError, LEN_PREFIX, MAX_BODY_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN,
    frame_len, split_frame,
};
pub use frames::{FrameType, FrameView, Message};
pub use message::{
    Candidate, ErrorFrame, Event, EventKind, Hangup, Hello, IceBatch, IceCandidate, Invite,
    InviteResult, Join, Joined, Leave, Migrate, Ping, Pong, Redirect, Resume, Sdp, Welcome,
};
pub use types::{ErrorCode, ProtocolVersion};
pub use view::{decode, decode_view};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

//! The frame table: every frame type once, with its type byte, metric label, owned struct,
//! generated FlatBuffers table and fields. [`frame_table!`] hands the rows to a generator:
//! here to the one that defines [`FrameType`], [`Message`] and [`FrameView`]; in `view` to the
//! decoder's dispatch; in `encode` to the encoder's. Fields move between bytes and structs
//! one field type at a time (`fields`).
//!
//! A new frame type is one row here and its owned struct in `message` (plus the table in
//! `schemas/signaling.fbs`, regenerated, and the TypeScript client). A field named `room` or
//! `request_id` makes [`FrameView::room`] / [`Message::request_id`] report it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::fields::{FromWire, PayloadLen};
use crate::generated as wire;
use crate::message::{
    ErrorFrame, Event, Hangup, Hello, IceBatch, IceCandidate, Invite, InviteResult, Join, Joined,
    Leave, Migrate, Ping, Pong, Redirect, Sdp, Welcome,
};

/// Calls the generator `$generate!` with every row of the frame table. Fields are listed in
/// the order their data is written (it decides the byte layout).
macro_rules! frame_table {
    ($generate:ident) => {
        $generate! {
            /// Client greeting: token, versions, optional resume.
            Hello = 1, "hello", Hello / HelloArgs { token, versions, resume };
            /// Server answer to Hello.
            Welcome = 2, "welcome", Welcome / WelcomeArgs { session, version, node, heartbeat_ms, resumed };
            /// Join a room.
            Join = 3, "join", Join / JoinArgs { request_id, room };
            /// Room joined.
            Joined = 4, "joined", Joined / JoinedArgs { request_id, room, members, last_seq };
            /// Leave a room.
            Leave = 5, "leave", Leave / LeaveArgs { request_id, room };
            /// Invite a member into a call.
            Invite = 6, "invite", Invite / InviteArgs { request_id, room, call_id, from, to };
            /// Accept or reject an invite.
            InviteResult = 7, "invite_result", InviteResult / InviteResultArgs {
                request_id, room, call_id, from, to, accepted, reason
            };
            /// SDP offer.
            Offer = 8, "offer", Sdp / OfferArgs { request_id, room, call_id, from, to, sdp };
            /// SDP answer.
            Answer = 9, "answer", Sdp / AnswerArgs { request_id, room, call_id, from, to, sdp };
            /// One trickled ICE candidate.
            IceCandidate = 10, "ice_candidate", IceCandidate / IceCandidateArgs {
                room, call_id, from, to, candidate, sdp_mid, sdp_mline_index
            };
            /// Batched ICE candidates (v2).
            IceBatch = 11, "ice_batch", IceBatch / IceBatchArgs { room, call_id, from, to, candidates };
            /// End a call.
            Hangup = 12, "hangup", Hangup / HangupArgs { request_id, room, call_id, from, reason };
            /// Room event with sequence number.
            Event = 13, "event", Event / EventArgs { room, seq, kind, user, call_id, state, at_ms };
            /// Heartbeat request.
            Ping = 14, "ping", Ping / PingArgs { nonce };
            /// Heartbeat answer.
            Pong = 15, "pong", Pong / PongArgs { nonce };
            /// Room owned elsewhere.
            Redirect = 16, "redirect", Redirect / RedirectArgs { request_id, room, url };
            /// Room is moving.
            Migrate = 17, "migrate", Migrate / MigrateArgs { room, url, resume_token };
            /// Error report.
            Error = 18, "error", ErrorFrame / ErrorArgs { code, message, request_id };
        }
    };
}
pub(crate) use frame_table;

/// `Some(m.request_id)` when the field list has `request_id`, else `None`.
macro_rules! request_id_of {
    ($m:ident;) => { None };
    ($m:ident; request_id $(, $rest:ident)*) => { Some($m.request_id) };
    ($m:ident; $other:ident $(, $rest:ident)*) => { request_id_of!($m; $($rest),*) };
}

/// `m.room()` when the field list has `room`, else `None`.
macro_rules! room_of {
    ($m:ident;) => { None };
    ($m:ident; room $(, $rest:ident)*) => { $m.room() };
    ($m:ident; $other:ident $(, $rest:ident)*) => { room_of!($m; $($rest),*) };
}

/// Defines the frame types, the owned and the viewed frame from the table.
macro_rules! define_frames {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $byte:literal, $label:literal, $owned:ident / $args:ident { $($field:ident),* $(,)? };
    )*) => {
        /// The frame's type byte; it selects the root table of the FlatBuffers body.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[repr(u8)]
        pub enum FrameType {
            $($(#[doc = $doc])* $variant = $byte,)*
        }

        impl FrameType {
            /// Every frame type in type-byte order.
            pub const ALL: [FrameType; [$(stringify!($variant)),*].len()] =
                [$(FrameType::$variant),*];

            /// Low-cardinality snake_case name, used as a metric label.
            pub fn name(self) -> &'static str {
                match self {
                    $(FrameType::$variant => $label,)*
                }
            }
        }

        impl TryFrom<u8> for FrameType {
            type Error = u8;

            /// Maps a type byte to its frame type; the unknown byte is returned as the error.
            fn try_from(value: u8) -> Result<Self, u8> {
                match value {
                    $($byte => Ok(FrameType::$variant),)*
                    other => Err(other),
                }
            }
        }

        /// Any frame in owned form.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Message {
            $(#[doc = concat!("[`FrameType::", stringify!($variant), "`]")] $variant($owned),)*
        }

        impl Message {
            /// The frame type this message is sent as.
            pub fn frame_type(&self) -> FrameType {
                match self {
                    $(Message::$variant(_) => FrameType::$variant,)*
                }
            }

            /// The request id the message carries or answers, if its frame type has one.
            pub fn request_id(&self) -> Option<u32> {
                match self {
                    $(Message::$variant(_m) => request_id_of!(_m; $($field),*),)*
                }
            }

            /// Bytes of variable-length payload (strings, lists): a lower bound of the body
            /// size, used to refuse hopelessly large messages before building them.
            pub(crate) fn payload_len(&self) -> usize {
                match self {
                    $(Message::$variant(_m) => 0 $(+ _m.$field.payload_len())*,)*
                }
            }
        }

        /// A verified frame whose body is read in place.
        #[derive(Debug, Clone, Copy)]
        pub enum FrameView<'a> {
            $(#[doc = concat!("[`FrameType::", stringify!($variant), "`]")] $variant(wire::$variant<'a>),)*
        }

        impl FrameView<'_> {
            /// The frame type of the viewed frame.
            pub fn frame_type(&self) -> FrameType {
                match self {
                    $(FrameView::$variant(_) => FrameType::$variant,)*
                }
            }

            /// The room the frame is about, for the frame types that name one.
            pub fn room(&self) -> Option<&str> {
                match self {
                    $(FrameView::$variant(_m) => room_of!(_m; $($field),*),)*
                }
            }

            /// Copies the viewed frame into an owned [`Message`].
            pub fn to_owned(&self) -> Message {
                match *self {
                    $(FrameView::$variant(_m) => Message::$variant($owned {
                        $($field: FromWire::from_wire(_m.$field()),)*
                    }),)*
                }
            }
        }
    };
}

frame_table!(define_frames);

impl FrameType {
    /// The type byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

//! Small wire enums: error codes and protocol versions, with their numeric, label and
//! subprotocol mappings (frame types come from the frame table, `frames`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::frames::FrameType;

/// Wire protocol versions, negotiated with `Sec-WebSocket-Protocol` (highest common wins).
///
/// v2 = v1 + batched ICE (`IceBatch`) + compact room events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ProtocolVersion {
    /// `switchboard.v1`
    V1 = 1,
    /// `switchboard.v2`
    V2 = 2,
}

impl ProtocolVersion {
    /// Every version, oldest first.
    pub const ALL: [ProtocolVersion; 2] = [ProtocolVersion::V1, ProtocolVersion::V2];
    /// The newest version this build speaks.
    pub const LATEST: ProtocolVersion = ProtocolVersion::V2;

    /// The `Sec-WebSocket-Protocol` token of this version.
    pub fn subprotocol(self) -> &'static str {
        match self {
            ProtocolVersion::V1 => "switchboard.v1",
            ProtocolVersion::V2 => "switchboard.v2",
        }
    }

    /// Parses a `Sec-WebSocket-Protocol` token (surrounding whitespace ignored).
    pub fn from_subprotocol(token: &str) -> Option<Self> {
        let token = token.trim();
        Self::ALL.into_iter().find(|v| v.subprotocol() == token)
    }

    /// The version number as carried in `Hello.versions` and `Welcome.version`.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Parses a version number as carried in `Hello.versions` and `Welcome.version`.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_u8() == value)
    }

    /// Whether a frame type may be sent on a connection speaking this version
    /// (`IceBatch` is v2 only).
    pub fn supports(self, frame_type: FrameType) -> bool {
        match frame_type {
            FrameType::IceBatch => self >= ProtocolVersion::V2,
            _ => true,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subprotocol())
    }
}

/// Error codes carried in every `Error` frame, in logs and in metric labels
/// (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u16)]
pub enum ErrorCode {
    /// 1001: the SDP could not be parsed or is not acceptable.
    InvalidSdp = 1001,
    /// 1002: an invite or negotiation timed out.
    Timeout,
    /// 1003: the join token is missing, invalid or expired.
    AuthFailed,
    /// 1004: the event is not allowed in the call's current state.
    InvalidTransition,
    /// 1005: the room has no free seat.
    RoomFull,
    /// 1006: this node does not own the room (see Redirect).
    NotOwner,
    /// 1007: too many requests.
    RateLimited,
    /// 1008: the message was not exactly one valid frame.
    BadFrame,
    /// 1009: no common protocol version.
    VersionUnsupported,
    /// 1010: the node is draining or overloaded.
    Draining,
    /// 1011: an internal error.
    Internal,
}

impl ErrorCode {
    /// Every error code in numeric order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidSdp,
        ErrorCode::Timeout,
        ErrorCode::AuthFailed,
        ErrorCode::InvalidTransition,
        ErrorCode::RoomFull,
        ErrorCode::NotOwner,
        ErrorCode::RateLimited,
        ErrorCode::BadFrame,
        ErrorCode::VersionUnsupported,
        ErrorCode::Draining,
        ErrorCode::Internal,
    ];

    /// The numeric code (1001..=1011).
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Maps a numeric code back to its variant.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1001..=1011 => Some(Self::ALL[usize::from(code - 1001)]),
            _ => None,
        }
    }

    /// Low-cardinality snake_case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::Timeout => "timeout",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::InvalidTransition => "invalid_transition",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::NotOwner => "not_owner",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::VersionUnsupported => "version_unsupported",
            ErrorCode::Draining => "draining",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_type_bytes_round_trip_and_are_dense() {
        for (i, t) in FrameType::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(t.as_u8()), i + 1);
            assert_eq!(FrameType::try_from(t.as_u8()), Ok(t));
        }
        assert_eq!(FrameType::try_from(0), Err(0));
        assert_eq!(FrameType::try_from(19), Err(19));
        assert_eq!(FrameType::try_from(255), Err(255));
        assert_eq!(FrameType::Hello.as_u8(), 1);
        assert_eq!(FrameType::Error.as_u8(), 18);
    }

    #[test]
    fn frame_type_names_are_unique_snake_case() {
        let mut names: Vec<_> = FrameType::ALL.iter().map(|t| t.name()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FrameType::ALL.len());
        assert_eq!(FrameType::Offer.name(), "offer");
        assert_eq!(FrameType::InviteResult.to_string(), "invite_result");
    }

    #[test]
    fn error_codes_match_the_design_table() {
        let expected = [
            (1001, "invalid_sdp"),
            (1002, "timeout"),
            (1003, "auth_failed"),
            (1004, "invalid_transition"),
            (1005, "room_full"),
            (1006, "not_owner"),
            (1007, "rate_limited"),
            (1008, "bad_frame"),
            (1009, "version_unsupported"),
            (1010, "draining"),
            (1011, "internal"),
        ];
        for (code, (num, label)) in ErrorCode::ALL.into_iter().zip(expected) {
            assert_eq!(code.code(), num);
            assert_eq!(code.label(), label);
            assert_eq!(ErrorCode::from_code(num), Some(code));
        }
        assert_eq!(ErrorCode::from_code(1000), None);
        assert_eq!(ErrorCode::from_code(1012), None);
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::BadFrame.to_string(), "1008 bad_frame");
    }

    #[test]
    fn protocol_versions_map_to_subprotocols_and_order() {
        assert_eq!(ProtocolVersion::V1.subprotocol(), "switchboard.v1");
        assert_eq!(ProtocolVersion::V2.subprotocol(), "switchboard.v2");
        for v in ProtocolVersion::ALL {
            assert_eq!(ProtocolVersion::from_subprotocol(v.subprotocol()), Some(v));
            assert_eq!(ProtocolVersion::from_u8(v.as_u8()), Some(v));
        }
        assert_eq!(
            ProtocolVersion::from_subprotocol(" switchboard.v2 "),
            Some(ProtocolVersion::V2)
        );
        assert_eq!(ProtocolVersion::from_subprotocol("switchboard.v3"), None);
        assert_eq!(ProtocolVersion::from_subprotocol("Switchboard.V1"), None);
        assert_eq!(ProtocolVersion::from_u8(0), None);
        assert_eq!(ProtocolVersion::from_u8(3), None);
        assert!(ProtocolVersion::V2 > ProtocolVersion::V1);
        assert_eq!(
            ProtocolVersion::ALL.iter().max(),
            Some(&ProtocolVersion::LATEST)
        );
        assert!(!ProtocolVersion::V1.supports(FrameType::IceBatch));
        assert!(ProtocolVersion::V2.supports(FrameType::IceBatch));
        assert!(ProtocolVersion::V1.supports(FrameType::IceCandidate));
    }
}

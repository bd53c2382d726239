//! Frame layout: `length u32 BE | type u8 | body | crc32 BE`, the length and CRC checks, and
//! the typed [`FrameError`] every malformed message maps to.

use thiserror::Error;

use super::frames::FrameType;
use super::types::ErrorCode;

/// Smallest value of the length field: the type byte plus the CRC.
pub const MIN_FRAME_LEN: usize = 5;
/// Largest value of the length field (64 KiB).
pub const MAX_FRAME_LEN: usize = 65_536;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes of the trailing CRC.
pub const CRC_LEN: usize = 4;
/// Bytes a frame adds around its body: length prefix, type byte and CRC.
pub const FRAME_OVERHEAD: usize = LEN_PREFIX + 1 + CRC_LEN;
/// Largest FlatBuffers body that fits in a frame.
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN - 1 - CRC_LEN;

/// WebSocket close code for a message that is too big (RFC 6455 §7.4.1).
const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// Why a message is not exactly one valid frame. Every variant maps to error code 1008.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length field is below [`MIN_FRAME_LEN`].
    #[error("frame length field {len} is below the minimum of {MIN_FRAME_LEN}")]
    TooShort {
        /// Value of the length field.
        len: usize,
    },
    /// The length field is above [`MAX_FRAME_LEN`].
    #[error("frame length field {len} exceeds the maximum of {MAX_FRAME_LEN}")]
    TooLong {
        /// Value of the length field.
        len: usize,
    },
    /// The message ends before the frame its header announces.
    #[error("truncated frame: needs {expected} bytes, message has {actual}")]
    Truncated {
        /// Bytes the frame needs, length prefix included (at least the smallest frame when
        /// not even the length prefix is present).
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The message continues after the frame: it is not exactly one frame.
    #[error("{extra} trailing bytes after a {frame_len}-byte frame")]
    TrailingBytes {
        /// Bytes of the frame, length prefix included.
        frame_len: usize,
        /// Bytes after it.
        extra: usize,
    },
    /// The CRC-32 of type and body does not match the trailer.
    #[error("crc mismatch: trailer says {expected:#010x}, type and body hash to {actual:#010x}")]
    CrcMismatch {
        /// CRC in the frame trailer.
        expected: u32,
        /// CRC computed over type and body.
        actual: u32,
    },
    /// The type byte names no frame type.
    #[error("unknown frame type byte {0}")]
    UnknownType(u8),
    /// The body failed FlatBuffers verification or holds a value this version does not know.
    #[error("invalid {frame_type} body: {reason}")]
    InvalidBody {
        /// Type of the frame whose body is invalid.
        frame_type: FrameType,
        /// What the verifier reported.
        reason: String,
    },
}

impl FrameError {
    /// The error code to put in the `Error` frame answering this (always 1008 bad frame).
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::BadFrame
    }

    /// The WebSocket close code when this error must close the connection at once:
    /// `Some(1009)` for an oversized length, `None` when an `Error` frame suffices.
    pub fn closes_connection(&self) -> Option<u16> {
        match self {
            FrameError::TooLong { .. } => Some(CLOSE_MESSAGE_TOO_BIG),
            _ => None,
        }
    }

    /// Low-cardinality label for the bad-frame metric.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::TooShort { .. } => "too_short",
            FrameError::TooLong { .. } => "too_long",
            FrameError::Truncated { .. } => "truncated",
            FrameError::TrailingBytes { .. } => "trailing_bytes",
            FrameError::CrcMismatch { .. } => "crc_mismatch",
            FrameError::UnknownType(_) => "unknown_type",
            FrameError::InvalidBody { .. } => "invalid_body",
        }
    }
}

/// CRC-32 (IEEE) over the type byte and the body.
pub fn frame_crc(type_byte: u8, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[type_byte]);
    hasher.update(body);
    hasher.finalize()
}

/// Reads and range-checks the length field at the start of `buf`; `None` if fewer than
/// four bytes are present.
fn length_field(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    // u32 always fits in usize on the 32/64-bit targets we build for.
    let len = u32::from_be_bytes(*prefix) as usize;
    if len < MIN_FRAME_LEN {
        return Err(FrameError::TooShort { len });
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong { len });
    }
    Ok(Some(len))
}

/// For a raw byte-stream transport: how many bytes the next frame in `buf` occupies
/// (length prefix included), or `None` if `buf` does not hold the whole frame yet.
///
/// Only the length field is checked; pass the frame to [`super::decode_view`] to verify it.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    match length_field(buf)? {
        Some(len) if buf.len() >= LEN_PREFIX + len => Ok(Some(LEN_PREFIX + len)),
        _ => Ok(None),
    }
}

/// Checks that `bytes` is exactly one frame with a valid CRC and a known type, and returns
/// the type and the (not yet verified) body.
pub fn split_frame(bytes: &[u8]) -> Result<(FrameType, &[u8]), FrameError> {
    let Some(len) = length_field(bytes)? else {
        return Err(FrameError::Truncated {
            expected: LEN_PREFIX + MIN_FRAME_LEN,
            actual: bytes.len(),
        });
    };
    let frame_len = LEN_PREFIX + len;
    if bytes.len() < frame_len {
        return Err(FrameError::Truncated {
            expected: frame_len,
            actual: bytes.len(),
        });
    }
    if bytes.len() > frame_len {
        return Err(FrameError::TrailingBytes {
            frame_len,
            extra: bytes.len() - frame_len,
        });
    }
    let (covered, trailer) = bytes[LEN_PREFIX..].split_at(len - CRC_LEN);
    let expected = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let (type_byte, body) = (covered[0], &covered[1..]);
    let actual = frame_crc(type_byte, body);
    if expected != actual {
        return Err(FrameError::CrcMismatch { expected, actual });
    }
    let frame_type = FrameType::try_from(type_byte).map_err(FrameError::UnknownType)?;
    Ok((frame_type, body))
}

/// Appends one whole frame around `body` to `out` (which the caller cleared).
///
/// The caller guarantees `body.len() <= MAX_BODY_LEN`.
pub fn write_frame(out: &mut Vec<u8>, frame_type: FrameType, body: &[u8]) {
    debug_assert!(body.len() <= MAX_BODY_LEN);
    let len = 1 + body.len() + CRC_LEN;
    out.reserve(LEN_PREFIX + len);
    // len <= MAX_FRAME_LEN, which fits in u32.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(frame_type.as_u8());
    out.extend_from_slice(body);
    out.extend_from_slice(&frame_crc(frame_type.as_u8(), body).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(type_byte: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((1 + body.len() + CRC_LEN) as u32).to_be_bytes());
        out.push(type_byte);
        out.extend_from_slice(body);
        out.extend_from_slice(&frame_crc(type_byte, body).to_be_bytes());
        out
    }

    #[test]
    fn layout_is_length_type_body_crc_big_endian() {
        let mut out = Vec::new();
        write_frame(&mut out, FrameType::Ping, b"abc");
        assert_eq!(&out[..4], &[0, 0, 0, 8]);
        assert_eq!(out[4], 14);
        assert_eq!(&out[5..8], b"abc");
        let crc = crc32fast::hash(&[14, b'a', b'b', b'c']);
        assert_eq!(&out[8..], &crc.to_be_bytes());
        assert_eq!(split_frame(&out), Ok((FrameType::Ping, &b"abc"[..])));
        assert_eq!(frame_len(&out), Ok(Some(out.len())));
    }

    #[test]
    fn length_bounds_are_enforced() {
        // Smallest frame: empty body.
        let min = frame(1, b"");
        assert_eq!(min.len(), LEN_PREFIX + MIN_FRAME_LEN);
        assert_eq!(split_frame(&min), Ok((FrameType::Hello, &b""[..])));
        for len in 0..MIN_FRAME_LEN as u32 {
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.resize(64, 0);
            assert_eq!(
                split_frame(&bytes),
                Err(FrameError::TooShort { len: len as usize })
            );
            assert_eq!(
                frame_len(&bytes),
                Err(FrameError::TooShort { len: len as usize })
            );
        }
        let too_long = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        let err = split_frame(&too_long).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLong {
                len: MAX_FRAME_LEN + 1
            }
        );
        assert_eq!(err.closes_connection(), Some(1009));
        assert_eq!(
            frame_len(&u32::MAX.to_be_bytes()).unwrap_err().label(),
            "too_long"
        );
    }

    #[test]
    fn largest_frame_is_accepted() {
        let body = vec![7u8; MAX_BODY_LEN];
        let bytes = frame(2, &body);
        assert_eq!(bytes.len(), LEN_PREFIX + MAX_FRAME_LEN);
        assert_eq!(split_frame(&bytes), Ok((FrameType::Welcome, &body[..])));
    }

    #[test]
    fn frame_len_waits_for_the_whole_frame() {
        let bytes = frame(14, b"hello");
        for cut in 0..bytes.len() {
            assert_eq!(frame_len(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(frame_len(&two), Ok(Some(bytes.len())));
    }

    #[test]
    fn not_exactly_one_frame_is_refused() {
        let bytes = frame(14, b"hello");
        assert_eq!(
            split_frame(&bytes[..3]),
            Err(FrameError::Truncated {
                expected: 9,
                actual: 3
            })
        );
        assert_eq!(
            split_frame(&bytes[..bytes.len() - 1]),
            Err(FrameError::Truncated {
                expected: bytes.len(),
                actual: bytes.len() - 1
            })
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            split_frame(&long),
            Err(FrameError::TrailingBytes {
                frame_len: bytes.len(),
                extra: 1
            })
        );
    }

    #[test]
    fn crc_is_checked_before_the_type() {
        let mut bytes = frame(14, b"hello");
        bytes[4] = 200;
        assert!(matches!(
            split_frame(&bytes),
            Err(FrameError::CrcMismatch { .. })
        ));
        let unknown = frame(200, b"hello");
        assert_eq!(split_frame(&unknown), Err(FrameError::UnknownType(200)));
        let zero = frame(0, b"");
        assert_eq!(split_frame(&zero), Err(FrameError::UnknownType(0)));
    }

    #[test]
    fn every_frame_error_is_a_bad_frame() {
        let errors = [
            FrameError::TooShort { len: 0 },
            FrameError::TooLong { len: 70_000 },
            FrameError::Truncated {
                expected: 9,
                actual: 0,
            },
            FrameError::TrailingBytes {
                frame_len: 9,
                extra: 1,
            },
            FrameError::CrcMismatch {
                expected: 1,
                actual: 2,
            },
            FrameError::UnknownType(0),
            FrameError::InvalidBody {
                frame_type: FrameType::Join,
                reason: "x".into(),
            },
        ];
        for e in &errors {
            assert_eq!(e.error_code(), ErrorCode::BadFrame);
            assert!(!e.to_string().is_empty());
            let expect_close = matches!(e, FrameError::TooLong { .. });
            assert_eq!(e.closes_connection().is_some(), expect_close);
        }
    }
}

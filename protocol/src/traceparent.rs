//! W3C Trace Context `traceparent` values (docs/protocol.md, "Trace context"): parsed from
//! the upgrade request by the node, generated and sent on every connect by the clients.

use std::fmt;

/// The sampled bit of the trace flags.
const SAMPLED: u8 = 0x01;

/// A parsed `traceparent`: which trace a connection belongs to and the client-side span the
/// node's spans hang under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id (never all zeros).
    pub trace_id: [u8; 16],
    /// The caller's span id, the parent of the node's spans (never all zeros).
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 asks the node to record the trace.
    pub flags: u8,
}

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Not `version-traceid-parentid-flags` with the W3C lengths and lowercase hex.
    #[error("traceparent is not 2-32-16-2 lowercase hex fields separated by '-'")]
    Malformed,
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    InvalidVersion,
    /// An all-zero trace id or parent id.
    #[error("traceparent has an all-zero trace id or parent id")]
    ZeroId,
}

impl TraceParent {
    /// The longest value a node reads; longer ones are refused before parsing.
    pub const MAX_LEN: usize = 256;

    /// A new trace with a random trace id and parent id, sampled.
    pub fn random() -> Self {
        loop {
            let trace_id: [u8; 16] = rand::random();
            let parent_id: [u8; 8] = rand::random();
            let candidate = Self {
                trace_id,
                parent_id,
                flags: SAMPLED,
            };
            if candidate.ids_valid() {
                return candidate;
            }
        }
    }

    /// Parses a header value. Versions above 00 are read by their version-00 prefix, as the
    /// specification asks; anything after it is ignored.
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let value = value.trim();
        if value.len() > Self::MAX_LEN || value.len() < 55 {
            return Err(TraceParentError::Malformed);
        }
        let bytes = value.as_bytes();
        let version = hex_field::<1>(&bytes[0..2])?;
        if version[0] == 0xff {
            return Err(TraceParentError::InvalidVersion);
        }
        let exact = value.len() == 55;
        // Version 00 is exactly 55 characters; a later one may go on after a '-'.
        if !exact && (version[0] == 0 || bytes[55] != b'-') {
            return Err(TraceParentError::Malformed);
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(TraceParentError::Malformed);
        }
        let parsed = Self {
            trace_id: hex_field::<16>(&bytes[3..35])?,
            parent_id: hex_field::<8>(&bytes[36..52])?,
            flags: hex_field::<1>(&bytes[53..55])?[0],
        };
        if !parsed.ids_valid() {
            return Err(TraceParentError::ZeroId);
        }
        Ok(parsed)
    }

    /// Whether the caller asked for the trace to be recorded.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    fn ids_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.parent_id != [0; 8]
    }
}

/// Version 00 form, lowercase: `00-<trace id>-<parent id>-<flags>`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.parent_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Decodes exactly `2 * N` lowercase hex digits.
fn hex_field<const N: usize>(digits: &[u8]) -> Result<[u8; N], TraceParentError> {
    if digits.len() != 2 * N {
        return Err(TraceParentError::Malformed);
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

fn nibble(c: u8) -> Result<u8, TraceParentError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TraceParentError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_prints_the_specification_example() {
        let t = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(t.parent_id[7], 0xb7);
        assert!(t.sampled());
        assert_eq!(t.to_string(), EXAMPLE);
    }

    #[test]
    fn unsampled_flags_are_kept() {
        let t = TraceParent::parse(&EXAMPLE.replace("-01", "-00")).unwrap();
        assert!(!t.sampled());
        assert_eq!(t.flags, 0);
    }

    #[test]
    fn later_versions_are_read_by_their_prefix() {
        let later = format!("cc{}-what-follows", &EXAMPLE[2..]);
        let t = TraceParent::parse(&later).unwrap();
        assert_eq!(t.to_string(), EXAMPLE);
        // Version 00 must be exactly 55 characters.
        assert_eq!(
            TraceParent::parse(&format!("{EXAMPLE}-x")),
            Err(TraceParentError::Malformed)
        );
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        assert_eq!(
            TraceParent::parse(zero_trace),
            Err(TraceParentError::ZeroId)
        );
        assert_eq!(
            TraceParent::parse(zero_parent),
            Err(TraceParentError::ZeroId)
        );
        assert_eq!(
            TraceParent::parse(&EXAMPLE.replacen("00", "ff", 1)),
            Err(TraceParentError::InvalidVersion)
        );
        for bad in [
            "",
            "00",
            &EXAMPLE.to_uppercase(),
            &EXAMPLE.replace('-', "_"),
            &EXAMPLE[..54],
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            &"0".repeat(300),
        ] {
            assert_eq!(
                TraceParent::parse(bad),
                Err(TraceParentError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn random_values_round_trip() {
        for _ in 0..100 {
            let t = TraceParent::random();
            assert!(t.sampled());
            assert_eq!(TraceParent::parse(&t.to_string()), Ok(t));
        }
    }
}

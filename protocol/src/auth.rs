//! Join tokens: JWT HS256 verification (server) and minting (`signaling-node token`, tests).
//!
//! A token is a compact JWS `header.claims.signature` (base64url without padding) signed with
//! HMAC-SHA256 under one of the node's keys. Claims:
//! - `sub`: the user id (non-empty, at most [`MAX_USER_LEN`] bytes);
//! - `rooms`: the rooms the holder may join, either `"*"` (any room), one room id as a string,
//!   or an array of room ids (an array containing `"*"` also means any room);
//! - `exp`: expiry, seconds since the Unix epoch (required);
//! - `nbf` / `iat`: optional; `nbf` in the future is rejected;
//! - `aud` / `iss`: checked when the verifier is configured with an audience / issuer.
//!
//! Only `alg: HS256` is accepted (no `none`, no algorithm confusion); the signature is checked
//! in constant time before the claims are parsed. Tokens longer than [`MAX_TOKEN_LEN`] are
//! refused without decoding. Several keys, each named by a `kid`, let a key rotate without a
//! flag day ([`keys`], [`TokenVerifier`]); `exp` and `nbf` allow a clock-skew leeway.

mod keys;
mod verify;

pub use keys::{KeyError, KeySet, MAX_KEYS, MAX_KEYS_FILE_LEN, SigningKey, VerifyKey};
pub use verify::{TokenRules, TokenVerifier};

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Longest token accepted (bytes); a frame is at most 64 KiB anyway.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest user id accepted (bytes).
pub const MAX_USER_LEN: usize = 128;

type HmacSha256 = Hmac<Sha256>;

/// The HMAC secret tokens are signed with. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(Arc<[u8]>);

impl JwtSecret {
    /// A secret from raw bytes; refuses an empty one.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, AuthError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(AuthError::EmptySecret);
        }
        Ok(Self(bytes.into()))
    }

    /// A secret from the contents of a secret file: surrounding whitespace (the newline an
    /// `echo` adds) is not part of the secret.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, AuthError> {
        let start = contents
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(contents.len());
        let end = contents
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(start, |i| i + 1);
        Self::new(&contents[start..end])
    }

    /// The key bytes (for the verifier; never logged).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length (long ones are hashed), so this never fails.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwtSecret(<{} bytes redacted>)", self.0.len())
    }
}

/// Which rooms a token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomGrant {
    /// Any room (`"*"`).
    Any,
    /// Exactly these rooms.
    Rooms(Vec<String>),
}

impl RoomGrant {
    /// Whether `room` may be joined under this grant.
    pub fn allows(&self, room: &str) -> bool {
        match self {
            RoomGrant::Any => true,
            RoomGrant::Rooms(rooms) => rooms.iter().any(|r| r == room),
        }
    }

    /// The first named room, if the grant names rooms (used to route at Hello time).
    pub fn first_room(&self) -> Option<&str> {
        match self {
            RoomGrant::Any => None,
            RoomGrant::Rooms(rooms) => rooms.first().map(String::as_str),
        }
    }
}

impl Serialize for RoomGrant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RoomGrant::Any => serializer.serialize_str("*"),
            RoomGrant::Rooms(rooms) => rooms.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for RoomGrant {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(deserializer)? {
            Raw::One(room) if room == "*" => RoomGrant::Any,
            Raw::One(room) => RoomGrant::Rooms(vec![room]),
            Raw::Many(rooms) if rooms.iter().any(|r| r == "*") => RoomGrant::Any,
            Raw::Many(rooms) => RoomGrant::Rooms(rooms),
        })
    }
}

/// The claims of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Rooms the holder may join.
    pub rooms: RoomGrant,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer (checked when the verifier names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience (checked when the verifier names one): one string or a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// The `aud` claim: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Claims {
    /// Claims for `user`, allowed `rooms`, valid from `now` for `ttl_secs` seconds.
    pub fn new(user: impl Into<String>, rooms: RoomGrant, now: u64, ttl_secs: u64) -> Self {
        Self {
            sub: user.into(),
            rooms,
            exp: now.saturating_add(ttl_secs),
            iat: Some(now),
            nbf: None,
            iss: None,
            aud: None,
        }
    }
}

/// Why a token was refused (every variant maps to wire error 1003).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The secret is empty.
    #[error("the JWT secret is empty")]
    EmptySecret,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too long ({len} bytes)")]
    TooLong {
        /// Token length in bytes.
        len: usize,
    },
    /// Not three base64url parts, or a part is not valid base64url / JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than HS256.
    #[error("unsupported token algorithm {0:?} (only HS256)")]
    UnsupportedAlgorithm(String),
    /// The signature does not match (forged, or signed with another secret).
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is in the past by more than the leeway.
    #[error("token expired at {exp} (now {now}, leeway {leeway} s)")]
    Expired {
        /// The token's expiry.
        exp: u64,
        /// The verifier's clock.
        now: u64,
        /// The clock-skew leeway allowed, seconds.
        leeway: u64,
    },
    /// `nbf` is in the future by more than the leeway.
    #[error("token not valid before {nbf} (now {now}, leeway {leeway} s)")]
    NotYetValid {
        /// The token's not-before time.
        nbf: u64,
        /// The verifier's clock.
        now: u64,
        /// The clock-skew leeway allowed, seconds.
        leeway: u64,
    },
    /// `sub` is empty or too long.
    #[error("token subject must be 1..={MAX_USER_LEN} bytes")]
    BadSubject,
    /// The header names a `kid` the node does not have.
    #[error("unknown token key id {kid:?} (the node has {known})")]
    UnknownKey {
        /// The token's `kid`.
        kid: String,
        /// The key ids the node has, comma-separated.
        known: String,
    },
    /// The key the token names was retired.
    #[error("token key {kid:?} expired at {expired_at} (now {now}); sign with a current key")]
    KeyExpired {
        /// The token's `kid`.
        kid: String,
        /// The key's expiry.
        expired_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// Every key the node has is expired.
    #[error("no join-token key is valid now (every key expired)")]
    NoUsableKey,
    /// `aud` does not name this node's audience.
    #[error("token audience does not include {expected:?}")]
    BadAudience {
        /// The audience the node expects.
        expected: String,
    },
    /// `iss` is not this node's issuer.
    #[error("token issuer is not {expected:?}")]
    BadIssuer {
        /// The issuer the node expects.
        expected: String,
    },
}

impl AuthError {
    /// A low-cardinality label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AuthError::EmptySecret => "empty_secret",
            AuthError::TooLong { .. } => "too_long",
            AuthError::Malformed(_) => "malformed",
            AuthError::UnsupportedAlgorithm(_) => "algorithm",
            AuthError::BadSignature => "signature",
            AuthError::Expired { .. } => "expired",
            AuthError::NotYetValid { .. } => "not_yet_valid",
            AuthError::BadSubject => "subject",
            AuthError::UnknownKey { .. } => "unknown_kid",
            AuthError::KeyExpired { .. } => "key_expired",
            AuthError::NoUsableKey => "no_usable_key",
            AuthError::BadAudience { .. } => "audience",
            AuthError::BadIssuer { .. } => "issuer",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// Signs `claims` with `secret` as an HS256 JWT (no `kid` in the header).
pub fn mint(secret: &JwtSecret, claims: &Claims) -> String {
    mint_with_kid(secret, None, claims)
}

/// Signs `claims` with `secret` as an HS256 JWT whose header names the key `kid`.
pub fn mint_with_kid(secret: &JwtSecret, kid: Option<&str>, claims: &Claims) -> String {
    let header = Header {
        alg: "HS256".to_owned(),
        typ: Some("JWT".to_owned()),
        kid: kid.map(str::to_owned),
    };
    // Serializing these plain structs to JSON cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = String::with_capacity(header.len() * 2 + payload.len() * 2 + 48);
    URL_SAFE_NO_PAD.encode_string(&header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let mut mac = secret.mac();
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    token
}

/// Verifies `token` against the single key `secret` at Unix time `now` (seconds), with no
/// leeway and no audience or issuer rule, and returns its claims.
pub fn verify(secret: &JwtSecret, token: &str, now: u64) -> Result<Claims, AuthError> {
    TokenVerifier::single(secret.clone()).verify(token, now)
}

/// The parts of a token up to the signature check: the header (`alg` must be HS256) and the
/// bytes the signature covers. Refuses oversized tokens before decoding anything.
fn split(token: &str) -> Result<(Header, &str), AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TooLong { len: token.len() });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("expected three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| AuthError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|_| AuthError::Malformed("header is not a JWT header"))?;
    if header.alg != "HS256" {
        return Err(AuthError::UnsupportedAlgorithm(header.alg));
    }
    Ok((header, token))
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret() -> JwtSecret {
        JwtSecret::new(b"test-secret-0123456789".to_vec()).unwrap()
    }

    fn claims(rooms: RoomGrant) -> Claims {
        Claims::new("alice", rooms, 1_000, 600)
    }

    #[test]
    fn round_trip() {
        let c = claims(RoomGrant::Rooms(vec!["r1".into(), "r2".into()]));
        let token = mint(&secret(), &c);
        assert_eq!(verify(&secret(), &token, 1_100).unwrap(), c);
        assert!(c.rooms.allows("r2") && !c.rooms.allows("r3"));
        assert_eq!(c.rooms.first_room(), Some("r1"));
    }

    #[test]
    fn star_grants_any_room() {
        let token = mint(&secret(), &claims(RoomGrant::Any));
        let c = verify(&secret(), &token, 1_100).unwrap();
        assert_eq!(c.rooms, RoomGrant::Any);
        assert!(c.rooms.allows("anything"));
        let raw: Claims = serde_json::from_str(r#"{"sub":"u","rooms":["a","*"],"exp":5}"#).unwrap();
        assert_eq!(raw.rooms, RoomGrant::Any);
        let raw: Claims = serde_json::from_str(r#"{"sub":"u","rooms":"a","exp":5}"#).unwrap();
        assert_eq!(raw.rooms, RoomGrant::Rooms(vec!["a".into()]));
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let token = mint(&secret(), &claims(RoomGrant::Any));
        assert!(matches!(
            verify(&secret(), &token, 1_600),
            Err(AuthError::Expired {
                exp: 1_600,
                now: 1_600,
                leeway: 0
            })
        ));
        let mut c = claims(RoomGrant::Any);
        c.nbf = Some(1_200);
        let token = mint(&secret(), &c);
        assert!(matches!(
            verify(&secret(), &token, 1_100),
            Err(AuthError::NotYetValid { .. })
        ));
    }

    #[test]
    fn forged_tokens_are_refused() {
        let token = mint(&secret(), &claims(RoomGrant::Any));
        let other = JwtSecret::new(b"another".to_vec()).unwrap();
        assert_eq!(verify(&other, &token, 1_100), Err(AuthError::BadSignature));
        // Swap in different claims under the original signature.
        let parts: Vec<&str> = token.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory","rooms":"*","exp":99999}"#);
        let forged = format!("{}.{}.{}", parts[0], evil, parts[2]);
        assert_eq!(
            verify(&secret(), &forged, 1_100),
            Err(AuthError::BadSignature)
        );
        // alg none.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let forged = format!("{}.{}.", none, parts[1]);
        assert!(matches!(
            verify(&secret(), &forged, 1_100),
            Err(AuthError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(matches!(
                verify(&secret(), bad, 0),
                Err(AuthError::Malformed(_))
            ));
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            verify(&secret(), &long, 0),
            Err(AuthError::TooLong { .. })
        ));
        let empty_sub = mint(&secret(), &Claims::new("", RoomGrant::Any, 0, 100));
        assert_eq!(verify(&secret(), &empty_sub, 1), Err(AuthError::BadSubject));
    }

    #[test]
    fn secret_file_contents_are_trimmed_and_redacted() {
        let s = JwtSecret::from_file_contents(b"  hunter2\n").unwrap();
        assert_eq!(s, JwtSecret::new(b"hunter2".to_vec()).unwrap());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            JwtSecret::from_file_contents(b"\n\n"),
            Err(AuthError::EmptySecret)
        );
    }

    proptest! {
        #[test]
        fn verify_never_panics(token in ".{0,300}") {
            let _ = verify(&secret(), &token, 1_100);
        }

        #[test]
        fn any_flipped_byte_breaks_the_token(index in 0usize..200, byte in any::<u8>()) {
            let token = mint(&secret(), &claims(RoomGrant::Any));
            let mut bytes = token.clone().into_bytes();
            let index = index % bytes.len();
            prop_assume!(bytes[index] != byte);
            bytes[index] = byte;
            if let Ok(mutated) = String::from_utf8(bytes) {
                // A flipped byte may decode to the same bits only in base64 padding positions
                // of the last char; anything accepted must then carry the original claims.
                if let Ok(c) = verify(&secret(), &mutated, 1_100) {
                    prop_assert_eq!(c, claims(RoomGrant::Any));
                }
            }
        }
    }
}

//! The keys a node verifies join tokens with: an optional key without a `kid` (the
//! `--jwt-secret` of a single-key setup) and a JWK set of HS256 keys named by `kid`, each with
//! an optional expiry (`exp`, a Switchboard extension), so a key rotates without a flag day:
//! add the new key, let the token service sign with it, let the old one expire or remove it.
//!
//! ```json
//! {"keys": [
//!   {"kty": "oct", "alg": "HS256", "kid": "2026-01", "k": "<base64url key>", "exp": 1767225600},
//!   {"kty": "oct", "alg": "HS256", "kid": "2026-02", "k": "<base64url key>"}
//! ]}
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::JwtSecret;

/// Most keys a set may hold (a token without `kid` is tried against each usable one).
pub const MAX_KEYS: usize = 16;
/// Largest key-set file accepted, bytes.
pub const MAX_KEYS_FILE_LEN: usize = 64 * 1024;
/// Longest `kid` accepted, bytes.
const MAX_KID_LEN: usize = 64;

/// Why a key set was refused (the whole set: a half-read rotation is worse than none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Larger than [`MAX_KEYS_FILE_LEN`].
    #[error("key set is {len} bytes, more than {MAX_KEYS_FILE_LEN}")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// Not a JSON object with a `keys` array of JWKs.
    #[error("key set is not a JWK set: {0}")]
    Json(String),
    /// More keys than [`MAX_KEYS`].
    #[error("key set has {count} keys, at most {MAX_KEYS} are allowed")]
    TooMany {
        /// How many.
        count: usize,
    },
    /// A key that cannot be used, and why.
    #[error("key {index} ({kid:?}): {problem}")]
    BadKey {
        /// Its position in `keys`.
        index: usize,
        /// Its `kid`, as given.
        kid: String,
        /// What is wrong.
        problem: String,
    },
    /// Two keys share a `kid`.
    #[error("kid {0:?} appears twice")]
    DuplicateKid(String),
    /// No key at all.
    #[error("no join-token key: give a secret and/or a key set with at least one key")]
    Empty,
}

/// One verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyKey {
    /// Its id (`None`: the single key without one).
    pub kid: Option<String>,
    /// The HMAC key.
    pub secret: JwtSecret,
    /// Tokens signed with it are refused from this Unix time on.
    pub expires_at: Option<u64>,
}

impl VerifyKey {
    /// Whether the key may verify tokens at `now`.
    pub fn usable(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// A key to sign with (demo token endpoint, tests): the secret and the `kid` to put in the
/// header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The `kid` of the header (`None`: no `kid`).
    pub kid: Option<String>,
    /// The HMAC key.
    pub secret: JwtSecret,
}

/// Every key of a node, at most one without a `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    k: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

impl KeySet {
    /// A set from the kid-less key `single` and the JWK set `jwks` (either may be absent, not
    /// both).
    pub fn new(single: Option<JwtSecret>, jwks: Option<&[u8]>) -> Result<Self, KeyError> {
        let mut keys: Vec<VerifyKey> = single
            .into_iter()
            .map(|secret| VerifyKey {
                kid: None,
                secret,
                expires_at: None,
            })
            .collect();
        if let Some(bytes) = jwks {
            keys.extend(parse_jwks(bytes)?);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// Every key, the kid-less one first.
    pub fn keys(&self) -> &[VerifyKey] {
        &self.keys
    }

    /// The key named `kid`.
    pub fn by_kid(&self, kid: &str) -> Option<&VerifyKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// The key ids, comma-separated (for messages).
    pub fn kids(&self) -> String {
        let kids: Vec<&str> = self.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        if kids.is_empty() {
            "no key ids".to_string()
        } else {
            kids.join(", ")
        }
    }

    /// The key to sign new tokens with at `now`: the last usable key of the JWK set (a
    /// rotation appends the new key), else the kid-less key.
    pub fn signing_key(&self, now: u64) -> Option<SigningKey> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.usable(now))
            .map(|k| SigningKey {
                kid: k.kid.clone(),
                secret: k.secret.clone(),
            })
    }
}

fn parse_jwks(bytes: &[u8]) -> Result<Vec<VerifyKey>, KeyError> {
    if bytes.len() > MAX_KEYS_FILE_LEN {
        return Err(KeyError::TooLarge { len: bytes.len() });
    }
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| KeyError::Json(e.to_string()))?;
    if set.keys.len() > MAX_KEYS {
        return Err(KeyError::TooMany {
            count: set.keys.len(),
        });
    }
    let mut keys: Vec<VerifyKey> = Vec::with_capacity(set.keys.len());
    for (index, jwk) in set.keys.into_iter().enumerate() {
        let kid = jwk.kid.clone().unwrap_or_default();
        let bad = |problem: &str| KeyError::BadKey {
            index,
            kid: kid.clone(),
            problem: problem.to_string(),
        };
        if jwk.kty != "oct" {
            return Err(bad("kty must be \"oct\" (a shared HMAC key)"));
        }
        if jwk.alg.as_deref().is_some_and(|a| a != "HS256") {
            return Err(bad("alg must be HS256"));
        }
        if kid.is_empty() || kid.len() > MAX_KID_LEN {
            return Err(bad("kid must be 1..=64 bytes"));
        }
        let material = jwk
            .k
            .as_deref()
            .ok_or_else(|| bad("k (the key, base64url) is missing"))?;
        let material = URL_SAFE_NO_PAD
            .decode(material.trim_end_matches('='))
            .map_err(|_| bad("k is not base64url"))?;
        let secret = JwtSecret::new(material).map_err(|_| bad("k is empty"))?;
        if keys.iter().any(|k| k.kid.as_deref() == Some(kid.as_str())) {
            return Err(KeyError::DuplicateKid(kid));
        }
        keys.push(VerifyKey {
            kid: Some(kid),
            secret,
            expires_at: jwk.exp,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_jwk_set_with_expiry_and_a_single_key() {
        let json = format!(
            r#"{{"keys":[{{"kty":"oct","alg":"HS256","kid":"old","k":"{}","exp":100}},
                        {{"kty":"oct","kid":"new","k":"{}"}}]}}"#,
            k(b"old-key"),
            k(b"new-key")
        );
        let set = KeySet::new(
            Some(JwtSecret::new(b"single".to_vec()).unwrap()),
            Some(json.as_bytes()),
        )
        .unwrap();
        assert_eq!(set.keys().len(), 3);
        assert_eq!(set.keys()[0].kid, None);
        assert_eq!(set.by_kid("old").unwrap().expires_at, Some(100));
        assert!(set.by_kid("old").unwrap().usable(99));
        assert!(!set.by_kid("old").unwrap().usable(100));
        assert_eq!(set.kids(), "old, new");
        assert_eq!(set.signing_key(0).unwrap().kid.as_deref(), Some("new"));
    }

    #[test]
    fn bad_sets_are_refused_whole_with_the_reason() {
        let cases: Vec<(String, &str)> = vec![
            ("[]".into(), "not a JWK set"),
            (
                r#"{"keys":[{"kty":"RSA","kid":"a","k":"eA"}]}"#.into(),
                "kty must be",
            ),
            (
                r#"{"keys":[{"kty":"oct","alg":"HS512","kid":"a","k":"eA"}]}"#.into(),
                "alg must be HS256",
            ),
            (r#"{"keys":[{"kty":"oct","k":"eA"}]}"#.into(), "kid must be"),
            (r#"{"keys":[{"kty":"oct","kid":"a"}]}"#.into(), "k (the key"),
            (
                r#"{"keys":[{"kty":"oct","kid":"a","k":"!!"}]}"#.into(),
                "not base64url",
            ),
            (
                r#"{"keys":[{"kty":"oct","kid":"a","k":""}]}"#.into(),
                "k is empty",
            ),
            (
                r#"{"keys":[{"kty":"oct","kid":"a","k":"eA"},{"kty":"oct","kid":"a","k":"eQ"}]}"#
                    .into(),
                "appears twice",
            ),
            (r#"{"keys":[]}"#.into(), "no join-token key"),
            (
                format!(
                    r#"{{"keys":[{}]}}"#,
                    vec![r#"{"kty":"oct","kid":"x","k":"eA"}"#; MAX_KEYS + 1].join(",")
                ),
                "at most 16",
            ),
            (" ".repeat(MAX_KEYS_FILE_LEN + 1), "more than"),
        ];
        for (json, want) in cases {
            let error = KeySet::new(None, Some(json.as_bytes())).unwrap_err();
            assert!(error.to_string().contains(want), "{json:.80}: {error}");
        }
        assert_eq!(KeySet::new(None, None), Err(KeyError::Empty));
    }
}

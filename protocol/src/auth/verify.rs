//! Token verification against a [`KeySet`]: the key is chosen by the header's `kid` (a token
//! without one is tried against every usable key), the signature and the `aud` / `iss` rules
//! are checked by `jsonwebtoken` with the algorithm pinned to HS256, and `exp` / `nbf` are
//! checked here with the clock-skew leeway so the errors can say by how much a token missed.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};

use super::keys::{KeySet, VerifyKey};
use super::{AuthError, Claims, JwtSecret, MAX_USER_LEN, split};

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRules {
    /// Seconds `exp` may be past and `nbf` ahead of the node's clock (clock skew between the
    /// token service and the nodes).
    pub leeway_secs: u64,
    /// When set, `aud` must be (or contain) this audience.
    pub audience: Option<String>,
    /// When set, `iss` must be this issuer.
    pub issuer: Option<String>,
}

/// Verifies join tokens: the keys and the rules. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenVerifier {
    keys: KeySet,
    rules: TokenRules,
}

impl TokenVerifier {
    /// A verifier of `keys` under `rules`.
    pub fn new(keys: KeySet, rules: TokenRules) -> Self {
        Self { keys, rules }
    }

    /// One key without a `kid`, no leeway, no audience or issuer rule.
    pub fn single(secret: JwtSecret) -> Self {
        let keys = KeySet::new(Some(secret), None).unwrap_or_else(|_| unreachable!("one key"));
        Self::new(keys, TokenRules::default())
    }

    /// The keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The rules.
    pub fn rules(&self) -> &TokenRules {
        &self.rules
    }

    /// Verifies `token` at Unix time `now` (seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        let (header, token) = split(token)?;
        let candidates: Vec<&VerifyKey> = match header.kid.as_deref() {
            Some(kid) => {
                let key = self.keys.by_kid(kid).ok_or_else(|| AuthError::UnknownKey {
                    kid: kid.to_string(),
                    known: self.keys.kids(),
                })?;
                if let Some(expired_at) = key.expires_at.filter(|_| !key.usable(now)) {
                    return Err(AuthError::KeyExpired {
                        kid: kid.to_string(),
                        expired_at,
                        now,
                    });
                }
                vec![key]
            }
            None => {
                let usable: Vec<&VerifyKey> =
                    self.keys.keys().iter().filter(|k| k.usable(now)).collect();
                if usable.is_empty() {
                    return Err(AuthError::NoUsableKey);
                }
                usable
            }
        };
        let validation = self.validation();
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(
                token,
                &DecodingKey::from_secret(key.secret.bytes()),
                &validation,
            ) {
                Ok(data) => return self.check_claims(data.claims, now),
                Err(error) => {
                    last = self.map_error(error.kind());
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn validation(&self) -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        // exp and nbf are checked in `check_claims`, with the leeway and precise errors.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        match &self.rules.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.rules.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        validation
    }

    fn map_error(&self, kind: &ErrorKind) -> AuthError {
        let expected = |rule: &Option<String>| rule.clone().unwrap_or_default();
        match kind {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::UnsupportedAlgorithm("not HS256".into())
            }
            ErrorKind::InvalidAudience => AuthError::BadAudience {
                expected: expected(&self.rules.audience),
            },
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::BadAudience {
                expected: expected(&self.rules.audience),
            },
            ErrorKind::InvalidIssuer => AuthError::BadIssuer {
                expected: expected(&self.rules.issuer),
            },
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::BadIssuer {
                expected: expected(&self.rules.issuer),
            },
            ErrorKind::Json(_) => AuthError::Malformed("claims lack sub, rooms or exp"),
            ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                AuthError::Malformed("a part is not base64url JSON")
            }
            _ => AuthError::Malformed("not a valid JWT"),
        }
    }

    fn check_claims(&self, claims: Claims, now: u64) -> Result<Claims, AuthError> {
        let leeway = self.rules.leeway_secs;
        if claims.sub.is_empty() || claims.sub.len() > MAX_USER_LEN {
            return Err(AuthError::BadSubject);
        }
        if claims.exp.saturating_add(leeway) <= now {
            return Err(AuthError::Expired {
                exp: claims.exp,
                now,
                leeway,
            });
        }
        if let Some(nbf) = claims.nbf
            && nbf > now.saturating_add(leeway)
        {
            return Err(AuthError::NotYetValid { nbf, now, leeway });
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::auth::{Audience, RoomGrant, mint, mint_with_kid};

    fn secret(bytes: &[u8]) -> JwtSecret {
        JwtSecret::new(bytes.to_vec()).unwrap()
    }

    fn jwks(keys: &[(&str, &[u8], Option<u64>)]) -> Vec<u8> {
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .map(|(kid, k, exp)| {
                serde_json::json!({"kty": "oct", "alg": "HS256", "kid": kid,
                    "k": URL_SAFE_NO_PAD.encode(k), "exp": exp})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    fn rotating(rules: TokenRules) -> TokenVerifier {
        let set = KeySet::new(
            None,
            Some(&jwks(&[
                ("k1", b"first-key", Some(2_000)),
                ("k2", b"second-key", None),
            ])),
        )
        .unwrap();
        TokenVerifier::new(set, rules)
    }

    fn claims(now: u64) -> Claims {
        Claims::new("alice", RoomGrant::Any, now, 600)
    }

    #[test]
    fn a_key_rotates_without_a_flag_day() {
        let v = rotating(TokenRules::default());
        let old = mint_with_kid(&secret(b"first-key"), Some("k1"), &claims(1_000));
        let new = mint_with_kid(&secret(b"second-key"), Some("k2"), &claims(1_000));
        // Both keys verify while k1 is valid; tokens without kid find their key too.
        assert_eq!(v.verify(&old, 1_100).unwrap().sub, "alice");
        assert_eq!(v.verify(&new, 1_100).unwrap().sub, "alice");
        let kidless = mint(&secret(b"second-key"), &claims(1_000));
        assert!(v.verify(&kidless, 1_100).is_ok());
        // k1 retires at 2000: its tokens get a clear answer, k2's still pass.
        let old = mint_with_kid(&secret(b"first-key"), Some("k1"), &claims(1_900));
        let new = mint_with_kid(&secret(b"second-key"), Some("k2"), &claims(1_900));
        assert_eq!(
            v.verify(&old, 2_000),
            Err(AuthError::KeyExpired {
                kid: "k1".into(),
                expired_at: 2_000,
                now: 2_000
            })
        );
        assert!(v.verify(&new, 2_000).is_ok());
        assert_eq!(
            v.keys().signing_key(2_000).unwrap().kid.as_deref(),
            Some("k2")
        );
    }

    #[test]
    fn an_unknown_kid_and_a_key_under_the_wrong_kid_are_refused() {
        let v = rotating(TokenRules::default());
        let token = mint_with_kid(&secret(b"second-key"), Some("k9"), &claims(1_000));
        let error = v.verify(&token, 1_100).unwrap_err();
        assert_eq!(error.metric_label(), "unknown_kid");
        assert_eq!(
            error.to_string(),
            "unknown token key id \"k9\" (the node has k1, k2)"
        );
        // Signed with k2's key but claiming k1: the signature check is against k1 only.
        let token = mint_with_kid(&secret(b"second-key"), Some("k1"), &claims(1_000));
        assert_eq!(v.verify(&token, 1_100), Err(AuthError::BadSignature));
        let token = mint(&secret(b"another-key"), &claims(1_000));
        assert_eq!(v.verify(&token, 1_100), Err(AuthError::BadSignature));
        // Every key expired: tokens without kid get no key at all.
        let expired = KeySet::new(None, Some(&jwks(&[("k1", b"first-key", Some(10))]))).unwrap();
        let v = TokenVerifier::new(expired, TokenRules::default());
        assert_eq!(
            v.verify(&mint(&secret(b"first-key"), &claims(1_000)), 1_100),
            Err(AuthError::NoUsableKey)
        );
    }

    #[test]
    fn the_leeway_window() {
        let v = rotating(TokenRules {
            leeway_secs: 30,
            ..TokenRules::default()
        });
        let token = mint_with_kid(&secret(b"second-key"), Some("k2"), &claims(1_000));
        // exp = 1600: accepted up to 1629, refused from 1630 with the numbers.
        assert!(v.verify(&token, 1_629).is_ok());
        assert_eq!(
            v.verify(&token, 1_630),
            Err(AuthError::Expired {
                exp: 1_600,
                now: 1_630,
                leeway: 30
            })
        );
        let mut early = claims(1_000);
        early.nbf = Some(1_050);
        let token = mint_with_kid(&secret(b"second-key"), Some("k2"), &early);
        assert!(v.verify(&token, 1_020).is_ok(), "inside the leeway");
        assert!(matches!(
            v.verify(&token, 1_019),
            Err(AuthError::NotYetValid { nbf: 1_050, .. })
        ));
    }

    #[test]
    fn audience_and_issuer_when_configured() {
        let v = rotating(TokenRules {
            leeway_secs: 0,
            audience: Some("switchboard".into()),
            issuer: Some("https://tokens.example".into()),
        });
        let sign = |c: &Claims| mint_with_kid(&secret(b"second-key"), Some("k2"), c);
        let mut good = claims(1_000);
        good.aud = Some(Audience::Many(vec!["other".into(), "switchboard".into()]));
        good.iss = Some("https://tokens.example".into());
        assert!(v.verify(&sign(&good), 1_100).is_ok());

        let mut bad = good.clone();
        bad.aud = Some(Audience::One("other".into()));
        assert_eq!(
            v.verify(&sign(&bad), 1_100),
            Err(AuthError::BadAudience {
                expected: "switchboard".into()
            })
        );
        bad.aud = None;
        assert_eq!(
            v.verify(&sign(&bad), 1_100).unwrap_err().metric_label(),
            "audience"
        );
        let mut bad = good.clone();
        bad.iss = Some("https://evil.example".into());
        assert_eq!(
            v.verify(&sign(&bad), 1_100).unwrap_err().metric_label(),
            "issuer"
        );
        bad.iss = None;
        assert_eq!(
            v.verify(&sign(&bad), 1_100).unwrap_err().metric_label(),
            "issuer"
        );
        // Without the rules, aud and iss are not looked at.
        assert!(
            rotating(TokenRules::default())
                .verify(&sign(&bad), 1_100)
                .is_ok()
        );
    }

    #[test]
    fn algorithm_pinning_and_size_caps_hold_with_several_keys() {
        let v = rotating(TokenRules::default());
        let token = mint_with_kid(&secret(b"second-key"), Some("k2"), &claims(1_000));
        let parts: Vec<&str> = token.split('.').collect();
        for alg in ["none", "HS512", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k2"}}"#));
            let forged = format!("{header}.{}.{}", parts[1], parts[2]);
            assert_eq!(
                v.verify(&forged, 1_100),
                Err(AuthError::UnsupportedAlgorithm(alg.into()))
            );
        }
        let long = format!("{token}{}", "A".repeat(crate::auth::MAX_TOKEN_LEN));
        assert!(matches!(
            v.verify(&long, 1_100),
            Err(AuthError::TooLong { .. })
        ));
    }
}

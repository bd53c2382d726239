//! The browser demo (`serve --demo`): the co-host page and the bundled TypeScript client
//! (`signaling-node/web/`, embedded at compile time) at `/demo` on the admin port, and a
//! demo-only token endpoint. Never enable it in production: anyone who reaches the admin port
//! gets a join token for any user and room.
//!
//! Routes:
//! - `GET /demo` — the page (`web/demo/index.html`).
//! - `GET /demo/demo.js` — the page's script: the client library and the demo UI bundled by
//!   esbuild (`web/demo/demo.bundle.js`, committed and drift-checked by
//!   `e2e/scripts/check-generated`, so building the node never needs Node.js).
//! - `GET /demo/token?user=U&room=R` — `{"token", "url", "node"}`: a one-hour token for `U` in
//!   room `R`, minted with the node's current JWT secret, and this node's WebSocket URL.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::config::SettingsWatch;
use switchboard_protocol::auth::{self, Claims, RoomGrant};

/// The demo page.
const INDEX_HTML: &str = include_str!("../../web/demo/index.html");
/// The bundled client and demo UI.
const DEMO_JS: &str = include_str!("../../web/demo/demo.bundle.js");
/// Lifetime of a demo token.
const TOKEN_TTL_SECS: u64 = 3600;
/// Longest user or room name the endpoint mints a token for.
const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Deserialize)]
struct TokenQuery {
    user: Option<String>,
    room: Option<String>,
}

#[derive(Debug, Serialize)]
struct TokenReply {
    token: String,
    url: String,
    node: String,
}

/// Why a token request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemoError {
    /// A query parameter is missing.
    #[error("missing query parameter {0:?}")]
    Missing(&'static str),
    /// A name is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error("{field} must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -")]
    BadName {
        /// The parameter.
        field: &'static str,
    },
}

/// Checks a user or room name from the query string.
pub fn check_name(field: &'static str, value: Option<&str>) -> Result<String, DemoError> {
    let value = value.ok_or(DemoError::Missing(field))?;
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(value.to_string())
    } else {
        Err(DemoError::BadName { field })
    }
}

/// The demo routes, reading the JWT secret, node name and advertised URL from `settings`.
pub fn router(settings: SettingsWatch) -> Router {
    Router::new()
        .route("/demo", get(index))
        .route("/demo/", get(index))
        .route("/demo/demo.js", get(script))
        .route("/demo/token", get(token))
        .with_state(settings)
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX_HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DEMO_JS,
    )
}

async fn token(State(settings): State<SettingsWatch>, Query(q): Query<TokenQuery>) -> Response {
    let names = check_name("user", q.user.as_deref())
        .and_then(|user| Ok((user, check_name("room", q.room.as_deref())?)));
    let (user, room) = match names {
        Ok(names) => names,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    };
    let settings = settings.borrow().clone();
    let now = auth::unix_now();
    let Some(key) = settings.tokens.keys().signing_key(now) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "every join-token key expired\n",
        )
            .into_response();
    };
    let mut claims = Claims::new(user, RoomGrant::Rooms(vec![room]), now, TOKEN_TTL_SECS);
    let rules = settings.tokens.rules();
    claims.iss = rules.issuer.clone();
    claims.aud = rules.audience.clone().map(auth::Audience::One);
    let reply = TokenReply {
        token: auth::mint_with_kid(&key.secret, key.kid.as_deref(), &claims),
        url: settings.advertise_url.clone(),
        node: settings.node_name.clone(),
    };
    match serde_json::to_string(&reply) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(
            check_name("user", Some("alice-1.b_c")).unwrap(),
            "alice-1.b_c"
        );
        assert_eq!(check_name("user", None), Err(DemoError::Missing("user")));
        for bad in ["", "a b", "ä", "x/y", &"a".repeat(65)] {
            assert_eq!(
                check_name("room", Some(bad)),
                Err(DemoError::BadName { field: "room" }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_page_loads_the_bundled_client() {
        assert!(INDEX_HTML.contains("/demo/demo.js"));
        assert!(DEMO_JS.contains("SwitchboardClient"));
    }
}

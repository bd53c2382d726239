//! The WebSocket upgrade: path check (`/ws`, else 404), protocol version negotiation
//! (`Sec-WebSocket-Protocol: switchboard.v2, switchboard.v1`, highest common wins; an
//! `X-Proto-Version: 1|2` header is accepted too; nothing in common → 426 with the supported
//! list in the body and in `X-Supported-Protocols`), and the per-connection WebSocket limits.
//!
//! A client that offers no version at all also gets 426: the protocol is binary and
//! versioned, so the node does not guess.

use http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Tunables;
use crate::protocol::{MAX_FRAME_LEN, ProtocolVersion};

/// The WebSocket path.
pub const WS_PATH: &str = "/ws";
/// Header carrying a plain version number (alternative to the subprotocol).
pub const X_PROTO_VERSION: &str = "x-proto-version";
/// Header listing the supported subprotocols on a 426.
pub const X_SUPPORTED_PROTOCOLS: &str = "x-supported-protocols";

/// Largest WebSocket message: one whole frame including its 4-byte length prefix.
pub const MAX_MESSAGE: usize = MAX_FRAME_LEN + 4;

/// The versions this node serves, newest first.
pub fn supported() -> Vec<ProtocolVersion> {
    let mut all = ProtocolVersion::ALL.to_vec();
    all.sort_unstable_by(|a, b| b.cmp(a));
    all
}

/// The supported subprotocols as a header value, newest first.
pub fn supported_list() -> String {
    supported()
        .iter()
        .map(|v| v.subprotocol())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a version was agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The version.
    pub version: ProtocolVersion,
    /// Whether it came from `Sec-WebSocket-Protocol` (then the answer must echo it).
    pub via_subprotocol: bool,
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not `/ws` (404).
    NotFound,
    /// No common version (426).
    NoCommonVersion,
}

impl Refusal {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NotFound => "path",
            Refusal::NoCommonVersion => "version",
        }
    }
}

/// Picks the highest version offered in `subprotocols` (each header value a comma-separated
/// list) or, failing that, in `x_proto` (version numbers, comma-separated).
pub fn negotiate<'a>(
    subprotocols: impl IntoIterator<Item = &'a str>,
    x_proto: impl IntoIterator<Item = &'a str>,
) -> Option<Negotiated> {
    let offered = subprotocols
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(ProtocolVersion::from_subprotocol)
        .max();
    if let Some(version) = offered {
        return Some(Negotiated {
            version,
            via_subprotocol: true,
        });
    }
    x_proto
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(|n| n.trim().parse::<u8>().ok())
        .filter_map(ProtocolVersion::from_u8)
        .max()
        .map(|version| Negotiated {
            version,
            via_subprotocol: false,
        })
}

/// Checks the path and negotiates a version for `request`.
pub fn check_request(request: &Request) -> Result<Negotiated, Refusal> {
    if request.uri().path() != WS_PATH {
        return Err(Refusal::NotFound);
    }
    let headers = request.headers();
    let subprotocols = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let x_proto = headers
        .get_all(X_PROTO_VERSION)
        .iter()
        .filter_map(|v| v.to_str().ok());
    negotiate(subprotocols, x_proto).ok_or(Refusal::NoCommonVersion)
}

/// The response adding the negotiated version to `response`.
pub fn accept_response(mut response: Response, negotiated: Negotiated) -> Response {
    let headers = response.headers_mut();
    if negotiated.via_subprotocol {
        headers.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(negotiated.version.subprotocol()),
        );
    }
    headers.insert(
        X_PROTO_VERSION,
        HeaderValue::from(u16::from(negotiated.version.as_u8())),
    );
    response
}

/// The HTTP error answer for `refusal`.
pub fn refusal_response(refusal: &Refusal) -> ErrorResponse {
    let (status, body) = match refusal {
        Refusal::NotFound => (
            StatusCode::NOT_FOUND,
            format!("not found; the WebSocket path is {WS_PATH}\n"),
        ),
        Refusal::NoCommonVersion => (
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "no common protocol version; supported: {}\n",
                supported_list()
            ),
        ),
    };
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    if *refusal == Refusal::NoCommonVersion
        && let Ok(value) = HeaderValue::from_str(&supported_list())
    {
        response.headers_mut().insert(X_SUPPORTED_PROTOCOLS, value);
    }
    response
}

/// WebSocket limits for a new connection: messages and frames capped at one protocol frame,
/// buffers from the settings.
pub fn ws_config(t: &Tunables) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(t.read_buffer)
        .write_buffer_size(t.write_buffer)
        // Bounded so a peer that stops reading cannot grow the write buffer: the outbound
        // queue in front of it is the place where frames wait.
        .max_write_buffer_size(t.write_buffer + 2 * MAX_MESSAGE)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn highest_common_subprotocol_wins() {
        let n = negotiate(["switchboard.v1, switchboard.v2"], []).unwrap();
        assert_eq!(n.version, ProtocolVersion::V2);
        assert!(n.via_subprotocol);
        let n = negotiate(["chat", "switchboard.v1"], []).unwrap();
        assert_eq!(n.version, ProtocolVersion::V1);
        assert_eq!(negotiate(["switchboard.v9"], []), None);
        let n = negotiate([], ["1"]).unwrap();
        assert_eq!(
            n,
            Negotiated {
                version: ProtocolVersion::V1,
                via_subprotocol: false
            }
        );
        assert_eq!(
            negotiate([], ["2, 1"]).unwrap().version,
            ProtocolVersion::V2
        );
        assert_eq!(negotiate([], ["7", "x"]), None);
        assert_eq!(negotiate([], []), None);
    }

    #[test]
    fn requests_are_checked() {
        assert_eq!(
            check_request(&req(
                "/other",
                &[("sec-websocket-protocol", "switchboard.v2")]
            )),
            Err(Refusal::NotFound)
        );
        assert_eq!(
            check_request(&req("/ws?x=1", &[("x-proto-version", "2")]))
                .unwrap()
                .version,
            ProtocolVersion::V2
        );
        assert_eq!(
            check_request(&req("/ws", &[])),
            Err(Refusal::NoCommonVersion)
        );
        let r = refusal_response(&Refusal::NoCommonVersion);
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            r.headers()[X_SUPPORTED_PROTOCOLS],
            "switchboard.v2, switchboard.v1"
        );
        assert!(r.body().as_deref().unwrap().contains("switchboard.v1"));
    }
}

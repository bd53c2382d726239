//! The WebSocket upgrade: path check (`/ws`, the advertised URL's path or a configured extra
//! path, else 404), protocol version negotiation
//! (`Sec-WebSocket-Protocol: switchboard.v2, switchboard.v1`, highest common wins; an
//! `X-Proto-Version: 1|2` header is accepted too; nothing in common → 426 with the supported
//! list in the body and in `X-Supported-Protocols`), and the largest WebSocket message.
//!
//! A client that offers no version at all also gets 426: the protocol is binary and
//! versioned, so the node does not guess.
//!
//! The W3C `traceparent` of the connection comes from the header of that name or, for
//! browsers (which cannot set headers on a WebSocket), a `traceparent` query parameter. An
//! invalid value is ignored, as the Trace Context specification asks: the connection is
//! served and its spans start a trace of their own.

use http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use crate::config::Settings;
use switchboard_protocol::traceparent::TraceParent;
use switchboard_protocol::{MAX_FRAME_LEN, ProtocolVersion};

/// The WebSocket path.
pub const WS_PATH: &str = "/ws";
/// Header carrying a plain version number (alternative to the subprotocol).
pub const X_PROTO_VERSION: &str = "x-proto-version";
/// Header (and query parameter) carrying the client's W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Header listing the supported subprotocols on a 426.
pub const X_SUPPORTED_PROTOCOLS: &str = "x-supported-protocols";

/// Largest WebSocket message: one whole frame including its 4-byte length prefix.
pub const MAX_MESSAGE: usize = MAX_FRAME_LEN + 4;

/// Every version this build speaks, newest first.
pub fn supported() -> Vec<ProtocolVersion> {
    let mut all = ProtocolVersion::ALL.to_vec();
    all.sort_unstable_by(|a, b| b.cmp(a));
    all
}

/// `served` as a header value (subprotocol names, in the given order).
pub fn supported_list(served: &[ProtocolVersion]) -> String {
    served
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

/// Picks the highest version in `served` offered in `subprotocols` (each header value a
/// comma-separated list) or, failing that, in `x_proto` (version numbers, comma-separated).
pub fn negotiate<'a>(
    served: &[ProtocolVersion],
    subprotocols: impl IntoIterator<Item = &'a str>,
    x_proto: impl IntoIterator<Item = &'a str>,
) -> Option<Negotiated> {
    let offered = subprotocols
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(ProtocolVersion::from_subprotocol)
        .filter(|v| served.contains(v))
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
        .filter(|v| served.contains(v))
        .max()
        .map(|version| Negotiated {
            version,
            via_subprotocol: false,
        })
}

/// The path of a `ws://` or `wss://` URL (`None` when it does not parse).
pub fn url_path(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    uri.host()?;
    Some(uri.path().to_owned())
}

/// The WebSocket paths a node accepts: `/ws`, its advertised URL's path (a proxy that routes
/// one path per node forwards it unchanged, see docs/operations.md) and its extra paths.
pub fn accepted_paths(settings: &Settings) -> Vec<String> {
    let mut paths = vec![WS_PATH.to_owned()];
    paths.extend(url_path(&settings.advertise_url));
    paths.extend(settings.extra_ws_paths.iter().cloned());
    paths.dedup();
    paths
}

/// Checks the path against `paths` and negotiates a version in `served` for `request`.
pub fn check_request(
    request: &Request,
    paths: &[String],
    served: &[ProtocolVersion],
) -> Result<Negotiated, Refusal> {
    let path = request.uri().path();
    if !paths.iter().any(|p| p == path) {
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
    negotiate(served, subprotocols, x_proto).ok_or(Refusal::NoCommonVersion)
}

/// The connection's trace context: the `traceparent` header, else the query parameter; `None`
/// when absent or invalid.
pub fn trace_parent(request: &Request) -> Option<TraceParent> {
    let from_header = request
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    let from_query = || {
        request.uri().query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == TRACEPARENT).then_some(value)
        })
    };
    let value = from_header.or_else(from_query)?;
    match TraceParent::parse(value) {
        Ok(parent) => Some(parent),
        Err(e) => {
            tracing::debug!(error = %e, "ignoring the connection's traceparent");
            None
        }
    }
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

/// The HTTP error answer for `refusal` (`served` lists the versions on a 426).
pub fn refusal_response(refusal: &Refusal, served: &[ProtocolVersion]) -> ErrorResponse {
    let (status, body) = match refusal {
        Refusal::NotFound => (
            StatusCode::NOT_FOUND,
            format!("not found; the WebSocket path is {WS_PATH}\n"),
        ),
        Refusal::NoCommonVersion => (
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "no common protocol version; supported: {}\n",
                supported_list(served)
            ),
        ),
    };
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    if *refusal == Refusal::NoCommonVersion
        && let Ok(value) = HeaderValue::from_str(&supported_list(served))
    {
        response.headers_mut().insert(X_SUPPORTED_PROTOCOLS, value);
    }
    response
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
    fn trace_parent_from_header_or_query() {
        const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(TP).unwrap();
        assert_eq!(
            trace_parent(&req("/ws", &[("traceparent", TP)])),
            Some(parsed)
        );
        assert_eq!(
            trace_parent(&req(&format!("/ws?a=1&traceparent={TP}"), &[])),
            Some(parsed)
        );
        // The header wins over the query.
        let other = "00-11111111111111111111111111111111-2222222222222222-00";
        assert_eq!(
            trace_parent(&req(
                &format!("/ws?traceparent={other}"),
                &[("traceparent", TP)]
            )),
            Some(parsed)
        );
        // Absent or invalid: none, and the connection goes on.
        assert_eq!(trace_parent(&req("/ws", &[])), None);
        assert_eq!(trace_parent(&req("/ws?traceparent=junk", &[])), None);
        assert_eq!(trace_parent(&req("/ws", &[("traceparent", "00-00")])), None);
    }

    #[test]
    fn highest_common_subprotocol_wins() {
        let all = supported();
        let negotiate =
            |s: &[&str], x: &[&str]| negotiate(&all, s.iter().copied(), x.iter().copied());
        let n = negotiate(&["switchboard.v1, switchboard.v2"], &[]).unwrap();
        assert_eq!(n.version, ProtocolVersion::V2);
        assert!(n.via_subprotocol);
        let n = negotiate(&["chat", "switchboard.v1"], &[]).unwrap();
        assert_eq!(n.version, ProtocolVersion::V1);
        assert_eq!(negotiate(&["switchboard.v9"], &[]), None);
        let n = negotiate(&[], &["1"]).unwrap();
        assert_eq!(
            n,
            Negotiated {
                version: ProtocolVersion::V1,
                via_subprotocol: false
            }
        );
        assert_eq!(
            negotiate(&[], &["2, 1"]).unwrap().version,
            ProtocolVersion::V2
        );
        assert_eq!(negotiate(&[], &["7", "x"]), None);
        assert_eq!(negotiate(&[], &[]), None);
        // A node serving only v1 (an old pool) never answers v2.
        let v1 = [ProtocolVersion::V1];
        let n = super::negotiate(&v1, ["switchboard.v2, switchboard.v1"], []).unwrap();
        assert_eq!(n.version, ProtocolVersion::V1);
        assert_eq!(super::negotiate(&v1, ["switchboard.v2"], []), None);
    }

    #[test]
    fn requests_are_checked() {
        let all = supported();
        let paths = vec![WS_PATH.to_owned()];
        let check_request = |r: &Request| check_request(r, &paths, &all);
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
        let r = refusal_response(&Refusal::NoCommonVersion, &all);
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(
            r.headers()[X_SUPPORTED_PROTOCOLS],
            "switchboard.v2, switchboard.v1"
        );
        assert!(r.body().as_deref().unwrap().contains("switchboard.v1"));
    }

    #[test]
    fn the_advertised_path_and_extra_paths_are_accepted() {
        let mut settings =
            Settings::new(switchboard_protocol::auth::JwtSecret::new(b"k".to_vec()).unwrap());
        settings.advertise_url = "wss://signal.example/nodes/demo-v1-0/ws".into();
        settings.extra_ws_paths = vec!["/signal/ws".into()];
        let paths = accepted_paths(&settings);
        assert_eq!(paths, ["/ws", "/nodes/demo-v1-0/ws", "/signal/ws"]);
        let all = supported();
        let offer = [("sec-websocket-protocol", "switchboard.v2")];
        for path in ["/ws", "/nodes/demo-v1-0/ws", "/signal/ws?x=1"] {
            assert!(
                check_request(&req(path, &offer), &paths, &all).is_ok(),
                "{path}"
            );
        }
        for path in ["/nodes/demo-v1-1/ws", "/nodes/demo-v1-0/ws/", "/"] {
            assert_eq!(
                check_request(&req(path, &offer), &paths, &all),
                Err(Refusal::NotFound),
                "{path}"
            );
        }
        assert_eq!(url_path("not a url"), None);
    }
}

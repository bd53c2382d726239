//! The client's typed errors, including the server's protocol [`ErrorCode`] when it answered
//! with an `Error` frame.

use switchboard_protocol::{EncodeError, ErrorCode, ErrorFrame, FrameError};
use tokio_tungstenite::tungstenite;

/// Everything a [`Client`](super::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a usable `ws://` / `wss://` URL.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TCP connect failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL dialled.
        url: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// TLS setup or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server refused the WebSocket upgrade with an HTTP status (426 = no common protocol
    /// version, the body lists the supported ones).
    #[error("server refused the WebSocket upgrade: HTTP {status} {body}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// Response body (trimmed).
        body: String,
    },
    /// WebSocket-level failure.
    #[error("WebSocket error: {0}")]
    WebSocket(String),
    /// WebTransport-level failure (QUIC, HTTP/3, the session or its stream).
    #[error("WebTransport error: {0}")]
    WebTransport(String),
    /// The server answered with an `Error` frame.
    #[error("server error {raw_code} ({label}): {message}", label = code.map_or("unknown", |c| c.label()))]
    Server {
        /// The protocol error code, if it is one this client knows.
        code: Option<ErrorCode>,
        /// The numeric code as sent.
        raw_code: u16,
        /// The server's message.
        message: String,
    },
    /// The server sent bytes that are not a valid frame.
    #[error("bad frame from server: {0}")]
    Frame(#[from] FrameError),
    /// A message could not be encoded (too large for one frame); nothing was sent.
    #[error("cannot send: {0}")]
    Encode(#[from] EncodeError),
    /// The server broke the protocol (e.g. answered Hello with something else than Welcome).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Something did not happen in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
    },
    /// More redirects than allowed in a row.
    #[error("too many redirects (limit {limit})")]
    TooManyRedirects {
        /// The configured limit.
        limit: u32,
    },
    /// Reconnecting after a dropped connection gave up.
    #[error("reconnect failed after {attempts} attempts: {last}")]
    ReconnectFailed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<ClientError>,
    },
    /// A call id this client does not know (never invited / invited to, or already ended).
    #[error("unknown call {0:?}")]
    UnknownCall(String),
    /// A local limit was hit (too many pending requests or tracked calls).
    #[error("client limit reached: {0}")]
    Limit(&'static str),
    /// The connection dropped while the request was in flight; it may or may not have been
    /// applied.
    #[error("connection lost while the request was in flight")]
    ConnectionLost,
    /// The client was closed (or its background task ended).
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// The protocol error code, when the server answered with an `Error` frame.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => *code,
            ClientError::ReconnectFailed { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The typed form of an `Error` frame.
    pub fn from_frame(frame: &ErrorFrame) -> Self {
        ClientError::Server {
            code: ErrorCode::from_code(frame.code),
            raw_code: frame.code,
            message: frame.message.clone(),
        }
    }

    /// Whether retrying the same connection later can help (false for auth or version
    /// refusals and for local mistakes).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::WebSocket(_)
            | ClientError::WebTransport(_)
            | ClientError::Timeout { .. }
            | ClientError::ConnectionLost => true,
            ClientError::Http { status, .. } => *status >= 500,
            ClientError::Server { code, .. } => matches!(
                code,
                Some(
                    ErrorCode::Draining
                        | ErrorCode::Internal
                        | ErrorCode::Timeout
                        | ErrorCode::RateLimited
                )
            ),
            _ => false,
        }
    }

    /// A short stable label (for counters and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::InvalidUrl { .. } => "invalid_url",
            ClientError::Connect { .. } => "connect",
            ClientError::Tls(_) => "tls",
            ClientError::Http { .. } => "http",
            ClientError::WebSocket(_) => "websocket",
            ClientError::WebTransport(_) => "webtransport",
            ClientError::Server { code, .. } => code.map_or("server_unknown", |c| c.label()),
            ClientError::Frame(_) => "bad_frame",
            ClientError::Encode(_) => "encode",
            ClientError::Protocol(_) => "protocol",
            ClientError::Timeout { .. } => "timeout",
            ClientError::TooManyRedirects { .. } => "too_many_redirects",
            ClientError::ReconnectFailed { .. } => "reconnect_failed",
            ClientError::UnknownCall(_) => "unknown_call",
            ClientError::Limit(_) => "limit",
            ClientError::ConnectionLost => "connection_lost",
            ClientError::Closed => "closed",
        }
    }

    pub(crate) fn from_ws(url: &str, err: tungstenite::Error) -> Self {
        match err {
            tungstenite::Error::Http(response) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| {
                        String::from_utf8_lossy(b)
                            .trim()
                            .chars()
                            .take(200)
                            .collect()
                    })
                    .unwrap_or_default();
                ClientError::Http { status, body }
            }
            tungstenite::Error::Io(source) => ClientError::Connect {
                url: url.to_string(),
                source,
            },
            other => ClientError::WebSocket(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_carry_their_code() {
        let frame = ErrorFrame {
            code: ErrorCode::RoomFull.code(),
            message: "room r is full".into(),
            request_id: 7,
        };
        let err = ClientError::from_frame(&frame);
        assert_eq!(err.code(), Some(ErrorCode::RoomFull));
        assert!(!err.is_retriable());
        assert!(err.to_string().contains("room r is full"), "{err}");
        let unknown = ClientError::from_frame(&ErrorFrame {
            code: 4242,
            message: String::new(),
            request_id: 0,
        });
        assert_eq!(unknown.code(), None);
        assert_eq!(unknown.kind(), "server_unknown");
    }

    #[test]
    fn draining_is_retriable_auth_is_not() {
        let draining = ClientError::Server {
            code: Some(ErrorCode::Draining),
            raw_code: 1010,
            message: String::new(),
        };
        assert!(draining.is_retriable());
        let auth = ClientError::Server {
            code: Some(ErrorCode::AuthFailed),
            raw_code: 1003,
            message: String::new(),
        };
        assert!(!auth.is_retriable());
        let wrapped = ClientError::ReconnectFailed {
            attempts: 3,
            last: Box::new(auth),
        };
        assert_eq!(wrapped.code(), Some(ErrorCode::AuthFailed));
        assert!(
            !ClientError::Http {
                status: 426,
                body: String::new()
            }
            .is_retriable()
        );
    }
}

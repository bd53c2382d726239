//! The HTTP/1.1 upgrade to WebSocket on a raw byte stream: read the request (at most
//! [`MAX_REQUEST`] bytes), check the path and negotiate the version (`handshake`), check the
//! WebSocket headers (tungstenite's `create_response`), and answer 101 — or 400, 404 or 426
//! with a short body. Bytes the client sent after its request are handed on, so nothing it
//! sent is lost; the request buffer is freed before the connection goes on.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request, create_response, write_response,
};

use super::handshake::{self, Refusal};
use switchboard_protocol::ProtocolVersion;
use switchboard_protocol::traceparent::TraceParent;

/// Largest upgrade request accepted (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;

/// A connection upgraded to WebSocket.
#[derive(Debug)]
pub struct Upgraded {
    /// The negotiated version.
    pub version: ProtocolVersion,
    /// Bytes received after the request (the first frames, if the client did not wait).
    pub tail: Vec<u8>,
    /// The client's trace context, boxed: most connections carry none.
    pub trace: Option<Box<TraceParent>>,
}

/// Why a connection was not upgraded.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The socket failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Not an HTTP request, or not a WebSocket upgrade (answered 400).
    #[error("bad upgrade request: {0}")]
    BadRequest(String),
    /// The request is larger than [`MAX_REQUEST`] (answered 400).
    #[error("upgrade request above {MAX_REQUEST} bytes")]
    TooLarge,
    /// Wrong path or no common version (answered 404 / 426).
    #[error("upgrade refused: {0:?}")]
    Refused(Refusal),
}

impl UpgradeError {
    /// Label for `handshake_failures_total`.
    pub fn label(&self) -> &'static str {
        match self {
            UpgradeError::Io(_) => "io",
            UpgradeError::BadRequest(_) | UpgradeError::TooLarge => "protocol",
            UpgradeError::Refused(refusal) => refusal.label(),
        }
    }
}

/// Reads the upgrade request from `stream`, answers it (WebSocket on one of `paths`, a
/// version in `served`), and returns what was agreed.
pub async fn upgrade<S>(
    stream: &mut S,
    paths: &[String],
    served: &[ProtocolVersion],
) -> Result<Upgraded, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let (len, request) = loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(UpgradeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        match Request::try_parse(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) if buf.len() > MAX_REQUEST => {
                answer_error(stream, bad_request("request too large")).await;
                return Err(UpgradeError::TooLarge);
            }
            Ok(None) => {}
            Err(e) => {
                answer_error(stream, bad_request("not a WebSocket upgrade request")).await;
                return Err(UpgradeError::BadRequest(e.to_string()));
            }
        }
    };
    let negotiated = match handshake::check_request(&request, paths, served) {
        Ok(negotiated) => negotiated,
        Err(refusal) => {
            answer_error(stream, handshake::refusal_response(&refusal, served)).await;
            return Err(UpgradeError::Refused(refusal));
        }
    };
    let response = match create_response(&request) {
        Ok(response) => handshake::accept_response(response, negotiated),
        Err(e) => {
            answer_error(stream, bad_request("not a WebSocket upgrade request")).await;
            return Err(UpgradeError::BadRequest(e.to_string()));
        }
    };
    let mut head = Vec::with_capacity(256);
    write_response(&mut head, &response).map_err(|e| UpgradeError::BadRequest(e.to_string()))?;
    stream.write_all(&head).await?;
    stream.flush().await?;
    Ok(Upgraded {
        version: negotiated.version,
        tail: buf.split_off(len),
        trace: handshake::trace_parent(&request).map(Box::new),
    })
}

fn bad_request(why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{why}\n")));
    *response.status_mut() = http::StatusCode::BAD_REQUEST;
    response
}

/// Writes an error answer with its body and a length, best effort (the caller closes).
async fn answer_error<S>(stream: &mut S, response: ErrorResponse)
where
    S: AsyncWrite + Unpin,
{
    let body = response.body().clone().unwrap_or_default();
    let mut response = response.map(|_| ());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_LENGTH, body.len().into());
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    let mut out = Vec::with_capacity(256 + body.len());
    if write_response(&mut out, &response).is_ok() {
        out.extend_from_slice(body.as_bytes());
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    async fn exchange(request: String) -> (Result<Upgraded, UpgradeError>, String) {
        let (mut server, mut client) = duplex(64 * 1024);
        client.write_all(request.as_bytes()).await.unwrap();
        let served = handshake::supported();
        let outcome = upgrade(&mut server, &["/ws".to_string()], &served).await;
        drop(server);
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        (outcome, answer)
    }

    fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
    }

    #[tokio::test]
    async fn upgrades_and_keeps_the_bytes_after_the_request() {
        let mut req = request("/ws", "Sec-WebSocket-Protocol: switchboard.v1\r\n");
        req.push_str("\u{1}\u{2}");
        let (outcome, answer) = exchange(req).await;
        let upgraded = outcome.unwrap();
        assert_eq!(upgraded.version, ProtocolVersion::V1);
        assert_eq!(upgraded.tail, vec![1, 2]);
        assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
        assert!(answer.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(answer.contains("sec-websocket-protocol: switchboard.v1"));
    }

    #[tokio::test]
    async fn refusals_are_answered() {
        let (outcome, answer) = exchange(request("/other", "X-Proto-Version: 2\r\n")).await;
        assert!(matches!(
            outcome,
            Err(UpgradeError::Refused(Refusal::NotFound))
        ));
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let (outcome, answer) = exchange(request("/ws", "")).await;
        assert_eq!(outcome.unwrap_err().label(), "version");
        assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
        assert!(answer.contains("switchboard.v2"), "{answer}");
        let no_key = request("/ws", "X-Proto-Version: 2\r\n").replace(KEY, "short");
        let (outcome, answer) = exchange(no_key).await;
        assert!(matches!(outcome, Err(UpgradeError::BadRequest(_))));
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let (outcome, answer) = exchange("\u{0}garbage\r\n\r\n".into()).await;
        assert_eq!(outcome.unwrap_err().label(), "protocol");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    #[tokio::test]
    async fn an_endless_request_is_cut_off() {
        let endless = format!("GET /ws HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST + 10));
        let (outcome, answer) = exchange(endless).await;
        assert!(matches!(outcome, Err(UpgradeError::TooLarge)));
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
}

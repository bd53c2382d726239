//! A minimal HTTP/1.1 client for the runner's own needs (readiness probes, `pod-runner ctl`):
//! one request per connection, `Connection: close`, response size bounded, whole exchange
//! under a timeout. Not a general client: no TLS, no chunked decoding of bodies beyond what
//! the runner's own control endpoint and simple health endpoints send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response the client reads.
pub const MAX_RESPONSE: usize = 1 << 20;

/// Errors of an HTTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("http {addr}: {source}")]
    Io {
        /// Peer.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The exchange took longer than the timeout.
    #[error("http {0}: timed out")]
    Timeout(SocketAddr),
    /// The response is not HTTP or too large.
    #[error("http {addr}: bad response: {reason}")]
    BadResponse {
        /// Peer.
        addr: SocketAddr,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes (everything after the headers).
    pub body: Vec<u8>,
}

/// Sends `method path` to `addr` with `extra_headers` and `body`, returns the response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    tokio::time::timeout(timeout, exchange(addr, method, path, extra_headers, body))
        .await
        .map_err(|_| HttpError::Timeout(addr))?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, HttpError> {
    let io = |source| HttpError::Io { addr, source };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pod-runner\r\nAccept: */*\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in extra_headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break;
        }
        if buf.len() + n > MAX_RESPONSE {
            return Err(HttpError::BadResponse {
                addr,
                reason: "response larger than 1 MiB",
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        // Stop as soon as a Content-Length body is complete (the peer may keep the socket open).
        if let Some((head_end, Some(len))) = content_length(&buf)
            && buf.len() >= head_end + 4 + len
        {
            break;
        }
    }
    parse(&buf).ok_or(HttpError::BadResponse {
        addr,
        reason: "not an HTTP/1.x response",
    })
}

/// End of the head and the `Content-Length`, once the head is complete.
fn content_length(buf: &[u8]) -> Option<(usize, Option<usize>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let len = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    });
    Some((end, len))
}

/// Parses a complete `HTTP/1.x` response.
fn parse(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some(Response {
        status,
        body: buf[end + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn parses_status_and_body() {
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\nX: y\r\n\r\nnope").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, b"nope");
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_none());
        assert!(parse(b"HTTP/1.1 abc OK\r\n\r\n").is_none());
    }

    #[tokio::test]
    async fn talks_to_a_real_socket_and_times_out_on_silence() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).await.unwrap();
            assert!(req[..n].starts_with(b"GET /readyz HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            // Second connection: never answer.
            let (_silent, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let r = request(addr, "GET", "/readyz", &[], b"", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let err = request(addr, "GET", "/", &[], b"", Duration::from_millis(200)).await;
        assert!(matches!(err, Err(HttpError::Timeout(_))));
        server.abort();
    }
}

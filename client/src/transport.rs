//! The client's byte transport: URL parsing, TCP (+ TLS for `wss://` with a CA file) and the
//! WebSocket upgrade offering `switchboard.v2, switchboard.v1`; which transport a connection
//! uses, and the WebTransport URL a `wss://` URL stands for.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::error::ClientError;
use switchboard_protocol::traceparent::TraceParent;
use switchboard_protocol::{MAX_FRAME_LEN, ProtocolVersion};

/// A WebSocket over plain TCP or TLS.
pub type WsStream = WebSocketStream<Stream>;

/// Plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The transport a connection to a node runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// WebSocket over TCP (`ws://`, `wss://`).
    WebSocket,
    /// WebTransport over HTTP/3 (QUIC on UDP).
    WebTransport,
}

impl TransportKind {
    /// A short stable label (for logs and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::WebTransport => "webtransport",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as given.
    pub url: String,
    /// `true` for `wss://`.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
}

impl Endpoint {
    /// Parses and checks a WebSocket URL.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid("the scheme must be ws:// or wss://")),
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self {
            url: url.to_string(),
            tls,
            host,
            port,
        })
    }
}

/// The WebTransport URL a node's `wss://` URL stands for: `https://` with the same host, path
/// and query, on UDP `port`, or on the UDP port with the wss URL's port number when `None`
/// (docs/protocol.md, "WebTransport"). `None` for a `ws://` URL: WebTransport is always TLS.
pub fn webtransport_url(endpoint: &Endpoint, port: Option<u16>) -> Option<String> {
    if !endpoint.tls {
        return None;
    }
    let uri: Uri = endpoint.url.parse().ok()?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = if endpoint.host.contains(':') {
        format!("[{}]", endpoint.host)
    } else {
        endpoint.host.clone()
    };
    Some(format!(
        "https://{host}:{}{path}",
        port.unwrap_or(endpoint.port)
    ))
}

/// Loads the CA certificates (PEM) a `wss://` server certificate must chain to.
pub fn tls_connector(ca_file: &Path) -> Result<TlsConnector, ClientError> {
    let tls_err = |reason: String| ClientError::Tls(format!("{}: {reason}", ca_file.display()));
    let pem = std::fs::read(ca_file).map_err(|e| tls_err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| tls_err(e.to_string()))?;
        roots.add(cert).map_err(|e| tls_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(tls_err("no PEM certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The WebSocket limits a client uses: messages capped at one protocol frame, 4 KiB buffers
/// (signaling messages are small; the default 128 KiB would cost a load generator with
/// thousands of connections gigabytes).
pub fn ws_config() -> WebSocketConfig {
    let max = MAX_FRAME_LEN + 4;
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// The `Sec-WebSocket-Protocol` offer for `versions`, highest first.
pub fn subprotocol_offer(versions: &[ProtocolVersion]) -> String {
    let mut sorted = versions.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    sorted
        .iter()
        .map(|v| v.subprotocol())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens TCP (+ TLS) and upgrades to WebSocket (sending `traceparent` when given); returns
/// the socket and the subprotocol the server picked (if it named a known one).
pub async fn open(
    endpoint: &Endpoint,
    versions: &[ProtocolVersion],
    tls: Option<&TlsConnector>,
    connect_timeout: Duration,
    traceparent: Option<&TraceParent>,
) -> Result<(WsStream, Option<ProtocolVersion>), ClientError> {
    let work =
        async {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|source| ClientError::Connect {
                    url: endpoint.url.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let stream = if endpoint.tls {
                let connector = tls.ok_or_else(|| {
                    ClientError::Tls("a wss:// URL needs a CA file (--ca-file)".to_string())
                })?;
                let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| ClientError::Tls(format!("server name {}: {e}", endpoint.host)))?;
                let tls = connector.connect(name, tcp).await.map_err(|e| {
                    ClientError::Tls(format!("handshake with {}: {e}", endpoint.url))
                })?;
                Stream::Tls(Box::new(tls))
            } else {
                Stream::Plain(tcp)
            };
            let mut request = endpoint.url.as_str().into_client_request().map_err(|e| {
                ClientError::InvalidUrl {
                    url: endpoint.url.clone(),
                    reason: e.to_string(),
                }
            })?;
            let offer = subprotocol_offer(versions);
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                offer.parse().map_err(|_| ClientError::InvalidUrl {
                    url: endpoint.url.clone(),
                    reason: "bad subprotocol header".into(),
                })?,
            );
            if let Some(traceparent) = traceparent {
                // Always valid: lowercase hex and dashes.
                if let Ok(value) = traceparent.to_string().parse() {
                    request.headers_mut().insert("traceparent", value);
                }
            }
            let (ws, response) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                    .await
                    .map_err(|e| ClientError::from_ws(&endpoint.url, e))?;
            let picked = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .and_then(ProtocolVersion::from_subprotocol);
            Ok((ws, picked))
        };
    tokio::time::timeout(connect_timeout, work)
        .await
        .map_err(|_| ClientError::Timeout {
            what: "WebSocket connect",
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("ws://127.0.0.1:7000/ws").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "127.0.0.1", 7000));
        let e = Endpoint::parse("wss://signal.example/ws").unwrap();
        assert_eq!((e.tls, e.port), (true, 443));
        let e = Endpoint::parse("ws://[::1]:9/ws").unwrap();
        assert_eq!(e.host, "::1");
        for bad in ["http://x/ws", "127.0.0.1:7000", "", "ws://"] {
            assert!(
                matches!(Endpoint::parse(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn webtransport_url_keeps_host_path_and_query() {
        let url = |u: &str, port| webtransport_url(&Endpoint::parse(u).unwrap(), port);
        assert_eq!(
            url("wss://n1.signal.example/ws", None).as_deref(),
            Some("https://n1.signal.example:443/ws")
        );
        assert_eq!(
            url("wss://203.0.113.7:31000/nodes/a/ws?traceparent=x", None).as_deref(),
            Some("https://203.0.113.7:31000/nodes/a/ws?traceparent=x")
        );
        assert_eq!(
            url("wss://[::1]:7000/ws", Some(7443)).as_deref(),
            Some("https://[::1]:7443/ws")
        );
        assert_eq!(url("ws://127.0.0.1:7000/ws", Some(7443)), None);
    }

    #[test]
    fn offer_is_highest_first_without_duplicates() {
        let offer = subprotocol_offer(&[
            ProtocolVersion::V1,
            ProtocolVersion::V2,
            ProtocolVersion::V1,
        ]);
        assert_eq!(offer, "switchboard.v2, switchboard.v1");
        assert_eq!(subprotocol_offer(&[ProtocolVersion::V1]), "switchboard.v1");
    }

    #[test]
    fn missing_or_empty_ca_file_is_a_tls_error() {
        let missing = tls_connector(Path::new("/nonexistent/ca.pem"));
        assert!(matches!(missing, Err(ClientError::Tls(_))));
        let dir = std::env::temp_dir().join(format!("sb-ca-{}", std::process::id()));
        std::fs::write(&dir, b"not a pem").unwrap();
        assert!(matches!(tls_connector(&dir), Err(ClientError::Tls(_))));
        let _ = std::fs::remove_file(&dir);
    }
}

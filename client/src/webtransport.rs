//! A WebTransport connection to a node (feature `webtransport`): HTTP/3 over QUIC to the
//! node's WebTransport port, the version offered in the session request, and ONE
//! bidirectional stream carrying the protocol's frames back to back (each delimited by its own
//! `length`), exactly the bytes of WebSocket binary messages. This is the transport layer
//! only: Hello, requests and resume are the caller's, as on a raw WebSocket.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use switchboard_protocol::traceparent::TraceParent;
use switchboard_protocol::{Encoder, MAX_FRAME_LEN, Message, ProtocolVersion, decode};
use tokio::io::AsyncWriteExt;
use wtransport::endpoint::ConnectOptions;
use wtransport::error::ConnectionError;
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

use super::error::ClientError;
use super::transport::subprotocol_offer;

/// Largest frame accepted from the node, `length` prefix included.
const MAX_FRAME: usize = MAX_FRAME_LEN + 4;
/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 4096;

/// How the session ended, as the node closed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The node closed the session with this code (the WebSocket close code it would have
    /// sent) and reason.
    ByNode {
        /// The close code (a QUIC application error code, up to 2^62 - 1).
        code: u64,
        /// The close reason.
        reason: String,
    },
    /// Anything else (a timeout, a QUIC error, a local close).
    Other(String),
}

/// One WebTransport session and its stream of protocol frames.
pub struct WtConnection {
    send: SendStream,
    recv: RecvStream,
    session: Connection,
    /// Keeps the QUIC endpoint (its socket and driver) alive as long as the session; taken on
    /// drop to send the close.
    endpoint: Option<Endpoint<wtransport::endpoint::endpoint_side::Client>>,
    version: Option<ProtocolVersion>,
    /// Bytes read but not yet a whole frame.
    buf: BytesMut,
    encoder: Encoder,
}

/// How long a dropped connection's endpoint may take to get its close to the node.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// A dropped connection closes its session at once, so the node does not wait for the QUIC
/// idle timeout to see it gone. The endpoint lingers briefly in a task: dropped with the
/// session, its socket could go before the close packet is sent.
impl Drop for WtConnection {
    fn drop(&mut self) {
        self.close(0, "");
        if let (Some(endpoint), Ok(runtime)) =
            (self.endpoint.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(CLOSE_LINGER, endpoint.wait_idle()).await;
            });
        }
    }
}

impl std::fmt::Debug for WtConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtConnection")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A TLS 1.3 client config for HTTP/3 trusting the CA certificates (PEM) in `ca_file`.
pub fn tls_config(ca_file: &Path) -> Result<rustls::ClientConfig, ClientError> {
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
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h3".to_vec()];
    Ok(config)
}

impl WtConnection {
    /// Opens a session to `url` (`https://host:port/ws`, the node's WebTransport port)
    /// offering `versions`, then its stream, all within `timeout`.
    pub async fn connect(
        url: &str,
        versions: &[ProtocolVersion],
        tls: rustls::ClientConfig,
        timeout: Duration,
        traceparent: Option<&TraceParent>,
    ) -> Result<Self, ClientError> {
        let wt_err = |e: &dyn std::fmt::Display| ClientError::WebTransport(format!("{url}: {e}"));
        let config = ClientConfig::builder()
            .with_bind_default()
            .with_custom_tls(tls)
            .build();
        let endpoint = Endpoint::client(config).map_err(|source| ClientError::Connect {
            url: url.to_owned(),
            source,
        })?;
        let offer = subprotocol_offer(versions);
        let quoted = offer
            .split(", ")
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let numbers = versions
            .iter()
            .map(|v| v.as_u8().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut options = ConnectOptions::builder(url)
            .add_header("wt-available-protocols", quoted)
            .add_header("x-proto-version", numbers);
        if let Some(traceparent) = traceparent {
            options = options.add_header("traceparent", traceparent.to_string());
        }
        let work = async {
            let session = endpoint
                .connect(options.build())
                .await
                .map_err(|e| wt_err(&e))?;
            let (send, recv) = session
                .open_bi()
                .await
                .map_err(|e| wt_err(&e))?
                .await
                .map_err(|e| wt_err(&e))?;
            Ok::<_, ClientError>((session, send, recv))
        };
        let (session, send, recv) =
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| ClientError::Timeout {
                    what: "WebTransport connect",
                })??;
        Ok(Self {
            send,
            recv,
            session,
            endpoint: Some(endpoint),
            version: None,
            buf: BytesMut::new(),
            encoder: Encoder::new(),
        })
    }

    /// Sends one message as one frame.
    pub async fn send(&mut self, msg: &Message) -> Result<(), ClientError> {
        let frame = self.encoder.encode(msg)?.to_vec();
        self.send_raw(&frame).await
    }

    /// Writes bytes as they are (whole frames, or anything else a test wants the node to see).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::WebTransport(e.to_string()))
    }

    /// Ends the stream from this side (FIN): the node sees the client go.
    pub async fn finish(&mut self) -> Result<(), ClientError> {
        self.send
            .shutdown()
            .await
            .map_err(|e| ClientError::WebTransport(e.to_string()))
    }

    /// Sends one datagram on the session (the node accepts none; they are dropped).
    pub fn send_datagram(&self, payload: &[u8]) -> Result<(), ClientError> {
        self.session
            .send_datagram(payload)
            .map_err(|e| ClientError::WebTransport(e.to_string()))
    }

    /// The next message from the node; `Ok(None)` when the node ended the stream.
    pub async fn recv(&mut self) -> Result<Option<Message>, ClientError> {
        let Some(frame) = self.recv_frame().await? else {
            return Ok(None);
        };
        let msg = decode(&frame)?;
        if let Message::Welcome(welcome) = &msg {
            self.version = ProtocolVersion::from_u8(welcome.version);
        }
        Ok(Some(msg))
    }

    /// The next whole frame from the node, undecoded; `Ok(None)` when the node ended the
    /// stream. Cancel-safe: bytes read stay buffered for the next call.
    pub async fn recv_frame(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            if let Some(prefix) = self.buf.get(..4) {
                let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                let total = 4 + u64::from(len);
                if total > MAX_FRAME as u64 {
                    return Err(ClientError::Protocol(format!(
                        "frame of {total} bytes above the {MAX_FRAME}-byte limit"
                    )));
                }
                // At most MAX_FRAME here.
                let total = total as usize;
                if self.buf.len() >= total {
                    return Ok(Some(self.buf.split_to(total).freeze()));
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let read = self
                .recv
                .read(&mut chunk)
                .await
                .map_err(|e| ClientError::WebTransport(e.to_string()))?;
            let Some(n) = read else {
                if self.buf.has_remaining() {
                    return Err(ClientError::Protocol("stream ended inside a frame".into()));
                }
                return Ok(None);
            };
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for the session to end and says how.
    pub async fn closed(&self) -> Closed {
        match self.session.closed().await {
            ConnectionError::ApplicationClosed(close) => Closed::ByNode {
                code: close.code().into_inner(),
                reason: String::from_utf8_lossy(close.reason()).into_owned(),
            },
            other => Closed::Other(other.to_string()),
        }
    }

    /// How the node closed the session, waiting at most `wait` for the close to arrive (the
    /// node ends the stream first and closes once the client has read it): `None` when the
    /// session ended otherwise or not in time.
    pub async fn close_code(&self, wait: Duration) -> Option<(u64, String)> {
        match tokio::time::timeout(wait, self.closed()).await {
            Ok(Closed::ByNode { code, reason }) => Some((code, reason)),
            Ok(Closed::Other(_)) | Err(_) => None,
        }
    }

    /// Closes the session now with `code` and `reason` (what the node sees as the client
    /// going away).
    pub fn close(&self, code: u32, reason: &str) {
        self.session
            .close(wtransport::VarInt::from_u32(code), reason.as_bytes());
    }

    /// The version the node's Welcome named, once it came.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }
}

//! The WebTransport listener (feature `webtransport`): HTTP/3 over QUIC on a UDP socket, with
//! the certificate of `wss` (the same reloaded store). A session is accepted on one of the
//! WebSocket paths with a negotiated version, then its client opens ONE bidirectional stream
//! that carries the protocol's frames back to back; from there the connection is served by the
//! same gate and session as a WebSocket connection (`connection::serve`).
//!
//! What the client cannot make the node hold: the session request, the session and its stream
//! are set up under the handshake timeout; the QUIC limits allow the CONNECT stream and one more
//! bidirectional stream (a second stream is never read), and datagrams land in a small receive
//! buffer the node never reads (QUIC drops the oldest when it is full).

use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::ProtocolVersion;
use switchboard_protocol::traceparent::TraceParent;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wtransport::config::QuicTransportConfig;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::endpoint::{IncomingSession, SessionRequest};
use wtransport::{Connection, Endpoint, RecvStream, SendStream, ServerConfig, VarInt};

use super::connection;
use super::handshake;
use super::io::Io;
use super::limits::ConnLimiter;
use super::listener::{Admission, GaugeGuard};
use super::tls::TlsReloader;
use super::{NodeShared, ServerError};
use crate::config::Settings;
use crate::room::peer::Kill;

/// Datagram bytes QUIC buffers for a session; the node reads none, so this bounds what a
/// client sending datagrams can make it hold.
const DATAGRAM_BUFFER: usize = 2048;
/// Per-stream receive window: a few whole frames (a frame is at most 64 KiB and 4 bytes).
const STREAM_WINDOW: u32 = 256 * 1024;
/// Client-initiated bidirectional streams: the HTTP/3 CONNECT of the session and its one
/// stream.
const BIDI_STREAMS: u32 = 2;
/// Client-initiated unidirectional streams: HTTP/3 control, QPACK encoder and decoder.
const UNI_STREAMS: u32 = 3;
/// How often the node sends a QUIC PING on a quiet connection, so that packets keep flowing
/// both ways while a session is idle.
const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// The QUIC idle timeout the node offers (the lower of both sides' applies): UDP has no reset
/// to tell a client at once that its node died, as TCP has for WebSocket, so without a short
/// one Chromium took about 15 s to notice a killed node.
const QUIC_IDLE: Duration = Duration::from_secs(6);

/// A WebTransport session's one bidirectional stream, and the session to close with the
/// connection's close code.
pub(crate) struct SessionStream {
    /// The node's sending half.
    pub(super) send: SendStream,
    /// The client's sending half.
    pub(super) recv: RecvStream,
    session: Connection,
}

impl SessionStream {
    /// Closes the session with the close code and reason a WebSocket would carry in its close
    /// frame (QUIC application error code = the WebSocket close code).
    pub(super) fn close(&self, kill: Kill) {
        self.session
            .close(VarInt::from_u32(kill.code.into()), kill.reason.as_bytes());
    }

    /// Waits until the client acknowledged everything sent, after the stream's FIN.
    pub(super) async fn sent(&mut self) {
        let _ = self.send.stopped().await;
    }
}

/// The QUIC endpoint on `socket`: TLS 1.3 with `tls`'s certificate store, the transport limits
/// above, and a short QUIC idle timeout kept from expiring by QUIC PINGs (the node's own idle
/// timeout, for sessions that send nothing, is enforced per connection like on WebSocket).
pub(super) fn endpoint(
    socket: std::net::UdpSocket,
    tls: &TlsReloader,
    settings: &Settings,
) -> Result<Endpoint<Server>, ServerError> {
    let mut transport = QuicTransportConfig::default();
    transport
        .max_concurrent_bidi_streams(BIDI_STREAMS.into())
        .max_concurrent_uni_streams(UNI_STREAMS.into())
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window((2 * STREAM_WINDOW).into())
        .datagram_receive_buffer_size(Some(DATAGRAM_BUFFER))
        .keep_alive_interval(Some(QUIC_KEEP_ALIVE))
        .max_idle_timeout(idle_timeout(QUIC_IDLE.min(settings.tunables.idle_timeout)));
    let config = ServerConfig::builder()
        .with_bind_socket(socket)
        .with_custom_tls_and_transport(tls.quic_config()?, transport)
        .build();
    Ok(Endpoint::server(config)?)
}

/// The QUIC idle timeout for the node's idle timeout, capped at an hour (QUIC's own bound is
/// 2^62 ms, so the conversion cannot fail).
fn idle_timeout(idle: Duration) -> Option<wtransport::quinn::IdleTimeout> {
    wtransport::quinn::IdleTimeout::try_from(idle.min(Duration::from_secs(3600))).ok()
}

/// Accepts sessions until the future is dropped. Each holds a slot of `limiter` (shared with
/// the WebSocket listener) and a clone of `done` (the drain barrier) until it ends.
pub(super) async fn accept_loop(
    endpoint: Endpoint<Server>,
    limiter: Arc<ConnLimiter>,
    node: Arc<NodeShared>,
    done: mpsc::Sender<()>,
) {
    // As on WebSocket: a slot is taken before accepting, so sessions in their handshake are
    // bounded by the limit plus the reject slots.
    let rejects = ConnLimiter::new();
    let max = || node.settings.borrow().tunables.max_connections;
    loop {
        let admission = Admission::take(&limiter, &rejects, max).await;
        let incoming = endpoint.accept().await;
        let admission = admission.recheck(&limiter, max());
        node.metrics.connections_total.inc();
        tokio::spawn(handle(incoming, admission, node.clone(), done.clone()));
    }
}

/// What a session holds until it ends: its slot, its place in the drain barrier and its count
/// in the connections gauge.
struct Held {
    _slot: Admission,
    _done: mpsc::Sender<()>,
    _gauge: GaugeGuard,
}

/// Sets up one session and its stream under the handshake timeout, then serves it in a task of
/// its own (the setup's state would otherwise stay allocated in the task).
async fn handle(
    incoming: IncomingSession,
    admission: Admission,
    node: Arc<NodeShared>,
    done: mpsc::Sender<()>,
) {
    let deadline = Instant::now() + node.settings.borrow().tunables.handshake_timeout;
    let request = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebTransport handshake failed");
            node.metrics.handshake_failure("tls");
            return;
        }
        Err(_) => {
            node.metrics.handshake_failure("timeout");
            return;
        }
    };
    if let Admission::Reject(_) = admission {
        // Over the connection limit: HTTP 429, so the client backs off.
        node.metrics.disconnect("overloaded");
        let _ = tokio::time::timeout_at(deadline, request.too_many_requests()).await;
        return;
    }
    node.metrics.connections.inc();
    let held = Held {
        _slot: admission,
        _done: done,
        _gauge: GaugeGuard(node.metrics.connections.clone()),
    };
    let (version, trace) = match check_request(&request, &node) {
        Ok(agreed) => agreed,
        Err(refusal) => {
            node.metrics.handshake_failure(refusal.label());
            // The answer waits for the client's acknowledgement: bounded like the rest.
            let answer = async {
                match refusal {
                    handshake::Refusal::NotFound => request.not_found().await,
                    handshake::Refusal::NoCommonVersion => request.forbidden().await,
                }
            };
            let _ = tokio::time::timeout_at(deadline, answer).await;
            return;
        }
    };
    let setup = async {
        let session = request
            .accept_with_headers([
                (
                    handshake::X_PROTO_VERSION.to_owned(),
                    version.as_u8().to_string(),
                ),
                (
                    WT_PROTOCOL.to_owned(),
                    format!("\"{}\"", version.subprotocol()),
                ),
            ])
            .await?;
        let (send, recv) = session.accept_bi().await?;
        Ok::<_, wtransport::error::ConnectionError>(SessionStream {
            send,
            recv,
            session,
        })
    };
    let stream = match tokio::time::timeout_at(deadline, setup).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebTransport session ended before its stream");
            node.metrics.handshake_failure("io");
            return;
        }
        Err(_) => {
            // Dropping the session closes it.
            node.metrics.handshake_failure("timeout");
            return;
        }
    };
    tokio::spawn(connection::serve(
        Io::WebTransport(Box::new(stream)),
        Vec::new(),
        version,
        trace,
        node,
        held,
    ));
}

/// The WebTransport header naming offered / chosen subprotocols (a list of quoted strings).
const WT_PROTOCOL: &str = "wt-protocol";
/// The header a client offers subprotocols in.
const WT_AVAILABLE_PROTOCOLS: &str = "wt-available-protocols";

/// Checks the session request as the WebSocket upgrade checks its request: a WebSocket path
/// (else 404) and a version both serve (else 403: a session request cannot be answered 426).
/// Returns the version and the client's trace context.
fn check_request(
    request: &SessionRequest,
    node: &NodeShared,
) -> Result<(ProtocolVersion, Option<Box<TraceParent>>), handshake::Refusal> {
    let path = request.path().split('?').next().unwrap_or_default();
    if node.ws_paths.iter().all(|p| p != path) {
        return Err(handshake::Refusal::NotFound);
    }
    let headers = request.headers();
    let served = node.settings.borrow().protocols.clone();
    // Structured-field strings: without their quotes they are the WebSocket subprotocols.
    let offered = headers
        .get(WT_AVAILABLE_PROTOCOLS)
        .map(|v| v.replace('"', ""));
    let negotiated = handshake::negotiate(
        &served,
        offered.as_deref(),
        headers.get(handshake::X_PROTO_VERSION).map(String::as_str),
    )
    .ok_or(handshake::Refusal::NoCommonVersion)?;
    let trace = headers
        .get(handshake::TRACEPARENT)
        .and_then(|v| TraceParent::parse(v).ok())
        .map(Box::new);
    Ok((negotiated.version, trace))
}

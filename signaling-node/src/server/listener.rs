//! The accept loop: a connection slot is taken before `accept` (so a full node stops pulling
//! connections off the backlog), the TLS and WebSocket handshakes run under one deadline (a
//! half-open handshake cannot hold a slot for long), and each connection runs in its own task.
//!
//! Over `max_connections`, a small pool of extra slots lets the node still complete the
//! handshake and close with 1013 "overloaded" (so clients back off instead of timing out);
//! when that pool is also busy, accepting waits for a slot.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::NodeShared;
use super::connection;
use super::handshake::{self, Refusal};
use super::limits::{ConnLimiter, Slot};
use crate::room::peer::CLOSE_TRY_AGAIN_LATER;

/// Connections over the limit that may be in their handshake at once (to be told 1013).
const REJECT_SLOTS: usize = 64;

/// A connection's slot: to be served, or only to be told 1013 (the slot is held, not read).
enum Admission {
    Serve(#[allow(dead_code)] Slot),
    Reject(#[allow(dead_code)] Slot),
}

/// Accepts connections forever (until the future is dropped). `done` is cloned into every
/// connection task: when all clones are gone, every connection has finished.
pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    node: Arc<NodeShared>,
    done: mpsc::Sender<()>,
) {
    let limiter = ConnLimiter::new();
    let rejects = ConnLimiter::new();
    let max = || node.settings.borrow().tunables.max_connections;
    let mut backoff = Duration::from_millis(10);
    loop {
        let admission = match limiter.try_acquire(max()) {
            Some(slot) => Admission::Serve(slot),
            None => match rejects.try_acquire(REJECT_SLOTS) {
                Some(slot) => Admission::Reject(slot),
                None => Admission::Serve(limiter.acquire(max).await),
            },
        };
        let socket = loop {
            match listener.accept().await {
                Ok((socket, _addr)) => {
                    backoff = Duration::from_millis(10);
                    break socket;
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        // A connection admitted to be rejected takes a real slot if one freed up (or the
        // limit was raised) while it waited in accept.
        let admission = match admission {
            Admission::Reject(reject) => match limiter.try_acquire(max()) {
                Some(slot) => {
                    drop(reject);
                    Admission::Serve(slot)
                }
                None => Admission::Reject(reject),
            },
            serve => serve,
        };
        let _ = socket.set_nodelay(true);
        node.metrics.connections_total.inc();
        let node = node.clone();
        let tls = tls.clone();
        let done = done.clone();
        tokio::spawn(handle(socket, tls, node, admission, done));
    }
}

struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a connection holds until it ends: its slot, its place in the drain barrier and its
/// count in the connections gauge.
struct Held {
    _admission: Admission,
    _done: mpsc::Sender<()>,
    _gauge: GaugeGuard,
}

async fn handle(
    socket: TcpStream,
    tls: Option<TlsAcceptor>,
    node: Arc<NodeShared>,
    admission: Admission,
    done: mpsc::Sender<()>,
) {
    node.metrics.connections.inc();
    let held = Held {
        _admission: admission,
        _done: done,
        _gauge: GaugeGuard(node.metrics.connections.clone()),
    };
    let timeout = node.settings.borrow().tunables.handshake_timeout;
    let deadline = Instant::now() + timeout;
    match tls {
        None => upgrade_and_serve(socket, deadline, node, held).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
            Ok(Ok(stream)) => upgrade_and_serve(stream, deadline, node, held).await,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                node.metrics
                    .handshake_failures
                    .with_label_values(&["tls"])
                    .inc();
            }
            Err(_) => {
                node.metrics
                    .handshake_failures
                    .with_label_values(&["timeout"])
                    .inc();
            }
        },
    }
}

/// Upgrades to WebSocket, then serves the connection in a task of its own: the handshake's
/// state machine is several KiB and would otherwise stay allocated for the connection's life.
async fn upgrade_and_serve<S>(stream: S, deadline: Instant, node: Arc<NodeShared>, held: Held)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (config, served) = {
        let settings = node.settings.borrow();
        (
            handshake::ws_config(&settings.tunables),
            settings.protocols.clone(),
        )
    };
    let mut outcome: Result<handshake::Negotiated, Refusal> = Err(Refusal::NoCommonVersion);
    // The error type is tungstenite's HTTP response; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| match handshake::check_request(
        request,
        &node.ws_paths,
        &served,
    ) {
        Ok(negotiated) => {
            outcome = Ok(negotiated);
            Ok(handshake::accept_response(response, negotiated))
        }
        Err(refusal) => {
            let answer = handshake::refusal_response(&refusal, &served);
            outcome = Err(refusal);
            Err(answer)
        }
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let ws = match tokio::time::timeout_at(deadline, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            let label = match &outcome {
                Err(refusal) => refusal.label(),
                Ok(_) => "protocol",
            };
            tracing::debug!(error = %e, label, "WebSocket handshake failed");
            node.metrics
                .handshake_failures
                .with_label_values(&[label])
                .inc();
            return;
        }
        Err(_) => {
            node.metrics
                .handshake_failures
                .with_label_values(&["timeout"])
                .inc();
            return;
        }
    };
    let Ok(negotiated) = outcome else {
        return;
    };
    match &held._admission {
        Admission::Reject(_) => {
            node.metrics.disconnect("overloaded");
            let mut ws = ws;
            let frame = CloseFrame {
                code: CloseCode::from(CLOSE_TRY_AGAIN_LATER),
                reason: "overloaded".into(),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
        }
        Admission::Serve(_) => {
            let (sink, stream) = ws.split();
            tokio::spawn(async move {
                connection::serve(sink, stream, negotiated.version, node).await;
                drop(held);
            });
        }
    }
}

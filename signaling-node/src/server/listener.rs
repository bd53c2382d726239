//! The accept loop: a connection slot is taken before `accept` (so a full node stops pulling
//! connections off the backlog), the TLS and WebSocket handshakes run under one deadline (a
//! half-open handshake cannot hold a slot for long), and each connection runs in its own task.
//!
//! Over `max_connections`, a small pool of extra slots lets the node still complete the
//! handshake and close with 1013 "overloaded" (so clients back off instead of timing out);
//! when that pool is also busy, accepting waits for a slot.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::NodeShared;
use super::connection;
use super::io::Io;
use super::limits::{ConnLimiter, Slot};
use super::upgrade;
use crate::room::peer::CLOSE_TRY_AGAIN_LATER;

/// Connections over the limit that may be in their handshake at once (to be told 1013).
const REJECT_SLOTS: usize = 64;

/// A connection's slot: to be served, or only to be told 1013 (the slot is held, not read).
pub(super) enum Admission {
    /// Served.
    Serve(#[allow(dead_code)] Slot),
    /// Only told it is over the limit.
    Reject(#[allow(dead_code)] Slot),
}

impl Admission {
    /// Takes a slot before accepting: a serving one, else one of `rejects`' [`REJECT_SLOTS`],
    /// else waits for a serving one (so a full node stops accepting).
    pub(super) async fn take(
        limiter: &Arc<ConnLimiter>,
        rejects: &Arc<ConnLimiter>,
        max: impl Fn() -> usize,
    ) -> Self {
        match limiter.try_acquire(max()) {
            Some(slot) => Admission::Serve(slot),
            None => match rejects.try_acquire(REJECT_SLOTS) {
                Some(slot) => Admission::Reject(slot),
                None => Admission::Serve(limiter.acquire(max).await),
            },
        }
    }

    /// A connection admitted to be rejected takes a real slot if one freed up (or the limit
    /// was raised) while it waited in accept.
    pub(super) fn recheck(self, limiter: &Arc<ConnLimiter>, max: usize) -> Self {
        match self {
            Admission::Reject(reject) => match limiter.try_acquire(max) {
                Some(slot) => {
                    drop(reject);
                    Admission::Serve(slot)
                }
                None => Admission::Reject(reject),
            },
            serve => serve,
        }
    }
}

/// Accepts connections forever (until the future is dropped). `done` is cloned into every
/// connection task: when all clones are gone, every connection has finished. `limiter` is
/// shared with the WebTransport listener: `max_connections` counts both transports.
pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limiter: Arc<ConnLimiter>,
    node: Arc<NodeShared>,
    done: mpsc::Sender<()>,
) {
    let rejects = ConnLimiter::new();
    let max = || node.settings.borrow().tunables.max_connections;
    let mut backoff = Duration::from_millis(10);
    loop {
        let admission = Admission::take(&limiter, &rejects, max).await;
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
        let admission = admission.recheck(&limiter, max());
        let _ = socket.set_nodelay(true);
        node.metrics.connections_total.inc();
        let node = node.clone();
        let tls = tls.clone();
        let done = done.clone();
        tokio::spawn(handle(socket, tls, node, admission, done));
    }
}

/// Decrements its gauge when dropped.
pub(super) struct GaugeGuard(pub(super) prometheus::IntGauge);

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
    let io = match tls {
        None => Io::Tcp(Arc::new(socket)),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
            Ok(Ok(stream)) => Io::Tls(Box::new(stream)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                node.metrics.handshake_failure("tls");
                return;
            }
            Err(_) => {
                node.metrics.handshake_failure("timeout");
                return;
            }
        },
    };
    upgrade_and_serve(io, deadline, node, held).await;
}

/// Upgrades to WebSocket, then serves the connection in a task of its own: the upgrade's
/// state would otherwise stay allocated in the task for the connection's life.
async fn upgrade_and_serve(mut io: Io, deadline: Instant, node: Arc<NodeShared>, held: Held) {
    let served = node.settings.borrow().protocols.clone();
    let upgraded =
        match tokio::time::timeout_at(deadline, upgrade::upgrade(&mut io, &node.ws_paths, &served))
            .await
        {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                node.metrics.handshake_failure(e.label());
                return;
            }
            Err(_) => {
                node.metrics.handshake_failure("timeout");
                return;
            }
        };
    match &held._admission {
        Admission::Reject(_) => {
            node.metrics.disconnect("overloaded");
            connection::refuse(io, CLOSE_TRY_AGAIN_LATER, "overloaded").await;
        }
        Admission::Serve(_) => {
            tokio::spawn(connection::serve(
                io,
                upgraded.tail,
                upgraded.version,
                upgraded.trace,
                node,
                held,
            ));
        }
    }
}

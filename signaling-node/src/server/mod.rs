//! The signaling server: WebSocket listener (optionally TLS) and, with the `webtransport`
//! feature, a WebTransport (HTTP/3) listener; handshake and version negotiation,
//! per-connection reader/writer tasks with limits and heartbeats, the admin HTTP endpoint,
//! and graceful drain.
//!
//! Entry points: [`Node`] (build it, hand its [`RoomRegistry`], [`Health`] and [`Metrics`] to
//! cluster mode, then [`Node::serve`] with already-bound listeners and a shutdown future), or
//! [`run`] for the standalone case. Tests bind `127.0.0.1:0` and pass the listeners in.
//!
//! Drain (when the shutdown future resolves): `/readyz` turns 503 and new joins get 1010;
//! the listener stops accepting; every live room is released (members get
//! `Migrate{url: "", resume_token}` — in standalone mode there is nowhere better to send
//! them; cluster mode releases its shards with the new owners' URLs before resolving the
//! shutdown future, so no room is left here by then); every connection then gets close 1001
//! "going away" after what is queued for it; the node waits for the connections to finish,
//! at most `drain_timeout` in all.

pub mod cluster;
mod connection;
pub mod demo;
pub mod handshake;
mod io;
pub mod limits;
mod listener;
mod session;
pub mod tls;
pub mod upgrade;
#[cfg(feature = "webtransport")]
mod webtransport;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::SettingsWatch;
use crate::metrics::{self, Health, Metrics};
use crate::room::RoomRegistry;
use crate::routing::SharedOwnership;
use crate::store::RoomStore;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A WebTransport listener was given to a node without TLS (QUIC is always TLS).
    #[error("WebTransport needs the node's TLS certificate (--tls-cert, --tls-key)")]
    WebTransportWithoutTls,
}

/// The already-bound sockets a node serves on.
#[derive(Debug)]
pub struct Listeners {
    /// Signaling WebSocket listener (`--listen`).
    pub ws: TcpListener,
    /// Admin HTTP listener (`--admin-listen`), if the admin endpoint should run.
    pub admin: Option<TcpListener>,
    /// Extra routes served on the admin listener next to `/metrics` (the `--demo` page).
    pub admin_routes: Option<axum::Router>,
    /// WebTransport UDP socket (`--webtransport-listen`), if the node serves WebTransport.
    #[cfg(feature = "webtransport")]
    pub webtransport: Option<std::net::UdpSocket>,
}

/// The accept queue the signaling listener asks for; the kernel caps it at
/// `net.core.somaxconn`. Tokio's `bind` asks for 1,024: a reconnect storm (every client of a
/// failed node at once) overflows that, and a dropped SYN costs its client a 1 s retransmit.
const ACCEPT_BACKLOG: u32 = 65_535;

/// Binds `addr` for accepting with the largest accept queue the kernel allows.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

impl Listeners {
    /// Binds both addresses.
    pub async fn bind(ws: SocketAddr, admin: Option<SocketAddr>) -> std::io::Result<Self> {
        let ws = bind_listener(ws)?;
        let admin = match admin {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            ws,
            admin,
            admin_routes: None,
            #[cfg(feature = "webtransport")]
            webtransport: None,
        })
    }

    /// Binds the WebTransport UDP socket on `addr` too.
    #[cfg(feature = "webtransport")]
    pub fn bind_webtransport(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        self.webtransport = Some(std::net::UdpSocket::bind(addr)?);
        Ok(())
    }
}

/// What connections share.
pub(crate) struct NodeShared {
    pub(crate) registry: RoomRegistry,
    pub(crate) settings: SettingsWatch,
    pub(crate) metrics: Metrics,
    pub(crate) health: Health,
    /// WebSocket paths accepted (static settings: computed once).
    pub(crate) ws_paths: Vec<String>,
    /// Cancelled in the second drain phase: every connection closes with 1001.
    pub(crate) shutdown: CancellationToken,
}

/// A signaling node: rooms, health and metrics, ready to serve.
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<NodeShared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("registry", &self.shared.registry)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node whose rooms commit to `store` and route by `ownership`, reading live settings
    /// from `settings` and exporting into `metrics`.
    pub fn new(
        settings: SettingsWatch,
        store: Arc<dyn RoomStore>,
        ownership: SharedOwnership,
        metrics: Metrics,
    ) -> Self {
        let node_name = settings.borrow().node_name.clone();
        let ws_paths = handshake::accepted_paths(&settings.borrow());
        let registry = RoomRegistry::new(
            store,
            ownership,
            settings.clone(),
            metrics.clone(),
            node_name,
        );
        Self {
            shared: Arc::new(NodeShared {
                registry,
                settings,
                metrics,
                health: Health::new(),
                ws_paths,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// The room registry (cluster mode: restore_shard / release_shard).
    pub fn registry(&self) -> &RoomRegistry {
        &self.shared.registry
    }

    /// The readiness state behind `/readyz`.
    pub fn health(&self) -> &Health {
        &self.shared.health
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Serves until `shutdown` resolves, then drains (see the module docs) and returns.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let shared = self.shared.clone();
        let settings = shared.settings.borrow().clone();
        let reloader = settings
            .tls
            .as_ref()
            .map(tls::TlsReloader::new)
            .transpose()?;
        let tls = reloader
            .as_ref()
            .map(tls::TlsReloader::acceptor)
            .transpose()?;
        // Built before the reloader moves into its watch task; the endpoint shares its
        // certificate store, so a reload reaches WebTransport too.
        #[cfg(feature = "webtransport")]
        let wt_endpoint = match listeners.webtransport {
            Some(socket) => {
                let tls = reloader
                    .as_ref()
                    .ok_or(ServerError::WebTransportWithoutTls)?;
                let endpoint = webtransport::endpoint(socket, tls, &settings)?;
                tracing::info!(addr = %endpoint.local_addr()?, "serving WebTransport");
                Some(endpoint)
            }
            None => None,
        };
        let admin_stop = CancellationToken::new();
        let tls_watch = reloader.map(|reloader| {
            let stop = admin_stop.clone();
            tokio::spawn(tls::watch(reloader, shared.metrics.clone(), async move {
                stop.cancelled().await
            }))
        });
        let admin_routes = listeners.admin_routes;
        let admin = listeners.admin.map(|listener| {
            let stop = admin_stop.clone();
            let mut router = metrics::admin_router(shared.metrics.clone(), shared.health.clone());
            if let Some(extra) = admin_routes {
                router = router.merge(extra);
            }
            tokio::spawn(metrics::serve_router(listener, router, async move {
                stop.cancelled().await
            }))
        });
        let addr = listeners.ws.local_addr()?;
        tracing::info!(
            %addr,
            node = settings.node_name,
            tls = tls.is_some(),
            advertise = settings.advertise_url,
            "serving"
        );
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        shared.health.set_serving(true);
        // One connection limit for both transports.
        let limiter = limits::ConnLimiter::new();
        #[cfg(feature = "webtransport")]
        let webtransport = wt_endpoint.map(|endpoint| {
            tokio::spawn(webtransport::accept_loop(
                endpoint,
                limiter.clone(),
                shared.clone(),
                done_tx.clone(),
            ))
        });
        tokio::select! {
            () = listener::accept_loop(listeners.ws, tls, limiter, shared.clone(), done_tx) => {}
            () = shutdown => {}
        }
        // New sessions stop with new connections; the endpoint lives on in its connections.
        #[cfg(feature = "webtransport")]
        if let Some(accepting) = webtransport {
            accepting.abort();
        }
        // The accept loop (and its listener and `done` sender) is dropped here.
        shared.health.set_draining();
        shared.metrics.draining.set(1);
        let drain_timeout = shared.settings.borrow().drain_timeout;
        tracing::info!(?drain_timeout, "draining");
        let drained = tokio::time::timeout(drain_timeout, async {
            let rooms = shared.registry.drain("").await;
            tracing::info!(rooms, "rooms released; closing connections");
            shared.shutdown.cancel();
            let _ = done_rx.recv().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("drain deadline passed; exiting with connections still open");
            shared.shutdown.cancel();
        }
        admin_stop.cancel();
        if let Some(watch) = tls_watch {
            let _ = watch.await;
        }
        if let Some(admin) = admin {
            match admin.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "admin endpoint failed"),
                Err(e) => tracing::warn!(error = %e, "admin task failed"),
            }
        }
        tracing::info!("drained");
        Ok(())
    }
}

/// Runs a node on `listeners` until `shutdown` resolves (standalone convenience for
/// [`Node::new`] + [`Node::serve`]).
pub async fn run(
    listeners: Listeners,
    settings: SettingsWatch,
    store: Arc<dyn RoomStore>,
    ownership: SharedOwnership,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    Node::new(settings, store, ownership, Metrics::new())
        .serve(listeners, shutdown)
        .await
}

//! The node's Prometheus metrics (prefix `switchboard_`) and its admin HTTP endpoint:
//! `/metrics` (text exposition), `/healthz` (200 while the process runs) and `/readyz` (200
//! while serving and not draining).
//!
//! Each node owns its own [`prometheus::Registry`] (not the global one), so several nodes can
//! run in one test process; cluster mode registers its own metrics on [`Metrics::registry`].
//! Hot-path counters (frames in/out per type, errors per code) are resolved to their label
//! values once, so counting a frame is an atomic add.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use switchboard_protocol::{ErrorCode, FrameType};

/// Every metric the node exports. Cheap to clone: one shared handle, so every connection can
/// keep one without carrying a copy of each collector handle.
#[derive(Clone)]
pub struct Metrics(Arc<Collectors>);

impl std::ops::Deref for Metrics {
    type Target = Collectors;

    fn deref(&self) -> &Collectors {
        &self.0
    }
}

/// The collectors behind [`Metrics`].
pub struct Collectors {
    registry: Registry,
    /// Open client connections.
    pub connections: IntGauge,
    /// Client connections accepted (TCP) since start.
    pub connections_total: IntCounter,
    frames_in: Arc<[IntCounter]>,
    frames_out: Arc<[IntCounter]>,
    frame_errors: Arc<[IntCounter]>,
    /// Frames whose type byte is unknown (counted under frames_in{type="unknown"}).
    pub frames_in_unknown: IntCounter,
    /// Time from a Join's arrival to its Joined being queued (including the commit).
    pub join_latency: Histogram,
    /// Call state transitions by from/to state.
    pub session_transitions: IntCounterVec,
    /// Outbound frames dropped because a connection's queue was full.
    pub queue_drops: IntCounter,
    /// Live rooms on this node.
    pub rooms: IntGauge,
    /// Build information (value 1).
    pub build_info: IntGaugeVec,
    /// Connections dropped because they did not keep up with their outbound queue.
    pub slow_consumer_disconnects: IntCounter,
    /// Settings reloads that failed (the last good settings stay).
    pub config_reload_errors: IntCounter,
    /// Connections whose handshake succeeded, by transport (`websocket`, `webtransport`):
    /// which transport clients use.
    pub transport_connections: IntCounterVec,
    /// Handshakes refused or failed, by reason.
    pub handshake_failures: IntCounterVec,
    /// Reloads of the TLS certificate files by outcome (`reloaded`, `refused`: the last good
    /// certificate stays).
    pub tls_reloads: IntCounterVec,
    /// Connections closed by the server, by reason.
    pub disconnects: IntCounterVec,
    /// Time rooms wait for their snapshot commits (`switchboard_room_commit_seconds`).
    pub store_commit_seconds: Histogram,
    /// Failed room commits by kind (unavailable, fenced) and unrestorable snapshots
    /// (corrupt_snapshot) (`switchboard_room_commit_errors_total`).
    pub store_errors: IntCounterVec,
    /// Sessions resumed.
    pub resumes: IntCounterVec,
    /// 1 while the node drains.
    pub draining: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// Metric definitions are static and valid; registering them in a fresh registry cannot
// collide. A failure here is a programming error caught by every test that builds a node.
fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        panic!("metric registration: {e}");
    }
    metric
}

/// The standard `process_*` metrics (open and max file descriptors, CPU, resident memory) of
/// this process, in `registry`: every connection is a descriptor, so running out of them is
/// how a node fails to accept.
pub fn register_process_metrics(registry: &Registry) {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = registry.register(Box::new(collector)) {
        tracing::warn!(error = %e, "process metrics not registered");
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("switchboard")
}

fn unwrap<T>(r: prometheus::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition: {e}"),
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let frames_in_vec = reg(
            r,
            unwrap(IntCounterVec::new(
                opts("frames_in_total", "Frames received, by type."),
                &["type"],
            )),
        );
        let frames_out_vec = reg(
            r,
            unwrap(IntCounterVec::new(
                opts("frames_out_total", "Frames sent, by type."),
                &["type"],
            )),
        );
        let errors_vec = reg(
            r,
            unwrap(IntCounterVec::new(
                opts("frame_errors_total", "Error frames sent, by error code."),
                &["code"],
            )),
        );
        let per_type = |vec: &IntCounterVec| -> Arc<[IntCounter]> {
            FrameType::ALL
                .iter()
                .map(|t| vec.with_label_values(&[t.name()]))
                .collect()
        };
        let frames_in = per_type(&frames_in_vec);
        let frames_out = per_type(&frames_out_vec);
        let frame_errors: Arc<[IntCounter]> = ErrorCode::ALL
            .iter()
            .map(|c| errors_vec.with_label_values(&[&c.code().to_string()]))
            .collect();
        let frames_in_unknown = frames_in_vec.with_label_values(&["unknown"]);
        let fine_buckets = unwrap(prometheus::exponential_buckets(0.0001, 2.0, 16));
        let metrics = Self(Arc::new(Collectors {
            registry: registry.clone(),
            connections: reg(
                r,
                unwrap(IntGauge::with_opts(opts(
                    "connections",
                    "Open client connections.",
                ))),
            ),
            connections_total: reg(
                r,
                unwrap(IntCounter::with_opts(opts(
                    "connections_total",
                    "Client connections accepted since start.",
                ))),
            ),
            frames_in,
            frames_out,
            frame_errors,
            frames_in_unknown,
            join_latency: reg(
                r,
                unwrap(Histogram::with_opts(
                    HistogramOpts::from(opts(
                        "join_latency_seconds",
                        "Time from Join to Joined, including the durable commit.",
                    ))
                    .buckets(fine_buckets.clone()),
                )),
            ),
            session_transitions: reg(
                r,
                unwrap(IntCounterVec::new(
                    opts("session_transitions_total", "Call state transitions."),
                    &["from", "to"],
                )),
            ),
            queue_drops: reg(
                r,
                unwrap(IntCounter::with_opts(opts(
                    "queue_drops_total",
                    "Outbound frames dropped because a connection's queue was full.",
                ))),
            ),
            rooms: reg(
                r,
                unwrap(IntGauge::with_opts(opts(
                    "rooms",
                    "Live rooms on this node.",
                ))),
            ),
            build_info: reg(
                r,
                unwrap(IntGaugeVec::new(
                    opts("build_info", "Build information."),
                    &["version"],
                )),
            ),
            slow_consumer_disconnects: reg(
                r,
                unwrap(IntCounter::with_opts(opts(
                    "slow_consumer_disconnects_total",
                    "Connections dropped because their outbound queue was full.",
                ))),
            ),
            config_reload_errors: reg(
                r,
                unwrap(IntCounter::with_opts(opts(
                    "config_reload_errors_total",
                    "Settings reloads that failed.",
                ))),
            ),
            transport_connections: reg(
                r,
                unwrap(IntCounterVec::new(
                    opts(
                        "transport_connections_total",
                        "Connections whose WebSocket upgrade or WebTransport session succeeded, by transport.",
                    ),
                    &["transport"],
                )),
            ),
            handshake_failures: reg(
                r,
                unwrap(IntCounterVec::new(
                    opts("handshake_failures_total", "Refused or failed handshakes."),
                    &["reason"],
                )),
            ),
            tls_reloads: reg(
                r,
                unwrap(IntCounterVec::new(
                    opts(
                        "tls_reloads_total",
                        "Reloads of changed TLS certificate files, by outcome.",
                    ),
                    &["outcome"],
                )),
            ),
            disconnects: reg(
                r,
                unwrap(IntCounterVec::new(
                    opts("disconnects_total", "Connections closed by the server."),
                    &["reason"],
                )),
            ),
            store_commit_seconds: reg(
                r,
                unwrap(Histogram::with_opts(
                    HistogramOpts::from(opts(
                        "room_commit_seconds",
                        "Time a room waits for its snapshot commit (or removal).",
                    ))
                    .buckets(fine_buckets),
                )),
            ),
            store_errors: reg(
                r,
                unwrap(IntCounterVec::new(
                    opts(
                        "room_commit_errors_total",
                        "Room snapshot commits that failed, and snapshots that could not be restored.",
                    ),
                    &["kind"],
                )),
            ),
            resumes: reg(
                r,
                unwrap(IntCounterVec::new(
                    opts("resumes_total", "Session resume attempts, by outcome."),
                    &["outcome"],
                )),
            ),
            draining: reg(
                r,
                unwrap(IntGauge::with_opts(opts("draining", "1 while draining."))),
            ),
        }));
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        register_process_metrics(&metrics.registry);
        metrics
    }

    /// The registry (cluster mode registers its metrics here).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts a received frame.
    pub fn frame_in(&self, t: FrameType) {
        self.frames_in[usize::from(t.as_u8() - 1)].inc();
    }

    /// Counts a sent frame.
    pub fn frame_out(&self, t: FrameType) {
        self.frames_out[usize::from(t.as_u8() - 1)].inc();
    }

    /// Counts an Error frame sent with `code`.
    pub fn frame_error(&self, code: ErrorCode) {
        self.frame_errors[usize::from(code.code() - 1001)].inc();
    }

    /// Totals behind the error rate cluster mode publishes: Error frames sent with 1010 or
    /// 1011, and frames received.
    pub fn error_rate_totals(&self) -> (u64, u64) {
        let errors = [ErrorCode::Draining, ErrorCode::Internal]
            .iter()
            .map(|c| self.frame_errors[usize::from(c.code() - 1001)].get())
            .sum();
        let frames =
            self.frames_in.iter().map(IntCounter::get).sum::<u64>() + self.frames_in_unknown.get();
        (errors, frames)
    }

    /// Counts a server-side disconnect.
    pub fn disconnect(&self, reason: &'static str) {
        self.disconnects.with_label_values(&[reason]).inc();
    }

    /// Counts a refused or failed handshake under `label`.
    pub fn handshake_failure(&self, label: &str) {
        self.handshake_failures.with_label_values(&[label]).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Liveness/readiness state behind `/healthz` and `/readyz`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Debug, Default)]
struct HealthInner {
    serving: AtomicBool,
    draining: AtomicBool,
    holds: AtomicUsize,
}

/// While alive, the node reports not ready (e.g. cluster mode before it registered).
#[derive(Debug)]
pub struct ReadinessHold {
    health: Health,
}

impl Drop for ReadinessHold {
    fn drop(&mut self) {
        self.health.inner.holds.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Health {
    /// A fresh state: not serving, not draining.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the listener as accepting (or not).
    pub fn set_serving(&self, serving: bool) {
        self.inner.serving.store(serving, Ordering::SeqCst);
    }

    /// Marks the node as draining (readiness turns false for good).
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Holds readiness false until the returned guard is dropped.
    pub fn hold(&self) -> ReadinessHold {
        self.inner.holds.fetch_add(1, Ordering::SeqCst);
        ReadinessHold {
            health: self.clone(),
        }
    }

    /// Serving, not draining, and not held.
    pub fn is_ready(&self) -> bool {
        self.inner.serving.load(Ordering::SeqCst)
            && !self.is_draining()
            && self.inner.holds.load(Ordering::SeqCst) == 0
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    health: Health,
}

/// The admin HTTP routes: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { metrics, health })
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if state.health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, admin_router(metrics, health), shutdown).await
}

/// Serves `router` (the admin routes, possibly with extra ones merged in) on `listener` until
/// `shutdown` resolves.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_prefix_and_labels() {
        let m = Metrics::new();
        m.frame_in(FrameType::Offer);
        m.frame_out(FrameType::Error);
        m.frame_error(ErrorCode::BadFrame);
        m.join_latency.observe(0.0002);
        let text = m.render();
        assert!(text.contains("switchboard_frames_in_total{type=\"offer\"} 1"));
        assert!(text.contains("switchboard_frames_out_total{type=\"error\"} 1"));
        assert!(text.contains("switchboard_frame_errors_total{code=\"1008\"} 1"));
        assert!(text.contains("switchboard_build_info{version="));
        assert!(text.contains("process_open_fds "), "process metrics");
        assert!(text.contains("process_max_fds "));
        assert!(text.contains("switchboard_join_latency_seconds_bucket{le=\"0.0001\"} 0"));
        assert!(text.contains("switchboard_join_latency_seconds_bucket{le=\"0.0002\"} 1"));
        assert_eq!(m.error_rate_totals(), (0, 1));
    }

    #[test]
    fn cluster_metrics_share_the_registry() {
        let m = Metrics::new();
        crate::cluster::metrics::ClusterMetrics::register(m.registry()).unwrap();
        assert!(m.render().contains("switchboard_etcd_healthy"));
    }

    #[test]
    fn readiness_follows_serving_draining_and_holds() {
        let h = Health::new();
        assert!(!h.is_ready());
        h.set_serving(true);
        assert!(h.is_ready());
        let hold = h.hold();
        assert!(!h.is_ready());
        drop(hold);
        assert!(h.is_ready());
        h.set_draining();
        assert!(!h.is_ready());
    }
}

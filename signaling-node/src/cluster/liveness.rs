//! The node's side of failure detection (docs/architecture.md, "Failure detection"): the
//! liveness stream the operator holds open on the admin port, and the indirect probe the
//! operator asks this node for when another node falls silent (wire format in
//! `switchboard_contract::liveness`).
//!
//! The stream beats every [`BEAT_INTERVAL`] from a task of its own, so a node busy with rooms
//! still beats; it ends with `bye` once the node starts shutting down ([`Liveness::stop`]),
//! which tells the operator that the end of the stream is not a crash.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use switchboard_contract::liveness::{
    self, BEAT, BEAT_INTERVAL, BYE, Endpoint, INCARNATION_HEADER, MAX_PROBE_TIMEOUT, NODE_HEADER,
    ProbeReport, Seen, StreamReader,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::ownership::OwnershipCache;

/// The endpoint a node registers: its advertised host with the admin port.
pub fn endpoint(advertise_url: &str, admin_port: u16, incarnation: u64) -> Option<Endpoint> {
    let rest = advertise_url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty()).then(|| Endpoint {
        addr: format!("{host}:{admin_port}"),
        incarnation,
    })
}

/// This process's liveness identity and the switch that ends its streams.
#[derive(Debug, Clone)]
pub struct Liveness {
    node: String,
    incarnation: u64,
    stop: CancellationToken,
    ownership: Arc<OwnershipCache>,
}

impl Liveness {
    /// The liveness side of node `node`, process incarnation `incarnation`, probing peers it
    /// finds in `ownership`.
    pub fn new(node: impl Into<String>, incarnation: u64, ownership: Arc<OwnershipCache>) -> Self {
        Self {
            node: node.into(),
            incarnation,
            stop: CancellationToken::new(),
            ownership,
        }
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Ends every stream with `bye` (the node is shutting down; its end is not a crash).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The routes to serve on the admin listener.
    pub fn router(&self) -> Router {
        Router::new()
            .route(liveness::PATH, get(stream))
            .route(liveness::PROBE_PATH, get(probe))
            .with_state(self.clone())
    }
}

async fn stream(State(live): State<Liveness>) -> Response {
    if live.stop.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let beats = futures::stream::unfold(
        (
            tokio::time::interval(BEAT_INTERVAL),
            live.stop.clone(),
            false,
        ),
        |(mut tick, stop, done)| async move {
            if done {
                return None;
            }
            tokio::select! {
                _ = tick.tick() => Some((Ok::<_, std::io::Error>(Bytes::from_static(BEAT)), (tick, stop, false))),
                () = stop.cancelled() => Some((Ok(Bytes::from_static(BYE)), (tick, stop, true))),
            }
        },
    );
    Response::builder()
        .header(NODE_HEADER, &live.node)
        .header(INCARNATION_HEADER, live.incarnation.to_string())
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(beats))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(Debug, Deserialize)]
struct ProbeQuery {
    node: String,
    #[serde(default)]
    timeout_ms: u64,
}

async fn probe(State(live): State<Liveness>, Query(q): Query<ProbeQuery>) -> Response {
    let timeout =
        Duration::from_millis(q.timeout_ms).clamp(Duration::from_millis(1), MAX_PROBE_TIMEOUT);
    let report = match live.ownership.node_info(&q.node).and_then(|i| i.liveness) {
        None => ProbeReport {
            node: q.node.clone(),
            reachable: false,
            incarnation: None,
            error: "no live registration with a liveness endpoint".into(),
        },
        Some(endpoint) => match tokio::time::timeout(timeout, first_beat(&endpoint.addr)).await {
            Ok(Ok(incarnation)) => ProbeReport {
                node: q.node.clone(),
                reachable: true,
                incarnation: Some(incarnation),
                error: String::new(),
            },
            Ok(Err(error)) => ProbeReport {
                node: q.node.clone(),
                reachable: false,
                incarnation: None,
                error,
            },
            Err(_) => ProbeReport {
                node: q.node.clone(),
                reachable: false,
                incarnation: None,
                error: format!("no beat within {} ms", timeout.as_millis()),
            },
        },
    };
    let body = serde_json::to_string(&report).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Opens `addr`'s stream and waits for its first beat; the incarnation it announced.
async fn first_beat(addr: &str) -> Result<u64, String> {
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    socket
        .write_all(&liveness::stream_request(addr))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reader = StreamReader::default();
    let mut incarnation = None;
    let mut buf = [0u8; 512];
    loop {
        let n = socket
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed".into());
        }
        for seen in reader.feed(&buf[..n]).map_err(|e| e.to_string())? {
            match seen {
                Seen::Hello { incarnation: i, .. } => incarnation = Some(i),
                Seen::Beat => {
                    if let Some(i) = incarnation {
                        return Ok(i);
                    }
                }
                Seen::Bye => return Err("shutting down".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_advertised_host_on_the_admin_port() {
        let at = |url| endpoint(url, 9100, 7).map(|e| e.addr);
        assert_eq!(
            at("ws://10.244.1.7:7000/ws").as_deref(),
            Some("10.244.1.7:9100")
        );
        assert_eq!(
            at("wss://[fd00::7]:7443/ws").as_deref(),
            Some("[fd00::7]:9100")
        );
        assert_eq!(at("ws://node-a/ws").as_deref(), Some("node-a:9100"));
        assert_eq!(at("not a url"), None);
        assert_eq!(endpoint("ws://a:1/ws", 9100, 7).unwrap().incarnation, 7);
    }
}

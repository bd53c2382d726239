//! The run cluster's stable entry URL, as a Kubernetes Service gives clients one: a TCP
//! proxy on loopback that sends each new connection to one Ready node pod, round robin,
//! over endpoints it re-lists every [`REFRESH`].
//!
//! Clients need an entry that outlives any one pod: a client's fallback after its node died
//! is its entry URL, and a pod deleted by a scale-down never comes back at its IP. With a pod
//! IP as the entry, a pair whose entry and owner were the same deleted pod retried that dead
//! address past the resume window and lost its room.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::env::{CLUSTER_LABEL, NS, pod_ip, pod_ready};
use super::error::SoakError;

/// How often the endpoints are listed again.
pub const REFRESH: Duration = Duration::from_millis(250);
/// How long a connection to one endpoint may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long [`EntryProxy::start`] waits for the first Ready endpoint.
pub const FIRST_ENDPOINT: Duration = Duration::from_secs(10);
/// The node pods' WebSocket port.
pub const NODE_PORT: u16 = 7000;

/// The entry proxy of one run cluster; stops when dropped.
pub struct EntryProxy {
    port: u16,
    tasks: [JoinHandle<()>; 2],
}

impl EntryProxy {
    /// Starts the proxy for the node pods of run cluster `name`.
    pub async fn start(client: kube::Client, name: &str) -> Result<Self, SoakError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(SoakError::io("binding the entry proxy"))?;
        let port = listener
            .local_addr()
            .map_err(SoakError::io("entry proxy address"))?
            .port();
        let endpoints = Arc::new(Mutex::new(Vec::new()));
        let refresh = tokio::spawn(refresh(client, name.to_string(), Arc::clone(&endpoints)));
        let has_endpoints = || endpoints.lock().is_ok_and(|e| !e.is_empty());
        let listed = async {
            while !has_endpoints() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let ready = tokio::time::timeout(FIRST_ENDPOINT, listed).await.is_ok();
        let accept = tokio::spawn(accept(listener, endpoints));
        let proxy = Self {
            port,
            tasks: [refresh, accept],
        };
        if !ready {
            return Err(SoakError::Setup(format!(
                "no Ready node pod of {name} for the entry proxy within {FIRST_ENDPOINT:?}"
            )));
        }
        Ok(proxy)
    }

    /// The URL clients enter through.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

impl Drop for EntryProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Keeps `endpoints` at the Ready, not deleted node pods of `name`.
async fn refresh(client: kube::Client, name: String, endpoints: Arc<Mutex<Vec<SocketAddr>>>) {
    let api: Api<Pod> = Api::namespaced(client, NS);
    let lp = ListParams::default().labels(&format!("{CLUSTER_LABEL}={name}"));
    loop {
        if let Ok(list) = api.list(&lp).await {
            let ready: Vec<SocketAddr> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
                .filter_map(|p| pod_ip(p)?.parse().ok())
                .map(|ip| SocketAddr::new(ip, NODE_PORT))
                .collect();
            if let Ok(mut e) = endpoints.lock() {
                *e = ready;
            }
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// Accepts clients and pipes each to the next endpoint that takes the connection.
async fn accept(listener: TcpListener, endpoints: Arc<Mutex<Vec<SocketAddr>>>) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let endpoints = endpoints.lock().map(|e| e.clone()).unwrap_or_default();
        let next = Arc::clone(&next);
        tokio::spawn(async move {
            // No endpoint taking it: the client sees the connection close, as with a Service
            // without ready endpoints, and retries.
            let first = next.fetch_add(1, Ordering::Relaxed);
            for i in 0..endpoints.len() {
                let target = endpoints[(first + i) % endpoints.len()];
                if let Ok(Ok(mut upstream)) =
                    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
            }
        });
    }
}

//! Keeps the etcd client off members that refuse connections.
//!
//! The client balances requests over every endpoint it was given and keeps sending to a
//! member that is down (connection refused), so with a three-member etcd whose leader was
//! killed a node's keepalive stream could stay unopened until its 2 s lease ran out
//! (docs/reliability.md, finding 15). [`guard`] probes each endpoint with a TCP connect and
//! takes a refusing one out of the client's balance until it accepts again; it never takes
//! out the last one, so a single-endpoint client is left as it is. The node and the
//! operator both start it for each etcd client they hold, before its first request.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::Client;
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often every endpoint is probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);
/// A probe not connected within this counts as refused.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// `host:port` of an etcd endpoint URL (`http://host:port`, `https://host:port` or bare).
pub fn address(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// Which endpoints to take out and which to put back, given which answered (`up`) and
/// which are out now. The last endpoint in the balance is never taken out.
pub fn plan(
    endpoints: &[String],
    up: &BTreeSet<String>,
    out: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let back: Vec<String> = out.iter().filter(|e| up.contains(*e)).cloned().collect();
    let mut remaining = endpoints.len() - out.len() + back.len();
    let mut take = Vec::new();
    for endpoint in endpoints {
        if !up.contains(endpoint) && !out.contains(endpoint) && remaining > 1 {
            take.push(endpoint.clone());
            remaining -= 1;
        }
    }
    (take, back)
}

async fn answers(endpoint: &str) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(address(endpoint))).await,
        Ok(Ok(_))
    )
}

/// An etcd client's endpoints and which of them are taken out of its balance.
struct Balance {
    client: Client,
    endpoints: Vec<String>,
    out: BTreeSet<String>,
}

impl Balance {
    /// Every one of `endpoints` in `client`'s balance, as the client starts.
    fn new(client: Client, endpoints: Vec<String>) -> Self {
        Self {
            client,
            endpoints,
            out: BTreeSet::new(),
        }
    }

    /// Probes every endpoint once, taking refusing ones out and putting answering ones back.
    async fn probe_once(&mut self) {
        let mut probes = tokio::task::JoinSet::new();
        for endpoint in &self.endpoints {
            let endpoint = endpoint.clone();
            probes.spawn(async move {
                let ok = answers(&endpoint).await;
                (endpoint, ok)
            });
        }
        let mut up: BTreeSet<String> = BTreeSet::new();
        while let Some(probe) = probes.join_next().await {
            if let Ok((endpoint, true)) = probe {
                up.insert(endpoint);
            }
        }
        let (take, back) = plan(&self.endpoints, &up, &self.out);
        for endpoint in take {
            match self.client.remove_endpoint(&endpoint).await {
                Ok(()) => {
                    tracing::warn!(%endpoint, "etcd member refuses connections; not sending to it");
                    self.out.insert(endpoint);
                }
                Err(error) => {
                    tracing::warn!(%endpoint, %error, "could not take an etcd member out")
                }
            }
        }
        for endpoint in back {
            match self.client.add_endpoint(&endpoint).await {
                Ok(()) => {
                    tracing::info!(%endpoint, "etcd member accepts connections again");
                    self.out.remove(&endpoint);
                }
                Err(error) => {
                    tracing::warn!(%endpoint, %error, "could not put an etcd member back")
                }
            }
        }
    }

    /// Probes every [`PROBE_EVERY`] until `stop`.
    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.probe_once().await,
            }
        }
    }
}

/// Probes `endpoints` once, so refusing members are out of `client`'s balance before its
/// first request, then every [`PROBE_EVERY`] in a task (taking refusing ones out, putting them
/// back once they accept connections) until the returned guard is dropped. With fewer than
/// two endpoints there is nothing to choose and nothing runs.
pub async fn guard(client: Client, endpoints: Vec<String>) -> DropGuard {
    let stop = CancellationToken::new();
    if endpoints.len() >= 2 {
        let mut balance = Balance::new(client, endpoints);
        balance.probe_once().await;
        tokio::spawn(balance.run(stop.clone()));
    }
    stop.drop_guard()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn addresses_drop_the_scheme_and_path() {
        assert_eq!(address("http://10.0.0.1:2379"), "10.0.0.1:2379");
        assert_eq!(address("https://etcd.ns.svc:2379/"), "etcd.ns.svc:2379");
        assert_eq!(address("127.0.0.1:2379"), "127.0.0.1:2379");
    }

    #[test]
    fn a_refusing_member_goes_out_and_comes_back() {
        let all: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_string()).collect();
        let (take, back) = plan(&all, &set(&["a", "c"]), &set(&[]));
        assert_eq!((take, back), (vec!["b".to_string()], vec![]));
        let (take, back) = plan(&all, &set(&["a", "c"]), &set(&["b"]));
        assert!(take.is_empty() && back.is_empty());
        let (take, back) = plan(&all, &set(&["a", "b", "c"]), &set(&["b"]));
        assert_eq!((take, back), (vec![], vec!["b".to_string()]));
    }

    #[test]
    fn the_last_member_is_never_taken_out() {
        let all: Vec<String> = ["a", "b"].iter().map(|s| (*s).to_string()).collect();
        let (take, _) = plan(&all, &set(&[]), &set(&[]));
        assert_eq!(take, vec!["a".to_string()]);
        let (take, _) = plan(&all, &set(&[]), &set(&["a"]));
        assert!(take.is_empty(), "b is the last one in the balance");
    }
}

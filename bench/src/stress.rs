//! Bad-input runs against a Switchboard node, showing that its memory stays bounded: the
//! server's RSS is sampled every 100 ms while
//! - **slow consumers**: pairs in calls, the host sending large SDP offers while the guest's
//!   application stops reading (its socket fills; the node must drop it with 1013, not buffer);
//! - **a connect flood**: connections opened as fast as possible, a third only TCP (never
//!   upgrading), a third upgraded but silent (no Hello), a third joined (the first two are cut
//!   by the handshake and Hello timeouts);
//! - **over the limit**: twice the node's `maxConnections` try to join; the excess must be
//!   refused with close 1013 ("overloaded"), not accepted or left hanging.
//!
//! The report is one JSON object: the RSS samples, start / peak / end RSS, what each
//! connection attempt ended with, and the change of chosen server counters (from `/metrics`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::sys;
use switchboard_client::{Client, ConnectOptions, Incoming};
use switchboard_protocol::auth::{Claims, JwtSecret, RoomGrant, mint, unix_now};
use switchboard_protocol::{Encoder, Hello, Join, Message, decode};

/// Which bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Guests that stop reading while their hosts send large offers.
    SlowConsumer,
    /// Connections opened as fast as possible, two thirds never finishing their handshake.
    ConnectFlood,
    /// Twice the node's connection limit trying to join.
    OverLimit,
}

impl Scenario {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SlowConsumer => "slow_consumer",
            Scenario::ConnectFlood => "connect_flood",
            Scenario::OverLimit => "over_limit",
        }
    }
}

/// One stress run.
#[derive(Debug, Clone)]
pub struct StressConfig {
    /// The node's WebSocket URL.
    pub url: String,
    /// The secret to mint tokens with.
    pub secret: JwtSecret,
    /// The scenario.
    pub scenario: Scenario,
    /// Connections (slow consumer: members of the pairs; flood and over-limit: attempts).
    pub connections: usize,
    /// How long the load runs (slow consumer) or how long to watch after the ramp.
    pub duration: Duration,
    /// The node's pid (RSS samples).
    pub server_pid: u32,
    /// The node's `/metrics` URL, for counter changes.
    pub metrics_url: Option<String>,
    /// Connection attempts in flight at once.
    pub concurrency: usize,
}

/// Counters whose change the report shows.
const COUNTERS: &[&str] = &[
    "switchboard_slow_consumer_disconnects_total",
    "switchboard_queue_drops_total",
    "switchboard_disconnects_total",
    "switchboard_handshake_failures_total",
    "switchboard_connections_total",
];

/// Outcomes of connection attempts, by kind.
#[derive(Debug, Default, Clone)]
struct Outcomes(Arc<Mutex<BTreeMap<String, u64>>>);

impl Outcomes {
    fn count(&self, kind: impl Into<String>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(kind.into()).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs the scenario and returns its report.
pub async fn run(cfg: &StressConfig) -> Value {
    let sampler = Sampler::start(cfg.server_pid);
    let before = counters(cfg.metrics_url.as_deref()).await;
    let outcomes = Outcomes::default();
    match cfg.scenario {
        Scenario::SlowConsumer => slow_consumers(cfg, &outcomes).await,
        Scenario::ConnectFlood => flood(cfg, &outcomes).await,
        Scenario::OverLimit => over_limit(cfg, &outcomes).await,
    }
    let after = counters(cfg.metrics_url.as_deref()).await;
    let samples = sampler.stop().await;
    let deltas: BTreeMap<String, f64> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect();
    let kib = |f: fn(&[(f64, u64)]) -> Option<u64>| f(&samples);
    json!({
        "scenario": cfg.scenario.name(),
        "connections": cfg.connections,
        "duration_s": cfg.duration.as_secs_f64(),
        "rss_start_kib": kib(|s| s.first().map(|x| x.1)),
        "rss_peak_kib": kib(|s| s.iter().map(|x| x.1).max()),
        "rss_end_kib": kib(|s| s.last().map(|x| x.1)),
        "samples": samples.iter().map(|(t, k)| json!([(t * 1000.0).round() / 1000.0, k])).collect::<Vec<_>>(),
        "outcomes": outcomes.snapshot(),
        "counters": deltas,
    })
}

/// Samples a process's RSS every 100 ms until stopped.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<(f64, u64)>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        if let Ok(kib) = sys::rss_kib(pid) {
                            samples.push((started.elapsed().as_secs_f64(), kib));
                        }
                    }
                }
            }
            if let Ok(kib) = sys::rss_kib(pid) {
                samples.push((started.elapsed().as_secs_f64(), kib));
            }
            samples
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<(f64, u64)> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The chosen counters (summed over their labels) from a Prometheus text page.
async fn counters(url: Option<&str>) -> BTreeMap<String, f64> {
    let Some(url) = url else {
        return BTreeMap::new();
    };
    match sys::http_get_body(url).await {
        Ok(text) => parse_counters(&text),
        Err(e) => {
            tracing::warn!(url, error = %e, "reading the node's metrics");
            BTreeMap::new()
        }
    }
}

/// Sums the [`COUNTERS`] samples by name and label set (`name{labels}` keys; a counter
/// without labels under its name).
pub fn parse_counters(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if COUNTERS.contains(&name)
            && let Ok(v) = value.parse::<f64>()
        {
            *out.entry(series.to_string()).or_default() += v;
        }
    }
    out
}

fn token(secret: &JwtSecret, user: &str, room: &str) -> String {
    let claims = Claims::new(
        user,
        RoomGrant::Rooms(vec![room.to_string()]),
        unix_now(),
        3600,
    );
    mint(secret, &claims)
}

fn options(url: &str, token: String) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options.token = token;
    options.reconnect.max_attempts = 0;
    options
}

/// Pairs in calls; each guest stops reading while its host sends 30 KiB offers at 40/s (under
/// the node's default rate limit, so the node's only defence is the slow-consumer cut).
async fn slow_consumers(cfg: &StressConfig, outcomes: &Outcomes) {
    let pairs = (cfg.connections / 2).max(1);
    let run: u32 = rand::random();
    let mut set = JoinSet::new();
    for p in 0..pairs {
        let (url, secret, outcomes) = (cfg.url.clone(), cfg.secret.clone(), outcomes.clone());
        let duration = cfg.duration;
        set.spawn(async move {
            let room = format!("slow-{run:08x}-{p}");
            let (host_id, guest_id) = (format!("h-{run:08x}-{p}"), format!("g-{run:08x}-{p}"));
            let connect = |user: String| {
                let options = options(&url, token(&secret, &user, &room));
                let (url, room) = (url.clone(), room.clone());
                async move {
                    let client = Client::connect(&url, options).await?;
                    client.join(&room).await?;
                    Ok::<_, switchboard_client::ClientError>(client.split())
                }
            };
            let (host, guest) = match tokio::join!(connect(host_id), connect(guest_id.clone())) {
                (Ok(host), Ok(guest)) => (host, guest),
                (Err(e), _) | (_, Err(e)) => {
                    outcomes.count(format!("join_{}", e.kind()));
                    return 0;
                }
            };
            let (host_tx, mut host_rx) = host;
            let (guest_tx, mut guest_rx) = guest;
            // The call: invite, accept, then the guest's application stops reading.
            let call = match host_tx.invite(&room, &guest_id).await {
                Ok(call) => call,
                Err(e) => {
                    outcomes.count(format!("invite_{}", e.kind()));
                    return 0;
                }
            };
            if let Err(kind) = wait_for_invite(&mut guest_rx, &call).await {
                outcomes.count(kind);
                return 0;
            }
            if let Err(e) = guest_tx.accept(&call).await {
                outcomes.count(format!("accept_{}", e.kind()));
                return 0;
            }
            outcomes.count("pairs_in_call");
            // Drain the host's side; never read the guest's again.
            tokio::spawn(async move { while host_rx.recv().await.is_ok() {} });
            let sdp = big_sdp(30 * 1024);
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            let end = Instant::now() + duration;
            let mut sent = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                if host_tx.offer(&call, &sdp).await.is_err() {
                    outcomes.count("host_send_failed");
                    break;
                }
                sent += 1;
            }
            drop(guest_rx);
            drop(guest_tx);
            sent
        });
    }
    let mut offers = 0u64;
    while let Some(done) = set.join_next().await {
        offers += done.unwrap_or(0);
    }
    outcomes
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert("offers_sent".into(), offers);
}

/// A valid SDP body of `len` bytes.
fn big_sdp(len: usize) -> String {
    let mut sdp = String::from("v=0\r\n");
    while sdp.len() + 80 < len {
        sdp.push_str("a=x-padding:");
        sdp.push_str(&"p".repeat(64));
        sdp.push_str("\r\n");
    }
    sdp
}

async fn wait_for_invite(rx: &mut Incoming, call: &str) -> Result<(), String> {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(Message::Invite(invite)) if invite.call_id == call => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("invite_wait_{}", e.kind())),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| Err("invite_wait_timeout".into()))
}

/// Opens `connections` as fast as `concurrency` allows: a third TCP only, a third upgraded but
/// silent, a third joined; holds them for `duration` (past the node's 10 s handshake and
/// Hello timeouts by default), then closes.
async fn flood(cfg: &StressConfig, outcomes: &Outcomes) {
    hold_many(cfg, outcomes, |a| async move {
        let kind = a.i % 3;
        let held = match kind {
            0 => match TcpStream::connect(authority(&a.url)).await {
                Ok(tcp) => Held::Tcp(tcp),
                Err(_) => return a.outcomes.count("tcp_connect_failed"),
            },
            1 => match upgrade(&a.url).await {
                Ok(ws) => Held::Ws(Box::new(ws)),
                Err(kind) => return a.outcomes.count(kind),
            },
            _ => {
                let user = format!("f-{:08x}-{}", a.run, a.i);
                let room = format!("flood-{:08x}-{}", a.run, a.i / 6);
                match raw_join(&a.url, &token(&a.secret, &user, &room), &room).await {
                    Ok(ws) => Held::Ws(Box::new(ws)),
                    Err(kind) => return a.outcomes.count(kind),
                }
            }
        };
        drop(a.permit);
        let label = ["tcp_only", "upgraded_silent", "joined"][kind];
        a.outcomes.count(format!("{label}_opened"));
        // Hold until the end; note how the server ended it, if it did.
        let ended = held.wait_close(a.hold_until).await;
        a.outcomes.count(format!("{label}_{ended}"));
    })
    .await;
}

/// Twice the node's limit (`connections` attempts) join and hold; the excess must be told 1013.
async fn over_limit(cfg: &StressConfig, outcomes: &Outcomes) {
    hold_many(cfg, outcomes, |a| async move {
        let user = format!("o-{:08x}-{}", a.run, a.i);
        let room = format!("over-{:08x}-{}", a.run, a.i / 2);
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            raw_join(&a.url, &token(&a.secret, &user, &room), &room),
        )
        .await
        .unwrap_or_else(|_| Err("join_timeout".into()));
        drop(a.permit);
        match result {
            Ok(ws) => {
                a.outcomes.count("joined");
                let ended = Held::Ws(Box::new(ws)).wait_close(a.hold_until).await;
                a.outcomes.count(format!("joined_{ended}"));
            }
            Err(kind) => a.outcomes.count(kind),
        }
    })
    .await;
}

/// One connection attempt of `hold_many`, with its own copies of what it needs.
struct Attempt {
    i: usize,
    /// Tags this run's users and rooms so they don't meet an earlier run's.
    run: u32,
    url: String,
    secret: JwtSecret,
    outcomes: Outcomes,
    /// Dropped once connected, so at most `concurrency` attempts are connecting at once.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    hold_until: Instant,
}

/// Runs `attempt` `cfg.connections` times, paced by `cfg.concurrency`, and waits for all: flood
/// and over_limit differ only in what one attempt does.
async fn hold_many<F, Fut>(cfg: &StressConfig, outcomes: &Outcomes, attempt: F)
where
    F: Fn(Attempt) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let run: u32 = rand::random();
    let limiter = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
    let mut set = JoinSet::new();
    let hold_until = Instant::now() + cfg.duration;
    for i in 0..cfg.connections {
        let permit = limiter.clone().acquire_owned().await.ok();
        set.spawn(attempt(Attempt {
            i,
            run,
            url: cfg.url.clone(),
            secret: cfg.secret.clone(),
            outcomes: outcomes.clone(),
            permit,
            hold_until,
        }));
    }
    while set.join_next().await.is_some() {}
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A connection held open by the flood.
enum Held {
    Tcp(TcpStream),
    Ws(Box<Ws>),
}

impl Held {
    /// Waits until `until` or until the server ends the connection; says which.
    async fn wait_close(self, until: Instant) -> String {
        match self {
            Held::Tcp(mut tcp) => {
                let mut buf = [0u8; 256];
                match tokio::time::timeout_at(
                    until,
                    tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
                )
                .await
                {
                    Err(_) => "held".into(),
                    Ok(_) => "closed_by_server".into(),
                }
            }
            Held::Ws(mut ws) => {
                let wait = async {
                    loop {
                        match ws.next().await {
                            Some(Ok(WsMessage::Close(frame))) => {
                                return format!(
                                    "closed_{}",
                                    frame.map_or(1005, |f| u16::from(f.code))
                                );
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => return "dropped".to_string(),
                        }
                    }
                };
                let ended = tokio::time::timeout_at(until, wait).await;
                let _ = SinkExt::close(&mut ws).await;
                ended.unwrap_or_else(|_| "held".into())
            }
        }
    }
}

fn authority(url: &str) -> String {
    url.trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn upgrade(url: &str) -> Result<Ws, String> {
    let tcp = TcpStream::connect(authority(url))
        .await
        .map_err(|_| "tcp_connect_failed".to_string())?;
    let request = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("bad_url: {e}"))?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static("switchboard.v2"),
        );
        request
    };
    let (ws, _) = tokio_tungstenite::client_async(request, tcp)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                format!("http_{}", r.status().as_u16())
            }
            _ => "upgrade_failed".to_string(),
        })?;
    Ok(ws)
}

/// Hello and Join on a raw WebSocket: the joined connection, or how it ended (a close code
/// the server sent is `closed_<code>`).
async fn raw_join(url: &str, token: &str, room: &str) -> Result<Ws, String> {
    let mut ws = upgrade(url).await?;
    let mut encoder = Encoder::new();
    let mut send = async |ws: &mut Ws, msg: Message| -> Result<(), String> {
        let frame = encoder
            .encode_to_vec(&msg)
            .map_err(|e| format!("encode: {e}"))?;
        ws.send(WsMessage::Binary(Bytes::from(frame)))
            .await
            .map_err(|_| "send_failed".to_string())
    };
    send(
        &mut ws,
        Message::Hello(Hello {
            token: token.to_string(),
            versions: vec![2],
            resume: None,
        }),
    )
    .await?;
    expect(&mut ws, |m| matches!(m, Message::Welcome(_))).await?;
    send(
        &mut ws,
        Message::Join(Join {
            request_id: 1,
            room: room.to_string(),
        }),
    )
    .await?;
    expect(&mut ws, |m| matches!(m, Message::Joined(_))).await?;
    Ok(ws)
}

async fn expect(ws: &mut Ws, want: impl Fn(&Message) -> bool) -> Result<(), String> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(bytes))) => match decode(&bytes) {
                Ok(m) if want(&m) => return Ok(()),
                Ok(Message::Error(e)) => return Err(format!("error_{}", e.code)),
                Ok(_) => {}
                Err(_) => return Err("bad_frame".into()),
            },
            Some(Ok(WsMessage::Close(frame))) => {
                return Err(format!(
                    "closed_{}",
                    frame.map_or(1005, |f| u16::from(f.code))
                ));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err("dropped".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_by_series() {
        let text = "# HELP x\nswitchboard_disconnects_total{reason=\"idle\"} 2\n\
                    switchboard_disconnects_total{reason=\"flood\"} 1\n\
                    switchboard_queue_drops_total 5\nswitchboard_rooms 3\n";
        let c = parse_counters(text);
        assert_eq!(c["switchboard_disconnects_total{reason=\"idle\"}"], 2.0);
        assert_eq!(c["switchboard_queue_drops_total"], 5.0);
        assert!(!c.contains_key("switchboard_rooms"));
    }

    #[test]
    fn big_sdp_is_valid_and_sized() {
        let sdp = big_sdp(30 * 1024);
        assert!(sdp.starts_with("v=0"));
        assert!(sdp.len() <= 30 * 1024 && sdp.len() > 29 * 1024);
    }
}

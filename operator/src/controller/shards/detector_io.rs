//! The failure detector's I/O shell: one task per cluster that holds a liveness stream open to
//! every registered node, reconnects at once when one ends, makes the probes the pure
//! [`Detector`] asks for (a fresh connection of its own, indirect probes through other nodes'
//! admin ports), ticks the detector and hands its verdicts to the shard manager as
//! [`Input::Detected`].

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::time::Duration;

use switchboard_contract::liveness::{self, Endpoint, ProbeReport, Seen, StreamReader};

/// A registration the detector watches: its liveness endpoint and its lease.
pub type Target = (Endpoint, i64);
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::detector::{Action, Cause, Detector, Event, Finding, ProbeOutcome, Prober, Timing};
use super::health::Reason;
use super::metrics::ShardMetrics;
use super::state::Input;

/// How often the detector ticks (its verdicts come at this resolution).
pub const TICK: Duration = Duration::from_millis(25);

/// Reconnect backoff of a stream that keeps failing (the first reconnect after an end is
/// immediate: that is the crash check).
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// Events travel tagged with the node and the incarnation their stream was opened for.
type Tagged = (String, u64, Event);

/// Where to send verdicts and count findings.
pub struct Sinks {
    /// The shard manager's inputs.
    pub inputs: mpsc::Sender<Input>,
    /// Metrics.
    pub metrics: ShardMetrics,
    /// Metric labels: namespace and cluster.
    pub labels: [String; 2],
}

/// Runs the detector of one cluster until `endpoints` or the manager's inputs close.
pub async fn run(
    mut endpoints: watch::Receiver<BTreeMap<String, Target>>,
    timing: Timing,
    sinks: Sinks,
) {
    let (events_tx, mut events) = mpsc::channel::<Tagged>(1024);
    let mut detector = Detector::new(timing);
    let mut streams: BTreeMap<String, (Endpoint, StreamTask)> = BTreeMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    loop {
        tokio::select! {
            changed = endpoints.changed() => {
                if changed.is_err() {
                    return;
                }
                let current = endpoints.borrow_and_update().clone();
                reconcile(&mut detector, &mut streams, &current, &events_tx, timing);
            }
            Some((node, incarnation, event)) = events.recv() => {
                if streams.get(&node).is_some_and(|(e, _)| e.incarnation == incarnation) {
                    detector.observe(&node, event, Instant::now());
                }
            }
            _ = tick.tick() => detector.tick(Instant::now()),
        }
        for action in detector.take_actions() {
            let Action::Probe { node, via, own } = action;
            start_probes(&node, &via, own, &streams, &events_tx, timing);
        }
        for finding in detector.take_findings() {
            if !report(finding, &mut streams, &events_tx, &sinks, &mut sent, timing).await {
                return;
            }
        }
    }
}

/// Starts, restarts and stops stream tasks to follow the registrations (a new lease of the
/// same process keeps its stream but is watched afresh).
fn reconcile(
    detector: &mut Detector,
    streams: &mut BTreeMap<String, (Endpoint, StreamTask)>,
    current: &BTreeMap<String, Target>,
    events: &mpsc::Sender<Tagged>,
    timing: Timing,
) {
    streams.retain(|node, (endpoint, _)| {
        let keep = current.get(node).is_some_and(|(e, _)| e == endpoint);
        if !keep {
            detector.forget(node);
        }
        keep
    });
    let now = Instant::now();
    for (node, (endpoint, lease)) in current {
        detector.watch(node, endpoint.incarnation, *lease, now);
        if streams.contains_key(node) {
            continue;
        }
        let task = StreamTask::spawn(node.clone(), endpoint.clone(), events.clone(), timing);
        streams.insert(node.clone(), (endpoint.clone(), task));
    }
}

/// Logs and counts a finding, restarts a vetoed node's stream and sends verdicts to the
/// manager; false when the manager is gone.
async fn report(
    finding: Finding,
    streams: &mut BTreeMap<String, (Endpoint, StreamTask)>,
    events: &mpsc::Sender<Tagged>,
    sinks: &Sinks,
    sent: &mut BTreeMap<String, (u64, i64)>,
    timing: Timing,
) -> bool {
    let [namespace, cluster] = &sinks.labels;
    let count = |what: &str| {
        sinks
            .metrics
            .detector
            .with_label_values(&[namespace.as_str(), cluster.as_str(), what])
            .inc();
    };
    match finding {
        Finding::Dead {
            node,
            incarnation,
            lease,
            cause,
            silent,
        } => {
            let reason = match cause {
                Cause::Crashed => Reason::Crashed,
                Cause::Unresponsive => Reason::Unresponsive,
            };
            count(reason.as_str());
            tracing::warn!(%cluster, %node, incarnation, reason = reason.as_str(), silent_ms = silent.as_millis(), "failure detector: node declared dead");
            if sent.insert(node.clone(), (incarnation, lease)) == Some((incarnation, lease)) {
                return true;
            }
            let input = Input::Detected {
                node,
                incarnation,
                lease,
                reason,
            };
            return sinks.inputs.send(input).await.is_ok();
        }
        Finding::Suspected { node } => {
            count("Suspected");
            tracing::info!(%cluster, %node, "failure detector: node silent; probing");
        }
        Finding::Vetoed { node, by } => {
            count("Vetoed");
            tracing::warn!(%cluster, %node, ?by, "failure detector: silent to the operator but reachable; no failover");
            // The stream itself may be dead while the node lives: open a fresh one.
            if let Some((endpoint, task)) = streams.get_mut(&node) {
                *task = StreamTask::spawn(node.clone(), endpoint.clone(), events.clone(), timing);
            }
        }
        Finding::Cleared { node } => {
            count("Cleared");
            tracing::info!(%cluster, %node, "failure detector: node speaks again");
        }
        Finding::Flapped { node } => {
            count("Flapped");
            tracing::debug!(%cluster, %node, "failure detector: stream reopened to the same process");
        }
        Finding::Starved { late } => {
            count("Starved");
            tracing::warn!(%cluster, late_ms = late.as_millis(), "failure detector: its own tick was late; silences restarted");
        }
    }
    true
}

/// A node's stream task; aborted when dropped.
struct StreamTask(JoinHandle<()>);

impl Drop for StreamTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl StreamTask {
    fn spawn(
        node: String,
        endpoint: Endpoint,
        events: mpsc::Sender<Tagged>,
        timing: Timing,
    ) -> Self {
        Self(tokio::spawn(hold_stream(node, endpoint, events, timing)))
    }
}

/// Holds `node`'s stream open: reports what it carries, reconnects at once when it ends (the
/// crash check), then with backoff while it keeps failing.
async fn hold_stream(
    node: String,
    endpoint: Endpoint,
    events: mpsc::Sender<Tagged>,
    timing: Timing,
) {
    let send = |event: Event| {
        let events = events.clone();
        let node = node.clone();
        async move {
            events
                .send((node, endpoint.incarnation, event))
                .await
                .is_ok()
        }
    };
    let mut delay = Duration::ZERO;
    loop {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let socket = match connect(&endpoint.addr, timing.probe_timeout).await {
            Ok(socket) => socket,
            Err(refused) => {
                let event = if refused {
                    Event::Refused
                } else {
                    Event::Unreachable
                };
                if !send(event).await {
                    return;
                }
                delay = (delay * 2).clamp(Duration::from_millis(50), RECONNECT_MAX);
                continue;
            }
        };
        let mut socket = socket;
        if socket
            .write_all(&liveness::stream_request(&endpoint.addr))
            .await
            .is_err()
        {
            if !send(Event::Closed).await {
                return;
            }
            delay = Duration::from_millis(50);
            continue;
        }
        let mut reader = StreamReader::default();
        let mut buf = [0u8; 1024];
        let mut opened = false;
        loop {
            let n = match socket.read(&mut buf).await {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            if n == 0 {
                break;
            }
            let seen = match reader.feed(&buf[..n]) {
                Ok(seen) => seen,
                Err(error) => {
                    tracing::debug!(%node, %error, "not a liveness stream");
                    break;
                }
            };
            for item in seen {
                let event = match item {
                    Seen::Hello { incarnation, .. } => {
                        opened = true;
                        Event::Connected(incarnation)
                    }
                    Seen::Beat => Event::Heard,
                    Seen::Bye => Event::Bye,
                };
                if !send(event).await {
                    return;
                }
            }
        }
        if !send(Event::Closed).await {
            return;
        }
        // Reconnect at once after a stream that was open (a crash shows as a refusal now);
        // back off while connections end before they open.
        delay = if opened {
            Duration::ZERO
        } else {
            (delay * 2).clamp(Duration::from_millis(50), RECONNECT_MAX)
        };
    }
}

/// Connects within `timeout`; `Err(true)` when the connection was refused.
async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, bool> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(socket)) => {
            let _ = socket.set_nodelay(true);
            Ok(socket)
        }
        Ok(Err(e)) => Err(e.kind() == ErrorKind::ConnectionRefused),
        Err(_) => Err(false),
    }
}

/// Starts a probe of `node` through each peer of `via`, and one of the operator's own when
/// `own`.
fn start_probes(
    node: &str,
    via: &[String],
    own: bool,
    streams: &BTreeMap<String, (Endpoint, StreamTask)>,
    events: &mpsc::Sender<Tagged>,
    timing: Timing,
) {
    let Some((endpoint, _)) = streams.get(node) else {
        return;
    };
    let tag = (node.to_string(), endpoint.incarnation);
    if own {
        let (events, tag, addr) = (events.clone(), tag.clone(), endpoint.addr.clone());
        tokio::spawn(async move {
            let outcome = own_probe(&addr, timing.probe_timeout).await;
            let _ = events
                .send((tag.0, tag.1, Event::Probe(Prober::Operator, outcome)))
                .await;
        });
    }
    for peer in via {
        let Some((peer_endpoint, _)) = streams.get(peer) else {
            continue;
        };
        let (events, tag, addr, peer) = (
            events.clone(),
            tag.clone(),
            peer_endpoint.addr.clone(),
            peer.clone(),
        );
        tokio::spawn(async move {
            let outcome = peer_probe(&addr, &tag.0, timing.probe_timeout).await;
            let _ = events
                .send((tag.0, tag.1, Event::Probe(Prober::Peer(peer), outcome)))
                .await;
        });
    }
}

/// A fresh connection of the operator's own: the first beat within `timeout`.
async fn own_probe(addr: &str, timeout: Duration) -> ProbeOutcome {
    let attempt = async {
        let mut socket = match connect(addr, timeout).await {
            Ok(socket) => socket,
            Err(true) => return ProbeOutcome::Refused,
            Err(false) => return ProbeOutcome::Unreachable,
        };
        if socket
            .write_all(&liveness::stream_request(addr))
            .await
            .is_err()
        {
            return ProbeOutcome::Unreachable;
        }
        let mut reader = StreamReader::default();
        let mut incarnation = None;
        let mut buf = [0u8; 512];
        loop {
            let n = match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return ProbeOutcome::Unreachable,
                Ok(n) => n,
            };
            let Ok(seen) = reader.feed(&buf[..n]) else {
                return ProbeOutcome::Unreachable;
            };
            for item in seen {
                match item {
                    Seen::Hello { incarnation: i, .. } => incarnation = Some(i),
                    Seen::Beat => {
                        if let Some(i) = incarnation {
                            return ProbeOutcome::Reachable(i);
                        }
                    }
                    Seen::Bye => return ProbeOutcome::Unreachable,
                }
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(ProbeOutcome::Unreachable)
}

/// Asks the node at `peer_addr` to probe `node`; its report, or no vote.
async fn peer_probe(peer_addr: &str, node: &str, timeout: Duration) -> ProbeOutcome {
    let attempt = async {
        let mut socket = connect(peer_addr, timeout).await.ok()?;
        socket
            .write_all(&liveness::probe_request(peer_addr, node, timeout))
            .await
            .ok()?;
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = socket.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.len() > 64 * 1024 {
                return None;
            }
        }
        liveness::parse_probe_response(&response).ok()
    };
    // The peer waits up to `timeout` for a beat itself; give its answer time to arrive.
    match tokio::time::timeout(timeout * 2 + Duration::from_millis(100), attempt).await {
        Ok(Some(ProbeReport {
            reachable: true,
            incarnation: Some(incarnation),
            ..
        })) => ProbeOutcome::Reachable(incarnation),
        Ok(Some(_)) => ProbeOutcome::Unreachable,
        _ => ProbeOutcome::NoAnswer,
    }
}

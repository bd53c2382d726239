//! The bench orchestration: ramp N connections into rooms of K (measuring join latency), read
//! the server's idle RSS, pair members up, set every pair's carrier call up, then run the load
//! window and collect the report — once against Switchboard and, when asked, once against the
//! baseline relay (spawned as its own process so both servers are measured alike).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::baseline::{self, BaselineConfig, RelayTransport};
use super::centrifugo::Codec;
use super::conn::{Rx, Tx};
use super::pair::TIMER_SLACK;
use super::pair::{self, PairConfig, Side, Window};
use super::recorder::Recorder;
use super::stats::Report;
use super::sys;
use super::target::{self, Target};
use switchboard_client::ConnectOptions;
use switchboard_protocol::auth::JwtSecret;

/// Where the baseline relay runs.
#[derive(Debug, Clone)]
pub enum BaselineMode {
    /// As a child process of this executable (`<exe> baseline-relay`), measured like a server.
    Process(PathBuf),
    /// Already running at this address, started by the caller (who pins it to its cores and
    /// passes its pid as `server_pid`).
    Running(SocketAddr),
    /// Inside the bench process (tests; its RSS is not measured).
    InProcess,
}

/// Connect rates from this one up are not paced by a timer (see the ramp in `run_target`).
pub const UNPACED_CONNECT_RATE: f64 = 100_000.0;

/// What the main measurement runs against (the baseline, when asked, runs after it).
#[derive(Debug, Clone, Default)]
pub enum TargetKind {
    /// A Switchboard node at `url`.
    #[default]
    Switchboard,
    /// A Centrifugo server at `url` (`ws://…/connection/websocket`), tokens signed with
    /// `secret` (its `token_hmac_secret_key`), spoken to in `Codec`.
    Centrifugo(Codec),
    /// The raw TCP floor: the baseline relay over length-prefixed TCP, started like the
    /// baseline.
    Tcp(BaselineMode),
}

/// Everything one bench run needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Switchboard URL (`ws://host:port/ws`); `None` measures the baseline alone.
    pub url: Option<String>,
    /// Secret to mint join tokens with (needed with `url`).
    pub secret: Option<JwtSecret>,
    /// Client options template (versions, CA file).
    pub client: ConnectOptions,
    /// Connections to open (rounded down to whole rooms).
    pub connections: usize,
    /// Members per room (≥ 2).
    pub room_size: usize,
    /// Length of the load window.
    pub duration: Duration,
    /// Open-loop relay messages per second, all pairs together (0: none).
    pub rate: f64,
    /// Co-host flows started per second, all pairs together (0: none).
    pub flow_rate: f64,
    /// Candidates each side sends per flow.
    pub candidates: u16,
    /// Connections opened per second during the ramp.
    pub connect_rate: f64,
    /// Connection attempts in flight at once.
    pub connect_concurrency: usize,
    /// Cap on open-loop messages sent in total.
    pub max_messages: u64,
    /// The Switchboard server's pid, for RSS per idle connection.
    pub server_pid: Option<u32>,
    /// Also measure the baseline relay.
    pub baseline: Option<BaselineMode>,
    /// Idle time before reading the server's RSS.
    pub settle: Duration,
    /// Wait for in-flight messages after the window.
    pub grace: Duration,
    /// Pause between the Switchboard and the baseline measurement.
    pub cooldown: Duration,
    /// Print progress to stderr.
    pub progress: bool,
    /// What `url` points at (or the TCP floor, which needs no URL).
    pub target: TargetKind,
    /// An HTTP URL whose GET makes the server collect its garbage (Go's pprof heap endpoint
    /// with `gc=1`): RSS is then read a second time after `settle`.
    pub gc_url: Option<String>,
    /// Connect each client straight to its room's owner (found beforehand by one unmeasured
    /// connection per room through `url`) instead of through `url` and its redirect.
    pub straight_to_owner: bool,
}

impl BenchConfig {
    /// Defaults for `connections` connections in rooms of 2 against `url`.
    pub fn new(url: Option<String>, secret: Option<JwtSecret>, connections: usize) -> Self {
        let mut client = ConnectOptions::new("");
        client.reconnect.max_attempts = 0;
        client.timeouts.request = Duration::from_secs(30);
        client.timeouts.connect = Duration::from_secs(30);
        client.timeouts.handshake = Duration::from_secs(30);
        Self {
            url,
            secret,
            client,
            connections,
            room_size: 2,
            duration: Duration::from_secs(10),
            rate: 1000.0,
            flow_rate: 50.0,
            candidates: 2,
            connect_rate: 2000.0,
            connect_concurrency: 256,
            max_messages: 10_000_000,
            server_pid: None,
            baseline: None,
            settle: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            cooldown: Duration::from_secs(3),
            progress: false,
            target: TargetKind::Switchboard,
            gc_url: None,
            straight_to_owner: false,
        }
    }
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad parameters.
    #[error("invalid bench parameters: {0}")]
    Invalid(String),
    /// The baseline relay could not be started.
    #[error("baseline relay: {0}")]
    Baseline(String),
    /// Local resources (open-file limit, process).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The reports of one bench invocation.
#[derive(Debug, Clone, Default)]
pub struct BenchResult {
    /// Against Switchboard (absent when measuring the baseline alone).
    pub main: Option<Report>,
    /// Against the baseline relay.
    pub baseline: Option<Report>,
}

/// Runs the bench: Switchboard first (if a URL is given), then the baseline (if asked).
pub async fn run(cfg: &BenchConfig) -> Result<BenchResult, BenchError> {
    if cfg.room_size < 2 {
        return Err(BenchError::Invalid("--room-size must be at least 2".into()));
    }
    if cfg.connections < cfg.room_size {
        return Err(BenchError::Invalid(format!(
            "--connections ({}) must be at least --room-size ({})",
            cfg.connections, cfg.room_size
        )));
    }
    let is_tcp = matches!(cfg.target, TargetKind::Tcp(_));
    if cfg.url.is_none() && cfg.baseline.is_none() && !is_tcp {
        return Err(BenchError::Invalid(
            "nothing to measure: give --url or --baseline".into(),
        ));
    }
    let in_process = matches!(cfg.baseline, Some(BaselineMode::InProcess))
        || matches!(cfg.target, TargetKind::Tcp(BaselineMode::InProcess));
    let needed = cfg.connections as u64 * if in_process { 2 } else { 1 } + 512;
    let limit = sys::raise_nofile(needed)?;
    if limit < needed {
        return Err(BenchError::Invalid(format!(
            "open-file limit is {limit}, {needed} needed for {} connections",
            cfg.connections
        )));
    }
    let mut result = BenchResult::default();
    if let TargetKind::Tcp(mode) = &cfg.target {
        result.main = Some(run_relay(cfg, mode, RelayTransport::Tcp).await?);
    } else if let Some(url) = &cfg.url {
        let secret = cfg
            .secret
            .clone()
            .ok_or_else(|| BenchError::Invalid("a JWT secret is needed to mint tokens".into()))?;
        let target = match cfg.target {
            TargetKind::Centrifugo(codec) => Target::Centrifugo {
                url: url.clone(),
                secret,
                codec,
            },
            _ => Target::Switchboard {
                url: url.clone(),
                secret,
                options: Box::new(cfg.client.clone()),
            },
        };
        result.main = Some(run_target(cfg, &target, cfg.server_pid).await);
    }
    if result.main.is_some() && cfg.baseline.is_some() {
        // Let the node settle (closing connections, suspending sessions) before measuring the
        // baseline on the same cores.
        tokio::time::sleep(cfg.cooldown).await;
    }
    if let Some(mode) = &cfg.baseline {
        result.baseline = Some(run_relay(cfg, mode, RelayTransport::WebSocket).await?);
    }
    Ok(result)
}

/// Starts the baseline relay (WebSocket or plain TCP) as `mode` says and measures it.
async fn run_relay(
    cfg: &BenchConfig,
    mode: &BaselineMode,
    transport: RelayTransport,
) -> Result<Report, BenchError> {
    let target_for = |addr| match transport {
        RelayTransport::WebSocket => Target::Baseline { addr },
        RelayTransport::Tcp => Target::Tcp { addr },
    };
    match mode {
        BaselineMode::InProcess => {
            let relay = baseline::spawn(
                "127.0.0.1:0"
                    .parse()
                    .map_err(|_| BenchError::Baseline("address".into()))?,
                BaselineConfig {
                    room_size: cfg.room_size,
                    transport,
                    ..BaselineConfig::default()
                },
            )
            .await?;
            let report = run_target(cfg, &target_for(relay.addr), None).await;
            relay.shutdown.cancel();
            Ok(report)
        }
        BaselineMode::Running(addr) => {
            Ok(run_target(cfg, &target_for(*addr), cfg.server_pid).await)
        }
        BaselineMode::Process(exe) => {
            let mut child = spawn_baseline_process(exe, cfg.room_size, transport).await?;
            let report = run_target(cfg, &target_for(child.addr), child.child.id()).await;
            let _ = child.child.start_kill();
            let _ = child.child.wait().await;
            Ok(report)
        }
    }
}

struct BaselineChild {
    child: tokio::process::Child,
    addr: SocketAddr,
}

/// Starts `<exe> baseline-relay` and reads the address from its first stdout line
/// (`listening on ADDR`).
async fn spawn_baseline_process(
    exe: &PathBuf,
    room_size: usize,
    transport: RelayTransport,
) -> Result<BaselineChild, BenchError> {
    let mut command = tokio::process::Command::new(exe);
    command
        .args(["baseline-relay", "--listen", "127.0.0.1:0", "--room-size"])
        .arg(room_size.to_string());
    if transport == RelayTransport::Tcp {
        command.arg("--tcp");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Baseline(format!("cannot start {}: {e}", exe.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Baseline("no stdout".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| BenchError::Baseline("did not report its address within 10 s".into()))?
        .map_err(|e| BenchError::Baseline(e.to_string()))?
        .ok_or_else(|| BenchError::Baseline("exited before reporting its address".into()))?;
    let addr = parse_listening_line(&line)
        .ok_or_else(|| BenchError::Baseline(format!("unexpected first line {line:?}")))?;
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(BaselineChild { child, addr })
}

/// Parses `listening on 127.0.0.1:PORT`.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    line.trim().strip_prefix("listening on ")?.parse().ok()
}

/// Room `r` and user `m` ids for one run (a random run id keeps runs against one long-lived
/// server apart: seats of a finished run stay suspended for the resume window).
fn ids(run: u32, room: usize, member: usize) -> (String, String) {
    (
        format!("bench-{run:08x}-{room}"),
        format!("u-{run:08x}-{room}-{member}"),
    )
}

/// The URL of each room's owner (`None` where it could not be found, counted as an
/// `owner_lookup` error): one connection per room whose Hello the node behind the target's URL
/// redirects to the owner.
async fn owner_urls(
    target: &Target,
    run_id: u32,
    rooms: usize,
    concurrency: usize,
    rec: &Recorder,
) -> Vec<Option<String>> {
    let limiter = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut lookups = JoinSet::new();
    for room in 0..rooms {
        let permit = limiter.clone().acquire_owned().await;
        let target = target.clone();
        lookups.spawn(async move {
            let _permit = permit;
            let (room_id, user) = ids(run_id, room, 0);
            (room, target::owner_url(&target, &user, &room_id).await)
        });
    }
    let mut owners = vec![None; rooms];
    while let Some(done) = lookups.join_next().await {
        match done {
            Ok((room, Ok(url))) => owners[room] = Some(url),
            Ok((_, Err(failure))) => {
                tracing::debug!(detail = %failure.detail, "owner lookup failed");
                rec.error("owner_lookup");
            }
            Err(_) => rec.error("owner_lookup"),
        }
    }
    owners
}

/// One whole measurement against one target.
async fn run_target(cfg: &BenchConfig, target: &Target, server_pid: Option<u32>) -> Report {
    let rec = Arc::new(Recorder::new());
    let run_id: u32 = rand::random();
    let rooms = cfg.connections / cfg.room_size;
    let rss_before = server_pid.and_then(|pid| sys::rss_kib(pid).ok());
    let kernel_before = sys::kernel_tcp().ok();
    let ramp_cpu_before = server_pid.and_then(|pid| sys::cpu_seconds(pid).ok());
    let progress = |text: String| {
        if cfg.progress {
            eprintln!("[{}] {text}", target.name());
        }
    };
    let paced = cfg.connect_rate < UNPACED_CONNECT_RATE;
    progress(if paced {
        format!(
            "connecting {} clients into {rooms} rooms of {}, open loop at {:.0}/s",
            rooms * cfg.room_size,
            cfg.room_size,
            cfg.connect_rate
        )
    } else {
        format!(
            "connecting {} clients into {rooms} rooms of {}, {} connects in flight",
            rooms * cfg.room_size,
            cfg.room_size,
            cfg.connect_concurrency
        )
    });

    // 0. Where each room lives, when clients are to go straight there.
    let owners: Arc<Vec<Option<String>>> = Arc::new(if cfg.straight_to_owner {
        progress(format!("finding the owners of {rooms} rooms"));
        owner_urls(target, run_id, rooms, cfg.connect_concurrency, &rec).await
    } else {
        vec![None; rooms]
    });

    // 1. Ramp the connections. Paced, the ramp is open loop: every connection starts at its
    //    scheduled time whatever the server does, so a stall meets more arrivals instead of
    //    fewer, and setup counts from the scheduled time (coordinated-omission corrected like
    //    the relay stream). Unpaced (the churn figure), at most `connect_concurrency` connects
    //    are in flight and the ramp goes as fast as the server takes them.
    let mut slots: Vec<Vec<Option<(Tx, Rx)>>> = (0..rooms)
        .map(|_| (0..cfg.room_size).map(|_| None).collect())
        .collect();
    let limiter = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let interval = 1.0 / cfg.connect_rate.max(1.0);
    let mut connecting = JoinSet::new();
    let ramp_started = Instant::now();
    let mut index = 0.0f64;
    for room in 0..rooms {
        for member in 0..cfg.room_size {
            let scheduled = ramp_started + Duration::from_secs_f64(index * interval);
            index += 1.0;
            let permit = if paced {
                tokio::time::sleep_until(scheduled).await;
                None
            } else {
                limiter.clone().acquire_owned().await.ok()
            };
            let target = target.clone();
            let rec = rec.clone();
            let owners = owners.clone();
            connecting.spawn(async move {
                let _permit = permit;
                let late = Instant::now().saturating_duration_since(scheduled);
                let (room_id, user) = ids(run_id, room, member);
                let url = owners[room].as_deref();
                match target::connect(&target, &user, &room_id, url).await {
                    Ok((tx, rx, timing)) => {
                        let setup = if paced && late > TIMER_SLACK {
                            timing.setup + late
                        } else {
                            timing.setup
                        };
                        rec.record_join(timing.join, setup);
                        Some((room, member, tx, rx))
                    }
                    Err(failure) => {
                        tracing::debug!(kind = %failure.kind, detail = %failure.detail, "bench connect failed");
                        rec.error(&failure.kind);
                        None
                    }
                }
            });
        }
    }
    let mut connected = 0u64;
    while let Some(done) = connecting.join_next().await {
        if let Ok(Some((room, member, tx, rx))) = done {
            slots[room][member] = Some((tx, rx));
            connected += 1;
        }
    }
    let ramp_secs = ramp_started.elapsed().as_secs_f64();
    let ramp_cpu_cores = match (server_pid, ramp_cpu_before) {
        (Some(pid), Some(before)) => sys::cpu_seconds(pid)
            .ok()
            .map(|after| (after - before).max(0.0) / ramp_secs.max(1e-3)),
        _ => None,
    };
    progress(format!(
        "{connected} connected and joined ({} errors)",
        rec.error_count()
    ));

    // 2. Idle memory: the server's RSS and the kernel's TCP memory, then (Go) after a GC.
    tokio::time::sleep(cfg.settle).await;
    let per_conn = |before: u64, after: u64| after.saturating_sub(before) as f64 / connected as f64;
    let rss_per_conn = match (server_pid, rss_before) {
        (Some(pid), Some(before)) if connected > 0 => {
            sys::rss_kib(pid).ok().map(|after| per_conn(before, after))
        }
        _ => None,
    };
    let kernel = match (kernel_before, sys::kernel_tcp().ok()) {
        (Some(before), Some(after)) if connected > 0 => Some((before, after)),
        _ => None,
    };
    let rss_after_gc_per_conn = match (server_pid, rss_before, &cfg.gc_url) {
        (Some(pid), Some(before), Some(url)) if connected > 0 => {
            if let Err(e) = sys::http_get(url).await {
                rec.error("gc_request");
                tracing::warn!(url, error = %e, "could not make the server collect garbage");
            }
            tokio::time::sleep(cfg.settle).await;
            sys::rss_kib(pid).ok().map(|after| per_conn(before, after))
        }
        _ => None,
    };

    // 3. Pairs and their carrier calls.
    // Members 0+1, 2+3, … of each room form pairs (0 hosts, 1 is the guest); an odd member
    // or one whose partner failed to connect only listens.
    let mut pairs = Vec::new();
    let mut idle: Vec<(Tx, Rx)> = Vec::new();
    for (room, members) in slots.into_iter().enumerate() {
        let mut members = members.into_iter().enumerate();
        while let Some((_, host)) = members.next() {
            let Some((guest_member, guest)) = members.next() else {
                idle.extend(host);
                break;
            };
            match (host, guest) {
                (Some(host), Some(guest)) => pairs.push((room, guest_member, host, guest)),
                (Some(one), None) | (None, Some(one)) => idle.push(one),
                (None, None) => {}
            }
        }
    }
    let pair_count = pairs.len().max(1) as f64;
    let interval = |rate: f64| (rate > 0.0).then(|| Duration::from_secs_f64(pair_count / rate));
    let budget = Arc::new(AtomicU64::new(cfg.max_messages));
    let (ready_tx, mut ready_rx) = mpsc::channel(pairs.len().max(1));
    let (start_tx, start_rx) = watch::channel(None);
    let mut tasks = JoinSet::new();
    let total_pairs = pairs.len();
    progress(format!("setting up {total_pairs} carrier calls"));
    for (room, guest_member, host, guest) in pairs {
        let (room_id, guest_user) = ids(run_id, room, guest_member);
        let cfg_pair = PairConfig {
            room: room_id,
            guest_user,
            relay_interval: interval(cfg.rate),
            flow_interval: interval(cfg.flow_rate),
            candidates: cfg.candidates,
            events: target.has_events(),
            flow_timeout: Duration::from_secs(15),
            budget: budget.clone(),
        };
        tasks.spawn(pair::run(
            cfg_pair,
            Side {
                tx: host.0,
                rx: host.1,
            },
            Side {
                tx: guest.0,
                rx: guest.1,
            },
            rec.clone(),
            ready_tx.clone(),
            start_rx.clone(),
        ));
    }
    drop(ready_tx);
    // Unpaired members only listen; drain them so their queues never fill.
    let idle_tasks: Vec<_> = idle
        .into_iter()
        .map(|(tx, mut rx)| {
            tokio::spawn(async move {
                let _tx = tx;
                while rx.recv().await.is_ok() {}
            })
        })
        .collect();

    let mut carriers_ok = 0usize;
    let mut reported = 0usize;
    let setup_deadline = Instant::now() + Duration::from_secs(60);
    while reported < total_pairs {
        match tokio::time::timeout_at(setup_deadline, ready_rx.recv()).await {
            Ok(Some(ok)) => {
                reported += 1;
                carriers_ok += usize::from(ok);
            }
            Ok(None) | Err(_) => break,
        }
    }
    progress(format!(
        "{carriers_ok}/{total_pairs} carrier calls connected; load for {:.1} s",
        cfg.duration.as_secs_f64()
    ));

    // 4. The load window.
    let start = Instant::now() + Duration::from_millis(50);
    let window = Window {
        start,
        end: start + cfg.duration,
        grace_end: start + cfg.duration + cfg.grace,
    };
    rec.set_measuring(true);
    let _ = start_tx.send(Some(window));
    let cpu_before = server_pid.and_then(|pid| sys::cpu_seconds(pid).ok());
    let wall_started = Instant::now();
    tokio::time::sleep_until(window.end).await;
    let server_cpu_cores = match (server_pid, cpu_before) {
        (Some(pid), Some(before)) => sys::cpu_seconds(pid).ok().map(|after| {
            (after - before).max(0.0) / wall_started.elapsed().as_secs_f64().max(1e-3)
        }),
        _ => None,
    };
    let hard_stop = window.grace_end + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                rec.error("pair_stuck");
                tasks.abort_all();
                break;
            }
        }
    }
    rec.set_measuring(false);
    for task in idle_tasks {
        task.abort();
    }
    let mut report = rec.report(target.name(), connected, cfg.room_size as u64, cfg.duration);
    report.server_rss_per_conn_kib = rss_per_conn;
    report.server_rss_after_gc_per_conn_kib = rss_after_gc_per_conn;
    if let Some((before, after)) = kernel {
        let n = connected as f64;
        report.kernel_tcp_sockets = Some(after.sockets.saturating_sub(before.sockets));
        report.kernel_tcp_buffers_per_conn_kib =
            Some(after.buffers_kib.saturating_sub(before.buffers_kib) as f64 / n);
        report.kernel_tcp_objects_per_conn_kib = match (before.objects_kib, after.objects_kib) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n),
            _ => None,
        };
    }
    report.server_cpu_cores = server_cpu_cores;
    report.server_ramp_cpu_cores = ramp_cpu_cores;
    report.connects_per_sec = if ramp_secs > 0.0 {
        connected as f64 / ramp_secs
    } else {
        0.0
    };
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_baseline_address_line() {
        assert_eq!(
            parse_listening_line("listening on 127.0.0.1:4242\n"),
            Some("127.0.0.1:4242".parse().unwrap())
        );
        assert_eq!(parse_listening_line("hello"), None);
    }

    #[tokio::test]
    async fn rejects_impossible_shapes() {
        let mut cfg = BenchConfig::new(None, None, 10);
        cfg.baseline = Some(BaselineMode::InProcess);
        cfg.room_size = 1;
        assert!(matches!(run(&cfg).await, Err(BenchError::Invalid(_))));
        cfg.room_size = 20;
        assert!(matches!(run(&cfg).await, Err(BenchError::Invalid(_))));
        let cfg = BenchConfig::new(None, None, 10);
        assert!(matches!(run(&cfg).await, Err(BenchError::Invalid(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_floor_smoke_run_has_no_errors() {
        let mut cfg = BenchConfig::new(None, None, 10);
        cfg.target = TargetKind::Tcp(BaselineMode::InProcess);
        cfg.duration = Duration::from_secs(1);
        cfg.settle = Duration::from_millis(10);
        cfg.grace = Duration::from_millis(500);
        cfg.rate = 100.0;
        cfg.flow_rate = 10.0;
        let result = run(&cfg).await.unwrap();
        let report = result.main.unwrap();
        assert_eq!(report.target, "tcp");
        assert_eq!(report.errors, 0, "{}", report.human());
        assert!(report.relay.count > 50, "{}", report.human());
        assert!(report.connects_per_sec > 0.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn baseline_smoke_run_has_no_errors() {
        let mut cfg = BenchConfig::new(None, None, 20);
        cfg.baseline = Some(BaselineMode::InProcess);
        cfg.duration = Duration::from_secs(1);
        cfg.settle = Duration::from_millis(10);
        cfg.grace = Duration::from_millis(500);
        cfg.rate = 200.0;
        cfg.flow_rate = 20.0;
        let result = run(&cfg).await.unwrap();
        assert!(result.main.is_none());
        let report = result.baseline.unwrap();
        assert_eq!(report.errors, 0, "{}", report.human());
        assert_eq!(report.connections, 20);
        assert_eq!(report.join.count, 20);
        assert!(report.relay.count > 100, "{}", report.human());
        assert!(report.flows > 0, "{}", report.human());
        assert!(report.msgs_received >= report.relay.count);
    }
}

//! `failover-bench`: how long rooms stay unserved when a node dies, and how long a node takes
//! to restore a shard of 1,000 rooms. Reported, not asserted.
//!
//! Everything is real except Kubernetes: an etcd server, `signaling-node serve` processes in
//! cluster mode, and the operator's own shard-manager core as the driver ([`driver`]). Per
//! kill, one room of the victim's shard holds a member; then the victim is
//! - `process_exit`: SIGKILLed; this process (its parent, like the pod runner) sees it exit
//!   and reports the Pod's container terminated → the core revokes the lease and reassigns
//!   (`ProcessExited`);
//! - `lease_expiry`: SIGSTOPped; nothing but the expiry of its 2 s lease (the node key's
//!   deletion) reveals it (`LeaseExpired`).
//!
//! Measured from the signal to the first successful join of that room at the new owner by a
//! client polling through the surviving nodes ([`probe`]), with the breakdown
//! detected → reassigned → serving (the new owner's `serving` ack) in the timeline. Between
//! kills a fresh node replaces the victim and the fleet is balanced again.
//!
//! `restore_1000_rooms_ms`: in a separate keyspace, a shard holding 1,000 room snapshots is
//! reassigned back and forth between two nodes; each sample is assignment written → the new
//! owner's `serving` ack, beside the node's own `switchboard_shard_restore_seconds`.

pub mod driver;
pub mod probe;
pub mod procs;
pub mod real;
pub mod render;
pub mod stats;
pub mod steady;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use rustix::process::Signal;
use serde_json::{Value as Json, json};
use signaling_node::config::Tunables;
use signaling_node::room::snapshot::{self, SnapshotMeta};
use signaling_node::room::state::{Limits, RoomState};
use switchboard_contract::keys::{Ack, Assignment, Keyspace, Value};
use switchboard_contract::shard::shard_of;
use switchboard_operator::controller::shards::core::Notice;
use switchboard_protocol::auth::JwtSecret;
use tokio::time::Instant;

use driver::Driver;
use procs::{NodeProcess, NodeSpec};
use switchboard_testkit::{Etcd, EtcdOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kills per failure signal.
    pub kills: usize,
    /// Live nodes in the failover fleet.
    pub nodes: usize,
    /// Shards of the failover fleet.
    pub shards: u32,
    /// Rooms in the restored shard.
    pub restore_rooms: usize,
    /// Restore repetitions.
    pub restore_reps: usize,
    /// The `signaling-node` binary.
    pub node_bin: PathBuf,
    /// The etcd binary.
    pub etcd_bin: PathBuf,
    /// etcd fsyncs every commit (production-like).
    pub fsync: bool,
    /// Private directory for logs and etcd data.
    pub dir: PathBuf,
}

/// The two failure signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SIGKILL; the exit is seen by the parent.
    ProcessExit,
    /// SIGSTOP; only the lease expiry reveals it.
    LeaseExpiry,
}

impl Mode {
    /// The report key.
    pub fn key(self) -> &'static str {
        match self {
            Self::ProcessExit => "process_exit",
            Self::LeaseExpiry => "lease_expiry",
        }
    }
}

/// One kill's measurements, in ms from the signal.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The driver saw the failure (exit observed, or the node key's deletion).
    pub detected: Option<f64>,
    /// The room's shard was reassigned in etcd.
    pub reassigned: Option<f64>,
    /// The new owner acknowledged serving it.
    pub serving: Option<f64>,
    /// First successful join of the room at the new owner.
    pub first_join: f64,
    /// Failed join attempts before it.
    pub failed_attempts: u32,
    /// The failover reason the core recorded.
    pub reason: String,
}

impl Sample {
    fn timeline(&self) -> Json {
        let mut events = vec![json!({"t_ms": 0.0, "event": "kill"})];
        for (name, t) in [
            ("detected", self.detected),
            ("reassigned", self.reassigned),
            ("serving", self.serving),
            ("first_join", Some(self.first_join)),
        ] {
            if let Some(t) = t {
                events.push(json!({"t_ms": stats::round(t), "event": name}));
            }
        }
        Json::Array(events)
    }
}

const SECRET: &str = "failover-bench-secret-0123456789";
const NAMESPACE: &str = "bench";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs everything and returns the report.
pub async fn run(options: &Options) -> Result<Json> {
    std::fs::create_dir_all(&options.dir)?;
    let etcd = Etcd::try_start(EtcdOptions {
        fsync: options.fsync,
        dir: Some(options.dir.join("etcd")),
        bin: Some(options.etcd_bin.clone()),
        ..EtcdOptions::default()
    })
    .await?;
    let mut report = serde_json::Map::new();
    report.insert(
        "driver".into(),
        json!("operator shard-manager core (switchboard_operator::controller::shards::core) in-process, no Kubernetes; Pod signals from the node processes' parent"),
    );
    report.insert(
        "setup".into(),
        json!({"nodes": options.nodes, "shards": options.shards, "etcd_fsync": options.fsync}),
    );
    let mut all_timelines = Vec::new();
    for mode in [Mode::ProcessExit, Mode::LeaseExpiry] {
        let samples = failover(options, &etcd, mode).await?;
        print_failover(mode, &samples);
        let first: Vec<f64> = samples.iter().map(|s| s.first_join).collect();
        let mut entry = stats::samples_json(&first);
        let pick =
            |f: fn(&Sample) -> Option<f64>| -> Vec<f64> { samples.iter().filter_map(f).collect() };
        entry["detected"] = stats::samples_json(&pick(|s| s.detected));
        entry["reassigned"] = stats::samples_json(&pick(|s| s.reassigned));
        entry["serving"] = stats::samples_json(&pick(|s| s.serving));
        entry["per_sample"] = Json::Array(
            samples
                .iter()
                .map(|s| {
                    json!({
                        "detected_ms": s.detected.map(stats::round),
                        "reassigned_ms": s.reassigned.map(stats::round),
                        "serving_ms": s.serving.map(stats::round),
                        "first_join_ms": stats::round(s.first_join),
                        "failed_attempts": s.failed_attempts,
                        "reason": s.reason,
                    })
                })
                .collect(),
        );
        if let Some(median) = median_sample(&samples) {
            all_timelines.push(json!({"mode": mode.key(), "timeline": median.timeline()}));
            if mode == Mode::ProcessExit {
                report.insert("timeline".into(), median.timeline());
            }
        }
        report.insert(mode.key().into(), entry);
    }
    report.insert("timelines".into(), Json::Array(all_timelines));
    let restore = restore(options, &etcd).await?;
    report.insert("restore_1000_rooms_ms".into(), restore);
    Ok(Json::Object(report))
}

/// The sample whose first join is the median (its timeline is the typical one).
fn median_sample(samples: &[Sample]) -> Option<&Sample> {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by(|a, b| a.first_join.total_cmp(&b.first_join));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

fn print_failover(mode: Mode, samples: &[Sample]) {
    println!(
        "\n{} ({} kills), ms from the signal:",
        mode.key(),
        samples.len()
    );
    println!(
        "  {:<12} {:>8} {:>8} {:>8} {:>8}",
        "step", "min", "p50", "p99", "max"
    );
    let rows: [(&str, Vec<f64>); 4] = [
        (
            "detected",
            samples.iter().filter_map(|s| s.detected).collect(),
        ),
        (
            "reassigned",
            samples.iter().filter_map(|s| s.reassigned).collect(),
        ),
        (
            "serving",
            samples.iter().filter_map(|s| s.serving).collect(),
        ),
        ("first join", samples.iter().map(|s| s.first_join).collect()),
    ];
    for (name, values) in rows {
        if let Some(s) = stats::Summary::of(&values) {
            println!(
                "  {name:<12} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                s.min, s.p50, s.p99, s.max
            );
        }
    }
}

/// A failover fleet: live nodes (oldest first) and the driver.
struct Fleet {
    spec: NodeSpec,
    keys: Keyspace,
    kv: Client,
    nodes: Vec<NodeProcess>,
    next_id: usize,
    driver: Driver,
}

impl Fleet {
    async fn spawn_node(&mut self) -> Result<()> {
        let name = format!("node-{}", self.next_id);
        self.next_id += 1;
        let node = NodeProcess::spawn(&self.spec, &name)?;
        let key = self.keys.node(&name)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .kv
            .kv_client()
            .get(key.clone(), None)
            .await?
            .kvs()
            .is_empty()
        {
            if Instant::now() > deadline {
                bail!("{name} did not register");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.driver.pods.pod_ready(&name).await;
        self.nodes.push(node);
        Ok(())
    }

    async fn assignments(&self) -> Result<BTreeMap<u32, Assignment>> {
        let prefix = self.keys.assignments_prefix();
        let response = self
            .kv
            .kv_client()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut out = BTreeMap::new();
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            if let Some(shard) = key.strip_prefix(&prefix).and_then(|s| s.parse().ok())
                && let Ok(a) = Assignment::decode(kv.value())
            {
                out.insert(shard, a);
            }
        }
        Ok(out)
    }

    async fn ack(&self, pod: &str) -> Result<Option<Ack>> {
        let response = self.kv.kv_client().get(self.keys.ack(pod)?, None).await?;
        Ok(response
            .kvs()
            .first()
            .and_then(|kv| Ack::decode(kv.value()).ok()))
    }

    /// Waits until every shard is on a live node, balanced, no handoff in flight, and every
    /// owner acknowledged serving it at its epoch.
    async fn steady(&mut self) -> Result<BTreeMap<u32, Assignment>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            while self.driver.notices.try_recv().is_ok() {}
            let map = self.assignments().await?;
            let mut counts: BTreeMap<&str, usize> =
                self.nodes.iter().map(|n| (n.name.as_str(), 0)).collect();
            let mut ok = map.len() == self.spec.shards as usize;
            for a in map.values() {
                match counts.get_mut(a.node.as_str()) {
                    Some(c) if a.handoff_to.is_none() => *c += 1,
                    _ => ok = false,
                }
            }
            let (min, max) = (counts.values().min(), counts.values().max());
            ok &= matches!((min, max), (Some(a), Some(b)) if b - a <= 1);
            if ok {
                let mut acks = BTreeMap::new();
                for node in &self.nodes {
                    acks.insert(node.name.clone(), self.ack(&node.name).await?);
                }
                let serving = map.iter().all(|(shard, a)| {
                    acks.get(&a.node)
                        .and_then(|ack| ack.as_ref())
                        .is_some_and(|ack| ack.serving.get(shard) == Some(&a.epoch))
                });
                if serving {
                    return Ok(map);
                }
            }
            if Instant::now() > deadline {
                bail!("the fleet did not settle: {map:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn failover(options: &Options, etcd: &Etcd, mode: Mode) -> Result<Vec<Sample>> {
    let cluster = mode.key().replace('_', "-");
    let keys = Keyspace::new(NAMESPACE, &cluster)?;
    let kv = etcd.try_client().await?;
    let spec = NodeSpec {
        bin: options.node_bin.clone(),
        etcd: etcd.endpoint().to_string(),
        namespace: NAMESPACE.into(),
        cluster,
        shards: options.shards,
        secret: SECRET.into(),
        dir: options.dir.clone(),
    };
    let driver = Driver::start(
        kv.clone(),
        keys.clone(),
        options.shards,
        u32::try_from(options.nodes)?,
    );
    let mut fleet = Fleet {
        spec,
        keys,
        kv,
        nodes: Vec::new(),
        next_id: 0,
        driver,
    };
    for _ in 0..options.nodes {
        fleet.spawn_node().await?;
    }
    let secret = JwtSecret::new(SECRET.as_bytes().to_vec())?;
    let mut samples = Vec::new();
    for round in 0..options.kills {
        let sample = kill_once(&mut fleet, &secret, mode, round)
            .await
            .with_context(|| format!("{} kill {round}", mode.key()))?;
        eprintln!(
            "{} kill {round}: first join {:.1} ms (reassigned {:?} ms, serving {:?} ms)",
            mode.key(),
            sample.first_join,
            sample.reassigned.map(stats::round),
            sample.serving.map(stats::round)
        );
        samples.push(sample);
    }
    Ok(samples)
}

async fn kill_once(
    fleet: &mut Fleet,
    secret: &JwtSecret,
    mode: Mode,
    round: usize,
) -> Result<Sample> {
    let map = fleet.steady().await?;
    let mut victim = fleet.nodes.remove(0);
    let shard = *map
        .iter()
        .find(|(_, a)| a.node == victim.name)
        .map(|(s, _)| s)
        .context("the victim owns no shard")?;
    let room = (0..)
        .map(|i| format!("r{round}-{i}"))
        .find(|r| shard_of(r, fleet.spec.shards) == shard)
        .context("no room name for the shard")?;
    // A member in the room, on the victim: the room has state to restore.
    let far = Instant::now() + Duration::from_secs(10);
    let (_seed, _, _) =
        probe::poll_join(&[victim.url()], &probe::token(secret, "seed"), &room, far).await?;
    let entries: Vec<String> = fleet.nodes.iter().map(NodeProcess::url).collect();
    let token = probe::token(secret, &format!("poller-{round}"));

    let t0 = Instant::now();
    let exit_seen = match mode {
        Mode::ProcessExit => {
            victim.signal(Signal::KILL)?;
            let pods = fleet.driver.pods.clone();
            let name = victim.name.clone();
            Some(tokio::spawn(async move {
                let result = victim.wait().await;
                let at = Instant::now();
                pods.process_exited(&name).await;
                result.map(|()| at)
            }))
        }
        Mode::LeaseExpiry => {
            victim.signal(Signal::STOP)?;
            // Killed (and its Pod reported gone) once the round is measured.
            fleet.nodes.push(victim);
            None
        }
    };
    let deadline = t0 + Duration::from_secs(20);
    let (_joined, joined_at, failures) =
        probe::poll_join(&entries, &token, &room, deadline).await?;
    let mut sample = Sample {
        first_join: ms(joined_at - t0),
        failed_attempts: failures,
        ..Sample::default()
    };
    // The driver's notices for the room's shard.
    let notice_deadline = Instant::now() + Duration::from_secs(10);
    while sample.serving.is_none() && Instant::now() < notice_deadline {
        let Ok(Some(timed)) = tokio::time::timeout(
            notice_deadline.saturating_duration_since(Instant::now()),
            fleet.driver.notices.recv(),
        )
        .await
        else {
            break;
        };
        match timed.notice {
            Notice::Failover {
                shard: s,
                detected,
                reason,
                ..
            } if s == shard => {
                sample.reassigned = Some(ms(timed.at - t0));
                sample.detected = Some(ms(timed
                    .at
                    .checked_sub(detected)
                    .unwrap_or(t0)
                    .saturating_duration_since(t0)));
                sample.reason = reason.as_str().to_string();
            }
            Notice::Recovered { shard: s, .. } if s == shard => {
                sample.serving = Some(ms(timed.at - t0));
            }
            _ => {}
        }
    }
    match (mode, exit_seen) {
        (Mode::ProcessExit, Some(task)) => {
            let at = task.await??;
            sample.detected = Some(ms(at - t0));
        }
        _ => {
            // The frozen victim was pushed last.
            if let Some(mut victim) = fleet.nodes.pop() {
                victim.signal(Signal::KILL)?;
                victim.wait().await?;
                fleet.driver.pods.pod_gone(&victim.name).await;
            }
        }
    }
    fleet.spawn_node().await?;
    Ok(sample)
}

/// Restores of a shard holding `restore_rooms` rooms: samples in ms (assignment written →
/// serving ack) and the node's own restore histogram.
async fn restore(options: &Options, etcd: &Etcd) -> Result<Json> {
    const SHARDS: u32 = 4;
    const SHARD: u32 = 0;
    let keys = Keyspace::new(NAMESPACE, "restore")?;
    let kv = etcd.try_client().await?;
    let spec = NodeSpec {
        bin: options.node_bin.clone(),
        etcd: etcd.endpoint().to_string(),
        namespace: NAMESPACE.into(),
        cluster: "restore".into(),
        shards: SHARDS,
        secret: SECRET.into(),
        dir: options.dir.clone(),
    };
    // The rooms: two members each, as a node would have written them.
    let limits = Limits::from(&Tunables::default());
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let mut puts = Vec::new();
    let mut i = 0u64;
    while puts.len() < options.restore_rooms {
        let room = format!("room-{i}");
        i += 1;
        if shard_of(&room, SHARDS) != SHARD {
            continue;
        }
        let mut state = RoomState::new(room.clone(), SHARD, 1, &limits);
        for user in ["alice", "bob"] {
            let _ = state.join(user, &format!("{room}-{user}"), 1, 1, &limits);
        }
        let meta = SnapshotMeta {
            node: "seed".into(),
            written_at_ms: 1,
        };
        puts.push(TxnOp::put(
            keys.room(SHARD, &room)?,
            snapshot::encode(&mut fbb, &state, &meta),
            None,
        ));
    }
    let mut puts = puts.into_iter().peekable();
    while puts.peek().is_some() {
        let chunk: Vec<TxnOp> = puts.by_ref().take(100).collect();
        kv.kv_client().txn(Txn::new().and_then(chunk)).await?;
    }
    let names = ["restore-a", "restore-b"];
    for shard in 0..SHARDS {
        let a = Assignment {
            node: names[0].into(),
            epoch: 1,
            version: "default".into(),
            handoff_to: None,
        };
        kv.kv_client()
            .put(keys.assignment(shard), a.encode(), None)
            .await?;
    }
    let nodes = [
        NodeProcess::spawn(&spec, names[0])?,
        NodeProcess::spawn(&spec, names[1])?,
    ];
    // The first owner restores at start; wait for it.
    wait_serving(&kv, &keys, names[0], SHARD, 1, Duration::from_secs(30)).await?;
    let mut samples = Vec::new();
    let mut node_samples = Vec::new();
    for rep in 0..options.restore_reps {
        let epoch = 2 + rep as u64;
        let target = &nodes[(rep + 1) % 2];
        let before = target
            .histogram("switchboard_shard_restore_seconds")
            .await?;
        let key = keys.assignment(SHARD);
        let current = kv.kv_client().get(key.clone(), None).await?;
        let revision = current.kvs().first().map_or(0, |kv| kv.mod_revision());
        let value = Assignment {
            node: target.name.clone(),
            epoch,
            version: "default".into(),
            handoff_to: None,
        };
        // Watch the target's ack from the revision of the write.
        let ack_key = keys.ack(&target.name)?;
        let mut stream = kv
            .watch_client()
            .watch(ack_key.clone(), Some(WatchOptions::new()))
            .await?;
        let t0 = Instant::now();
        let response = kv
            .kv_client()
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::put(key, value.encode(), None)]),
            )
            .await?;
        if !response.succeeded() {
            bail!("the restore shard's assignment changed under the bench");
        }
        let deadline = t0 + Duration::from_secs(30);
        let mut served = None;
        // The ack may already be there if the watch started late; check once, then watch.
        if ack_serving(&kv, &ack_key, SHARD, epoch).await? {
            served = Some(Instant::now());
        }
        while served.is_none() {
            let next = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                stream.message(),
            )
            .await
            .context("no serving ack in time")??;
            let Some(message) = next else {
                bail!("watch closed")
            };
            for event in message.events() {
                if let Some(kv) = event.kv()
                    && Ack::decode(kv.value()).is_ok_and(|a| a.serving.get(&SHARD) == Some(&epoch))
                {
                    served = Some(Instant::now());
                }
            }
        }
        drop(stream);
        let took = ms(served.unwrap_or(t0) - t0);
        let after = target
            .histogram("switchboard_shard_restore_seconds")
            .await?;
        let node_ms = if after.1 > before.1 {
            Some((after.0 - before.0) * 1000.0 / (after.1 - before.1))
        } else {
            None
        };
        eprintln!("restore {rep}: {took:.1} ms to serving ack (node metric {node_ms:?} ms)");
        samples.push(took);
        node_samples.extend(node_ms);
    }
    let mut out = stats::samples_json(&samples);
    out["rooms"] = json!(options.restore_rooms);
    out["node_restore_metric"] = stats::samples_json(&node_samples);
    println!(
        "\nrestore of a {}-room shard, assignment → serving ack: {}",
        options.restore_rooms,
        summary_line(&samples)
    );
    println!(
        "  node's switchboard_shard_restore_seconds:        {}",
        summary_line(&node_samples)
    );
    drop(nodes);
    Ok(out)
}

fn summary_line(samples: &[f64]) -> String {
    stats::Summary::of(samples).map_or_else(
        || "no samples".to_string(),
        |s| {
            format!(
                "median {:.1} ms (min {:.1}, max {:.1}, n={})",
                s.p50, s.min, s.max, s.count
            )
        },
    )
}

async fn ack_serving(kv: &Client, key: &str, shard: u32, epoch: u64) -> Result<bool> {
    let response = kv.kv_client().get(key, None).await?;
    Ok(response
        .kvs()
        .first()
        .and_then(|kv| Ack::decode(kv.value()).ok())
        .is_some_and(|a| a.serving.get(&shard) == Some(&epoch)))
}

async fn wait_serving(
    kv: &Client,
    keys: &Keyspace,
    pod: &str,
    shard: u32,
    epoch: u64,
    patience: Duration,
) -> Result<()> {
    let deadline = Instant::now() + patience;
    let key = keys.ack(pod)?;
    while !ack_serving(kv, &key, shard, epoch).await? {
        if Instant::now() > deadline {
            bail!("{pod} did not serve shard {shard} at epoch {epoch}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

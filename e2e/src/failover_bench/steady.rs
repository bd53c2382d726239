//! `failover-bench --steady MINUTES`: no false failovers. The fleet of `--real-node` (the real
//! operator binary, 3 nodes on the real node, 1 s heartbeats) on a **3-member etcd** run here
//! on the node's link address, kept busy for the whole run by a load generator (one
//! `signaling-node bench` per node: co-host calls and a trickle-ICE stream) and a CPU hog (one
//! busy process per core), with an etcd leader change every few minutes (alternately a
//! `MoveLeader` and a SIGKILL of the leader member, restarted). Nothing fails: every change
//! of a shard's owner during the run is a false failover, recorded with the reason its
//! RoomShard status gives. Writes one JSON summary to `--records`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Client as Etcd, GetOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_contract::keys::{Assignment, Key, Keyspace, Value as _};
use switchboard_contract::shard::ShardId;
use tokio::time::Instant;

use super::real::{Bench, loadavg};
use crate::cluster::free_ports;

/// A three-member etcd on `host` (this machine's end of the node's link).
struct Trio {
    members: Vec<Member>,
    endpoints: Vec<String>,
}

struct Member {
    name: String,
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self, bin: &Path, log: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting etcd member {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

impl Trio {
    fn start(bin: &Path, dir: &Path, host: &str) -> Result<Self> {
        let ports = free_ports(6).map_err(|e| anyhow!("{e}"))?;
        let peers: Vec<String> = (0..3)
            .map(|i| format!("m{i}=http://{host}:{}", ports[2 * i + 1]))
            .collect();
        let cluster = peers.join(",");
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..3 {
            let client = format!("http://{host}:{}", ports[2 * i]);
            let peer = format!("http://{host}:{}", ports[2 * i + 1]);
            endpoints.push(client.clone());
            let data = dir.join(format!("m{i}"));
            std::fs::create_dir_all(&data)?;
            members.push(Member {
                name: format!("m{i}"),
                args: vec![
                    format!("--name=m{i}"),
                    format!("--data-dir={}", data.display()),
                    format!("--listen-client-urls={client}"),
                    format!("--advertise-client-urls={client}"),
                    format!("--listen-peer-urls={peer}"),
                    format!("--initial-advertise-peer-urls={peer}"),
                    format!("--initial-cluster={cluster}"),
                    "--initial-cluster-state=new".into(),
                    // As examples/etcd, with a shorter retention: the load writes about 1 MB/s,
                    // and an uncompacted trio filled the disk until the kubelet evicted the fleet.
                    "--auto-compaction-mode=periodic".into(),
                    "--auto-compaction-retention=5m".into(),
                    "--quota-backend-bytes=2147483648".into(),
                    "--log-level=warn".into(),
                ],
                child: None,
            });
        }
        let mut trio = Self { members, endpoints };
        for (i, m) in trio.members.iter_mut().enumerate() {
            m.start(bin, &dir.join(format!("m{i}.log")))?;
        }
        Ok(trio)
    }
}

/// What the steady run found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SteadyRecord {
    /// Run identifier (start, Unix ms).
    pub run: u64,
    /// Commit of the binaries.
    pub commit: String,
    /// Minutes the fleet ran under load.
    pub minutes: f64,
    /// etcd leader changes made (and seen).
    pub leader_changes: Vec<String>,
    /// Shard owner changes seen during the run: (shard, from, to, reason).
    pub moves: Vec<(u32, String, String, String)>,
    /// Load average (1 min) sampled every 10 s.
    pub loadavg: Vec<f64>,
    /// The operator's failure-detector log lines (suspicions, vetoes, verdicts).
    pub detector_log: Vec<String>,
    /// Calls the load generators completed (from their summaries), where readable.
    pub load_summary: Vec<String>,
}

/// etcd leader changes made during a run, alternately a leader SIGKILL and a `MoveLeader`.
const LEADER_CHANGES: u32 = 4;

/// Free space the run needs where its etcd data goes: the trio's WAL and database (bounded by
/// compaction) plus the kubelet's eviction margin, below which it evicts the fleet and shards
/// move for a reason of their own.
const MIN_FREE_BYTES: u64 = 8 << 30;

/// Refuses to start on a disk too full for the run, naming what is free.
fn check_free_space(dir: &Path) -> Result<()> {
    let stat = rustix::fs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < MIN_FREE_BYTES {
        bail!(
            "{:.1} GiB free under {}; the steady run needs {} GiB (free some space first)",
            free as f64 / f64::from(1u32 << 30),
            dir.display(),
            MIN_FREE_BYTES >> 30
        );
    }
    Ok(())
}

/// Runs the steady check for `minutes`; returns what it found.
pub async fn run(
    minutes: f64,
    heartbeat_secs: u32,
    node_bin: PathBuf,
    etcd_bin: PathBuf,
) -> Result<SteadyRecord> {
    let dir = std::env::temp_dir().join(format!("failover-steady-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    check_free_space(&dir)?;
    // The cluster comes first: this machine's end of its node's link is where the trio
    // listens, so the pods reach it.
    let cluster = Bench::cluster().await?;
    let trio = Trio::start(&etcd_bin, &dir, &cluster.addresses.host_ip)?;
    let admin = Etcd::connect(trio.endpoints.clone(), None).await?;
    let bench = Bench::install(cluster, heartbeat_secs, Some(trio.endpoints.clone())).await?;
    let keys = Keyspace::new("default", "demo")?;
    let initial = bench.settle().await?;
    eprintln!(
        "steady: fleet settled, {} shards; load and hog for {minutes} min",
        initial.len()
    );

    let secret = bench.secret_file(&dir)?;
    let mut load: Vec<Child> = Vec::new();
    for url in bench.node_urls().await {
        let child = Command::new(&node_bin)
            .args(["bench", "--url", &url])
            .args(["--jwt-secret-file", &secret.display().to_string()])
            .args(["--connections", "200", "--room-size", "2"])
            .args(["--rate", "200", "--flow-rate", "5"])
            .args(["--duration", &format!("{}", (minutes * 60.0) as u64)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting signaling-node bench")?;
        load.push(child);
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut hogs: Vec<Child> = (0..cores)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdout(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;

    let mut record = SteadyRecord {
        run: super::real::unix_ms_now(),
        commit: super::real::commit(),
        minutes,
        ..SteadyRecord::default()
    };
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut owners: BTreeMap<ShardId, Assignment> = initial;
    // Changes at equal spacing short of the end, so the last is watched as long as the others.
    let spacing = total / (LEADER_CHANGES + 1);
    let mut next_change = started + spacing;
    let mut changes = 0u32;
    let mut next_load = started;
    let mut trio = trio;
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if Instant::now() >= next_load {
            record.loadavg.push(loadavg()[0]);
            next_load += Duration::from_secs(10);
        }
        if changes < LEADER_CHANGES && Instant::now() >= next_change {
            next_change += spacing;
            changes += 1;
            match leader_change(&admin, &mut trio, &etcd_bin, &dir, changes % 2 == 1).await {
                Ok(what) => {
                    eprintln!("steady: {what}");
                    record.leader_changes.push(what);
                }
                Err(e) => record.leader_changes.push(format!("failed: {e:#}")),
            }
        }
        let Ok(now) = read_assignments(&admin, &keys).await else {
            continue;
        };
        for (shard, a) in &now {
            if let Some(before) = owners.get(shard)
                && before.node != a.node
            {
                let reason = bench.move_reason(*shard).await.unwrap_or_default();
                eprintln!(
                    "steady: shard {shard} moved {} -> {} ({reason})",
                    before.node, a.node
                );
                record
                    .moves
                    .push((*shard, before.node.clone(), a.node.clone(), reason));
            }
        }
        owners = now;
    }
    for hog in &mut hogs {
        let _ = hog.kill();
        let _ = hog.wait();
    }
    for mut child in load {
        let _ = child.kill();
        if let Ok(out) = child.wait_with_output() {
            let text = String::from_utf8_lossy(&out.stdout);
            record.load_summary.extend(
                text.lines()
                    .filter(|l| l.contains("flows") || l.contains("errors"))
                    .map(str::to_string),
            );
        }
    }
    record.detector_log = bench.operator_log_lines("failure detector");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(record)
}

async fn read_assignments(etcd: &Etcd, keys: &Keyspace) -> Result<BTreeMap<ShardId, Assignment>> {
    let mut kv = etcd.kv_client();
    let resp = kv
        .get(
            keys.assignments_prefix(),
            Some(GetOptions::new().with_prefix()),
        )
        .await?;
    let mut out = BTreeMap::new();
    for kv in resp.kvs() {
        if let Ok(Key::Assignment(shard)) = keys.parse(kv.key())
            && let Ok(a) = Assignment::decode(kv.value())
        {
            out.insert(shard, a);
        }
    }
    Ok(out)
}

/// Makes etcd change its leader: `MoveLeader` to another member, or (`kill`) SIGKILL of the
/// leader member and its restart.
async fn leader_change(
    admin: &Etcd,
    trio: &mut Trio,
    bin: &Path,
    dir: &Path,
    kill: bool,
) -> Result<String> {
    let mut maintenance = admin.maintenance_client();
    let mut leader = None;
    for endpoint in &trio.endpoints {
        let client = Etcd::connect([endpoint.clone()], None).await?;
        let status = client.maintenance_client().status().await?;
        if status.leader() == status.header().map_or(0, |h| h.member_id()) {
            leader = Some((endpoint.clone(), status.leader()));
        }
    }
    let (endpoint, leader_id) = leader.context("no etcd member says it leads")?;
    if kill {
        let index = trio
            .endpoints
            .iter()
            .position(|e| *e == endpoint)
            .context("leader endpoint unknown")?;
        trio.members[index].kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        trio.members[index].start(bin, &dir.join(format!("m{index}.log")))?;
        return Ok(
            json!({"how": "SIGKILL of the leader, restarted after 3 s", "leader": endpoint})
                .to_string(),
        );
    }
    let list = admin.cluster_client().member_list().await?;
    let target = list
        .members()
        .iter()
        .map(|m| m.id())
        .find(|id| *id != leader_id)
        .context("no other member")?;
    let client = Etcd::connect([endpoint.clone()], None).await?;
    client.maintenance_client().move_leader(target).await?;
    if maintenance.status().await?.leader() == leader_id {
        bail!("the leader did not move");
    }
    Ok(json!({"how": "MoveLeader", "from": leader_id, "to": target}).to_string())
}

//! `failover-bench --real-node`: failover through the real Kubernetes path. One
//! [`RealCluster`] (control plane, one real node: containerd, kubelet, kube-proxy, CoreDNS),
//! Switchboard installed by `e2e/scripts/deploy` (the operator binary from the Helm chart as a
//! container, the fleet etcd of `examples/etcd`), `examples/basic` without its rollout (3
//! nodes, 16 shards, 1 s heartbeats), then faults of the real mechanisms, one at a time:
//!
//! - `kill`: SIGKILL of the owner's container process (the kubelet restarts it in place; the
//!   bench's node caps the crash-loop back-off at 1 s, as every pod is killed many times);
//! - `stop`: SIGSTOP of it (SIGCONT once measured);
//! - `cut`: every packet in and out of the owner's pod dropped (iptables in its network
//!   namespace; healed once measured).
//!
//! Per fault, a room of a shard the victim owns holds two members (library clients, entered
//! through the other nodes). From the signal (the `kill(2)` call; for a cut, the start of the
//! first iptables command, so its run time counts against us) the bench times: the shard's
//! reassignment and the new owner's `serving` ack (watched in the fleet etcd), the **first
//! successful join of the room whose client sees the room's state** (its `Joined` lists both
//! members and the room's last event seq: a prober joining through the surviving nodes every
//! 10 ms), and each member's library resuming its session. One JSON line per fault goes to
//! the records file; `failover-bench --render` turns committed records into
//! docs/benchmarks.md's `failover` section.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Client as Etcd, EventType, GetOptions, WatchOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_client::{Client, ConnectOptions};
use switchboard_contract::keys::{Ack, Assignment, Key, Keyspace, NodeInfo, Value as _};
use switchboard_contract::shard::{ShardId, shard_of};
use switchboard_operator::crd::RoomShard;
use switchboard_protocol::auth::JwtSecret;
use tokio::time::Instant;

use super::probe;
use crate::cluster::repo_root;
use crate::real_node::{Fault, RealCluster};

/// Namespace of the sample fleet.
const NS: &str = "default";
/// The sample cluster.
const CLUSTER: &str = "demo";
/// Its shards.
const SHARDS: u32 = 16;
/// Its nodes.
const NODES: usize = 3;
/// Longest wait for one fault's measurements.
const PATIENCE: Duration = Duration::from_secs(30);
/// Longest wait for the fleet to settle between faults.
const SETTLE: Duration = Duration::from_secs(120);

/// A fault kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// kill -9 of the container's process.
    Kill,
    /// SIGSTOP of it.
    Stop,
    /// Its pod's network cut.
    Cut,
}

impl Kind {
    /// The record spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::Cut => "cut",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RealOptions {
    /// Faults per kind, in this order.
    pub plan: Vec<(Kind, usize)>,
    /// The fleet's `heartbeatSeconds`.
    pub heartbeat_secs: u32,
    /// JSON lines are appended here.
    pub records: PathBuf,
}

/// One fault's measurements, in ms from the signal (one JSON line of the records).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Run identifier (start time, Unix ms) shared by the faults of one run.
    pub run: u64,
    /// Commit the binaries were built from (`git describe`), if known.
    #[serde(default)]
    pub commit: String,
    /// `kill`, `stop` or `cut`.
    pub kind: String,
    /// Index of the fault within its kind.
    pub index: usize,
    /// The victim pod.
    pub victim: String,
    /// The measured room's shard.
    pub shard: u32,
    /// Wall-clock time of the signal (Unix ms).
    pub at_unix_ms: u64,
    /// Time the fault command itself took (0 for a signal).
    pub inject_ms: f64,
    /// The shard's assignment named another node.
    pub reassigned_ms: Option<f64>,
    /// The new owner acknowledged serving it.
    pub serving_ms: Option<f64>,
    /// First join of the room through a surviving node whose Joined showed its state.
    pub first_join_ms: Option<f64>,
    /// Join attempts that failed before it.
    pub failed_attempts: u32,
    /// Each member's library resumed its session (alice, bob).
    pub resumed_ms: Vec<Option<f64>>,
    /// The failover reason in the RoomShard status, if it failed over.
    pub reason: Option<String>,
    /// The node that took the shard.
    pub new_owner: Option<String>,
    /// The members' client silence bound (ms): how long a silent node goes unnoticed.
    pub client_silence_ms: u64,
    /// `/proc/loadavg` (1, 5, 15 min) at the signal.
    pub loadavg: [f64; 3],
    /// What went wrong, if the fault could not be measured completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The fleet as the bench sees it.
pub(crate) struct Bench {
    cluster: RealCluster,
    etcd: Etcd,
    keys: Keyspace,
    secret: JwtSecret,
    secret_bytes: Vec<u8>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms_now() -> u64 {
    unix_ms()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text
        .split_whitespace()
        .take(3)
        .map(|x| x.parse().unwrap_or(0.0));
    [
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
    ]
}

/// `git describe` of the working tree.
pub(crate) fn commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `examples/basic` without its ProtocolRollout, with 1 s heartbeats (or `heartbeat_secs`),
/// the scenarios' short grace periods and `etcd` endpoints if given, as one kubectl List.
fn manifests(heartbeat_secs: u32, etcd: Option<&[String]>) -> Result<Value> {
    let dir = repo_root().join("examples/basic");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut items = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut value: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{} is not valid YAML", file.display()))?;
            if value.is_null() || value["kind"] == "ProtocolRollout" {
                continue;
            }
            if value["kind"] == "SignalingCluster" {
                value["spec"]["config"]["heartbeatSeconds"] = json!(heartbeat_secs);
                value["spec"]["terminationGracePeriodSeconds"] = json!(10);
                value["spec"]["drainTimeoutSeconds"] = json!(5);
                if let Some(endpoints) = etcd {
                    value["spec"]["etcd"]["endpoints"] = json!(endpoints);
                }
            }
            items.push(value);
        }
    }
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

impl Bench {
    /// A real-node cluster with Switchboard installed (`e2e/scripts/deploy`), no fleet yet.
    pub(crate) async fn cluster() -> Result<RealCluster> {
        // Each pod is killed again and again: without a cap the kubelet's crash-loop back-off
        // (up to 5 min) would keep the fleet a node short between faults.
        let cluster = RealCluster::start_with(&[("SWITCHBOARD_KUBELET_MAX_RESTART_PERIOD", "1s")])
            .await
            .map_err(|e| anyhow!("the real-node cluster did not start: {e}"))?;
        eprintln!(
            "cluster up in {} ms (run dir {})",
            cluster.startup.as_millis(),
            cluster.run_dir.display()
        );
        cluster
            .deploy(&["--operator-replicas", "1"])
            .map_err(|e| anyhow!("{e}"))?;
        Ok(cluster)
    }

    /// Applies the fleet to `cluster` (on the deployed fleet etcd, or on `etcd` endpoints).
    pub(crate) async fn install(
        cluster: RealCluster,
        heartbeat_secs: u32,
        etcd: Option<Vec<String>>,
    ) -> Result<Self> {
        let list = manifests(heartbeat_secs, etcd.as_deref())?;
        cluster
            .kubectl(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=failover-bench",
                    "-f",
                    "-",
                ],
                Some(&list.to_string()),
            )
            .map_err(|e| anyhow!("applying examples/basic: {e}"))?;
        let endpoints = match etcd {
            Some(endpoints) => endpoints,
            None => vec![
                cluster
                    .fleet_etcd_url(NS)
                    .map_err(|e| anyhow!("the fleet etcd Service: {e}"))?,
            ],
        };
        let etcd = Etcd::connect(endpoints, None).await?;
        let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NS);
        let secret = secrets.get("demo-auth").await?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get("secret"))
            .map(|b| b.0.clone())
            .context("Secret demo-auth has no key `secret`")?;
        let secret =
            JwtSecret::from_file_contents(&bytes).map_err(|e| anyhow!("the demo secret: {e}"))?;
        Ok(Self {
            cluster,
            etcd,
            keys: Keyspace::new(NS, CLUSTER)?,
            secret,
            secret_bytes: bytes,
        })
    }

    /// The node pods' signaling URLs.
    pub(crate) async fn node_urls(&self) -> Vec<String> {
        self.pods().await.iter().map(node_url).collect()
    }

    /// The JWT secret in a file of `dir` (for `signaling-node bench`).
    pub(crate) fn secret_file(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("jwt-secret");
        std::fs::write(&path, &self.secret_bytes)?;
        Ok(path)
    }

    /// The reason of `shard`'s last change of owner, from its RoomShard status.
    pub(crate) async fn move_reason(&self, shard: ShardId) -> Option<String> {
        for _ in 0..20 {
            if let Some(m) = self
                .shard_status(shard)
                .await
                .and_then(|s| s.status?.last_move)
            {
                return Some(format!("{}: {}", m.kind, m.reason));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// Lines of the operator's log containing `pattern`.
    pub(crate) fn operator_log_lines(&self, pattern: &str) -> Vec<String> {
        let log = self
            .cluster
            .kubectl(
                &[
                    "-n",
                    "switchboard-system",
                    "logs",
                    "deploy/switchboard",
                    "--tail=100000",
                ],
                None,
            )
            .unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(pattern))
            .map(str::to_string)
            .collect()
    }

    async fn pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.cluster.client.clone(), NS);
        let lp = ListParams::default().labels(&format!("switchboard.dev/cluster={CLUSTER}"));
        let mut pods: Vec<Pod> = api
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods
    }

    async fn shard_status(&self, shard: ShardId) -> Option<RoomShard> {
        let api: Api<RoomShard> = Api::namespaced(self.cluster.client.clone(), NS);
        api.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|s| s.spec.cluster == CLUSTER && u32::try_from(s.spec.index).ok() == Some(shard))
    }

    /// Assignments and registrations as etcd has them now, with the read's revision.
    async fn etcd_view(
        &self,
    ) -> Result<(
        i64,
        BTreeMap<ShardId, Assignment>,
        BTreeMap<String, NodeInfo>,
    )> {
        let mut kv = self.etcd.kv_client();
        let resp = kv
            .get(self.keys.prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut assignments = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for kv in resp.kvs() {
            match self.keys.parse(kv.key()) {
                Ok(Key::Assignment(shard)) => {
                    if let Ok(a) = Assignment::decode(kv.value()) {
                        assignments.insert(shard, a);
                    }
                }
                Ok(Key::Node(name)) => {
                    if let Ok(info) = NodeInfo::decode(kv.value()) {
                        nodes.insert(name, info);
                    }
                }
                _ => {}
            }
        }
        Ok((revision, assignments, nodes))
    }

    /// Waits until every node pod is Ready and registered with its liveness endpoint, every
    /// shard is assigned to a registered node with no handoff in flight, every node owns a
    /// shard, and nothing changed for a second.
    pub(crate) async fn settle(&self) -> Result<BTreeMap<ShardId, Assignment>> {
        let deadline = Instant::now() + SETTLE;
        let mut last: Option<BTreeMap<ShardId, Assignment>> = None;
        let mut since = Instant::now();
        loop {
            if Instant::now() > deadline {
                bail!("the fleet did not settle within {SETTLE:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let pods = self.pods().await;
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            let Ok((_, assignments, nodes)) = self.etcd_view().await else {
                continue;
            };
            let registered = nodes.values().filter(|n| n.liveness.is_some()).count();
            let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
            for a in assignments.values() {
                *owned.entry(a.node.as_str()).or_insert(0) += 1;
            }
            let good = ready == NODES
                && registered == NODES
                && assignments.len() == SHARDS as usize
                && assignments
                    .values()
                    .all(|a| a.handoff_to.is_none() && nodes.contains_key(&a.node))
                && nodes
                    .keys()
                    .all(|n| owned.get(n.as_str()).is_some_and(|c| *c >= 3));
            if !good || last.as_ref() != Some(&assignments) {
                last = good.then_some(assignments);
                since = Instant::now();
                continue;
            }
            if since.elapsed() >= Duration::from_secs(1) {
                return Ok(assignments);
            }
        }
    }

    fn client_options(&self, token: String) -> ConnectOptions {
        let mut options = ConnectOptions::new(token);
        options.reconnect.max_attempts = 60;
        options.reconnect.initial_backoff = Duration::from_millis(100);
        options.reconnect.max_backoff = Duration::from_millis(500);
        options.max_redirects = 5;
        options.timeouts.connect = Duration::from_secs(2);
        options.timeouts.handshake = Duration::from_secs(2);
        options
    }

    async fn one(&self, run: u64, commit: &str, kind: Kind, index: usize) -> Result<Record> {
        let assignments = self.settle().await?;
        let pods = self.pods().await;
        let names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let victim = names[(index + kind as usize) % names.len()].clone();
        let shard = *assignments
            .iter()
            .find(|(_, a)| a.node == victim)
            .map(|(s, _)| s)
            .context("the victim owns no shard")?;
        let room = (0..)
            .map(|k| format!("fb-{run}-{}-{index}-{k}", kind.as_str()))
            .find(|r| shard_of(r, SHARDS) == shard)
            .unwrap_or_default();
        let entries: Vec<String> = pods
            .iter()
            .filter(|p| p.metadata.name.as_deref() != Some(victim.as_str()))
            .map(node_url)
            .collect();
        if entries.len() < 2 {
            bail!("fewer than two surviving nodes");
        }
        let mut members = Vec::new();
        let mut last_seq = 0;
        for (user, entry) in ["alice", "bob"].iter().zip(&entries) {
            let token = probe::token(&self.secret, user);
            let client = Client::connect(entry, self.client_options(token))
                .await
                .with_context(|| format!("{user} connecting through {entry}"))?;
            let joined = client
                .join(&room)
                .await
                .with_context(|| format!("{user} joining {room}"))?;
            last_seq = last_seq.max(joined.last_seq);
            members.push(client);
        }
        let silence_ms = u64::from(members[0].session().heartbeat_ms) * 5 / 2 + 2000;
        let pid = self
            .cluster
            .container_pid(NS, &victim)
            .map_err(|e| anyhow!("{e}"))?;
        let (revision, _, _) = self.etcd_view().await?;
        let watch = tokio::spawn(watch_move(
            self.etcd.clone(),
            self.keys.clone(),
            shard,
            victim.clone(),
            revision + 1,
        ));
        let resumes: Vec<_> = members
            .iter()
            .map(|m| {
                let sender = m.sender();
                let base = sender.session().reconnects;
                async move {
                    let deadline = Instant::now() + PATIENCE;
                    while Instant::now() < deadline {
                        let info = sender.session();
                        if info.reconnects > base && info.resumed {
                            return Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    None
                }
            })
            .collect();
        let prober_token = probe::token(&self.secret, "carol");
        let want = ["alice".to_string(), "bob".to_string()];

        let loadavg = loadavg();
        let at_unix_ms = unix_ms();
        let t0 = Instant::now();
        let inject_ms = self.inject(kind, pid)?;
        let probing = probe::poll_join_seeing(&entries, &prober_token, &room, t0 + PATIENCE, |j| {
            want.iter().all(|u| j.members.contains(u)) && j.last_seq >= last_seq
        });
        let (joined, resumed) = tokio::join!(probing, futures::future::join_all(resumes));
        let (reassigned, serving, new_owner) = match tokio::time::timeout(PATIENCE, watch).await {
            Ok(Ok(Ok(moved))) => moved,
            _ => (None, None, None),
        };
        let mut record = Record {
            run,
            commit: commit.to_string(),
            kind: kind.as_str().into(),
            index,
            victim: victim.clone(),
            shard,
            at_unix_ms,
            inject_ms,
            reassigned_ms: reassigned.map(|t| ms(t - t0)),
            serving_ms: serving.map(|t| ms(t - t0)),
            first_join_ms: None,
            failed_attempts: 0,
            resumed_ms: resumed.iter().map(|r| r.map(|t| ms(t - t0))).collect(),
            reason: None,
            new_owner,
            client_silence_ms: silence_ms,
            loadavg,
            error: None,
        };
        match joined {
            Ok((_, at, failed)) => {
                record.first_join_ms = Some(ms(at - t0));
                record.failed_attempts = failed;
            }
            Err(e) => record.error = Some(format!("{e:#}")),
        }
        // Undo what is not undone by itself, then let the victim come back.
        match kind {
            Kind::Kill => {}
            Kind::Stop => self
                .cluster
                .fault(Fault::Cont, NS, &victim)
                .map_err(|e| anyhow!("{e}"))?,
            Kind::Cut => self
                .cluster
                .fault(Fault::Heal, NS, &victim)
                .map_err(|e| anyhow!("{e}"))?,
        }
        record.reason = self
            .shard_status(shard)
            .await
            .and_then(|s| s.status?.last_failover)
            .filter(|f| f.from == victim)
            .map(|f| f.reason);
        for member in members {
            member.close().await;
        }
        Ok(record)
    }

    /// Injects the fault into process `pid`; returns how long the injection took (ms).
    fn inject(&self, kind: Kind, pid: u32) -> Result<f64> {
        let started = Instant::now();
        let raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
        let raw = raw.context("not a process id")?;
        match kind {
            Kind::Kill => rustix::process::kill_process(raw, Signal::KILL)?,
            Kind::Stop => rustix::process::kill_process(raw, Signal::STOP)?,
            Kind::Cut => {
                // The same rules as `e2e/scripts/node fault cut`, run here to time them.
                let netns = format!("--net=/proc/{pid}/ns/net");
                for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
                    let status = std::process::Command::new("nsenter")
                        .args([
                            netns.as_str(),
                            "--",
                            "iptables",
                            "-w",
                            "5",
                            "-I",
                            chain,
                            "!",
                            dir,
                            "lo",
                            "-j",
                            "DROP",
                            "-m",
                            "comment",
                            "--comment",
                            "switchboard-e2e-cut",
                        ])
                        .status()
                        .context("running iptables in the pod's network namespace")?;
                    if !status.success() {
                        bail!("iptables {chain} cut failed: {status}");
                    }
                }
            }
        }
        Ok(ms(started.elapsed()))
    }
}

/// Watches `shard`'s assignment and the acks from `revision`: when another node than
/// `victim` was assigned, when it acknowledged serving the new epoch, and its name.
async fn watch_move(
    etcd: Etcd,
    keys: Keyspace,
    shard: ShardId,
    victim: String,
    revision: i64,
) -> Result<(Option<Instant>, Option<Instant>, Option<String>)> {
    let mut client = etcd.watch_client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision);
    let mut stream = client.watch(keys.prefix(), Some(options)).await?;
    let mut moved: Option<(Instant, String, u64)> = None;
    let mut acks: BTreeMap<String, Ack> = BTreeMap::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let Ok(Some(Ok(resp))) = tokio::time::timeout_at(deadline, stream.next()).await else {
            return Ok((moved.as_ref().map(|m| m.0), None, moved.map(|m| m.1)));
        };
        let now = Instant::now();
        for event in resp.events() {
            if event.event_type() != EventType::Put {
                continue;
            }
            let Some(kv) = event.kv() else { continue };
            match keys.parse(kv.key()) {
                Ok(Key::Assignment(s)) if s == shard => {
                    if let Ok(a) = Assignment::decode(kv.value())
                        && moved.is_none()
                        && a.node != victim
                        && a.handoff_to.is_none()
                    {
                        moved = Some((now, a.node.clone(), a.epoch));
                    }
                }
                Ok(Key::Ack(pod)) => {
                    if let Ok(ack) = Ack::decode(kv.value()) {
                        acks.insert(pod, ack);
                    }
                }
                _ => {}
            }
        }
        if let Some((at, node, epoch)) = &moved
            && acks
                .get(node)
                .and_then(|a| a.serving.get(&shard))
                .is_some_and(|e| e >= epoch)
        {
            return Ok((Some(*at), Some(now), Some(node.clone())));
        }
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_url(pod: &Pod) -> String {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    format!("ws://{ip}:7000/ws")
}

/// Runs the plan and appends one record per fault to `options.records`; returns the records.
pub async fn run(options: &RealOptions) -> Result<Vec<Record>> {
    let cluster = Bench::cluster().await?;
    let bench = Bench::install(cluster, options.heartbeat_secs, None).await?;
    let run = unix_ms();
    let commit = commit();
    if let Some(dir) = options.records.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&options.records)
        .with_context(|| format!("opening {}", options.records.display()))?;
    let mut records = Vec::new();
    for (kind, count) in &options.plan {
        for index in 0..*count {
            let record = match bench.one(run, &commit, *kind, index).await {
                Ok(record) => record,
                Err(e) => {
                    eprintln!("{} #{index}: {e:#}", kind.as_str());
                    Record {
                        run,
                        commit: commit.clone(),
                        kind: kind.as_str().into(),
                        index,
                        loadavg: loadavg(),
                        at_unix_ms: unix_ms(),
                        error: Some(format!("{e:#}")),
                        ..Record::default()
                    }
                }
            };
            eprintln!(
                "{} #{index}: victim {} shard {} reassigned {:?} serving {:?} first join {:?} resumed {:?} reason {:?} load {:?}{}",
                record.kind,
                record.victim,
                record.shard,
                record.reassigned_ms,
                record.serving_ms,
                record.first_join_ms,
                record.resumed_ms,
                record.reason,
                record.loadavg,
                record
                    .error
                    .as_deref()
                    .map(|e| format!(" ERROR {e}"))
                    .unwrap_or_default()
            );
            writeln!(out, "{}", serde_json::to_string(&record)?)?;
            out.flush()?;
            records.push(record);
        }
    }
    Ok(records)
}

/// The records in `path` (JSON lines; `.gz` files through `gzip -dc`).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(path)
            .output()
            .with_context(|| format!("gzip -dc {}", path.display()))?;
        if !out.status.success() {
            bail!("gzip -dc {} failed", path.display());
        }
        String::from_utf8(out.stdout)?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| {
                format!("{} line {}: not a failover record", path.display(), i + 1)
            })
        })
        .collect()
}

//! The fault schedule (chosen by a seeded RNG) and how each fault is injected and healed, with
//! the real mechanisms of the real node: signals to a container's process, and iptables in a
//! pod's network namespace.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use k8s_openapi::api::core::v1::Pod;
use switchboard_operator::controller::labels;
use switchboard_operator::crd::ADMIN_PORT;

use super::entry::NODE_PORT;
use super::env::{ETCD_MEMBERS, NS, OPERATOR_NS, SoakEnv, pod_ip, pod_name, pod_ready};
use super::error::SoakError;
use crate::real_node::{Fault, NetFault};

/// Node lease TTL (2 s, docs/architecture.md); pauses and partitions last longer than this.
pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// The fleet etcd's client port.
const ETCD_PORT: u16 = 2379;
/// The fleet etcd's peer port.
const ETCD_PEER_PORT: u16 = 2380;
/// The NFQUEUE queue of the packet delay (queues are per network namespace).
const DELAY_QUEUE: u16 = 7;
/// How long after the first half of a compound fault its second half comes (a kill, then a
/// weight edit or an operator kill while the first is being handled).
const SECOND_HALF_AFTER: Duration = Duration::from_millis(300);

/// Kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` of a node container's process (the kubelet restarts it).
    KillNode,
    /// SIGSTOP of a node for longer than its lease, then SIGCONT.
    FreezeNode,
    /// The operator's leader killed.
    KillOperatorLeader,
    /// One member of the fleet etcd killed (the kubelet restarts it on its volume).
    KillEtcdMember,
    /// The fleet etcd's leader killed (a new one is elected; the kubelet restarts it).
    KillEtcdLeader,
    /// One etcd member cut from its clients and its peers for longer than a node lease.
    CutEtcdMember,
    /// The fleet etcd's space quota full: its NOSPACE alarm raised (through the maintenance
    /// API, the alarm etcd raises itself at the quota) so every write is refused, then
    /// disarmed, as an operator does after compacting and defragmenting.
    EtcdQuotaFull,
    /// A node cut off from etcd (not from clients) for longer than its lease.
    PartitionNodeFromEtcd,
    /// ProtocolRollout weights edited.
    WeightEdit,
    /// SignalingCluster config edited (hot reload).
    ConfigChange,
    /// A node killed and the rollout weights edited right after, during its failover.
    WeightEditDuringFailover,
    /// The only Ready node of a version pool frozen for [`SOLE_NODE_HOLD`], long enough that
    /// waiting for it is not a recovery (any node when no pool has a single one).
    LoseSoleNode,
    /// A node's client port cut (clients cannot reach it; etcd and the operator can).
    CutNodeFromClients,
    /// A node cut from every other node pod (the operator's indirect probes go through them).
    CutNodeFromNodes,
    /// The operator's leader cut from etcd and from the nodes' ports (not from the apiserver).
    CutOperatorFromFleet,
    /// A share of every packet in and out of a node dropped.
    PacketLoss,
    /// Every packet in and out of a node delayed by a random time, so packets overtake each
    /// other (`net-delay` on an NFQUEUE queue; the kernel here has no netem).
    PacketDelay,
    /// The rollout weights edited and the operator's leader killed during the shift.
    KillOperatorDuringRollout,
    /// A node killed and the operator's leader killed during its failover.
    KillOperatorDuringFailover,
    /// Two held node faults at once, on two nodes.
    Overlapping,
}

/// How long [`FaultKind::LoseSoleNode`] keeps the node frozen.
pub const SOLE_NODE_HOLD: Duration = Duration::from_secs(20);

/// The held node faults [`FaultKind::Overlapping`] combines.
const OVERLAPPABLE: [FaultKind; 5] = [
    FaultKind::FreezeNode,
    FaultKind::PartitionNodeFromEtcd,
    FaultKind::CutNodeFromClients,
    FaultKind::PacketLoss,
    FaultKind::PacketDelay,
];

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 20] = [
        FaultKind::KillNode,
        FaultKind::FreezeNode,
        FaultKind::KillOperatorLeader,
        FaultKind::KillEtcdMember,
        FaultKind::KillEtcdLeader,
        FaultKind::CutEtcdMember,
        FaultKind::EtcdQuotaFull,
        FaultKind::PartitionNodeFromEtcd,
        FaultKind::WeightEdit,
        FaultKind::ConfigChange,
        FaultKind::WeightEditDuringFailover,
        FaultKind::LoseSoleNode,
        FaultKind::CutNodeFromClients,
        FaultKind::CutNodeFromNodes,
        FaultKind::CutOperatorFromFleet,
        FaultKind::PacketLoss,
        FaultKind::PacketDelay,
        FaultKind::KillOperatorDuringRollout,
        FaultKind::KillOperatorDuringFailover,
        FaultKind::Overlapping,
    ];

    /// Stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillNode => "kill-9-node",
            FaultKind::FreezeNode => "sigstop-node",
            FaultKind::KillOperatorLeader => "kill-operator-leader",
            FaultKind::KillEtcdMember => "kill-etcd-member",
            FaultKind::KillEtcdLeader => "kill-etcd-leader",
            FaultKind::CutEtcdMember => "etcd-member-cut",
            FaultKind::EtcdQuotaFull => "etcd-quota-full",
            FaultKind::PartitionNodeFromEtcd => "node-cut-from-etcd",
            FaultKind::WeightEdit => "weight-edit",
            FaultKind::ConfigChange => "config-change",
            FaultKind::WeightEditDuringFailover => "weight-edit-during-failover",
            FaultKind::LoseSoleNode => "lose-sole-node",
            FaultKind::CutNodeFromClients => "node-cut-from-clients",
            FaultKind::CutNodeFromNodes => "node-cut-from-nodes",
            FaultKind::CutOperatorFromFleet => "operator-cut-from-fleet",
            FaultKind::PacketLoss => "node-packet-loss",
            FaultKind::PacketDelay => "node-packet-delay",
            FaultKind::KillOperatorDuringRollout => "kill-operator-during-rollout",
            FaultKind::KillOperatorDuringFailover => "kill-operator-during-failover",
            FaultKind::Overlapping => "overlapping",
        }
    }
}

/// How long after a degraded network (loss, delay) is healed its effects may still show: a
/// TCP connection that lost packets backs off its retransmissions for seconds, so a node's
/// lease keepalives can stall, and the node fence itself, after the heal (seed 20262108: a
/// failover 3.6 s after 20 % loss ended).
pub const DEGRADED_SETTLE: Duration = Duration::from_secs(5);

/// How long a fault's window lasts past its heal and recovery: [`DEGRADED_SETTLE`] for loss
/// and delay (alone or overlapping), `settle` otherwise.
pub fn settle(planned: &Planned, settle: Duration) -> Duration {
    let degraded = |k: FaultKind| matches!(k, FaultKind::PacketLoss | FaultKind::PacketDelay);
    if degraded(planned.kind) || planned.parts.iter().any(|p| degraded(p.kind)) {
        settle.max(DEGRADED_SETTLE)
    } else {
        settle
    }
}

/// One planned fault: everything random about it is drawn up front from the run's RNG, so a
/// seed names the same schedule every time.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Which fault.
    pub kind: FaultKind,
    /// Index into the Ready node pods (sorted by name) for node faults.
    pub target: usize,
    /// How long a pause, partition or loss lasts.
    pub hold: Duration,
    /// Gap before injecting it (after the previous fault recovered).
    pub gap: Duration,
    /// New weight of the first version (weight edits), new invite timeout (config changes),
    /// percent of packets dropped (packet loss), least delay in ms (packet delay).
    pub value: u32,
    /// The two faults an [`FaultKind::Overlapping`] injects together (empty otherwise).
    pub parts: Vec<Planned>,
}

/// Draws the next fault, of one of `kinds` (every kind when empty).
pub fn plan(rng: &mut StdRng, kinds: &[FaultKind]) -> Planned {
    let kinds = if kinds.is_empty() {
        &FaultKind::ALL[..]
    } else {
        kinds
    };
    let kind = kinds[rng.random_range(0..kinds.len())];
    let mut planned = plan_one(rng, kind);
    if kind == FaultKind::Overlapping {
        let first = OVERLAPPABLE[rng.random_range(0..OVERLAPPABLE.len())];
        let second = OVERLAPPABLE[rng.random_range(0..OVERLAPPABLE.len())];
        let mut parts = vec![plan_one(rng, first), plan_one(rng, second)];
        // Two different nodes (when there are two), held for the same time.
        parts[1].target = parts[0].target + 1;
        parts[1].hold = parts[0].hold;
        planned.hold = parts[0].hold;
        planned.parts = parts;
    }
    planned
}

fn plan_one(rng: &mut StdRng, kind: FaultKind) -> Planned {
    let hold_ms = match kind {
        // The kubelet decides how long a killed member is down.
        FaultKind::KillEtcdMember | FaultKind::KillEtcdLeader => 0,
        FaultKind::LoseSoleNode => SOLE_NODE_HOLD.as_millis() as u64,
        _ => rng.random_range(LEASE_TTL.as_millis() as u64 * 2..LEASE_TTL.as_millis() as u64 * 4),
    };
    Planned {
        kind,
        target: rng.random_range(0..16),
        hold: Duration::from_millis(hold_ms),
        gap: Duration::from_millis(rng.random_range(1_000..4_000)),
        value: match kind {
            FaultKind::WeightEdit
            | FaultKind::WeightEditDuringFailover
            | FaultKind::KillOperatorDuringRollout => [0, 20, 50, 80, 100][rng.random_range(0..5)],
            FaultKind::PacketLoss => [10, 20, 30][rng.random_range(0..3)],
            FaultKind::PacketDelay => [50, 100, 200][rng.random_range(0..3)],
            _ => rng.random_range(20..40),
        },
        parts: Vec::new(),
    }
}

/// What was done, for the report.
#[derive(Debug, Clone, Default)]
pub struct Injected {
    /// Human-readable target.
    pub target: String,
    /// The faulted node was the only Ready node of its version pool (its shards have no
    /// other node of their pool to fail over to).
    pub sole_of_pool: bool,
}

/// The version pool of `pod`.
fn version_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(labels::VERSION)
        .map(String::as_str)
}

/// Whether `pod` is the only one of `pods` in its version pool.
fn is_sole_of_pool(pods: &[Pod], pod: &Pod) -> bool {
    pods.iter()
        .filter(|p| version_of(p) == version_of(pod))
        .count()
        == 1
}

/// Injects `fault` into run cluster `name` and heals it after its hold time.
///
/// `effective` gets the moment the disruption took effect (the kill, pause, cut or edit
/// returned), which is what recovery is timed from.
pub async fn inject(
    env: &SoakEnv,
    name: &str,
    fault: &Planned,
    effective: &watch::Sender<Option<Instant>>,
) -> Result<Injected, SoakError> {
    let mut attempt = 1;
    loop {
        match inject_once(env, name, fault, effective).await {
            // The target vanished before anything was done to it: choose again among the
            // pods there are now.
            Err(SoakError::PodGone(pod)) if effective.borrow().is_none() && attempt < 3 => {
                eprintln!(
                    "  {pod} was deleted before {} reached it; choosing again",
                    fault.kind.name()
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn inject_once(
    env: &SoakEnv,
    name: &str,
    fault: &Planned,
    effective: &watch::Sender<Option<Instant>>,
) -> Result<Injected, SoakError> {
    let all = env.node_pods(name).await;
    let ready: Vec<Pod> = all.iter().filter(|p| pod_ready(p)).cloned().collect();
    let fleet = Fleet {
        env,
        name,
        all: &all,
        ready: &ready,
        effective,
    };
    if fault.kind != FaultKind::Overlapping {
        return fleet.inject(fault).await;
    }
    let [first, second] = &fault.parts[..] else {
        return Err(SoakError::Setup(format!("{fault:?} has not two parts")));
    };
    let (a, b) = tokio::join!(fleet.inject(first), fleet.inject(second));
    let (a, b) = (a?, b?);
    Ok(Injected {
        target: format!(
            "{} {} + {} {}",
            first.kind.name(),
            a.target,
            second.kind.name(),
            b.target
        ),
        sole_of_pool: a.sole_of_pool || b.sole_of_pool,
    })
}

/// One run cluster's pods as a fault finds them.
struct Fleet<'a> {
    env: &'a SoakEnv,
    name: &'a str,
    /// Every node pod (not terminating).
    all: &'a [Pod],
    /// The Ready ones, by name.
    ready: &'a [Pod],
    effective: &'a watch::Sender<Option<Instant>>,
}

impl Injected {
    /// A fault that hit no node pool.
    fn of(target: String) -> Self {
        Self {
            target,
            sole_of_pool: false,
        }
    }
}

impl Fleet<'_> {
    /// Marks the disruption effective now.
    fn now(&self) {
        let _ = self.effective.send(Some(Instant::now()));
    }

    /// Kills pod `namespace/pod`'s container and marks the disruption effective.
    async fn kill(&self, namespace: &str, pod: &str) -> Result<(), SoakError> {
        self.env.fault(Fault::Kill, namespace, pod).await?;
        self.now();
        Ok(())
    }

    /// The Ready node pod `target` picks, and whether it is its pool's only one.
    fn node(&self, target: usize) -> Result<(&Pod, bool), SoakError> {
        if self.ready.is_empty() {
            return Err(SoakError::Setup(format!(
                "no Ready node of {} to fault",
                self.name
            )));
        }
        let pod = &self.ready[target % self.ready.len()];
        Ok((pod, is_sole_of_pool(self.ready, pod)))
    }

    async fn leader(&self) -> Result<String, SoakError> {
        self.env
            .leader()
            .await
            .ok_or_else(|| SoakError::Setup("no operator leader".into()))
    }

    /// Applies `net` to node `pod` for `hold`, then heals it.
    async fn hold_net(&self, pod: &Pod, net: &NetFault, hold: Duration) -> Result<(), SoakError> {
        self.env.net_fault(net, NS, &pod_name(pod)).await?;
        self.now();
        tokio::time::sleep(hold).await;
        heal(self.env, NS, &pod_name(pod)).await
    }

    /// Delays every packet of node `pod` by `delay_ms` to twice that for `hold`: `net-delay`
    /// bound in the pod's network namespace first, then its packets sent to the queue.
    async fn hold_delayed(
        &self,
        pod: &Pod,
        delay_ms: u64,
        hold: Duration,
    ) -> Result<(), SoakError> {
        let name = pod_name(pod);
        let netns = self.env.pod_netns(NS, &name).await?;
        let mut child = tokio::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(net_delay_bin()?)
            .args(["--queue", &DELAY_QUEUE.to_string()])
            .args(["--delay-ms", &delay_ms.to_string()])
            .args(["--jitter-ms", &delay_ms.to_string()])
            .args(["--for-ms", &hold.as_millis().to_string()])
            .args(["--seed", &self.name.len().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(SoakError::io("starting nsenter net-delay"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| SoakError::Setup("net-delay has no stderr".into()))?;
        let mut lines = BufReader::new(stderr).lines();
        // Bound, or why not (no NFQUEUE in the kernel, no nsenter): the fault cannot be injected.
        let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await;
        match first {
            Ok(Ok(Some(line))) if line.contains("bound") => {}
            other => {
                let _ = child.kill().await;
                let mut reason = format!("{other:?}");
                while let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
                {
                    reason.push_str(&format!("\n{line}"));
                }
                return Err(SoakError::Setup(format!(
                    "the packet delay cannot be injected into {NS}/{name}: net-delay did not \
                     bind its queue: {reason}"
                )));
            }
        }
        self.env
            .net_fault(&NetFault::Queue(DELAY_QUEUE), NS, &name)
            .await?;
        self.now();
        tokio::time::sleep(hold).await;
        heal(self.env, NS, &name).await?;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        Ok(())
    }

    /// Freezes node `pod` for `hold`, then resumes it; says when it was deleted meanwhile.
    async fn hold_frozen(&self, pod: &Pod, hold: Duration) -> Result<&'static str, SoakError> {
        self.env.fault(Fault::Stop, NS, &pod_name(pod)).await?;
        self.now();
        tokio::time::sleep(hold).await;
        resume(self.env, &pod_name(pod)).await
    }

    async fn inject(&self, fault: &Planned) -> Result<Injected, SoakError> {
        let node = || self.node(fault.target);
        let described = |pod: &Pod, sole_of_pool: bool, what: String| Injected {
            target: format!("{NS}/{}{what}", pod_name(pod)),
            sole_of_pool,
        };
        let hold = fault.hold;
        match fault.kind {
            FaultKind::KillNode => {
                let (pod, sole) = node()?;
                self.kill(NS, &pod_name(pod)).await?;
                Ok(described(pod, sole, String::new()))
            }
            FaultKind::FreezeNode => {
                let (pod, sole) = node()?;
                let note = self.hold_frozen(pod, hold).await?;
                Ok(described(pod, sole, format!(" for {hold:?}{note}")))
            }
            FaultKind::LoseSoleNode => {
                let sole: Vec<&Pod> = self
                    .ready
                    .iter()
                    .filter(|p| is_sole_of_pool(self.ready, p))
                    .collect();
                let (pod, is_sole) = match sole.is_empty() {
                    true => node()?,
                    false => (sole[fault.target % sole.len()], true),
                };
                let note = self.hold_frozen(pod, hold).await?;
                Ok(described(pod, is_sole, format!(" for {hold:?}{note}")))
            }
            FaultKind::KillOperatorLeader => {
                let leader = self.leader().await?;
                self.kill(OPERATOR_NS, &leader).await?;
                Ok(Injected::of(format!("{OPERATOR_NS}/{leader}")))
            }
            FaultKind::KillEtcdMember => {
                let member = etcd_member(fault.target);
                self.kill(NS, &member).await?;
                Ok(Injected::of(format!(
                    "{NS}/{member}, restarted by the kubelet"
                )))
            }
            FaultKind::KillEtcdLeader => {
                let leader = etcd_leader(self.env).await?;
                self.kill(NS, &leader).await?;
                Ok(Injected::of(format!(
                    "{NS}/{leader} (the leader), restarted by the kubelet"
                )))
            }
            FaultKind::CutEtcdMember => {
                let member = etcd_member(fault.target);
                let leader = etcd_leader(self.env).await.ok();
                let ports = vec![ETCD_PORT, ETCD_PEER_PORT];
                self.env
                    .net_fault(&NetFault::CutPorts(ports), NS, &member)
                    .await?;
                self.now();
                tokio::time::sleep(hold).await;
                heal(self.env, NS, &member).await?;
                let role = if leader.as_deref() == Some(member.as_str()) {
                    " (the leader)"
                } else {
                    ""
                };
                Ok(Injected::of(format!("{NS}/{member}{role} for {hold:?}")))
            }
            FaultKind::PartitionNodeFromEtcd => {
                let (pod, sole) = node()?;
                self.hold_net(pod, &NetFault::CutPorts(vec![ETCD_PORT]), hold)
                    .await?;
                Ok(described(pod, sole, format!(" for {hold:?}")))
            }
            FaultKind::CutNodeFromClients => {
                let (pod, sole) = node()?;
                self.hold_net(pod, &NetFault::CutPorts(vec![NODE_PORT]), hold)
                    .await?;
                Ok(described(
                    pod,
                    sole,
                    format!(" port {NODE_PORT} for {hold:?}"),
                ))
            }
            FaultKind::CutNodeFromNodes => {
                let (pod, sole) = node()?;
                let peers: Vec<String> = self
                    .all
                    .iter()
                    .filter(|p| pod_name(p) != pod_name(pod))
                    .filter_map(pod_ip)
                    .collect();
                if peers.is_empty() {
                    return Err(SoakError::Setup(format!(
                        "{} has no other node pod to be cut from",
                        pod_name(pod)
                    )));
                }
                let what = format!(" from {} for {hold:?}", peers.join(","));
                self.hold_net(pod, &NetFault::CutPeers(peers), hold).await?;
                Ok(described(pod, sole, what))
            }
            FaultKind::PacketLoss => {
                let (pod, sole) = node()?;
                let percent = u8::try_from(fault.value.min(100)).unwrap_or(100);
                self.hold_net(pod, &NetFault::Loss(percent), hold).await?;
                Ok(described(pod, sole, format!(" {percent}% for {hold:?}")))
            }
            FaultKind::PacketDelay => {
                let (pod, sole) = node()?;
                let delay = u64::from(fault.value);
                self.hold_delayed(pod, delay, hold).await?;
                Ok(described(
                    pod,
                    sole,
                    format!(" {delay}–{} ms for {hold:?}", delay * 2),
                ))
            }
            FaultKind::EtcdQuotaFull => {
                nospace_alarm(&self.env.etcd_url, AlarmAction::Activate).await?;
                self.now();
                tokio::time::sleep(hold).await;
                nospace_alarm(&self.env.etcd_url, AlarmAction::Deactivate).await?;
                Ok(Injected::of(format!("fleet etcd NOSPACE for {hold:?}")))
            }
            FaultKind::CutOperatorFromFleet => {
                let leader = self.leader().await?;
                let ports = vec![ETCD_PORT, NODE_PORT, ADMIN_PORT as u16];
                self.env
                    .net_fault(&NetFault::CutPorts(ports), OPERATOR_NS, &leader)
                    .await?;
                self.now();
                tokio::time::sleep(hold).await;
                heal(self.env, OPERATOR_NS, &leader).await?;
                Ok(Injected::of(format!("{OPERATOR_NS}/{leader} for {hold:?}")))
            }
            FaultKind::WeightEdit => {
                let target = edit_weights(self.env, self.name, fault.value)?;
                self.now();
                Ok(Injected::of(target))
            }
            FaultKind::WeightEditDuringFailover => {
                let (pod, sole) = node()?;
                self.kill(NS, &pod_name(pod)).await?;
                tokio::time::sleep(SECOND_HALF_AFTER).await;
                let weights = edit_weights(self.env, self.name, fault.value)?;
                Ok(described(pod, sole, format!(" killed, then {weights}")))
            }
            FaultKind::KillOperatorDuringRollout => {
                let weights = edit_weights(self.env, self.name, fault.value)?;
                self.now();
                tokio::time::sleep(SECOND_HALF_AFTER).await;
                let leader = self.leader().await?;
                self.env.fault(Fault::Kill, OPERATOR_NS, &leader).await?;
                Ok(Injected::of(format!(
                    "{weights}, then {OPERATOR_NS}/{leader} killed"
                )))
            }
            FaultKind::KillOperatorDuringFailover => {
                let (pod, sole) = node()?;
                self.kill(NS, &pod_name(pod)).await?;
                tokio::time::sleep(SECOND_HALF_AFTER).await;
                let leader = self.leader().await?;
                self.env.fault(Fault::Kill, OPERATOR_NS, &leader).await?;
                Ok(described(
                    pod,
                    sole,
                    format!(" killed, then {OPERATOR_NS}/{leader} killed"),
                ))
            }
            FaultKind::ConfigChange => {
                let patch = json!({"spec": {"config": {"inviteTimeoutSeconds": fault.value}}});
                self.env.kubectl(&[
                    "patch",
                    "sigc",
                    self.name,
                    "--type=merge",
                    "-p",
                    &patch.to_string(),
                ])?;
                self.now();
                Ok(Injected::of(format!(
                    "sigc/{} inviteTimeoutSeconds={}",
                    self.name, fault.value
                )))
            }
            FaultKind::Overlapping => {
                Err(SoakError::Setup("overlapping faults do not nest".into()))
            }
        }
    }
}

/// The fleet etcd member `target` picks.
fn etcd_member(target: usize) -> String {
    format!("etcd-{}", target % ETCD_MEMBERS)
}

/// The fleet etcd member that is the leader now, asked of each member in turn.
async fn etcd_leader(env: &SoakEnv) -> Result<String, SoakError> {
    let api: kube::Api<Pod> = kube::Api::namespaced(env.cluster.client.clone(), NS);
    let mut why = Vec::new();
    for i in 0..ETCD_MEMBERS {
        let member = etcd_member(i);
        let ip = match api.get_opt(&member).await {
            Ok(Some(pod)) => pod_ip(&pod),
            _ => None,
        };
        let Some(ip) = ip else {
            why.push(format!("{member} has no IP"));
            continue;
        };
        let url = format!("http://{ip}:{ETCD_PORT}");
        let status = async {
            let mut client = etcd_client::Client::connect([url.as_str()], None).await?;
            client.status().await
        };
        match tokio::time::timeout(Duration::from_secs(2), status).await {
            Ok(Ok(s)) if s.header().is_some_and(|h| h.member_id() == s.leader()) => {
                return Ok(member);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => why.push(format!("{member}: {e}")),
            Err(_) => why.push(format!("{member}: no status within 2 s")),
        }
    }
    Err(SoakError::Setup(format!(
        "no fleet etcd member says it is the leader ({})",
        why.join("; ")
    )))
}

/// Raises the fleet etcd's NOSPACE alarm (on the member `url` reaches; an alarm goes through
/// raft, so every member refuses writes), or disarms every NOSPACE alarm of every member, as
/// `etcdctl alarm disarm` does: an alarm is kept per member, and the member `url` reaches may
/// not be the one that raised it.
async fn nospace_alarm(url: &str, action: AlarmAction) -> Result<(), SoakError> {
    let alarm = async {
        let client = etcd_client::Client::connect([url], None).await?;
        let mut maintenance = client.maintenance_client();
        let members: Vec<u64> = match action {
            AlarmAction::Activate => {
                let status = maintenance.status().await?;
                vec![status.header().map(|h| h.member_id()).unwrap_or_default()]
            }
            _ => maintenance
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await?
                .alarms()
                .iter()
                .filter(|a| a.alarm() == AlarmType::Nospace)
                .map(|a| a.member_id())
                .collect(),
        };
        for member in members {
            let mut options = AlarmOptions::new();
            options.with_member(member);
            maintenance
                .alarm(action, AlarmType::Nospace, Some(options))
                .await?;
        }
        Ok::<(), etcd_client::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), alarm).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SoakError::Setup(format!("etcd alarm {action:?}: {e}"))),
        Err(_) => Err(SoakError::Setup(format!(
            "etcd alarm {action:?}: no answer within 5 s"
        ))),
    }
}

/// The `net-delay` program, next to the soak's own binary (`e2e/soak` builds both).
fn net_delay_bin() -> Result<PathBuf, SoakError> {
    let exe = std::env::current_exe().map_err(SoakError::io("locating the soak binary"))?;
    let bin = exe.with_file_name("net-delay");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(SoakError::Setup(format!(
            "{} not found: the packet delay needs it (e2e/soak builds it)",
            bin.display()
        )))
    }
}

/// Whether pod `namespace/name` is gone or going (deleted while a fault held it).
async fn deleted(env: &SoakEnv, namespace: &str, name: &str) -> bool {
    let api: kube::Api<Pod> = kube::Api::namespaced(env.cluster.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(None) => true,
        Ok(Some(pod)) => pod.metadata.deletion_timestamp.is_some(),
        Err(_) => false,
    }
}

/// Resumes the frozen node pod `name`. A pod deleted meanwhile (the operator replaced the
/// failed only node of its pool) is not an error: returns a note saying so.
async fn resume(env: &SoakEnv, name: &str) -> Result<&'static str, SoakError> {
    match env.fault(Fault::Cont, NS, name).await {
        Ok(()) => Ok(""),
        Err(_) if deleted(env, NS, name).await => Ok(", deleted while frozen"),
        Err(e) => Err(e),
    }
}

/// Removes every network fault of pod `namespace/name`; a pod deleted meanwhile has none.
async fn heal(env: &SoakEnv, namespace: &str, name: &str) -> Result<(), SoakError> {
    match env.fault(Fault::Heal, namespace, name).await {
        Ok(()) => Ok(()),
        Err(_) if deleted(env, namespace, name).await => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets the rollout's weights to `w`/`100 - w`; returns what it did.
fn edit_weights(env: &SoakEnv, name: &str, w: u32) -> Result<String, SoakError> {
    let w = w.min(100);
    let patch = json!([
        {"op": "replace", "path": "/spec/versions/0/weight", "value": w},
        {"op": "replace", "path": "/spec/versions/1/weight", "value": 100 - w},
    ]);
    env.kubectl(&[
        "patch",
        "prollout",
        name,
        "--type=json",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(format!("prollout/{name} weights {w}/{}", 100 - w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_seed_names_one_schedule() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20).map(|_| plan(&mut rng, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn a_restricted_plan_draws_only_its_kinds() {
        let mut rng = StdRng::seed_from_u64(3);
        let only = [FaultKind::LoseSoleNode, FaultKind::KillNode];
        let plans: Vec<Planned> = (0..100).map(|_| plan(&mut rng, &only)).collect();
        assert!(plans.iter().all(|p| only.contains(&p.kind)));
        assert!(only.iter().all(|k| plans.iter().any(|p| p.kind == *k)));
        assert!(
            plans
                .iter()
                .filter(|p| p.kind == FaultKind::LoseSoleNode)
                .all(|p| p.hold == SOLE_NODE_HOLD)
        );
    }

    #[test]
    fn loss_and_delay_settle_longer_alone_or_overlapping() {
        let mut rng = StdRng::seed_from_u64(9);
        let base = Duration::from_secs(2);
        let loss = plan(&mut rng, &[FaultKind::PacketLoss]);
        assert_eq!(settle(&loss, base), DEGRADED_SETTLE);
        let kill = plan(&mut rng, &[FaultKind::KillNode]);
        assert_eq!(settle(&kill, base), base);
        let mut both = plan(&mut rng, &[FaultKind::Overlapping]);
        both.parts[1].kind = FaultKind::PacketDelay;
        assert_eq!(settle(&both, base), DEGRADED_SETTLE);
    }

    #[test]
    fn overlapping_faults_are_two_held_node_faults_on_two_nodes() {
        let mut rng = StdRng::seed_from_u64(5);
        let plans: Vec<Planned> = (0..50)
            .map(|_| plan(&mut rng, &[FaultKind::Overlapping]))
            .collect();
        for p in &plans {
            let [a, b] = &p.parts[..] else {
                panic!("{p:?} has not two parts");
            };
            assert!(OVERLAPPABLE.contains(&a.kind) && OVERLAPPABLE.contains(&b.kind));
            assert_ne!(a.target, b.target);
            assert_eq!((a.hold, b.hold), (p.hold, p.hold));
        }
        let plain = plan(&mut rng, &[FaultKind::KillNode]);
        assert!(plain.parts.is_empty());
    }

    #[test]
    fn every_kind_is_drawn_and_pauses_outlast_the_lease() {
        let mut rng = StdRng::seed_from_u64(1);
        let plans: Vec<Planned> = (0..500).map(|_| plan(&mut rng, &[])).collect();
        for kind in FaultKind::ALL {
            assert!(plans.iter().any(|p| p.kind == kind), "{kind:?} never drawn");
        }
        for p in &plans {
            if matches!(
                p.kind,
                FaultKind::FreezeNode
                    | FaultKind::PartitionNodeFromEtcd
                    | FaultKind::LoseSoleNode
                    | FaultKind::CutNodeFromClients
                    | FaultKind::CutNodeFromNodes
                    | FaultKind::CutOperatorFromFleet
                    | FaultKind::PacketLoss
                    | FaultKind::PacketDelay
                    | FaultKind::CutEtcdMember
                    | FaultKind::EtcdQuotaFull
                    | FaultKind::Overlapping
            ) {
                assert!(p.hold > LEASE_TTL, "{p:?}");
            }
            if matches!(
                p.kind,
                FaultKind::WeightEdit | FaultKind::WeightEditDuringFailover
            ) {
                assert!(p.value <= 100);
            }
        }
    }
}

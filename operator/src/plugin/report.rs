//! What the plugin prints (pure): aligned tables, the `status` report, the `rooms` answer and
//! shard ownership summaries, all from API objects and an explicit "now".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::controller::labels::{DRAIN, VERSION};
use crate::crd::{Failover, ProtocolRollout, RoomShard, ShardPhase, SignalingCluster};

/// How many failovers `status` lists.
pub const RECENT_FAILOVERS: usize = 10;

/// Left-aligned columns separated by two spaces (like `kubectl get`).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A short age like `kubectl get`: `45s`, `3m`, `2h`, `4d`.
pub fn age(then: &Time, now: Timestamp) -> String {
    let seconds = (now.as_second() - then.0.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

fn phase_name(phase: ShardPhase) -> &'static str {
    match phase {
        ShardPhase::Assigned => "Assigned",
        ShardPhase::HandingOff => "HandingOff",
        ShardPhase::Recovering => "Recovering",
        ShardPhase::Unassigned => "Unassigned",
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Whether the pod carries the drain annotation.
pub fn drained(pod: &Pod) -> bool {
    pod.annotations()
        .get(DRAIN)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The shards of `shards` owned by `node` (status), and those among them handing off.
pub fn owned_by(shards: &[RoomShard], node: &str) -> (Vec<i32>, usize) {
    let mut owned = Vec::new();
    let mut moving = 0;
    for shard in shards {
        let Some(status) = shard.status.as_ref() else {
            continue;
        };
        if status.node.as_deref() == Some(node) {
            owned.push(shard.spec.index);
            if status.phase == ShardPhase::HandingOff {
                moving += 1;
            }
        }
    }
    owned.sort_unstable();
    (owned, moving)
}

/// The full `status` report of one cluster.
pub fn status(
    cluster: &SignalingCluster,
    pods: &[Pod],
    shards: &[RoomShard],
    rollout: Option<&ProtocolRollout>,
    now: Timestamp,
) -> String {
    let mut out = String::new();
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let status = cluster.status.clone().unwrap_or_default();
    out.push_str(&format!(
        "SignalingCluster {namespace}/{name}: {} replicas ({} ready), {}/{} shards assigned, {} nodes ready in etcd, config revision {}\n",
        cluster.spec.replicas,
        status.ready_replicas,
        status.shards_assigned,
        cluster.spec.shards,
        status.ready_nodes,
        status
            .config_revision
            .map_or_else(|| "-".to_string(), |r| r.to_string()),
    ));
    if cluster.metadata.deletion_timestamp.is_some() {
        out.push_str("  (being deleted)\n");
    }
    let conditions: Vec<Vec<String>> = status
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(&c.last_transition_time, now),
                c.message.clone(),
            ]
        })
        .collect();
    out.push('\n');
    if conditions.is_empty() {
        out.push_str("No conditions reported yet (is the operator running?)\n");
    } else {
        out.push_str(&table(
            &["CONDITION", "STATUS", "REASON", "SINCE", "MESSAGE"],
            &conditions,
        ));
    }

    // Pools per version, from the pods.
    let mut pools: BTreeMap<String, (usize, usize, BTreeMap<String, ()>, usize)> = BTreeMap::new();
    for pod in pods {
        let version = pod.labels().get(VERSION).cloned().unwrap_or_default();
        let entry = pools.entry(version).or_default();
        entry.1 += 1;
        if pod_ready(pod) {
            entry.0 += 1;
        }
        entry.2.insert(pod_image(pod), ());
        if drained(pod) {
            entry.3 += 1;
        }
    }
    let pool_rows: Vec<Vec<String>> = pools
        .into_iter()
        .map(|(version, (ready, total, images, drained))| {
            vec![
                version,
                format!("{ready}/{total}"),
                drained.to_string(),
                images.into_keys().collect::<Vec<_>>().join(","),
            ]
        })
        .collect();
    out.push('\n');
    if pool_rows.is_empty() {
        out.push_str("No signaling-node pods\n");
    } else {
        out.push_str(&table(&["POOL", "READY", "DRAINED", "IMAGE"], &pool_rows));
    }

    // Nodes: shards owned, readiness, drain.
    let mut owned: BTreeMap<String, usize> = BTreeMap::new();
    for shard in shards {
        if let Some(node) = shard.status.as_ref().and_then(|s| s.node.clone()) {
            *owned.entry(node).or_insert(0) += 1;
        }
    }
    let node_rows: Vec<Vec<String>> = pods
        .iter()
        .map(|pod| {
            let name = pod.name_any();
            vec![
                name.clone(),
                pod.labels().get(VERSION).cloned().unwrap_or_default(),
                if pod_ready(pod) { "Ready" } else { "NotReady" }.to_string(),
                if drained(pod) { "yes" } else { "" }.to_string(),
                owned.get(&name).copied().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    if !node_rows.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["NODE", "POOL", "POD", "DRAINED", "SHARDS"],
            &node_rows,
        ));
    }

    // Shard map.
    let mut sorted: Vec<&RoomShard> = shards.iter().collect();
    sorted.sort_by_key(|s| s.spec.index);
    let shard_rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|s| {
            let st = s.status.clone().unwrap_or_default();
            vec![
                s.spec.index.to_string(),
                st.node.unwrap_or_else(|| "-".into()),
                st.epoch.to_string(),
                phase_name(st.phase).to_string(),
                st.version.unwrap_or_else(|| "-".into()),
                st.rooms.to_string(),
            ]
        })
        .collect();
    out.push('\n');
    if shard_rows.is_empty() {
        out.push_str("No RoomShards yet\n");
    } else {
        out.push_str(&table(
            &["SHARD", "NODE", "EPOCH", "PHASE", "VERSION", "ROOMS"],
            &shard_rows,
        ));
    }

    // Recent failovers, newest first.
    let mut failovers: Vec<(i32, &Failover)> = shards
        .iter()
        .filter_map(|s| {
            let f = s.status.as_ref()?.last_failover.as_ref()?;
            Some((s.spec.index, f))
        })
        .collect();
    failovers.sort_by(|a, b| b.1.at.0.cmp(&a.1.at.0).then(a.0.cmp(&b.0)));
    out.push('\n');
    if failovers.is_empty() {
        out.push_str("No failovers recorded\n");
    } else {
        let rows: Vec<Vec<String>> = failovers
            .iter()
            .take(RECENT_FAILOVERS)
            .map(|(index, f)| {
                vec![
                    index.to_string(),
                    f.from.clone(),
                    if f.to.is_empty() {
                        "-".into()
                    } else {
                        f.to.clone()
                    },
                    f.reason.clone(),
                    format!("{}ms", f.detected_ms),
                    f.recovered_ms
                        .map_or_else(|| "-".into(), |ms| format!("{ms}ms")),
                    age(&f.at, now),
                ]
            })
            .collect();
        out.push_str(&format!(
            "RECENT FAILOVERS ({} of {}, newest first)\n",
            rows.len(),
            failovers.len()
        ));
        out.push_str(&table(
            &[
                "SHARD",
                "FROM",
                "TO",
                "REASON",
                "DETECTED",
                "RECOVERED",
                "AGE",
            ],
            &rows,
        ));
    }

    out.push('\n');
    match rollout {
        None => out.push_str("No ProtocolRollout (one version pool)\n"),
        Some(rollout) => out.push_str(&rollout_report(rollout)),
    }
    out
}

/// The rollout part of `status`: phase, pause and per-version weights.
pub fn rollout_report(rollout: &ProtocolRollout) -> String {
    let status = rollout.status.clone().unwrap_or_default();
    let mut out = format!(
        "ProtocolRollout {}: phase {:?}{}\n",
        rollout.name_any(),
        status.phase,
        if rollout.spec.paused {
            " (spec.paused)"
        } else {
            ""
        }
    );
    let observed: BTreeMap<&str, &crate::crd::VersionStatus> = status
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let rows: Vec<Vec<String>> = rollout
        .spec
        .versions
        .iter()
        .map(|v| {
            let seen = observed.get(v.name.as_str());
            vec![
                v.name.clone(),
                v.weight.to_string(),
                seen.map_or_else(|| "-".into(), |s| s.weight.to_string()),
                seen.map_or_else(|| "-".into(), |s| s.shards.to_string()),
                seen.map_or_else(|| "-".into(), |s| s.ready_nodes.to_string()),
                seen.and_then(|s| s.error_rate)
                    .map_or_else(|| "-".into(), |r| format!("{r:.4}")),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "VERSION",
            "SPEC WEIGHT",
            "APPLIED",
            "SHARDS",
            "READY NODES",
            "ERROR RATE",
        ],
        &rows,
    ));
    if !status.last_stable_weights.is_empty() {
        let stable: Vec<String> = status
            .last_stable_weights
            .iter()
            .map(|(n, w)| format!("{n}={w}"))
            .collect();
        out.push_str(&format!("last stable weights: {}\n", stable.join(",")));
    }
    if let Some(control) = &status.control {
        let mut held = Vec::new();
        if control.paused {
            held.push("paused".to_string());
        }
        if control.aborted {
            held.push("aborted".to_string());
        }
        if let Some(version) = &control.promoted {
            held.push(format!("promoted to {version}"));
        }
        out.push_str(&format!(
            "held by requests until the spec changes: {}\n",
            held.join(", ")
        ));
    }
    if let Some(answer) = &status.last_request {
        out.push_str(&format!(
            "last request: {} {} ({}): {}\n",
            answer.action,
            match answer.outcome {
                crate::crd::RequestOutcome::Accepted => "accepted",
                crate::crd::RequestOutcome::Rejected => "rejected",
            },
            answer.id,
            answer.message
        ));
    }
    if let Some(analysis) = &status.analysis {
        let samples: Vec<String> = analysis
            .versions
            .iter()
            .map(|v| {
                format!(
                    "{}{} {:.4} over {} samples",
                    v.name,
                    if v.watched { " (watched)" } else { "" },
                    v.mean_error_rate,
                    v.samples
                )
            })
            .collect();
        out.push_str(&format!(
            "analysis ({}): {}; {}\n",
            if analysis.source.is_empty() {
                "nodes"
            } else {
                &analysis.source
            },
            samples.join(", "),
            analysis.message
        ));
    }
    out
}

/// What `status` reports about health, for its exit code: Degraded (the cluster's condition)
/// and RolledBack / Aborted (the rollout's phase).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The cluster's Degraded condition is True.
    pub degraded: bool,
    /// The rollout was rolled back automatically or aborted.
    pub rolled_back: bool,
    /// Why, in words.
    pub reasons: Vec<String>,
}

impl Health {
    /// The exit status `status` ends with: 0 healthy, 2 Degraded or rolled back (1 is for
    /// errors).
    pub fn exit_code(&self) -> u8 {
        if self.degraded || self.rolled_back {
            2
        } else {
            0
        }
    }
}

/// The health of `cluster` and its rollout.
pub fn health(cluster: &SignalingCluster, rollout: Option<&ProtocolRollout>) -> Health {
    let mut health = Health::default();
    if let Some(c) = cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
        .filter(|c| c.status == "True")
    {
        health.degraded = true;
        health
            .reasons
            .push(format!("Degraded: {}: {}", c.reason, c.message));
    }
    if let Some(status) = rollout.and_then(|r| r.status.as_ref())
        && matches!(
            status.phase,
            crate::crd::RolloutPhase::RolledBack | crate::crd::RolloutPhase::Aborted
        )
    {
        health.rolled_back = true;
        health.reasons.push(format!(
            "rollout {:?}: weights {}",
            status.phase,
            status.weights.clone().unwrap_or_default()
        ));
    }
    health
}

/// One pod as `status -o json|yaml` lists it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSummary {
    /// Pod name.
    pub name: String,
    /// Version pool.
    pub version: String,
    /// Readiness.
    pub ready: bool,
    /// The drain annotation is set.
    pub drained: bool,
    /// Container image.
    pub image: String,
}

/// What `status -o json|yaml` prints: the objects as the API returns them, the pods in short
/// and the health verdict.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDocument {
    /// The cluster.
    pub cluster: SignalingCluster,
    /// Its pods.
    pub pods: Vec<PodSummary>,
    /// Its RoomShards by index.
    pub shards: Vec<RoomShard>,
    /// Its rollout.
    pub rollout: Option<ProtocolRollout>,
    /// Health and the exit code it gives.
    pub health: Health,
}

/// The [`StatusDocument`] of a cluster.
pub fn status_document(
    cluster: &SignalingCluster,
    pods: &[Pod],
    shards: &[RoomShard],
    rollout: Option<&ProtocolRollout>,
) -> StatusDocument {
    let mut sorted = shards.to_vec();
    sorted.sort_by_key(|s| s.spec.index);
    StatusDocument {
        cluster: cluster.clone(),
        pods: pods
            .iter()
            .map(|p| PodSummary {
                name: p.name_any(),
                version: p.labels().get(VERSION).cloned().unwrap_or_default(),
                ready: pod_ready(p),
                drained: drained(p),
                image: pod_image(p),
            })
            .collect(),
        shards: sorted,
        rollout: rollout.cloned(),
        health: health(cluster, rollout),
    }
}

/// Where a room lives, as `rooms ROOM` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomLocation {
    /// The room id.
    pub room: String,
    /// Its FNV-1a hash.
    pub hash: u32,
    /// Its shard.
    pub shard: u32,
    /// The cluster's shard count.
    pub shard_count: u32,
    /// Owner pod, epoch, version and phase from the RoomShard status.
    pub owner: Option<(String, i64, String, String)>,
    /// The owner's WebSocket URL (pod IP and the cluster port), if known.
    pub url: Option<String>,
}

/// Computes where `room` lives with the node's own hash ([`switchboard_contract::shard`]).
pub fn locate(
    room: &str,
    cluster: &SignalingCluster,
    shards: &[RoomShard],
    pods: &[Pod],
) -> RoomLocation {
    let shard_count = u32::try_from(cluster.spec.shards.max(1)).unwrap_or(1);
    let hash = switchboard_contract::shard::room_hash(room);
    let shard = switchboard_contract::shard::shard_of(room, shard_count);
    let status = shards
        .iter()
        .find(|s| u32::try_from(s.spec.index).ok() == Some(shard))
        .and_then(|s| s.status.clone());
    let owner = status.as_ref().and_then(|st| {
        Some((
            st.node.clone()?,
            st.epoch,
            st.version.clone().unwrap_or_else(|| "-".into()),
            phase_name(st.phase).to_string(),
        ))
    });
    let url = owner.as_ref().and_then(|(node, ..)| {
        let pod = pods.iter().find(|p| p.name_any() == *node)?;
        let ip = pod.status.as_ref()?.pod_ip.clone()?;
        Some(format!("ws://{ip}:{}/ws", cluster.spec.port))
    });
    RoomLocation {
        room: room.to_string(),
        hash,
        shard,
        shard_count,
        owner,
        url,
    }
}

/// The text of a [`RoomLocation`].
pub fn room_report(location: &RoomLocation) -> String {
    let mut out = format!(
        "room {:?}: shard {} of {} (hash {:#010x})\n",
        location.room, location.shard, location.shard_count, location.hash
    );
    match &location.owner {
        Some((node, epoch, version, phase)) => out.push_str(&format!(
            "owner: {node} (epoch {epoch}, version {version}, phase {phase})\n"
        )),
        None => out.push_str("owner: none (the shard is unassigned)\n"),
    }
    out.push_str(&format!(
        "url:   {}\n",
        location
            .url
            .as_deref()
            .unwrap_or("- (the owner pod has no IP yet)")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RoomShardSpec, RoomShardStatus, SignalingClusterSpec};

    fn cluster() -> SignalingCluster {
        let spec: SignalingClusterSpec = serde_json::from_value(serde_json::json!({
            "replicas": 2, "image": "img:1", "port": 7000, "shards": 4,
            "etcd": {"endpoints": ["http://127.0.0.1:2379"]}, "authSecret": "auth"
        }))
        .unwrap();
        let mut c = SignalingCluster::new("demo", spec);
        c.metadata.namespace = Some("ns".into());
        c
    }

    fn shard(index: i32, node: &str, failover: Option<(&str, i64)>) -> RoomShard {
        let mut s = RoomShard::new(
            &format!("demo-{index}"),
            RoomShardSpec {
                cluster: "demo".into(),
                index,
                hash_start: 0,
                hash_end: 1,
            },
        );
        s.status = Some(RoomShardStatus {
            node: Some(node.into()),
            epoch: 2,
            version: Some("default".into()),
            phase: ShardPhase::Assigned,
            rooms: 1,
            last_failover: failover.map(|(from, at)| Failover {
                from: from.into(),
                to: node.into(),
                reason: "LeaseExpired".into(),
                detected_ms: 12,
                recovered_ms: Some(80),
                at: Time(Timestamp::from_second(at).unwrap()),
            }),
            last_move_request: None,
            last_move: None,
        });
        s
    }

    fn pod(name: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"switchboard.dev/version": "default"},
                          "annotations": {"switchboard.dev/drain": "true"}},
            "spec": {"containers": [{"name": "node", "image": "img:1"}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["A", "LONGER"],
            &[
                vec!["wide-cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(text, "A          LONGER\nwide-cell  x\ny          z\n");
    }

    #[test]
    fn status_lists_pools_shards_and_failovers_newest_first() {
        let shards = vec![
            shard(1, "demo-default-1", Some(("demo-default-0", 1_000))),
            shard(0, "demo-default-1", Some(("demo-default-2", 2_000))),
        ];
        let text = status(
            &cluster(),
            &[pod("demo-default-1", "127.0.1.1")],
            &shards,
            None,
            Timestamp::from_second(2_030).unwrap(),
        );
        assert!(
            text.contains("SignalingCluster ns/demo: 2 replicas"),
            "{text}"
        );
        assert!(text.contains("default  1/1    1        img:1"), "{text}");
        assert!(
            text.contains("demo-default-1  default  Ready  yes      2"),
            "{text}"
        );
        let first = text.find("demo-default-2  demo-default-1").unwrap();
        let second = text.find("demo-default-0  demo-default-1").unwrap();
        assert!(first < second, "newest first:\n{text}");
        assert!(text.contains("12ms      80ms       30s"), "{text}");
        assert!(text.contains("No ProtocolRollout"));
    }

    #[test]
    fn a_room_is_located_with_the_nodes_hash() {
        let shards: Vec<RoomShard> = (0..4).map(|i| shard(i, "demo-default-1", None)).collect();
        let location = locate(
            "studio",
            &cluster(),
            &shards,
            &[pod("demo-default-1", "10.0.0.7")],
        );
        assert_eq!(
            location.shard,
            switchboard_contract::shard::shard_of("studio", 4)
        );
        assert_eq!(location.url.as_deref(), Some("ws://10.0.0.7:7000/ws"));
        let text = room_report(&location);
        assert!(text.contains("owner: demo-default-1 (epoch 2, version default, phase Assigned)"));
    }
}

//! The node configuration rollout, pure: `spec.config` as the node's settings, the revision
//! rule of the etcd `config` key, which nodes are live, and how far the rollout got.
//!
//! - **Settings** are `spec.config` as the contract's typed [`ClusterSettings`] (the spec's
//!   own names, whole seconds), the one type the node reads them with.
//! - **Revision**: unchanged settings keep the stored revision (no write); changed, missing or
//!   unreadable settings get `max(stored, status.configRevision) + 1`, so the revision never
//!   goes backwards, even after the key was lost.
//! - **Live node** (docs/architecture.md): its `nodes/<pod>` key exists with state Ready and, if
//!   the operator sees its Pod, the Pod is Ready and not terminating.
//! - **ConfigApplied** holds when every live node acked the revision. Nodes still behind
//!   [`ACK_DEADLINE`] after the operator first saw the revision pending are named.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use switchboard_contract::ClusterSettings;
use switchboard_contract::keys::{Ack, ConfigValue, NodeInfo, NodeState};

use super::pod_plan::{is_ready, is_terminating};
use crate::crd::NodeConfig;
use crate::{Error, Result};

/// How long a live node may take to ack a config revision before the condition names it.
pub const ACK_DEADLINE: Duration = Duration::from_secs(30);

/// Most node names listed in a condition message.
const MAX_NAMED: usize = 5;

/// `spec.config` as the etcd `config` settings (the CRD's schema refuses negative values;
/// one that got past it is an invalid spec).
pub fn node_settings(config: &NodeConfig) -> Result<ClusterSettings> {
    fn whole(name: &str, value: i32) -> Result<u64> {
        u64::try_from(value).map_err(|_| Error::InvalidSpec(format!("config.{name} is negative")))
    }
    Ok(ClusterSettings {
        heartbeat_seconds: Some(whole("heartbeatSeconds", config.heartbeat_seconds)?),
        idle_timeout_seconds: Some(whole("idleTimeoutSeconds", config.idle_timeout_seconds)?),
        invite_timeout_seconds: Some(whole(
            "inviteTimeoutSeconds",
            config.invite_timeout_seconds,
        )?),
        max_connections: Some(whole("maxConnections", config.max_connections)?),
        max_rooms: Some(whole("maxRooms", config.max_rooms)?),
        messages_per_second: Some(
            u32::try_from(config.messages_per_second)
                .map_err(|_| Error::InvalidSpec("config.messagesPerSecond is negative".into()))?,
        ),
        negotiation_timeout_seconds: Some(whole(
            "negotiationTimeoutSeconds",
            config.negotiation_timeout_seconds,
        )?),
        resume_window_seconds: Some(whole("resumeWindowSeconds", config.resume_window_seconds)?),
        room_size: Some(whole("roomSize", config.room_size)?),
    })
}

/// The `config` key as read from etcd.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredConfig {
    /// No key.
    Missing,
    /// A valid value.
    Valid(ConfigValue),
    /// A value that does not parse (overwritten with a higher revision than any seen).
    Invalid,
}

/// What to do with the `config` key.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigPlan {
    /// The stored settings are current: keep this revision.
    Keep(u64),
    /// Write this value.
    Write(ConfigValue),
}

impl ConfigPlan {
    /// The revision in effect after the plan is carried out.
    pub fn revision(&self) -> u64 {
        match self {
            Self::Keep(revision) => *revision,
            Self::Write(value) => value.revision,
        }
    }
}

/// Decides the `config` write from what is stored, the revision last reported in status and
/// the wanted settings.
pub fn plan_config(
    stored: &StoredConfig,
    status_revision: Option<i64>,
    settings: ClusterSettings,
) -> ConfigPlan {
    let floor = status_revision
        .and_then(|r| u64::try_from(r).ok())
        .unwrap_or(0);
    let base = match stored {
        StoredConfig::Valid(value) if value.settings == settings => {
            return ConfigPlan::Keep(value.revision);
        }
        StoredConfig::Valid(value) => value.revision.max(floor),
        StoredConfig::Missing | StoredConfig::Invalid => floor,
    };
    ConfigPlan::Write(ConfigValue {
        revision: base.saturating_add(1),
        settings,
    })
}

/// Readiness of a node's Pod as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodView {
    /// The Pod's Ready condition is True.
    pub ready: bool,
    /// The Pod is being deleted.
    pub terminating: bool,
}

/// The Pods of a cluster by name.
pub fn pod_views(pods: &[Pod]) -> BTreeMap<String, PodView> {
    pods.iter()
        .map(|pod| {
            (
                pod.name_any(),
                PodView {
                    ready: is_ready(pod),
                    terminating: is_terminating(pod),
                },
            )
        })
        .collect()
}

/// The live nodes: registered Ready in etcd and, when their Pod is known, Ready and not
/// terminating.
pub fn live_nodes(
    nodes: &BTreeMap<String, NodeInfo>,
    pods: &BTreeMap<String, PodView>,
) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|(_, info)| info.state == NodeState::Ready)
        .filter(|(name, _)| {
            pods.get(name.as_str())
                .is_none_or(|pod| pod.ready && !pod.terminating)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// How far the rollout of one config revision got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigProgress {
    /// Live nodes.
    pub ready: u32,
    /// Live nodes that acked the revision (or a later one).
    pub acked: u32,
    /// Live nodes that have not acked it within [`ACK_DEADLINE`] (empty before the deadline).
    pub lagging: Vec<String>,
    /// Revisions the slowest live node is behind (0: applied everywhere).
    pub lag: u64,
}

impl ConfigProgress {
    /// Every live node acked.
    pub fn applied(&self) -> bool {
        self.acked >= self.ready
    }
}

/// The progress of `revision` over the `live` nodes given their `acks`, `pending_for` after
/// the operator first saw the revision pending.
pub fn config_progress(
    revision: u64,
    live: &BTreeSet<String>,
    acks: &BTreeMap<String, Ack>,
    pending_for: Duration,
) -> ConfigProgress {
    let applied = |node: &String| acks.get(node).map_or(0, |a| a.config_revision);
    let behind: Vec<&String> = live.iter().filter(|n| applied(n) < revision).collect();
    let lag = behind
        .iter()
        .map(|n| revision - applied(n))
        .max()
        .unwrap_or(0);
    let lagging = if pending_for >= ACK_DEADLINE {
        behind.iter().map(|n| (*n).clone()).collect()
    } else {
        Vec::new()
    };
    ConfigProgress {
        ready: u32::try_from(live.len()).unwrap_or(u32::MAX),
        acked: u32::try_from(live.len() - behind.len()).unwrap_or(u32::MAX),
        lagging,
        lag,
    }
}

/// When to look again while a revision is not applied: at the ack deadline (to name the
/// laggards), then every 15 s as a backstop for missed watch events. `None` once applied.
pub fn recheck_after(progress: &ConfigProgress, pending_for: Duration) -> Option<Duration> {
    if progress.applied() {
        return None;
    }
    let backstop = Duration::from_secs(15);
    Some(match ACK_DEADLINE.checked_sub(pending_for) {
        Some(left) if !left.is_zero() => (left + Duration::from_millis(100)).min(backstop),
        _ => backstop,
    })
}

/// `a, b, c and 2 more` for a condition message.
pub fn name_list(names: &[String]) -> String {
    let shown = names.iter().take(MAX_NAMED).cloned().collect::<Vec<_>>();
    let mut text = shown.join(", ");
    if names.len() > MAX_NAMED {
        text.push_str(&format!(" and {} more", names.len() - MAX_NAMED));
    }
    text
}

#[cfg(test)]
mod tests {
    use switchboard_contract::keys::Load;

    use super::*;

    fn node(state: NodeState) -> NodeInfo {
        NodeInfo {
            url: "ws://127.0.0.1:7000/ws".into(),
            version: "default".into(),
            protocols: vec![],
            state,
            load: Load::default(),
            error_rate: 0.0,
            started_at_ms: 0,
            liveness: None,
        }
    }

    fn ack(revision: u64) -> Ack {
        Ack {
            config_revision: revision,
            ..Default::default()
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn defaults() -> ClusterSettings {
        node_settings(&NodeConfig::default()).unwrap()
    }

    #[test]
    fn settings_use_the_spec_names() {
        let settings = defaults();
        let json = serde_json::to_string(&settings).unwrap();
        assert_eq!(
            json,
            r#"{"heartbeatSeconds":30,"idleTimeoutSeconds":300,"inviteTimeoutSeconds":30,"maxConnections":100000,"maxRooms":50000,"messagesPerSecond":50,"negotiationTimeoutSeconds":15,"resumeWindowSeconds":60,"roomSize":16}"#
        );
        assert_eq!(settings.room_size, Some(16));
        let negative = NodeConfig {
            room_size: -1,
            ..NodeConfig::default()
        };
        assert!(matches!(
            node_settings(&negative),
            Err(Error::InvalidSpec(_))
        ));
    }

    #[test]
    fn a_new_cluster_starts_at_revision_one() {
        let settings = defaults();
        let plan = plan_config(&StoredConfig::Missing, None, settings.clone());
        assert_eq!(
            plan,
            ConfigPlan::Write(ConfigValue {
                revision: 1,
                settings
            })
        );
    }

    #[test]
    fn unchanged_settings_keep_their_revision() {
        let settings = defaults();
        let stored = StoredConfig::Valid(ConfigValue {
            revision: 4,
            settings: settings.clone(),
        });
        assert_eq!(plan_config(&stored, Some(4), settings), ConfigPlan::Keep(4));
    }

    #[test]
    fn changed_settings_bump_the_revision() {
        let old = defaults();
        let new = node_settings(&NodeConfig {
            heartbeat_seconds: 5,
            ..NodeConfig::default()
        })
        .unwrap();
        assert_ne!(old, new);
        let stored = StoredConfig::Valid(ConfigValue {
            revision: 1,
            settings: old,
        });
        assert_eq!(plan_config(&stored, Some(1), new.clone()).revision(), 2);
        assert_eq!(new.heartbeat_seconds, Some(5));
    }

    #[test]
    fn revisions_never_go_backwards() {
        let settings = defaults();
        // The key was lost (etcd restored, prefix removed by hand): continue above status.
        assert_eq!(
            plan_config(&StoredConfig::Missing, Some(7), settings.clone()).revision(),
            8
        );
        assert_eq!(
            plan_config(&StoredConfig::Invalid, Some(7), settings.clone()).revision(),
            8
        );
        let stale = StoredConfig::Valid(ConfigValue {
            revision: 3,
            settings: ClusterSettings::default(),
        });
        assert_eq!(plan_config(&stale, Some(7), settings.clone()).revision(), 8);
        let ahead = StoredConfig::Valid(ConfigValue {
            revision: 12,
            settings: ClusterSettings::default(),
        });
        assert_eq!(
            plan_config(&ahead, Some(7), settings.clone()).revision(),
            13
        );
        assert_eq!(plan_config(&ahead, Some(-1), settings).revision(), 13);
    }

    #[test]
    fn live_nodes_need_a_ready_key_and_a_ready_pod() {
        let nodes = BTreeMap::from([
            ("a".to_string(), node(NodeState::Ready)),
            ("b".to_string(), node(NodeState::Draining)),
            ("c".to_string(), node(NodeState::Ready)),
            ("d".to_string(), node(NodeState::Ready)),
            ("outside".to_string(), node(NodeState::Ready)),
        ]);
        let view = |ready, terminating| PodView { ready, terminating };
        let pods = BTreeMap::from([
            ("a".to_string(), view(true, false)),
            ("b".to_string(), view(true, false)),
            ("c".to_string(), view(false, false)),
            ("d".to_string(), view(true, true)),
            ("e".to_string(), view(true, false)),
        ]);
        // "e" has a ready Pod but no key; "outside" has a key and no Pod we know of.
        assert_eq!(live_nodes(&nodes, &pods), set(&["a", "outside"]));
    }

    #[test]
    fn progress_counts_acks_of_live_nodes_only() {
        let live = set(&["a", "b", "c"]);
        let acks = BTreeMap::from([
            ("a".to_string(), ack(3)),
            ("b".to_string(), ack(2)),
            ("gone".to_string(), ack(3)),
        ]);
        let p = config_progress(3, &live, &acks, Duration::from_secs(1));
        assert_eq!((p.ready, p.acked, p.lag), (3, 1, 3));
        assert!(p.lagging.is_empty(), "nobody is named before the deadline");
        assert!(!p.applied());

        let late = config_progress(3, &live, &acks, ACK_DEADLINE);
        assert_eq!(late.lagging, vec!["b".to_string(), "c".to_string()]);

        let all = BTreeMap::from([
            ("a".to_string(), ack(3)),
            ("b".to_string(), ack(4)),
            ("c".to_string(), ack(3)),
        ]);
        let done = config_progress(3, &live, &all, ACK_DEADLINE);
        assert!(done.applied());
        assert_eq!((done.acked, done.lag), (3, 0));
        assert!(done.lagging.is_empty());

        let nobody = config_progress(3, &BTreeSet::new(), &acks, ACK_DEADLINE);
        assert!(nobody.applied());
    }

    #[test]
    fn rechecks_at_the_deadline_then_as_a_backstop() {
        let pending = ConfigProgress {
            ready: 2,
            acked: 1,
            ..Default::default()
        };
        assert_eq!(
            recheck_after(&pending, Duration::from_secs(25)),
            Some(Duration::from_millis(5_100))
        );
        assert_eq!(
            recheck_after(&pending, Duration::ZERO),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            recheck_after(&pending, Duration::from_secs(40)),
            Some(Duration::from_secs(15))
        );
        let done = ConfigProgress {
            ready: 2,
            acked: 2,
            ..Default::default()
        };
        assert_eq!(recheck_after(&done, Duration::ZERO), None);
    }

    #[test]
    fn long_name_lists_are_cut() {
        let names: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
        assert_eq!(name_list(&names), "n0, n1, n2, n3, n4 and 2 more");
        assert_eq!(name_list(&names[..2]), "n0, n1");
    }
}

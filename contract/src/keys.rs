//! The etcd keyspace of a Switchboard cluster, implemented once: key builders, key parsing
//! and the JSON value types. Pure (no I/O); docs/architecture.md ("The etcd keyspace") says
//! who writes each key and when.
//!
//! Every key lives under `/switchboard/<namespace>/<cluster>/`:
//!
//! | key | value |
//! |---|---|
//! | `nodes/<pod>` | [`NodeInfo`] (under the node's lease) |
//! | `assignments/<shard>` | [`Assignment`] (operator only) |
//! | `rooms/<shard>/<room>` | FlatBuffers room snapshot (owning node, fenced) |
//! | `config` | [`ConfigValue`] |
//! | `rollout` | [`RolloutValue`] |
//! | `acks/<pod>` | [`Ack`] (under the node's lease) |
//!
//! `nodes/<pod>` and `acks/<pod>` are attached to the node's lease: they vanish when the node
//! dies (TTL) or shuts down (revoke). To fence a node, the operator revokes the lease found in
//! the `lease` field of its `nodes/<pod>` key.
//!
//! Shards are written as zero-padded decimal ([`SHARD_DIGITS`] digits, enough for any `u32`)
//! so a range scan of `assignments/` or `rooms/` returns shards in numeric order. Parsing
//! accepts only the canonical form, so every key has exactly one spelling.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::settings::ClusterSettings;
use crate::shard::ShardId;

/// The fixed first segment of every Switchboard key.
pub const ROOT: &str = "/switchboard/";

/// Number of decimal digits of a shard id in keys (`u32::MAX` has 10).
pub const SHARD_DIGITS: usize = 10;

/// Longest namespace, cluster, pod or room name accepted in a key (bytes).
pub const MAX_SEGMENT_LEN: usize = 253;

/// A key or key segment that does not fit the keyspace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A name used as a key segment is empty, too long, or contains `/` or a control character.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidSegment {
        /// Which segment ("namespace", "cluster", "pod", "room").
        what: &'static str,
        /// The offending name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The key is not valid UTF-8.
    #[error("key is not UTF-8")]
    NotUtf8,
    /// The key does not start with this cluster's prefix.
    #[error("key {0:?} is outside the cluster prefix")]
    OutsidePrefix(String),
    /// The key is under the prefix but matches no known key shape.
    #[error("unknown key {0:?}")]
    Unknown(String),
    /// A shard segment is not a canonical zero-padded decimal `u32`.
    #[error("invalid shard segment {0:?} (expected {SHARD_DIGITS} decimal digits)")]
    InvalidShard(String),
}

/// A value stored in the keyspace that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// The bytes are not the expected JSON document.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON parsed but breaks a rule of the value type.
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// A parsed key of a cluster's keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// `nodes/<pod>`: a live node's registration.
    Node(String),
    /// `assignments/<shard>`: which node owns a shard.
    Assignment(ShardId),
    /// `rooms/<shard>/<room>`: one room's durable snapshot.
    Room {
        /// The room's shard.
        shard: ShardId,
        /// The room id (may itself contain `/`).
        room: String,
    },
    /// `config`: the hot-reloadable node configuration.
    Config,
    /// `rollout`: version weights and the shard → version map.
    Rollout,
    /// `acks/<pod>`: revisions a node applied.
    Ack(String),
}

/// The keyspace of one cluster: `/switchboard/<namespace>/<cluster>/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    /// The keyspace of cluster `cluster` in Kubernetes namespace `namespace`.
    pub fn new(namespace: &str, cluster: &str) -> Result<Self, KeyError> {
        check_segment("namespace", namespace)?;
        check_segment("cluster", cluster)?;
        Ok(Self {
            prefix: format!("{ROOT}{namespace}/{cluster}/"),
        })
    }

    /// The prefix every key of this cluster starts with (ends with `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `nodes/` — range-watch this for node registrations.
    pub fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    /// `nodes/<pod>`.
    pub fn node(&self, pod: &str) -> Result<String, KeyError> {
        check_segment("pod", pod)?;
        Ok(format!("{}nodes/{pod}", self.prefix))
    }

    /// `assignments/` — range-watch this for shard ownership.
    pub fn assignments_prefix(&self) -> String {
        format!("{}assignments/", self.prefix)
    }

    /// `assignments/<shard>`.
    pub fn assignment(&self, shard: ShardId) -> String {
        format!("{}assignments/{}", self.prefix, shard_segment(shard))
    }

    /// `rooms/` — every room of every shard.
    pub fn rooms_prefix(&self) -> String {
        format!("{}rooms/", self.prefix)
    }

    /// `rooms/<shard>/` — range-read this to load a shard.
    pub fn shard_rooms_prefix(&self, shard: ShardId) -> String {
        format!("{}rooms/{}/", self.prefix, shard_segment(shard))
    }

    /// `rooms/<shard>/<room>`.
    pub fn room(&self, shard: ShardId, room: &str) -> Result<String, KeyError> {
        check_room(room)?;
        Ok(format!("{}{room}", self.shard_rooms_prefix(shard)))
    }

    /// `config`.
    pub fn config(&self) -> String {
        format!("{}config", self.prefix)
    }

    /// `rollout`.
    pub fn rollout(&self) -> String {
        format!("{}rollout", self.prefix)
    }

    /// `acks/` — range-read this to see which revisions nodes applied.
    pub fn acks_prefix(&self) -> String {
        format!("{}acks/", self.prefix)
    }

    /// `acks/<pod>`.
    pub fn ack(&self, pod: &str) -> Result<String, KeyError> {
        check_segment("pod", pod)?;
        Ok(format!("{}acks/{pod}", self.prefix))
    }

    /// Parses a full key (as read from etcd) of this cluster.
    pub fn parse(&self, key: &[u8]) -> Result<Key, KeyError> {
        let key = std::str::from_utf8(key).map_err(|_| KeyError::NotUtf8)?;
        let rest = key
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| KeyError::OutsidePrefix(key.to_owned()))?;
        let unknown = || KeyError::Unknown(key.to_owned());
        match rest {
            "config" => return Ok(Key::Config),
            "rollout" => return Ok(Key::Rollout),
            _ => {}
        }
        let (kind, tail) = rest.split_once('/').ok_or_else(unknown)?;
        match kind {
            "nodes" => {
                check_segment("pod", tail)?;
                Ok(Key::Node(tail.to_owned()))
            }
            "acks" => {
                check_segment("pod", tail)?;
                Ok(Key::Ack(tail.to_owned()))
            }
            "assignments" => Ok(Key::Assignment(parse_shard(tail)?)),
            "rooms" => {
                let (shard, room) = tail.split_once('/').ok_or_else(unknown)?;
                let shard = parse_shard(shard)?;
                check_room(room)?;
                Ok(Key::Room {
                    shard,
                    room: room.to_owned(),
                })
            }
            _ => Err(unknown()),
        }
    }
}

/// The canonical key segment of a shard: zero-padded decimal.
pub fn shard_segment(shard: ShardId) -> String {
    format!("{shard:0width$}", width = SHARD_DIGITS)
}

/// Parses a canonical shard segment (exactly [`SHARD_DIGITS`] ASCII digits).
pub fn parse_shard(segment: &str) -> Result<ShardId, KeyError> {
    let invalid = || KeyError::InvalidShard(segment.to_owned());
    if segment.len() != SHARD_DIGITS || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    segment.parse::<ShardId>().map_err(|_| invalid())
}

fn check_segment(what: &'static str, name: &str) -> Result<(), KeyError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_SEGMENT_LEN {
        Some("too long")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KeyError::InvalidSegment {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

// Room ids are the last segment, so they may contain '/'; they still must be non-empty,
// bounded and printable so keys stay readable in `etcdctl`.
fn check_room(room: &str) -> Result<(), KeyError> {
    let reason = if room.is_empty() {
        Some("empty")
    } else if room.len() > MAX_SEGMENT_LEN {
        Some("too long")
    } else if room.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KeyError::InvalidSegment {
            what: "room",
            name: room.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Whether a node serves new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Serving; may be assigned shards.
    Ready,
    /// Shutting down: takes no new shards; its shards are being handed off.
    Draining,
}

/// A node's current load, published in its registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Load {
    /// Open client connections.
    #[serde(default)]
    pub connections: u64,
    /// Rooms held in memory.
    #[serde(default)]
    pub rooms: u64,
}

/// Value of `nodes/<pod>`: a live node's registration, written under its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The advertised WebSocket URL clients are redirected to (e.g. `ws://10.0.0.7:7000/ws`).
    pub url: String,
    /// The node's software version (the rollout version name it belongs to).
    pub version: String,
    /// Wire protocols it speaks, as subprotocol names (`switchboard.v1`, `switchboard.v2`).
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Ready or draining.
    pub state: NodeState,
    /// Connections and rooms held.
    #[serde(default)]
    pub load: Load,
    /// Fraction of requests that ended in an error over the last interval (0.0–1.0).
    #[serde(default)]
    pub error_rate: f64,
    /// When the process started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_at_ms: u64,
    /// The node's liveness stream (`crate::liveness`); absent on nodes without one, which
    /// are judged by their lease and Pod alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<crate::liveness::Endpoint>,
}

/// Value of `assignments/<shard>`: the shard's owner, written only by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assignment {
    /// Pod name of the owning node (the `<pod>` of its `nodes/<pod>` key).
    pub node: String,
    /// Fencing epoch; increases by one on every change of owner.
    pub epoch: u64,
    /// Rollout version the shard is served by.
    pub version: String,
    /// Set during a handoff (phase 1): the pod the shard is moving to. The owner stops
    /// mutating the shard, flushes, migrates its clients there and reports the release in
    /// its ack; the operator then writes the new owner with `epoch + 1` and no `handoff_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_to: Option<String>,
}

/// Value of `config`: hot-reloadable node settings with the revision the operator gave them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigValue {
    /// Monotonic revision (the operator increments it on every change of settings).
    pub revision: u64,
    /// The node settings (heartbeat, idle timeout, limits, room size, ...).
    #[serde(deserialize_with = "settings_object")]
    pub settings: ClusterSettings,
}

/// Reads `config.settings` only from a JSON object (serde would also read a struct written
/// as an array, which no operator writes).
fn settings_object<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ClusterSettings, D::Error> {
    let map = serde_json::Map::deserialize(deserializer)?;
    serde_json::from_value(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)
}

/// Value of `rollout`: version weights and the shard → version map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutValue {
    /// Monotonic revision (the operator increments it on every change).
    pub revision: u64,
    /// Version name → weight in percent; the weights sum to 100 unless the map is empty.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Shard → version name serving it (every named version appears in `weights`).
    #[serde(default)]
    pub shard_versions: BTreeMap<ShardId, String>,
}

/// Value of `acks/<pod>`: the revisions a node applied (written under its lease).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ack {
    /// The `config` revision the node applied.
    pub config_revision: u64,
    /// The `rollout` revision the node has seen.
    pub rollout_revision: u64,
    /// Shards this node released in a handoff, with the epoch it released them at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub released: BTreeMap<ShardId, u64>,
    /// Shards this node serves (snapshots loaded), with the epoch it serves them at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub serving: BTreeMap<ShardId, u64>,
}

/// JSON (de)serialization shared by every value type, with validation on decode.
pub trait Value: Serialize + for<'de> Deserialize<'de> + Sized {
    /// Checks rules serde cannot express; the default accepts everything.
    fn validate(&self) -> Result<(), ValueError> {
        Ok(())
    }

    /// Parses and validates a stored value.
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        let value: Self = serde_json::from_slice(bytes)?;
        value.validate()?;
        Ok(value)
    }

    /// Serializes the value as stored (compact JSON, fields in declaration order, so equal
    /// values always encode to equal bytes).
    fn encode(&self) -> Vec<u8> {
        // Serializing these plain structs (string keys, no custom impls) cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Value for NodeInfo {
    fn validate(&self) -> Result<(), ValueError> {
        if self.url.is_empty() {
            return Err(ValueError::Invalid("node url is empty".into()));
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(ValueError::Invalid(format!(
                "error_rate {} is outside 0..=1",
                self.error_rate
            )));
        }
        Ok(())
    }
}

impl Value for Assignment {
    fn validate(&self) -> Result<(), ValueError> {
        check_segment("pod", &self.node).map_err(|e| ValueError::Invalid(e.to_string()))
    }
}

impl Value for ConfigValue {}

impl Value for RolloutValue {
    fn validate(&self) -> Result<(), ValueError> {
        if !self.weights.is_empty() {
            let sum: u64 = self.weights.values().map(|w| u64::from(*w)).sum();
            if sum != 100 {
                return Err(ValueError::Invalid(format!(
                    "rollout weights sum to {sum}, not 100"
                )));
            }
        }
        if let Some((shard, version)) = self
            .shard_versions
            .iter()
            .find(|(_, version)| !self.weights.contains_key(*version))
        {
            return Err(ValueError::Invalid(format!(
                "shard {shard} maps to version {version:?}, which has no weight"
            )));
        }
        Ok(())
    }
}

impl Value for Ack {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ks() -> Keyspace {
        Keyspace::new("prod", "main").unwrap()
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let ks = ks();
        assert_eq!(ks.prefix(), "/switchboard/prod/main/");
        assert_eq!(
            ks.node("node-0").unwrap(),
            "/switchboard/prod/main/nodes/node-0"
        );
        assert_eq!(
            ks.assignment(7),
            "/switchboard/prod/main/assignments/0000000007"
        );
        assert_eq!(
            ks.room(7, "lobby").unwrap(),
            "/switchboard/prod/main/rooms/0000000007/lobby"
        );
        assert_eq!(ks.config(), "/switchboard/prod/main/config");
        assert_eq!(ks.rollout(), "/switchboard/prod/main/rollout");
        assert_eq!(
            ks.ack("node-0").unwrap(),
            "/switchboard/prod/main/acks/node-0"
        );
        assert!(
            ks.room(7, "lobby")
                .unwrap()
                .starts_with(&ks.shard_rooms_prefix(7))
        );
        assert!(ks.shard_rooms_prefix(7).starts_with(&ks.rooms_prefix()));
    }

    #[test]
    fn every_key_parses_back() {
        let ks = ks();
        let cases = [
            (ks.node("n-1").unwrap(), Key::Node("n-1".into())),
            (ks.assignment(0), Key::Assignment(0)),
            (ks.assignment(u32::MAX), Key::Assignment(u32::MAX)),
            (
                ks.room(3, "a/b c").unwrap(),
                Key::Room {
                    shard: 3,
                    room: "a/b c".into(),
                },
            ),
            (ks.config(), Key::Config),
            (ks.rollout(), Key::Rollout),
            (ks.ack("n-1").unwrap(), Key::Ack("n-1".into())),
        ];
        for (key, expected) in cases {
            assert_eq!(ks.parse(key.as_bytes()).unwrap(), expected, "{key}");
        }
    }

    #[test]
    fn bad_keys_are_typed_errors() {
        let ks = ks();
        let p = ks.prefix().to_owned();
        assert_eq!(
            ks.parse(b"/switchboard/prod/other/config"),
            Err(KeyError::OutsidePrefix(
                "/switchboard/prod/other/config".into()
            ))
        );
        assert_eq!(ks.parse(&[0xff, 0xfe]), Err(KeyError::NotUtf8));
        for key in [
            format!("{p}configs"),
            format!("{p}nodes"),
            format!("{p}x/y"),
        ] {
            assert!(
                matches!(ks.parse(key.as_bytes()), Err(KeyError::Unknown(_))),
                "{key}"
            );
        }
        for shard in ["7", "00000000007", "-000000007", "000000000x", "9999999999"] {
            let key = format!("{p}assignments/{shard}");
            assert_eq!(
                ks.parse(key.as_bytes()),
                Err(KeyError::InvalidShard(shard.into())),
                "{key}"
            );
        }
        let key = format!("{p}rooms/0000000001");
        assert!(matches!(
            ks.parse(key.as_bytes()),
            Err(KeyError::Unknown(_))
        ));
        let key = format!("{p}rooms/0000000001/");
        assert!(matches!(
            ks.parse(key.as_bytes()),
            Err(KeyError::InvalidSegment { what: "room", .. })
        ));
        let key = format!("{p}nodes/a/b");
        assert!(matches!(
            ks.parse(key.as_bytes()),
            Err(KeyError::InvalidSegment { what: "pod", .. })
        ));
    }

    #[test]
    fn bad_segments_are_refused_when_building() {
        assert!(Keyspace::new("", "c").is_err());
        assert!(Keyspace::new("a/b", "c").is_err());
        assert!(Keyspace::new("a", &"c".repeat(300)).is_err());
        assert!(ks().node("a\nb").is_err());
        assert!(ks().room(1, "").is_err());
        assert!(ks().ack("").is_err());
    }

    #[test]
    fn shard_keys_sort_numerically() {
        let ks = ks();
        let mut keys: Vec<String> = [10u32, 9, 100, 0, u32::MAX, 11]
            .iter()
            .map(|s| ks.assignment(*s))
            .collect();
        keys.sort();
        let shards: Vec<ShardId> = keys
            .iter()
            .map(|k| match ks.parse(k.as_bytes()).unwrap() {
                Key::Assignment(s) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(shards, vec![0, 9, 10, 11, 100, u32::MAX]);
    }

    #[test]
    fn values_round_trip_and_validate() {
        let node = NodeInfo {
            url: "ws://127.0.1.2:7000/ws".into(),
            version: "v2".into(),
            protocols: vec!["switchboard.v1".into(), "switchboard.v2".into()],
            state: NodeState::Draining,
            load: Load {
                connections: 3,
                rooms: 1,
            },
            error_rate: 0.25,
            started_at_ms: 1_700_000_000_000,
            liveness: None,
        };
        assert_eq!(NodeInfo::decode(&node.encode()).unwrap(), node);
        let json: serde_json::Value = serde_json::from_slice(&node.encode()).unwrap();
        assert_eq!(json["state"], "draining");

        let assignment = Assignment {
            node: "n-0".into(),
            epoch: 4,
            version: "v1".into(),
            handoff_to: None,
        };
        assert_eq!(
            Assignment::decode(&assignment.encode()).unwrap(),
            assignment
        );
        assert_eq!(assignment.encode(), assignment.clone().encode());

        let config: ConfigValue =
            ConfigValue::decode(br#"{"revision":3,"settings":{"heartbeatSeconds":1}}"#).unwrap();
        assert_eq!(config.revision, 3);
        assert_eq!(config.settings.heartbeat_seconds, Some(1));
        assert!(ConfigValue::decode(br#"{"revision":3,"settings":[1]}"#).is_err());

        let rollout = RolloutValue::decode(
            br#"{"revision":2,"weights":{"v1":90,"v2":10},"shard_versions":{"0":"v1","1":"v2"}}"#,
        )
        .unwrap();
        assert_eq!(rollout.shard_versions[&1], "v2");
        assert_eq!(RolloutValue::decode(&rollout.encode()).unwrap(), rollout);

        let ack = Ack {
            config_revision: 3,
            rollout_revision: 2,
            released: BTreeMap::from([(4, 7)]),
            serving: BTreeMap::from([(5, 2)]),
        };
        assert_eq!(Ack::decode(&ack.encode()).unwrap(), ack);
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(matches!(
            RolloutValue::decode(br#"{"revision":1,"weights":{"v1":50,"v2":40}}"#),
            Err(ValueError::Invalid(_))
        ));
        assert!(matches!(
            RolloutValue::decode(
                br#"{"revision":1,"weights":{"v1":100},"shard_versions":{"0":"v9"}}"#
            ),
            Err(ValueError::Invalid(_))
        ));
        assert!(matches!(
            Assignment::decode(br#"{"node":"","epoch":1,"version":"v1"}"#),
            Err(ValueError::Invalid(_))
        ));
        assert!(matches!(
            NodeInfo::decode(br#"{"url":"ws://x","version":"v1","state":"ready","error_rate":2}"#),
            Err(ValueError::Invalid(_))
        ));
        assert!(matches!(
            NodeInfo::decode(br#"{"url":"ws://x","version":"v1","state":"gone"}"#),
            Err(ValueError::Json(_))
        ));
        assert!(matches!(Ack::decode(b"not json"), Err(ValueError::Json(_))));
    }

    proptest! {
        #[test]
        fn room_keys_round_trip(shard in any::<u32>(), room in "[^\\p{Cc}]{1,40}") {
            let ks = ks();
            let key = ks.room(shard, &room).unwrap();
            prop_assert_eq!(ks.parse(key.as_bytes()).unwrap(), Key::Room { shard, room });
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let ks = ks();
            let mut key = ks.prefix().as_bytes().to_vec();
            key.extend_from_slice(&bytes);
            let _ = ks.parse(&key);
            let _ = ks.parse(&bytes);
        }
    }
}

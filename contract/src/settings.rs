//! [`ClusterSettings`]: the hot-reloadable node settings the operator writes into the `config`
//! key (a SignalingCluster's `spec.config`, in the spec's own names and whole seconds) and
//! every node applies.
//!
//! Both sides use this one type, so a setting cannot be spelt differently on each side. Every
//! field is optional: a node keeps its own value for a setting the operator did not send, and
//! ignores keys it does not know (a newer operator may send more settings than an older node
//! understands). A known key with a value of the wrong type makes the whole `config` value
//! invalid, and the node keeps its last good settings.

use serde::{Deserialize, Serialize};

/// Node settings as stored in `config.settings` (camelCase JSON).
///
/// Fields are declared in alphabetical order so the JSON bytes stay what they were when this
/// was a string-keyed map (an unchanged spec never rewrites the key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    /// Seconds between the server's heartbeat Pings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_seconds: Option<u64>,
    /// Seconds a silent connection is kept before it is evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    /// Seconds an unanswered invite rings before it times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_timeout_seconds: Option<u64>,
    /// Most concurrent connections per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Most live rooms per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rooms: Option<u64>,
    /// Sustained client messages per second per connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages_per_second: Option<u32>,
    /// Seconds an offer/answer/ICE negotiation may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negotiation_timeout_seconds: Option<u64>,
    /// Seconds a dropped session may resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_window_seconds: Option<u64>,
    /// Most members of one room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_on_the_wire_is_the_specs() {
        let settings = ClusterSettings {
            heartbeat_seconds: Some(30),
            idle_timeout_seconds: Some(300),
            invite_timeout_seconds: Some(30),
            max_connections: Some(100_000),
            max_rooms: Some(50_000),
            messages_per_second: Some(50),
            negotiation_timeout_seconds: Some(15),
            resume_window_seconds: Some(60),
            room_size: Some(16),
        };
        let json = serde_json::to_string(&settings).unwrap();
        assert_eq!(
            json,
            r#"{"heartbeatSeconds":30,"idleTimeoutSeconds":300,"inviteTimeoutSeconds":30,"maxConnections":100000,"maxRooms":50000,"messagesPerSecond":50,"negotiationTimeoutSeconds":15,"resumeWindowSeconds":60,"roomSize":16}"#
        );
        assert_eq!(
            serde_json::from_str::<ClusterSettings>(&json).unwrap(),
            settings
        );
    }

    #[test]
    fn missing_and_unknown_keys_are_fine_wrong_types_are_not() {
        let parsed: ClusterSettings =
            serde_json::from_str(r#"{"roomSize":4,"somethingNew":true}"#).unwrap();
        assert_eq!(
            parsed,
            ClusterSettings {
                room_size: Some(4),
                ..Default::default()
            }
        );
        assert_eq!(
            serde_json::to_string(&ClusterSettings::default()).unwrap(),
            "{}"
        );
        for bad in [
            r#"{"roomSize":"big"}"#,
            r#"{"heartbeatSeconds":-1}"#,
            r#"{"messagesPerSecond":5000000000}"#,
        ] {
            assert!(
                serde_json::from_str::<ClusterSettings>(bad).is_err(),
                "{bad}"
            );
        }
    }
}

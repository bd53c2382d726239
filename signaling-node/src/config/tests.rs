//! Tests of settings resolution, reload and the cluster layer.

use std::time::Duration;

use super::*;
use switchboard_contract::ClusterSettings;

fn args() -> SettingsPatch {
    SettingsPatch {
        jwt_secret: Some("s3cret".into()),
        ..Default::default()
    }
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(
        "250ms".parse::<Dur>().unwrap().0,
        Duration::from_millis(250)
    );
    assert_eq!("30s".parse::<Dur>().unwrap().0, Duration::from_secs(30));
    assert_eq!("5m".parse::<Dur>().unwrap().0, Duration::from_secs(300));
    assert_eq!("1h".parse::<Dur>().unwrap().0, Duration::from_secs(3600));
    assert!("30".parse::<Dur>().is_err());
    assert!("s".parse::<Dur>().is_err());
    assert!("3d".parse::<Dur>().is_err());
    assert!("99999999999999999999h".parse::<Dur>().is_err());
    assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
    assert_eq!(Dur(Duration::from_secs(2)).to_string(), "2s");
}

#[test]
fn defaults_resolve() {
    let s = Settings::resolve(&SettingsPatch {
        node_name: Some("n1".into()),
        ..args()
    })
    .unwrap();
    assert_eq!(s.listen.port(), 7000);
    assert_eq!(s.admin_listen.port(), 9100);
    assert_eq!(s.shard_count, 16);
    assert_eq!(s.advertise_url, "ws://n1:7000/ws");
    assert_eq!(s.tunables, Tunables::default());
}

#[test]
fn file_then_flags_precedence() {
    let file = SettingsPatch::from_toml(
        r#"
        shard_count = 8
        heartbeat_interval = "10s"
        idle_timeout = "1m"
        listen = "127.0.0.1:7100"
        "#,
    )
    .unwrap();
    let mut patch = file;
    patch.merge(&SettingsPatch {
        shard_count: Some(4),
        ..args()
    });
    let s = Settings::resolve(&patch).unwrap();
    assert_eq!(s.shard_count, 4);
    assert_eq!(s.tunables.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(s.advertise_url, "ws://127.0.0.1:7100/ws");
}

#[test]
fn bad_files_are_rejected() {
    assert!(matches!(
        SettingsPatch::from_toml("no_such_key = 1"),
        Err(ConfigError::Parse(_))
    ));
    assert!(matches!(
        SettingsPatch::from_toml("idle_timeout = 300"),
        Err(ConfigError::Parse(_))
    ));
    let patch = SettingsPatch {
        heartbeat_interval: Some(Dur(Duration::from_secs(60))),
        idle_timeout: Some(Dur(Duration::from_secs(30))),
        ..args()
    };
    assert!(matches!(
        Settings::resolve(&patch),
        Err(ConfigError::Invalid {
            field: "idle_timeout",
            ..
        })
    ));
    assert!(matches!(
        Settings::resolve(&SettingsPatch::default()),
        Err(ConfigError::MissingSecret)
    ));
}

#[test]
fn reload_keeps_static_settings() {
    let a = Settings::resolve(&args()).unwrap();
    let b = Settings::resolve(&SettingsPatch {
        shard_count: Some(3),
        max_room_members: Some(4),
        ..args()
    })
    .unwrap();
    let (merged, ignored) = a.reloaded(&b);
    assert_eq!(merged.shard_count, 16);
    assert_eq!(merged.tunables.max_room_members, 4);
    assert_eq!(ignored, vec!["shard_count"]);
}

#[test]
fn handle_reloads_changed_file_and_keeps_last_good() {
    let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, "max_room_members = 4\n").unwrap();
    let handle = ConfigHandle::load(args(), Some(path.clone())).unwrap();
    assert_eq!(handle.current().tunables.max_room_members, 4);
    let mut rx = handle.subscribe();
    assert!(!handle.reload_if_changed().unwrap());

    std::fs::write(&path, "max_room_members = 6\nrate_limit = 7\n").unwrap();
    assert!(handle.reload_if_changed().unwrap());
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().tunables.max_room_members, 6);

    std::fs::write(&path, "max_room_members = \"many\"\n").unwrap();
    assert!(handle.reload_if_changed().is_err());
    assert_eq!(handle.current().tunables.max_room_members, 6);

    // Flags win over the file.
    let pinned = ConfigHandle::load(
        SettingsPatch {
            rate_limit: Some(9),
            ..args()
        },
        Some(path.clone()),
    );
    assert!(pinned.is_err(), "the broken file is refused at startup too");
    std::fs::write(&path, "rate_limit = 7\n").unwrap();
    let pinned = ConfigHandle::load(
        SettingsPatch {
            rate_limit: Some(9),
            ..args()
        },
        Some(path),
    )
    .unwrap();
    assert_eq!(pinned.current().tunables.rate_limit, 9);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn protocol_lists_parse() {
    use ProtocolVersion::{V1, V2};
    assert_eq!(parse_protocols("v1,v2").unwrap(), vec![V2, V1]);
    assert_eq!(parse_protocols("1").unwrap(), vec![V1]);
    assert_eq!(parse_protocols(" switchboard.v2 ").unwrap(), vec![V2]);
    assert!(parse_protocols("v3").is_err());
    assert!(parse_protocols(" , ").is_err());
    let s = Settings::resolve(&SettingsPatch {
        protocols: Some("v1".into()),
        drain_timeout_seconds: Some(3),
        pool_version: Some("blue".into()),
        ..args()
    })
    .unwrap();
    assert_eq!(s.protocols, vec![V1]);
    assert_eq!(s.drain_timeout, Duration::from_secs(3));
    assert_eq!(s.pool_version, "blue");
}

#[test]
fn ws_path_lists_parse() {
    assert_eq!(
        parse_ws_paths("/signal/ws, /ws2,/signal/ws").unwrap(),
        vec!["/signal/ws".to_string(), "/ws2".to_string()]
    );
    assert!(parse_ws_paths("").unwrap().is_empty());
    for bad in ["signal/ws", "/ws?x=1", "/a b"] {
        assert!(
            matches!(
                parse_ws_paths(bad),
                Err(ConfigError::Invalid {
                    field: "ws_paths",
                    ..
                })
            ),
            "{bad}"
        );
    }
    let s = Settings::resolve(&SettingsPatch {
        ws_paths: Some("/signal/ws".into()),
        ..args()
    })
    .unwrap();
    assert_eq!(s.extra_ws_paths, vec!["/signal/ws".to_string()]);
}

#[test]
fn cluster_settings_map_to_tunables() {
    let settings: ClusterSettings = serde_json::from_value(serde_json::json!({
        "heartbeatSeconds": 10,
        "idleTimeoutSeconds": 60,
        "roomSize": 4,
        "messagesPerSecond": 20,
        "maxConnections": 1000,
        "somethingNew": true
    }))
    .unwrap();
    let patch = SettingsPatch::from_cluster_settings(&settings).unwrap();
    assert_eq!(patch.heartbeat_interval, Some(Dur(Duration::from_secs(10))));
    assert_eq!(patch.idle_timeout, Some(Dur(Duration::from_secs(60))));
    assert_eq!(patch.max_room_members, Some(4));
    assert_eq!(patch.rate_limit, Some(20));
    assert_eq!(patch.max_connections, Some(1000));
    assert_eq!(patch.invite_timeout, None, "unsent settings stay unset");
}

#[test]
fn remote_layer_sits_between_file_and_flags() {
    let handle = ConfigHandle::load(
        SettingsPatch {
            rate_burst: Some(5),
            ..args()
        },
        None,
    )
    .unwrap();
    handle
        .set_remote(Some(SettingsPatch {
            rate_burst: Some(50),
            max_rooms: Some(10),
            ..Default::default()
        }))
        .unwrap();
    let s = handle.current();
    assert_eq!((s.tunables.rate_burst, s.tunables.max_rooms), (5, 10));
    assert!(
        handle
            .set_remote(Some(SettingsPatch {
                max_rooms: Some(0),
                ..Default::default()
            }))
            .is_err()
    );
    assert_eq!(handle.current().tunables.max_rooms, 10);
}

#[test]
fn a_secret_file_beside_a_keys_dir_may_be_absent_and_alone_may_not() {
    let dir = std::env::temp_dir().join(format!("sb-config-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // "a-key-of-32-bytes-for-the-tests!" in URL-safe base64 without padding.
    std::fs::write(
        dir.join(KEYS_DIR_JWKS),
        r#"{"keys":[{"kty":"oct","alg":"HS256","kid":"k1","k":"YS1rZXktb2YtMzItYnl0ZXMtZm9yLXRoZS10ZXN0cyE"}]}"#,
    )
    .unwrap();
    let missing = dir.join(KEYS_DIR_SECRET);
    let beside = SettingsPatch {
        jwt_secret_file: Some(missing.clone()),
        jwt_keys_dir: Some(dir.clone()),
        ..Default::default()
    };
    assert!(Settings::resolve(&beside).is_ok());
    let alone = SettingsPatch {
        jwt_secret_file: Some(missing),
        ..Default::default()
    };
    assert!(matches!(
        Settings::resolve(&alone),
        Err(ConfigError::Read { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn webtransport_listen_needs_tls_and_the_feature() {
    let wt = SettingsPatch {
        webtransport_listen: Some("127.0.0.1:7443".parse().unwrap()),
        ..args()
    };
    assert!(matches!(
        Settings::resolve(&wt),
        Err(ConfigError::Invalid {
            field: "webtransport_listen",
            ..
        })
    ));
    let with_tls = SettingsPatch {
        tls_cert: Some("node.crt".into()),
        tls_key: Some("node.key".into()),
        ..wt
    };
    let resolved = Settings::resolve(&with_tls);
    if cfg!(feature = "webtransport") {
        let s = resolved.unwrap();
        assert_eq!(
            s.webtransport_listen,
            Some("127.0.0.1:7443".parse().unwrap())
        );
    } else {
        assert!(matches!(
            resolved,
            Err(ConfigError::Invalid {
                field: "webtransport_listen",
                ..
            })
        ));
    }
    assert_eq!(
        Settings::resolve(&args()).unwrap().webtransport_listen,
        None
    );
}

#[test]
fn key_files_name_each_file_once() {
    let dir = std::path::PathBuf::from("/etc/switchboard/keys");
    let secret = dir.join(KEYS_DIR_SECRET);
    assert_eq!(
        key_files(Some(&secret), Some(&dir)),
        vec![secret.clone(), dir.join(KEYS_DIR_JWKS)]
    );
    let other = std::path::PathBuf::from("/run/secret");
    assert_eq!(key_files(Some(&other), None), vec![other]);
    assert_eq!(key_files(None, Some(&dir)).len(), 2);
}

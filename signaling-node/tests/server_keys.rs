//! Join-token keys on a real node over real sockets: a key set in a directory laid out like the
//! mounted auth Secret (`keys.json`), key rotation by rewriting it while the node runs, the
//! clock-skew leeway, and the clear answers for an unknown `kid` and an expired key.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::Client;
use signaling_node::config::{ConfigHandle, SettingsPatch};
use switchboard_protocol::auth::{self, Claims, JwtSecret, RoomGrant};
use switchboard_protocol::{ErrorCode, Hello, Message};

fn key_set(keys: &[(&str, &[u8], Option<u64>)]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(kid, k, exp)| {
            serde_json::json!({"kty": "oct", "alg": "HS256", "kid": kid,
                "k": URL_SAFE_NO_PAD.encode(k), "exp": exp})
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn signed(key: &[u8], kid: &str, claims: &Claims) -> String {
    auth::mint_with_kid(&JwtSecret::new(key.to_vec()).unwrap(), Some(kid), claims)
}

/// Hello with `token`: the Welcome's session, or the error frame's code and message.
async fn hello(addr: std::net::SocketAddr, token: String) -> Result<String, (u16, String)> {
    let mut c = Client::connect(addr, &["switchboard.v2"]).await;
    c.send(&Message::Hello(Hello {
        token,
        versions: vec![2],
        resume: None,
    }))
    .await;
    match c.recv().await {
        Message::Welcome(w) => Ok(w.session),
        Message::Error(e) => Err((e.code, e.message)),
        other => panic!("unexpected answer to Hello: {other:?}"),
    }
}

#[tokio::test]
async fn keys_rotate_on_a_running_node_with_clear_answers() {
    let dir = std::env::temp_dir().join(format!("sb-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.json");
    let now = auth::unix_now();
    std::fs::write(&keys, key_set(&[("k1", b"first-key", None)])).unwrap();
    let config = ConfigHandle::load(
        SettingsPatch {
            jwt_keys_dir: Some(dir.clone()),
            jwt_leeway: Some("30s".parse().unwrap()),
            node_name: Some("keys-node".into()),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let (listeners, addr, node, metrics) = common::unstarted_node(&config).await;
    tokio::spawn(config.clone().watch_files(
        Duration::from_millis(20),
        metrics.clone(),
        std::future::pending(),
    ));
    tokio::spawn(node.serve(listeners, std::future::pending()));

    let claims = Claims::new("alice", RoomGrant::Any, now, 600);
    assert!(
        hello(addr, signed(b"first-key", "k1", &claims))
            .await
            .is_ok()
    );
    let (code, message) = hello(addr, signed(b"second-key", "k2", &claims))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::AuthFailed.code());
    assert!(
        message.contains("unknown token key id \"k2\" (the node has k1)"),
        "{message}"
    );

    // Rotation step 1: k2 added, k1 retired from a moment in the past. No restart.
    std::fs::write(
        &keys,
        key_set(&[
            ("k1", b"first-key", Some(now - 1)),
            ("k2", b"second-key", None),
        ]),
    )
    .unwrap();
    let mut rotated = false;
    for _ in 0..250 {
        if hello(addr, signed(b"second-key", "k2", &claims))
            .await
            .is_ok()
        {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rotated, "the node did not pick up the rewritten keys.json");
    let (code, message) = hello(addr, signed(b"first-key", "k1", &claims))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::AuthFailed.code());
    assert!(message.contains("token key \"k1\" expired at"), "{message}");

    // The leeway: 20 s past exp is accepted, 40 s is not, and says so.
    let late = Claims::new("bob", RoomGrant::Any, now - 620, 600);
    assert!(
        hello(addr, signed(b"second-key", "k2", &late))
            .await
            .is_ok()
    );
    let later = Claims::new("bob", RoomGrant::Any, now - 640, 600);
    let (_, message) = hello(addr, signed(b"second-key", "k2", &later))
        .await
        .unwrap_err();
    assert!(message.contains("leeway 30 s"), "{message}");

    // A broken key set keeps the last good keys (and is counted).
    std::fs::write(&keys, "{not json").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        hello(addr, signed(b"second-key", "k2", &claims))
            .await
            .is_ok()
    );
    let text = metrics.render();
    assert!(
        text.contains("switchboard_config_reload_errors_total"),
        "reload errors are counted"
    );
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("switchboard_handshake_failures_total"))
        .collect();
    assert!(
        failures.iter().any(|l| l.contains("unknown_kid"))
            && failures.iter().any(|l| l.contains("key_expired")),
        "{failures:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

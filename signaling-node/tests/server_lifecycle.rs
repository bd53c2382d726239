//! Server integration tests over real sockets for connection lifecycles: slow consumers,
//! heartbeats and idle eviction, the connection limit, resume with replay, takeover of a
//! shard by another node, drain, hot reload of the settings file, and TLS.
//!
//! Timing-based behaviour (heartbeat, idle eviction, resume window) uses real time with small
//! settings: tokio's paused time auto-advances while sockets wait, which would fire every
//! timeout at once. The same timers are tested on paused time in `room_actor.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use signaling_node::config::{ConfigHandle, SettingsPatch};
use signaling_node::store::{MemoryStore, RoomStore};
use switchboard_protocol::{
    ErrorCode, EventKind, IceCandidate, Invite, InviteResult, Join, Message, Sdp,
};
use switchboard_testkit::{Pki, TempDir, eventually};

fn invite(room: &str, call: &str, to: &str) -> Message {
    Message::Invite(Invite {
        request_id: 1,
        room: room.into(),
        call_id: call.into(),
        from: String::new(),
        to: to.into(),
    })
}

fn accept(room: &str, call: &str) -> Message {
    Message::InviteResult(InviteResult {
        request_id: 2,
        room: room.into(),
        call_id: call.into(),
        accepted: true,
        ..Default::default()
    })
}

fn offer(room: &str, call: &str) -> Message {
    Message::Offer(Sdp {
        request_id: 3,
        room: room.into(),
        call_id: call.into(),
        sdp: SDP.into(),
        ..Default::default()
    })
}

fn candidate(room: &str, call: &str, text: String) -> Message {
    Message::IceCandidate(IceCandidate {
        room: room.into(),
        call_id: call.into(),
        candidate: text,
        ..Default::default()
    })
}

/// alice and bob in `room` with call c1 in Negotiating; returns their last seen seqs.
async fn negotiating_pair(node: &TestNode, room: &str) -> (Client, Client, u64) {
    let mut alice = node.client("alice", &[room]).await;
    let mut bob = node.client("bob", &[room]).await;
    alice.join(room, 1).await;
    bob.join(room, 1).await;
    alice
        .expect_member_event(EventKind::MemberJoined, "bob")
        .await;
    alice.send(&invite(room, "c1", "bob")).await;
    bob.recv_until(|m| matches!(m, Message::Invite(_)).then_some(()))
        .await;
    bob.send(&accept(room, "c1")).await;
    let seq = bob
        .recv_until(|m| match m {
            Message::Event(e) if e.state == "negotiating" => Some(e.seq),
            _ => None,
        })
        .await;
    alice
        .recv_until(|m| matches!(m, Message::Event(e) if e.state == "negotiating").then_some(()))
        .await;
    (alice, bob, seq)
}

#[tokio::test]
async fn slow_consumer_is_disconnected_and_others_keep_working() {
    let node = TestNode::start(|t| {
        t.outbound_queue = 8;
        t.rate_limit = 100_000;
        t.rate_burst = 100_000;
    })
    .await;
    let (mut alice, bob, _) = negotiating_pair(&node, "r").await;
    let mut bystander = node.client("carol", &["*"]).await;
    // bob stops reading; alice sends ~60 KiB candidates until bob's socket buffers and
    // queue are full.
    let big = "a".repeat(60_000);
    for _ in 0..600 {
        alice.send(&candidate("r", "c1", big.clone())).await;
        if node.metric("switchboard_slow_consumer_disconnects_total") >= 1.0 {
            break;
        }
    }
    eventually("slow consumer disconnect", || async {
        node.metric("switchboard_slow_consumer_disconnects_total") == 1.0
    })
    .await;
    assert!(node.metric("switchboard_queue_drops_total") >= 1.0);
    drop(bob);
    // alice learns bob's connection is gone (suspended), and everyone else still works.
    alice
        .recv_until(|m| {
            matches!(m, Message::Event(e) if e.kind == EventKind::MemberSuspended).then_some(())
        })
        .await;
    alice.ping(1).await;
    bystander.ping(2).await;
}

#[tokio::test]
async fn heartbeats_keep_a_live_client_and_silence_is_evicted() {
    let node = TestNode::start(|t| {
        t.heartbeat_interval = Duration::from_millis(100);
        t.idle_timeout = Duration::from_millis(1000);
    })
    .await;
    // A client that says nothing after Hello is evicted...
    let mut silent = Client::connect(node.addr, &["switchboard.v2"]).await;
    silent.auto_pong = false;
    silent.hello(&token("silent", &["*"]), None).await;
    let silent = tokio::spawn(async move { silent.expect_close().await });
    // ...while one that answers the server's Pings stays connected well past the timeout.
    let mut live = Client::connect(node.addr, &["switchboard.v2"]).await;
    live.auto_pong = false;
    let w = live.hello(&token("live", &["*"]), None).await;
    assert_eq!(w.heartbeat_ms, 100);
    let mut pings = 0;
    while pings < 15 {
        if let Message::Ping(p) = live.recv().await {
            pings += 1;
            live.send(&Message::Pong(switchboard_protocol::Pong {
                nonce: p.nonce,
            }))
            .await;
        }
    }
    assert_eq!(silent.await.unwrap(), Some(1000));
    assert!(node.metric("switchboard_disconnects_total{reason=\"idle\"}") >= 1.0);
    live.ping(1).await;
}

#[tokio::test]
async fn over_the_connection_limit_closes_1013_overloaded() {
    let node = TestNode::start(|t| t.max_connections = 1).await;
    let mut first = node.client("a", &["*"]).await;
    let mut second = Client::connect(node.addr, &["switchboard.v2"]).await;
    assert_eq!(second.expect_close().await, Some(1013));
    first.ping(1).await;
    // The limit is hot-reloadable.
    let mut t = node.config.current().tunables.clone();
    t.max_connections = 2;
    node.config.set_tunables(t);
    let mut third = node.client("c", &["*"]).await;
    third.ping(2).await;
}

#[tokio::test]
async fn resume_replays_missed_events_and_restarts_negotiation() {
    let node = TestNode::start(|_| {}).await;
    let (mut alice, bob, seen) = negotiating_pair(&node, "r").await;
    let session = bob.session();
    drop(bob); // connection dropped without a close
    alice
        .expect_member_event(EventKind::MemberSuspended, "bob")
        .await;
    let mut carol = node.client("carol", &["r"]).await;
    carol.join("r", 1).await;
    alice
        .expect_member_event(EventKind::MemberJoined, "carol")
        .await;

    let mut bob = Client::connect(node.addr, &["switchboard.v1"]).await;
    let w = bob
        .hello(&token("bob", &["r"]), Some((session.clone(), seen)))
        .await;
    assert!(w.resumed);
    assert_eq!(w.session, session);
    let replay: Vec<(u64, EventKind, String)> = {
        let mut v = Vec::new();
        while v.len() < 4 {
            let e = bob.expect_event().await;
            v.push((e.seq, e.kind, e.state));
        }
        v
    };
    assert_eq!(
        replay,
        vec![
            (seen + 1, EventKind::MemberSuspended, String::new()),
            (seen + 2, EventKind::MemberJoined, String::new()),
            (seen + 3, EventKind::MemberResumed, String::new()),
            (seen + 4, EventKind::CallState, "negotiating".into()),
        ]
    );
    alice
        .expect_member_event(EventKind::MemberResumed, "bob")
        .await;
    alice.expect_call_state("c1", "negotiating").await;
    // Negotiation restarts: a new offer goes through to the resumed (v1) session.
    alice.send(&offer("r", "c1")).await;
    assert!(matches!(bob.recv().await, Message::Offer(o) if o.from == "alice"));
    assert!(node.metric("switchboard_resumes_total{outcome=\"resumed\"}") >= 1.0);

    // Resuming someone else's session is refused.
    let mut eve = Client::connect(node.addr, &["switchboard.v2"]).await;
    eve.send(&Message::Hello(switchboard_protocol::Hello {
        token: token("eve", &["*"]),
        versions: vec![],
        resume: Some(switchboard_protocol::Resume {
            session,
            last_seq: 0,
        }),
    }))
    .await;
    assert_eq!(eve.expect_error().await.code, ErrorCode::AuthFailed.code());
    assert_eq!(eve.expect_close().await, Some(1008));
}

#[tokio::test]
async fn expired_resume_window_is_peer_lost_and_a_late_resume_starts_fresh() {
    let node = TestNode::start(|t| t.resume_window = Duration::from_millis(300)).await;
    let (mut alice, bob, seen) = negotiating_pair(&node, "r").await;
    let session = bob.session();
    drop(bob);
    alice
        .expect_member_event(EventKind::MemberSuspended, "bob")
        .await;
    alice.expect_call_state("c1", "failed").await;
    alice
        .expect_member_event(EventKind::MemberLeft, "bob")
        .await;
    let mut bob = Client::connect(node.addr, &["switchboard.v2"]).await;
    let w = bob
        .hello(&token("bob", &["r"]), Some((session.clone(), seen)))
        .await;
    assert!(!w.resumed);
    assert_ne!(w.session, session);
}

#[tokio::test]
async fn another_node_takes_the_shard_over_and_sessions_resume_there() {
    let store = Arc::new(MemoryStore::new());
    let mut a = TestNode::start_with(settings(|_| {}), store.clone()).await;
    let (mut alice, mut bob, _) = negotiating_pair(&a, "r").await;
    // Finish negotiation on node A: the call is Connected.
    alice.send(&offer("r", "c1")).await;
    bob.recv().await;
    bob.send(&Message::Answer(Sdp {
        room: "r".into(),
        call_id: "c1".into(),
        sdp: SDP.into(),
        ..Default::default()
    }))
    .await;
    alice.recv().await;
    alice.send(&candidate("r", "c1", String::new())).await;
    bob.send(&candidate("r", "c1", String::new())).await;
    let seq = alice
        .recv_until(|m| match m {
            Message::Event(e) if e.state == "connected" => Some(e.seq),
            _ => None,
        })
        .await;
    let (alice_session, bob_session) = (alice.session(), bob.session());

    // Node B restores the shard from the shared store (what cluster mode does on failover),
    // while A goes away.
    let b = TestNode::start_with(settings(|_| {}), store.clone()).await;
    let shard = b.registry().shard_of("r");
    let snapshots = store.load_shard(shard).await.unwrap();
    a.begin_shutdown();
    assert_eq!(
        b.registry().restore_shard(shard, snapshots).await.unwrap(),
        1
    );
    drop((alice, bob));

    let mut alice = Client::connect(b.addr, &["switchboard.v2"]).await;
    let w = alice
        .hello(&token("alice", &["r"]), Some((alice_session, seq)))
        .await;
    assert!(w.resumed);
    alice
        .expect_member_event(EventKind::MemberResumed, "alice")
        .await;
    let mut bob = Client::connect(b.addr, &["switchboard.v2"]).await;
    assert!(
        bob.hello(&token("bob", &["r"]), Some((bob_session, seq)))
            .await
            .resumed
    );
    bob.recv_until(|m| {
        matches!(m, Message::Event(e) if e.kind == EventKind::MemberResumed && e.user == "bob")
            .then_some(())
    })
    .await;
    alice
        .expect_member_event(EventKind::MemberResumed, "bob")
        .await;
    // The connected call survived the takeover and still relays.
    let info = b.registry().room("r").unwrap().inspect().await.unwrap();
    assert_eq!(info.calls[0].state.name(), "connected");
    alice.send(&offer("r", "c1")).await;
    assert!(matches!(bob.recv().await, Message::Offer(_)));
}

#[tokio::test]
async fn drain_migrates_room_members_and_closes_1001() {
    let mut node = TestNode::start(|_| {}).await;
    let mut alice = node.client("alice", &["r"]).await;
    alice.join("r", 1).await;
    let mut idle = node.client("idle", &["*"]).await;
    assert_eq!(node.http_get("/readyz").await.0, 200);
    assert_eq!(node.http_get("/healthz").await.0, 200);
    let (status, body) = node.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("switchboard_connections 2"), "{body}");

    let serving = node.begin_shutdown();
    let Message::Migrate(m) = alice.recv().await else {
        panic!("room members get Migrate")
    };
    assert_eq!((m.room.as_str(), m.url.as_str()), ("r", ""));
    assert_eq!(m.resume_token, alice.session());
    assert_eq!(alice.expect_close().await, Some(1001));
    assert_eq!(idle.expect_close().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("drain finishes within its deadline")
        .unwrap();
    assert!(!node.node.health().is_ready());
    assert!(
        tokio::net::TcpStream::connect(node.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn drain_rejects_joins_while_in_progress() {
    let node = TestNode::start(|_| {}).await;
    let mut c = node.client("late", &["*"]).await;
    node.node.health().set_draining();
    c.send(&Message::Join(Join {
        request_id: 3,
        room: "r".into(),
    }))
    .await;
    let err = c.expect_error().await;
    assert_eq!((err.code, err.request_id), (ErrorCode::Draining.code(), 3));
    assert_eq!(node.http_get("/readyz").await.0, 503);
    // New sessions are turned away too.
    let mut d = Client::connect(node.addr, &["switchboard.v2"]).await;
    d.send(&Message::Hello(switchboard_protocol::Hello {
        token: token("later", &["*"]),
        versions: vec![],
        resume: None,
    }))
    .await;
    assert_eq!(d.expect_error().await.code, ErrorCode::Draining.code());
    assert_eq!(d.expect_close().await, Some(1013));
}

#[tokio::test]
async fn settings_file_is_hot_reloaded() {
    let dir = std::env::temp_dir().join(format!("sb-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, "max_room_members = 2\n").unwrap();
    let args = SettingsPatch {
        jwt_secret: Some(String::from_utf8(SECRET.to_vec()).unwrap()),
        node_name: Some("reload-node".into()),
        ..Default::default()
    };
    let config = ConfigHandle::load(args, Some(path.clone())).unwrap();
    let (listeners, addr, node, metrics) = common::unstarted_node(&config).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(config.clone().watch_files(
        Duration::from_millis(20),
        metrics.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    tokio::spawn(node.serve(listeners, std::future::pending()));

    let connect = |user: &'static str| async move {
        let mut c = Client::connect(addr, &["switchboard.v2"]).await;
        c.hello(&token(user, &["*"]), None).await;
        c
    };
    let mut a = connect("a").await;
    let mut b = connect("b").await;
    let mut c = connect("c").await;
    a.join("r", 1).await;
    b.join("r", 1).await;
    c.send(&Message::Join(Join {
        request_id: 2,
        room: "r".into(),
    }))
    .await;
    assert_eq!(c.expect_error().await.code, ErrorCode::RoomFull.code());

    std::fs::write(
        &path,
        "max_room_members = 3\nheartbeat_interval = \"20s\"\n",
    )
    .unwrap();
    eventually("reload", || async {
        config.current().tunables.max_room_members == 3
    })
    .await;
    c.join("r", 3).await;

    // An invalid file is reported and the last good settings stay.
    std::fs::write(&path, "max_room_members = \"lots\"\n").unwrap();
    eventually("reload error", || async {
        metrics.config_reload_errors.get() == 1
    })
    .await;
    assert_eq!(config.current().tunables.max_room_members, 3);
    let mut d = connect("d").await;
    assert_eq!(d.welcome.as_ref().unwrap().heartbeat_ms, 20_000);
    d.ping(1).await;
    let _ = stop_tx.send(());
    watcher.await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn serves_wss_with_tls() {
    let dir = TempDir::new("wss").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let mut s = settings(|_| {});
    s.tls = Some(signaling_node::config::TlsFiles {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
    });
    let node = TestNode::start_with(s, Arc::new(MemoryStore::new())).await;

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&pki.ca).unwrap();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("wss://localhost:{}/ws", node.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "switchboard.v2".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    use futures::{SinkExt, StreamExt};
    let mut enc = switchboard_protocol::Encoder::new();
    let hello = Message::Hello(switchboard_protocol::Hello {
        token: token("tls-user", &["*"]),
        versions: vec![2],
        resume: None,
    });
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        enc.encode_to_vec(&hello).unwrap().into(),
    ))
    .await
    .unwrap();
    let reply = ws.next().await.unwrap().unwrap().into_data();
    assert!(matches!(
        switchboard_protocol::decode(&reply).unwrap(),
        Message::Welcome(_)
    ));
    // A plain-text client cannot talk to the TLS listener.
    assert!(
        Client::try_connect(node.addr, &["switchboard.v2"], &[])
            .await
            .is_err()
    );
}

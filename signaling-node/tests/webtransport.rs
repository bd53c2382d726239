//! WebTransport beside WebSocket on a real node with real sockets (QUIC on UDP, TLS over TCP):
//! the same frames, errors and close codes on both transports, a call relayed across them, and
//! sessions resuming from one transport on the other.
#![cfg(feature = "webtransport")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use signaling_node::config::{ConfigHandle, Settings, TlsFiles, Tunables};
use signaling_node::metrics::Metrics;
use signaling_node::routing::{SharedOwnership, Standalone};
use signaling_node::server::{Listeners, Node};
use signaling_node::store::{MemoryStore, RoomStore};
use switchboard_client::ClientError;
use switchboard_client::transport::{self, WsStream};
use switchboard_client::webtransport::{Closed, WtConnection, tls_config};
use switchboard_protocol::auth::{self, Claims, JwtSecret, RoomGrant};
use switchboard_protocol::{
    Encoder, ErrorFrame, Event, EventKind, Hello, Invite, InviteResult, Join, Message, Ping, Pong,
    ProtocolVersion, Resume, Welcome, decode,
};
use switchboard_testkit::{Pki, TempDir};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const SECRET: &[u8] = b"webtransport-test-secret";
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V2, ProtocolVersion::V1];

fn token(user: &str, rooms: &[&str]) -> String {
    let secret = JwtSecret::new(SECRET.to_vec()).unwrap();
    let grant = RoomGrant::Rooms(rooms.iter().map(|r| r.to_string()).collect());
    auth::mint(&secret, &Claims::new(user, grant, auth::unix_now(), 3600))
}

/// A node serving `wss` on TCP and WebTransport on UDP, both on 127.0.0.1 with one
/// certificate.
struct WtNode {
    ws: SocketAddr,
    wt: SocketAddr,
    pki: Pki,
    node: Node,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl WtNode {
    async fn start(tweak: impl FnOnce(&mut Tunables)) -> Self {
        switchboard_testkit::init_tracing();
        let dir = TempDir::new("webtransport").unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        let mut settings = Settings::new(JwtSecret::new(SECRET.to_vec()).unwrap());
        settings.node_name = "wt-node".into();
        settings.drain_timeout = Duration::from_secs(5);
        settings.tls = Some(TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        });
        tweak(&mut settings.tunables);
        let mut listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        listeners
            .bind_webtransport("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let ws = listeners.ws.local_addr().unwrap();
        let wt = listeners
            .webtransport
            .as_ref()
            .unwrap()
            .local_addr()
            .unwrap();
        let ownership: SharedOwnership = Arc::new(Standalone {
            shard_count: settings.shard_count,
        });
        let store: Arc<dyn RoomStore> = Arc::new(MemoryStore::new());
        let config = ConfigHandle::fixed(settings);
        let node = Node::new(config.subscribe(), store, ownership, Metrics::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = node.clone();
        tokio::spawn(async move {
            serving
                .serve(listeners, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            ws,
            wt,
            pki,
            node,
            _dir: dir,
            stop: Some(stop),
        }
    }

    async fn websocket(&self) -> Conn {
        let endpoint =
            transport::Endpoint::parse(&format!("wss://localhost:{}/ws", self.ws.port())).unwrap();
        let connector = transport::tls_connector(&self.pki.ca).unwrap();
        let (ws, picked) =
            transport::open(&endpoint, &VERSIONS, Some(&connector), RECV_TIMEOUT, None)
                .await
                .unwrap();
        assert_eq!(picked, Some(ProtocolVersion::V2));
        Conn::Ws(Box::new(ws), Encoder::new())
    }

    async fn webtransport(&self) -> Conn {
        Conn::Wt(Box::new(self.webtransport_raw().await))
    }

    async fn webtransport_raw(&self) -> WtConnection {
        self.try_webtransport("/ws", &VERSIONS).await.unwrap()
    }

    async fn try_webtransport(
        &self,
        path: &str,
        versions: &[ProtocolVersion],
    ) -> Result<WtConnection, ClientError> {
        WtConnection::connect(
            &format!("https://localhost:{}{path}", self.wt.port()),
            versions,
            tls_config(&self.pki.ca).unwrap(),
            RECV_TIMEOUT,
            None,
        )
        .await
    }

    /// Starts the drain (the serve future's shutdown resolves).
    fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    fn metric(&self, prefix: &str) -> f64 {
        self.node
            .metrics()
            .render()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for WtNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a client saw next.
#[derive(Debug, PartialEq)]
enum Got {
    Msg(Message),
    /// The connection ended, with the node's close code if it gave one.
    Closed(Option<u64>),
}

/// One client connection over either transport, speaking the same frames.
enum Conn {
    Ws(Box<WsStream>, Encoder),
    Wt(Box<WtConnection>),
}

impl Conn {
    async fn send_raw(&mut self, bytes: Vec<u8>) {
        match self {
            Conn::Ws(ws, _) => ws.send(WsMessage::Binary(bytes.into())).await.unwrap(),
            Conn::Wt(wt) => wt.send_raw(&bytes).await.unwrap(),
        }
    }

    async fn send(&mut self, msg: &Message) {
        let bytes = match self {
            Conn::Ws(_, encoder) => encoder.encode_to_vec(msg).unwrap(),
            Conn::Wt(_) => Encoder::new().encode_to_vec(msg).unwrap(),
        };
        self.send_raw(bytes).await;
    }

    /// The next protocol message (the node's heartbeat Pings answered and skipped) or the end.
    async fn next(&mut self) -> Got {
        loop {
            let got = tokio::time::timeout(RECV_TIMEOUT, self.next_raw())
                .await
                .expect("timed out waiting for the node");
            if let Got::Msg(Message::Ping(p)) = &got {
                self.send(&Message::Pong(Pong { nonce: p.nonce })).await;
                continue;
            }
            return got;
        }
    }

    async fn next_raw(&mut self) -> Got {
        match self {
            Conn::Ws(ws, _) => loop {
                match ws.next().await {
                    None | Some(Err(_)) => return Got::Closed(None),
                    Some(Ok(WsMessage::Binary(b))) => {
                        return Got::Msg(decode(&b).expect("a valid frame"));
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        return Got::Closed(frame.map(|f| u64::from(u16::from(f.code))));
                    }
                    Some(Ok(_)) => continue,
                }
            },
            Conn::Wt(wt) => match wt.recv().await {
                Ok(Some(msg)) => Got::Msg(msg),
                Ok(None) | Err(_) => match wt.closed().await {
                    Closed::ByNode { code, .. } => Got::Closed(Some(code)),
                    Closed::Other(_) => Got::Closed(None),
                },
            },
        }
    }

    async fn recv(&mut self) -> Message {
        match self.next().await {
            Got::Msg(m) => m,
            Got::Closed(code) => panic!("closed ({code:?}) while expecting a message"),
        }
    }

    async fn expect_error(&mut self) -> ErrorFrame {
        match self.recv().await {
            Message::Error(e) => e,
            other => panic!("expected an Error frame, got {other:?}"),
        }
    }

    async fn expect_event(&mut self) -> Event {
        match self.recv().await {
            Message::Event(e) => e,
            other => panic!("expected an Event, got {other:?}"),
        }
    }

    /// The close code, after no other message.
    async fn expect_close(&mut self) -> Option<u64> {
        match self.next().await {
            Got::Closed(code) => code,
            Got::Msg(m) => panic!("expected the close, got {m:?}"),
        }
    }

    async fn hello(&mut self, token: &str, resume: Option<(String, u64)>) -> Welcome {
        self.send(&Message::Hello(Hello {
            token: token.into(),
            versions: vec![],
            resume: resume.map(|(session, last_seq)| Resume { session, last_seq }),
        }))
        .await;
        match self.recv().await {
            Message::Welcome(w) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn join(&mut self, room: &str, request_id: u32) -> u64 {
        self.send(&Message::Join(Join {
            request_id,
            room: room.into(),
        }))
        .await;
        match self.recv().await {
            Message::Joined(j) => {
                assert_eq!(j.request_id, request_id);
                j.last_seq
            }
            other => panic!("expected Joined, got {other:?}"),
        }
    }

    /// Round-trips a Ping (room events before the Pong are skipped).
    async fn ping(&mut self, nonce: u64) {
        self.send(&Message::Ping(Ping { nonce })).await;
        loop {
            match self.recv().await {
                Message::Pong(p) => return assert_eq!(p.nonce, nonce),
                Message::Event(_) => continue,
                other => panic!("expected Pong, got {other:?}"),
            }
        }
    }
}

/// Asserts `e` is the member event `kind` about `user`; returns its seq.
fn member_event(e: &Event, kind: EventKind, user: &str) -> u64 {
    assert_eq!((e.kind, e.user.as_str()), (kind, user), "{e:?}");
    e.seq
}

/// A Hello with its CRC broken (the last byte flipped).
fn hello_with_bad_crc() -> Vec<u8> {
    let mut frame = Encoder::new()
        .encode_to_vec(&Message::Hello(Hello {
            token: token("alice", &["studio"]),
            versions: vec![],
            resume: None,
        }))
        .unwrap();
    if let Some(last) = frame.last_mut() {
        *last ^= 0xFF;
    }
    frame
}

#[tokio::test]
async fn a_call_crosses_transports_and_sessions_resume_on_the_other_transport() {
    let node = WtNode::start(|_| {}).await;

    // Bob on WebSocket, Alice on WebTransport, in one room.
    let mut bob = node.websocket().await;
    let bob_welcome = bob.hello(&token("bob", &["studio"]), None).await;
    bob.join("studio", 1).await;
    let mut alice = node.webtransport().await;
    let alice_welcome = alice.hello(&token("alice", &["studio"]), None).await;
    assert_eq!(
        alice_welcome.version, 2,
        "v2 negotiated in the session request"
    );
    assert!(!alice_welcome.resumed);
    alice.join("studio", 1).await;
    let e = bob.expect_event().await;
    member_event(&e, EventKind::MemberJoined, "alice");

    // Alice invites Bob over WebTransport; the Invite reaches Bob's WebSocket, his answer
    // reaches her stream.
    alice
        .send(&Message::Invite(Invite {
            request_id: 2,
            room: "studio".into(),
            call_id: "c1".into(),
            from: "forged".into(),
            to: "bob".into(),
        }))
        .await;
    let invite = loop {
        match bob.recv().await {
            Message::Invite(i) => break i,
            Message::Event(_) => continue,
            other => panic!("expected the Invite, got {other:?}"),
        }
    };
    assert_eq!(
        (invite.from.as_str(), invite.call_id.as_str()),
        ("alice", "c1")
    );
    bob.send(&Message::InviteResult(InviteResult {
        request_id: 2,
        room: "studio".into(),
        call_id: "c1".into(),
        from: String::new(),
        to: "alice".into(),
        accepted: true,
        reason: String::new(),
    }))
    .await;
    let answer = loop {
        match alice.recv().await {
            Message::InviteResult(r) => break r,
            Message::Event(_) => continue,
            other => panic!("expected the InviteResult, got {other:?}"),
        }
    };
    assert!(answer.accepted);
    assert_eq!(answer.from, "bob");
    // Both see the call negotiating; remember the last seq each has seen.
    let mut bob_seq = 0;
    loop {
        let e = bob.expect_event().await;
        bob_seq = bob_seq.max(e.seq);
        if e.kind == EventKind::CallState && e.state == "negotiating" {
            break;
        }
    }
    let mut alice_seq = 0;
    loop {
        let e = alice.expect_event().await;
        alice_seq = alice_seq.max(e.seq);
        if e.kind == EventKind::CallState && e.state == "negotiating" {
            break;
        }
    }

    // Bob's WebSocket drops; he resumes the same session over WebTransport.
    drop(bob);
    let e = alice.expect_event().await;
    member_event(&e, EventKind::MemberSuspended, "bob");
    alice_seq = e.seq;
    let mut bob = node.webtransport().await;
    let resumed = bob
        .hello(
            &token("bob", &["studio"]),
            Some((bob_welcome.session.clone(), bob_seq)),
        )
        .await;
    assert!(resumed.resumed, "{resumed:?}");
    assert_eq!(resumed.session, bob_welcome.session);
    let e = alice.expect_event().await;
    member_event(&e, EventKind::MemberResumed, "bob");
    alice_seq = alice_seq.max(e.seq);
    // Bob gets the events he missed, his own suspension first, then his resumption.
    let e = bob.expect_event().await;
    member_event(&e, EventKind::MemberSuspended, "bob");
    assert!(e.seq > bob_seq);
    let e = bob.expect_event().await;
    member_event(&e, EventKind::MemberResumed, "bob");
    bob.ping(1).await;

    // Alice's WebTransport session ends; she resumes over WebSocket.
    drop(alice);
    let mut alice = node.websocket().await;
    let resumed = alice
        .hello(
            &token("alice", &["studio"]),
            Some((alice_welcome.session.clone(), alice_seq)),
        )
        .await;
    assert!(resumed.resumed, "{resumed:?}");
    assert_eq!(resumed.session, alice_welcome.session);
    // Her suspension and resumption reach Bob on his WebTransport stream.
    let e = bob.expect_event().await;
    member_event(&e, EventKind::MemberSuspended, "alice");
    let e = loop {
        let e = bob.expect_event().await;
        if e.kind != EventKind::CallState {
            break e;
        }
    };
    member_event(&e, EventKind::MemberResumed, "alice");
    alice.ping(2).await;
}

#[tokio::test]
async fn a_stream_without_hello_is_refused_as_on_websocket() {
    let node = WtNode::start(|t| t.hello_timeout = Duration::from_millis(300)).await;
    for mut conn in [node.websocket().await, node.webtransport().await] {
        let e = conn.expect_error().await;
        assert_eq!((e.code, e.request_id), (1002, 0), "{e:?}");
        assert_eq!(conn.expect_close().await, Some(1008));
    }
}

#[tokio::test]
async fn a_bad_crc_is_error_1008_and_the_stream_stays_usable() {
    let node = WtNode::start(|_| {}).await;
    for mut conn in [node.websocket().await, node.webtransport().await] {
        conn.send_raw(hello_with_bad_crc()).await;
        let e = conn.expect_error().await;
        assert_eq!((e.code, e.request_id), (1008, 0), "{e:?}");
        assert!(
            e.message.contains("crc") || e.message.contains("CRC"),
            "{e:?}"
        );
        // The frames after it are read in step.
        conn.hello(&token("alice", &["studio"]), None).await;
        conn.ping(7).await;
    }
}

#[tokio::test]
async fn a_length_above_the_limit_is_error_1008_then_close_1009() {
    let node = WtNode::start(|_| {}).await;
    let mut wt = node.webtransport().await;
    wt.hello(&token("alice", &["studio"]), None).await;
    // Only the prefix of a frame announcing 65,537 bytes: refused before any of it arrives.
    wt.send_raw(65_537u32.to_be_bytes().to_vec()).await;
    let e = wt.expect_error().await;
    assert_eq!((e.code, e.request_id), (1008, 0), "{e:?}");
    assert_eq!(wt.expect_close().await, Some(1009));
}

#[tokio::test]
async fn datagrams_are_dropped_and_the_session_is_unaffected() {
    let node = WtNode::start(|_| {}).await;
    let wt = node.webtransport_raw().await;
    // Far more than the node buffers: it reads none, QUIC drops them.
    let junk = vec![0xA5u8; 512];
    for _ in 0..2_000 {
        wt.send_datagram(&junk).unwrap();
    }
    let mut wt = Conn::Wt(Box::new(wt));
    wt.hello(&token("alice", &["studio"]), None).await;
    wt.join("studio", 1).await;
    wt.ping(3).await;
    assert_eq!(node.metric("switchboard_connections "), 1.0);
    // The client ends its stream: gone, as a WebSocket client closing (close 1000 back).
    let Conn::Wt(stream) = &mut wt else {
        unreachable!()
    };
    stream.finish().await.unwrap();
    assert_eq!(wt.expect_close().await, Some(1000));
    switchboard_testkit::eventually("the session's slot is given back", || async {
        node.metric("switchboard_connections ") == 0.0
    })
    .await;
}

#[tokio::test]
async fn session_requests_are_refused_like_upgrades() {
    let node = WtNode::start(|_| {}).await;
    let refused = |r: Result<WtConnection, ClientError>| match r {
        Err(ClientError::WebTransport(e)) => assert!(e.contains("rejected"), "{e}"),
        Err(other) => panic!("expected a refused session, got {other}"),
        Ok(_) => panic!("expected a refused session, got one"),
    };
    refused(node.try_webtransport("/nope", &VERSIONS).await);
    assert_eq!(
        node.metric("switchboard_handshake_failures_total{reason=\"path\"}"),
        1.0
    );
    refused(node.try_webtransport("/ws", &[]).await);
    assert_eq!(
        node.metric("switchboard_handshake_failures_total{reason=\"version\"}"),
        1.0
    );
    // Two connections allowed, one of them held by the WebSocket listener waiting in accept
    // (each listener takes its slot before accepting): a second session is told 429 while
    // the first is served.
    let node = WtNode::start(|t| t.max_connections = 2).await;
    let mut first = node.webtransport().await;
    first.hello(&token("alice", &["studio"]), None).await;
    refused(node.try_webtransport("/ws", &VERSIONS).await);
    assert_eq!(
        node.metric("switchboard_disconnects_total{reason=\"overloaded\"}"),
        1.0
    );
    first.ping(1).await;
    drop(first);
    switchboard_testkit::eventually("the slot is free again", || async {
        node.try_webtransport("/ws", &VERSIONS).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn a_drain_migrates_webtransport_members_and_closes_1001() {
    let mut node = WtNode::start(|_| {}).await;
    let mut alice = node.webtransport().await;
    let welcome = alice.hello(&token("alice", &["studio"]), None).await;
    alice.join("studio", 1).await;
    node.begin_shutdown();
    let migrate = loop {
        match alice.recv().await {
            Message::Migrate(m) => break m,
            Message::Event(_) => continue,
            other => panic!("expected Migrate, got {other:?}"),
        }
    };
    assert_eq!(
        (migrate.url.as_str(), migrate.resume_token.as_str()),
        ("", welcome.session.as_str())
    );
    assert_eq!(alice.expect_close().await, Some(1001));
}

//! The Rust client's choice of transport against real nodes and real sockets: WebTransport
//! first when a node serves it, WebSocket within the deadline when its UDP port is closed or
//! drops everything, and a session that follows a redirect or resumes from one transport
//! onto the other.
#![cfg(feature = "webtransport")]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signaling_node::config::{ConfigHandle, Settings, TlsFiles};
use signaling_node::metrics::Metrics;
use signaling_node::routing::{Ownership, OwnershipView, SharedOwnership, Standalone};
use signaling_node::server::{Listeners, Node};
use signaling_node::store::{MemoryStore, RoomStore};
use switchboard_client::{Client, ConnectOptions, TransportKind, WebTransportOptions};
use switchboard_contract::shard::ShardId;
use switchboard_protocol::auth::{self, Claims, JwtSecret, RoomGrant};
use switchboard_protocol::{Message, Resume};
use switchboard_testkit::{Pki, TempDir};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

const SECRET: &[u8] = b"webtransport-client-test-secret";
const WAIT: Duration = Duration::from_secs(10);
/// The WebTransport deadline the tests give the client.
const DEADLINE: Duration = Duration::from_millis(800);

fn token(user: &str) -> String {
    let secret = JwtSecret::new(SECRET.to_vec()).unwrap();
    let grant = RoomGrant::Rooms(vec!["studio".into()]);
    auth::mint(&secret, &Claims::new(user, grant, auth::unix_now(), 3600))
}

/// Every room here, or every room at `url` once set: a node that redirects on demand.
#[derive(Default)]
struct Switchable {
    remote: Mutex<Option<String>>,
}

impl OwnershipView for Switchable {
    fn owner_of(&self, _shard: ShardId) -> Ownership {
        match self.remote.lock().unwrap().clone() {
            Some(url) => Ownership::Remote { url },
            None => Ownership::Local { epoch: 0 },
        }
    }

    fn shard_count(&self) -> u32 {
        Settings::new(JwtSecret::new(SECRET.to_vec()).unwrap()).shard_count
    }
}

/// A standalone node serving `wss` on TCP and, when asked, WebTransport on the UDP port of
/// the same number (the client's default WebTransport port).
struct TestNode {
    port: u16,
    metrics: Metrics,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestNode {
    async fn start(pki: &Pki, webtransport: bool, ownership: SharedOwnership) -> Self {
        switchboard_testkit::init_tracing();
        let dir = TempDir::new("wt-client").unwrap();
        let mut settings = Settings::new(JwtSecret::new(SECRET.to_vec()).unwrap());
        settings.node_name = "wt-client-node".into();
        settings.drain_timeout = Duration::from_secs(2);
        settings.tunables.heartbeat_interval = Duration::from_millis(500);
        settings.tls = Some(TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        });
        let listeners = if webtransport {
            same_port_listeners().await
        } else {
            Listeners::bind("127.0.0.1:0".parse().unwrap(), None)
                .await
                .unwrap()
        };
        let port = listeners.ws.local_addr().unwrap().port();
        let config = ConfigHandle::fixed(settings);
        let store: Arc<dyn RoomStore> = Arc::new(MemoryStore::new());
        let metrics = Metrics::new();
        let node = Node::new(config.subscribe(), store, ownership, metrics.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            node.serve(listeners, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            port,
            metrics,
            _dir: dir,
            stop: Some(stop),
        }
    }

    fn url(&self) -> String {
        format!("wss://127.0.0.1:{}/ws", self.port)
    }

    /// Connections the node counted on `transport`.
    fn connections_on(&self, transport: &str) -> u64 {
        self.metrics
            .transport_connections
            .with_label_values(&[transport])
            .get()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn standalone() -> SharedOwnership {
    Arc::new(Standalone { shard_count: 16 })
}

/// A TCP listener and a WebTransport socket on the same port number (retried while another
/// process holds the UDP port).
async fn same_port_listeners() -> Listeners {
    for _ in 0..20 {
        let mut listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let port = listeners.ws.local_addr().unwrap().port();
        if listeners
            .bind_webtransport(SocketAddr::from(([127, 0, 0, 1], port)))
            .is_ok()
        {
            return listeners;
        }
    }
    panic!("no port free on both TCP and UDP");
}

fn options(pki: &Pki, user: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(token(user));
    options.ca_file = Some(pki.ca.clone());
    options.webtransport = WebTransportOptions {
        deadline: DEADLINE,
        ..WebTransportOptions::default()
    };
    options
}

fn websocket_only(pki: &Pki, user: &str) -> ConnectOptions {
    let mut options = options(pki, user);
    options.webtransport.enabled = false;
    options
}

/// The next message that is not a room event.
async fn next_non_event(client: &mut Client) -> Message {
    loop {
        match tokio::time::timeout(WAIT, client.recv()).await {
            Ok(Ok(Message::Event(_))) => continue,
            Ok(Ok(msg)) => return msg,
            Ok(Err(err)) => panic!("client failed: {err}"),
            Err(_) => panic!("nothing arrived in {WAIT:?}"),
        }
    }
}

/// Waits for the Welcome of a reconnect, which must have resumed the session.
async fn expect_resumed(client: &mut Client, session: &str) {
    match next_non_event(client).await {
        Message::Welcome(w) => {
            assert!(w.resumed, "{w:?}");
            assert_eq!(w.session, session);
        }
        other => panic!("expected the Welcome of a resume, got {other:?}"),
    }
}

/// `from` invites `to_user` in `studio`, who gets the Invite and rejects it; `from` gets the
/// answer: frames flow both ways on both clients' connections.
async fn call_reaches(from: &mut Client, to: &mut Client, to_user: &str) {
    let call = from.invite("studio", to_user).await.unwrap();
    match next_non_event(to).await {
        Message::Invite(invite) => assert_eq!(invite.call_id, call),
        other => panic!("expected the Invite, got {other:?}"),
    }
    to.reject(&call, "busy").await.unwrap();
    match next_non_event(from).await {
        Message::InviteResult(result) => assert!(!result.accepted && result.call_id == call),
        other => panic!("expected the InviteResult, got {other:?}"),
    }
}

#[tokio::test]
async fn webtransport_is_preferred_when_the_node_serves_it() {
    let dir = TempDir::new("wt-client-pki").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let node = TestNode::start(&pki, true, standalone()).await;

    let mut alice = Client::connect(&node.url(), options(&pki, "alice"))
        .await
        .unwrap();
    let info = alice.session();
    assert_eq!(info.transport, TransportKind::WebTransport, "{info:?}");
    assert_eq!(info.webtransport_fallbacks, 0);
    let mut bob = Client::connect(&node.url(), websocket_only(&pki, "bob"))
        .await
        .unwrap();
    assert_eq!(bob.session().transport, TransportKind::WebSocket);
    alice.join("studio").await.unwrap();
    bob.join("studio").await.unwrap();
    call_reaches(&mut alice, &mut bob, "bob").await;
    assert_eq!(node.connections_on("webtransport"), 1);
    assert_eq!(node.connections_on("websocket"), 1);
    alice.close().await;
}

/// Connects with WebTransport on and checks it fell back to WebSocket within the deadline
/// (plus the WebSocket connect and Hello).
async fn assert_falls_back_in_time(pki: &Pki, node: &TestNode) {
    let started = Instant::now();
    let client = Client::connect(&node.url(), options(pki, "alice"))
        .await
        .unwrap();
    let took = started.elapsed();
    let info = client.session();
    assert_eq!(info.transport, TransportKind::WebSocket, "{info:?}");
    assert_eq!(info.webtransport_fallbacks, 1);
    assert!(took < DEADLINE + Duration::from_secs(2), "took {took:?}");
    client.join("studio").await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn falls_back_to_websocket_when_the_udp_port_is_closed() {
    let dir = TempDir::new("wt-client-pki").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let node = TestNode::start(&pki, false, standalone()).await;
    assert_falls_back_in_time(&pki, &node).await;
}

#[tokio::test]
async fn falls_back_to_websocket_when_the_udp_port_drops_everything() {
    let dir = TempDir::new("wt-client-pki").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let node = TestNode::start(&pki, false, standalone()).await;
    // Bound and never read: every QUIC packet disappears without an answer.
    let _black_hole = UdpSocket::bind(("127.0.0.1", node.port)).unwrap();
    assert_falls_back_in_time(&pki, &node).await;
}

#[tokio::test]
async fn a_redirect_from_websocket_lands_on_webtransport() {
    let dir = TempDir::new("wt-client-pki").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let owner = TestNode::start(&pki, true, standalone()).await;
    let switch = Arc::new(Switchable::default());
    *switch.remote.lock().unwrap() = Some(owner.url());
    let entry = TestNode::start(&pki, false, switch.clone()).await;

    let client = Client::connect(&entry.url(), options(&pki, "alice"))
        .await
        .unwrap();
    let info = client.session();
    assert_eq!(info.url, owner.url(), "{info:?}");
    assert_eq!(info.transport, TransportKind::WebTransport, "{info:?}");
    assert_eq!(
        info.webtransport_fallbacks, 1,
        "the entry node has no UDP port"
    );
    client.join("studio").await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_session_resumes_from_webtransport_on_websocket_and_back() {
    let dir = TempDir::new("wt-client-pki").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let node = TestNode::start(&pki, true, standalone()).await;
    // The client reaches the node through relays it can cut: TCP and UDP on one port number.
    let relays = Relays::start(node.port).await;
    let url = format!("wss://127.0.0.1:{}/ws", relays.port);
    let mut alice_options = options(&pki, "alice");
    alice_options.webtransport.retry_after = Duration::ZERO;
    let mut alice = Client::connect(&url, alice_options).await.unwrap();
    assert_eq!(alice.session().transport, TransportKind::WebTransport);
    let session = alice.session().session;
    alice.join("studio").await.unwrap();
    let mut bob = Client::connect(&node.url(), websocket_only(&pki, "bob"))
        .await
        .unwrap();
    bob.join("studio").await.unwrap();

    // UDP goes silent: alice notices the silence, WebTransport does not answer within the
    // deadline, and the session resumes over WebSocket.
    relays.udp_blocked.store(true, Ordering::SeqCst);
    expect_resumed(&mut alice, &session).await;
    let info = alice.session();
    assert_eq!(info.transport, TransportKind::WebSocket, "{info:?}");
    assert_eq!(info.webtransport_fallbacks, 1);
    call_reaches(&mut bob, &mut alice, "alice").await;

    // UDP is back and the TCP connection breaks: the session resumes over WebTransport.
    relays.udp_blocked.store(false, Ordering::SeqCst);
    relays.cut_tcp();
    expect_resumed(&mut alice, &session).await;
    let info = alice.session();
    assert_eq!(info.transport, TransportKind::WebTransport, "{info:?}");
    call_reaches(&mut bob, &mut alice, "alice").await;
    alice.close().await;
}

#[tokio::test]
async fn a_new_client_resumes_a_session_on_the_other_transport() {
    let dir = TempDir::new("wt-client-pki").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let node = TestNode::start(&pki, true, standalone()).await;
    let first = Client::connect(&node.url(), websocket_only(&pki, "alice"))
        .await
        .unwrap();
    let joined = first.join("studio").await.unwrap();
    let session = first.session().session;
    first.close().await;

    let mut resuming = options(&pki, "alice");
    resuming.resume = Some(Resume {
        session: session.clone(),
        last_seq: joined.last_seq,
    });
    let second = Client::connect(&node.url(), resuming).await.unwrap();
    assert!(second.welcome().resumed);
    assert_eq!(second.session().session, session);
    assert_eq!(second.session().transport, TransportKind::WebTransport);
    second.close().await;
}

/// A TCP relay and a UDP relay on one port number in front of a node's TCP and UDP ports:
/// UDP can be silenced (both ways) and TCP connections broken.
struct Relays {
    port: u16,
    udp_blocked: Arc<AtomicBool>,
    tcp_conns: Arc<Mutex<Vec<AbortHandle>>>,
    tasks: Vec<AbortHandle>,
}

impl Relays {
    async fn start(node_port: u16) -> Self {
        let upstream = SocketAddr::from(([127, 0, 0, 1], node_port));
        let (tcp, udp) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = tcp.local_addr().unwrap().port();
            if let Ok(udp) = tokio::net::UdpSocket::bind(("127.0.0.1", port)).await {
                break (tcp, udp);
            }
        };
        let port = tcp.local_addr().unwrap().port();
        let udp_blocked = Arc::new(AtomicBool::new(false));
        let tcp_conns = Arc::new(Mutex::new(Vec::new()));
        let conns = tcp_conns.clone();
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut client, _)) = tcp.accept().await {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let relay = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                conns.lock().unwrap().push(relay.abort_handle());
            }
        });
        let blocked = udp_blocked.clone();
        let udp_task = tokio::spawn(udp_relay(Arc::new(udp), upstream, blocked));
        Self {
            port,
            udp_blocked,
            tcp_conns,
            tasks: vec![tcp_task.abort_handle(), udp_task.abort_handle()],
        }
    }

    fn cut_tcp(&self) {
        for conn in self.tcp_conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        self.cut_tcp();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Relays datagrams between each client address and the node through a socket of its own,
/// dropping them while `blocked`.
async fn udp_relay(
    front: Arc<tokio::net::UdpSocket>,
    upstream: SocketAddr,
    blocked: Arc<AtomicBool>,
) {
    let mut peers: std::collections::HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> =
        std::collections::HashMap::new();
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = front.recv_from(&mut buf).await {
        if blocked.load(Ordering::SeqCst) {
            continue;
        }
        let peer = match peers.get(&from) {
            Some(peer) => peer.clone(),
            None => {
                let peer = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
                peer.connect(upstream).await.unwrap();
                let (back, front, blocked) = (peer.clone(), front.clone(), blocked.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = back.recv(&mut buf).await {
                        if !blocked.load(Ordering::SeqCst) {
                            let _ = front.send_to(&buf[..n], from).await;
                        }
                    }
                });
                peers.insert(from, peer.clone());
                peer
            }
        };
        let _ = peer.send(&buf[..n]).await;
    }
}

#[tokio::test]
async fn a_webtransport_client_notices_a_silent_node_within_the_quic_idle_timeout() {
    // Chromium took about 15 s to notice a killed node over WebTransport: UDP has no reset.
    // The node offers a 6 s QUIC idle timeout and keeps it from expiring with PINGs, so a
    // client whose node falls silent (here: its UDP dropped both ways) is told within that,
    // not within its own default (30 s), with the node's heartbeat far away (30 s).
    let dir = TempDir::new("wt-client-pki").unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    let node = TestNode::start(&pki, true, standalone()).await;
    let relays = Relays::start(node.port).await;
    let url = format!("https://127.0.0.1:{}/ws", relays.port);
    let tls = switchboard_client::webtransport::tls_config(&pki.ca).unwrap();
    let versions = [switchboard_protocol::ProtocolVersion::V2];
    let wt = switchboard_client::webtransport::WtConnection::connect(
        &url,
        &versions,
        tls,
        Duration::from_secs(5),
        None,
    )
    .await
    .unwrap();
    // Idle past several keep-alives: the connection stays up.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), wt.closed())
            .await
            .is_err(),
        "an idle session stays open"
    );
    relays.udp_blocked.store(true, Ordering::SeqCst);
    let silent = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), wt.closed())
        .await
        .expect("the connection ends within the node's QUIC idle timeout");
    // Not sooner than the idle timeout after the last packet (a keep-alive at most 2 s old).
    assert!(
        silent.elapsed() >= Duration::from_secs(3),
        "{:?}",
        silent.elapsed()
    );
}

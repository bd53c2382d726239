//! Shared harness for the server integration tests: a node on 127.0.0.1:0 and a raw
//! WebSocket client speaking frames through the protocol Encoder.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use signaling_node::config::{ConfigHandle, Settings, Tunables};
use signaling_node::metrics::Metrics;
use signaling_node::room::RoomRegistry;
use signaling_node::routing::{SharedOwnership, Standalone};
use signaling_node::server::{Listeners, Node};
use signaling_node::store::{MemoryStore, RoomStore};
use switchboard_protocol::auth::{self, Claims, JwtSecret, RoomGrant};
use switchboard_protocol::{
    Encoder, ErrorFrame, Event, EventKind, Hello, Join, Joined, Message, ProtocolVersion, Resume,
    Welcome, decode,
};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &[u8] = b"integration-test-secret";
pub const SDP: &str = "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

pub fn secret() -> JwtSecret {
    JwtSecret::new(SECRET.to_vec()).unwrap()
}

/// A token for `user` allowing `rooms` ("*" for any), valid for an hour.
pub fn token(user: &str, rooms: &[&str]) -> String {
    let grant = if rooms == ["*"] {
        RoomGrant::Any
    } else {
        RoomGrant::Rooms(rooms.iter().map(|r| r.to_string()).collect())
    };
    auth::mint(&secret(), &Claims::new(user, grant, auth::unix_now(), 3600))
}

pub fn settings(tweak: impl FnOnce(&mut Tunables)) -> Settings {
    let mut s = Settings::new(secret());
    s.node_name = "test-node".into();
    s.drain_timeout = Duration::from_secs(5);
    tweak(&mut s.tunables);
    s
}

/// A node on 127.0.0.1:0 (no admin port) over `config` as loaded, not yet serving, so a test can
/// start the file watcher first; returns its listeners, address, node and metrics.
pub async fn unstarted_node(config: &ConfigHandle) -> (Listeners, SocketAddr, Node, Metrics) {
    let metrics = Metrics::new();
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let addr = listeners.ws.local_addr().unwrap();
    let ownership: SharedOwnership = Arc::new(Standalone { shard_count: 16 });
    let store: Arc<dyn RoomStore> = Arc::new(MemoryStore::new());
    let node = Node::new(config.subscribe(), store, ownership, metrics.clone());
    (listeners, addr, node, metrics)
}

pub struct TestNode {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: ConfigHandle,
    pub node: Node,
    pub store: Arc<MemoryStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestNode {
    pub async fn start(tweak: impl FnOnce(&mut Tunables)) -> Self {
        Self::start_with(settings(tweak), Arc::new(MemoryStore::new())).await
    }

    pub async fn start_with(settings: Settings, store: Arc<MemoryStore>) -> Self {
        let ownership: SharedOwnership = Arc::new(Standalone {
            shard_count: settings.shard_count,
        });
        Self::start_full(settings, store.clone(), store, ownership).await
    }

    pub async fn start_full(
        settings: Settings,
        store: Arc<MemoryStore>,
        room_store: Arc<dyn RoomStore>,
        ownership: SharedOwnership,
    ) -> Self {
        let listeners = Listeners::bind(
            "127.0.0.1:0".parse().unwrap(),
            Some("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let addr = listeners.ws.local_addr().unwrap();
        let admin = listeners.admin.as_ref().unwrap().local_addr().unwrap();
        let config = ConfigHandle::fixed(settings);
        let node = Node::new(config.subscribe(), room_store, ownership, Metrics::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = node.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listeners, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            admin,
            config,
            node,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn registry(&self) -> &RoomRegistry {
        self.node.registry()
    }

    pub fn metrics(&self) -> String {
        self.node.metrics().render()
    }

    /// Value of a metric line starting with `prefix` (0 if absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Starts the drain and returns the serve task to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap()
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// A client that said Hello as `user` (token for `rooms`) and got Welcome.
    pub async fn client(&self, user: &str, rooms: &[&str]) -> Client {
        let mut c = Client::connect(self.addr, &["switchboard.v2", "switchboard.v1"]).await;
        c.hello(&token(user, rooms), None).await;
        c
    }

    pub async fn client_v1(&self, user: &str, rooms: &[&str]) -> Client {
        let mut c = Client::connect(self.addr, &["switchboard.v1"]).await;
        c.hello(&token(user, rooms), None).await;
        c
    }
}

/// Minimal HTTP/1.1 GET over a TcpStream (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the client saw next.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    Msg(Message),
    Closed(Option<u16>),
}

pub struct Client {
    pub ws: Ws,
    pub encoder: Encoder,
    pub version: Option<String>,
    pub welcome: Option<Welcome>,
    /// Skip application Pings when receiving (answering them with Pong).
    pub auto_pong: bool,
}

impl Client {
    pub async fn connect(addr: SocketAddr, protocols: &[&str]) -> Client {
        Self::try_connect(addr, protocols, &[]).await.unwrap()
    }

    pub async fn try_connect(
        addr: SocketAddr,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "sec-websocket-protocol",
                protocols.join(", ").parse().unwrap(),
            );
        }
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
        let version = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Client {
            ws,
            encoder: Encoder::new(),
            version,
            welcome: None,
            auto_pong: true,
        })
    }

    pub async fn send(&mut self, msg: &Message) {
        let bytes = self.encoder.encode_to_vec(msg).unwrap();
        self.send_raw(bytes).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(WsMessage::Binary(Bytes::from(bytes)))
            .await
            .unwrap();
    }

    /// The next protocol message or close (WebSocket pings skipped).
    pub async fn next(&mut self) -> Got {
        loop {
            let item = tokio::time::timeout(RECV_TIMEOUT, self.ws.next())
                .await
                .expect("timed out waiting for the server");
            match item {
                None => return Got::Closed(None),
                Some(Err(_)) => return Got::Closed(None),
                Some(Ok(WsMessage::Binary(b))) => {
                    let msg = decode(&b).expect("server sent a valid frame");
                    if self.auto_pong
                        && let Message::Ping(p) = &msg
                    {
                        let pong = Message::Pong(switchboard_protocol::Pong { nonce: p.nonce });
                        self.send(&pong).await;
                        continue;
                    }
                    return Got::Msg(msg);
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Got::Closed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn recv(&mut self) -> Message {
        match self.next().await {
            Got::Msg(m) => m,
            Got::Closed(code) => panic!("connection closed ({code:?}) while expecting a message"),
        }
    }

    /// Receives until `pick` returns Some (other messages are dropped).
    pub async fn recv_until<T>(&mut self, mut pick: impl FnMut(&Message) -> Option<T>) -> T {
        loop {
            let msg = self.recv().await;
            if let Some(v) = pick(&msg) {
                return v;
            }
        }
    }

    pub async fn expect_error(&mut self) -> ErrorFrame {
        match self.recv().await {
            Message::Error(e) => e,
            other => panic!("expected an Error frame, got {other:?}"),
        }
    }

    pub async fn expect_event(&mut self) -> Event {
        match self.recv().await {
            Message::Event(e) => e,
            other => panic!("expected an Event, got {other:?}"),
        }
    }

    /// The close code, skipping any messages before it.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            if let Got::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    pub async fn hello(&mut self, token: &str, resume: Option<(String, u64)>) -> Welcome {
        self.send(&Message::Hello(Hello {
            token: token.into(),
            versions: vec![],
            resume: resume.map(|(session, last_seq)| Resume { session, last_seq }),
        }))
        .await;
        match self.recv().await {
            Message::Welcome(w) => {
                self.welcome = Some(w.clone());
                w
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    pub async fn join(&mut self, room: &str, request_id: u32) -> Joined {
        self.send(&Message::Join(Join {
            request_id,
            room: room.into(),
        }))
        .await;
        match self.recv().await {
            Message::Joined(j) => j,
            other => panic!("expected Joined, got {other:?}"),
        }
    }

    /// Asserts the next message is a member event of `kind` about `user`.
    pub async fn expect_member_event(&mut self, kind: EventKind, user: &str) -> Event {
        let e = self.expect_event().await;
        assert_eq!((e.kind, e.user.as_str()), (kind, user), "{e:?}");
        e
    }

    /// Asserts the next message is a CallState event with `state`.
    pub async fn expect_call_state(&mut self, call: &str, state: &str) -> Event {
        let e = self.expect_event().await;
        assert_eq!(
            (e.kind, e.call_id.as_str(), e.state.as_str()),
            (EventKind::CallState, call, state),
            "{e:?}"
        );
        e
    }

    /// Round-trips a Ping to prove the connection still works.
    pub async fn ping(&mut self, nonce: u64) {
        self.send(&Message::Ping(switchboard_protocol::Ping { nonce }))
            .await;
        let got = self
            .recv_until(|m| match m {
                Message::Pong(p) => Some(p.nonce),
                _ => None,
            })
            .await;
        assert_eq!(got, nonce);
    }

    pub fn session(&self) -> String {
        self.welcome.as_ref().unwrap().session.clone()
    }
}

pub fn v(version: ProtocolVersion) -> String {
    version.subprotocol().to_string()
}

//! A reusable async Switchboard client: connects (ws:// or wss://), negotiates the protocol
//! version, says Hello, and then offers typed calls for the co-host flow while a background
//! task answers heartbeats, follows `Redirect` and `Migrate`, and reconnects and resumes after
//! a dropped connection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! use switchboard_client::{Client, ConnectOptions};
//! let mut client = Client::connect("ws://127.0.0.1:7000/ws", ConnectOptions::new("<jwt>")).await?;
//! let joined = client.join("studio-1").await?;
//! let call = client.invite("studio-1", "bob").await?;
//! while let Ok(msg) = client.recv().await {
//!     println!("{msg:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! With the `webtransport` feature the client tries WebTransport (HTTP/3 over QUIC) first for
//! every `wss://` node URL and falls back to WebSocket when it does not answer within
//! [`WebTransportOptions::deadline`]; [`SessionInfo::transport`] says which one is in use.
//!
//! One `Client` is one connection (one node). Rooms owned by different nodes need one client
//! each: following a `Redirect` moves the whole connection to the room's owner. Every queue is
//! bounded: if the application stops calling [`Client::recv`], the connection stops reading
//! and the server eventually disconnects it as a slow consumer.
#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod cli;
mod conn;
mod driver;
pub mod error;
pub mod fake;
pub mod retry;
pub mod script;
pub mod state;
#[cfg(test)]
mod stub_tests;
pub mod transport;
#[cfg(feature = "webtransport")]
pub mod webtransport;

use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use error::ClientError;
pub use transport::TransportKind;

use switchboard_protocol::traceparent::TraceParent;
use switchboard_protocol::{Candidate, Joined, Message, ProtocolVersion, Resume};

/// Per-step time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP + TLS + WebSocket upgrade (a WebTransport attempt before it has its own
    /// deadline, [`WebTransportOptions::deadline`]).
    pub connect: Duration,
    /// Hello → Welcome.
    pub handshake: Duration,
    /// A request awaiting its answer (join).
    pub request: Duration,
    /// Declare the connection dead after this long without any frame from the server.
    /// `None`: 2.5 × the server's heartbeat interval (from Welcome) + 2 s.
    pub silence: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
            request: Duration::from_secs(10),
            silence: None,
        }
    }
}

/// How the client reconnects after a dropped connection.
#[derive(Debug, Clone, Copy)]
pub struct ReconnectPolicy {
    /// Attempts before giving up (0 = never reconnect).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles per attempt (with jitter).
    pub initial_backoff: Duration,
    /// Upper bound of the wait.
    pub max_backoff: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl ReconnectPolicy {
    /// The wait before retry number `attempt` (1-based): exponential, capped, with ±25 %
    /// jitter so a fleet of clients does not reconnect in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_backoff);
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        capped.mul_f64(jitter)
    }
}

/// When the client tries WebTransport before WebSocket (feature `webtransport`).
///
/// Nodes advertise WebSocket URLs only (the entry URL, `Redirect`, `Migrate`); a `wss://` URL
/// stands for the WebTransport URL `https://` with the same host, path and query on UDP
/// [`port`](Self::port) (docs/protocol.md, "WebTransport"). `ws://` URLs always use WebSocket.
#[cfg(feature = "webtransport")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebTransportOptions {
    /// Try WebTransport first (default `true`).
    pub enabled: bool,
    /// The nodes' WebTransport UDP port; `None` (default): the port number of the `wss://`
    /// URL, as an HTTP/3 server shares the number of its HTTPS port.
    pub port: Option<u16>,
    /// How long one WebTransport attempt (QUIC and TLS handshake, session request, stream)
    /// may take before the client connects over WebSocket instead: a UDP port that drops
    /// everything costs at most this much. Default 1.5 s.
    pub deadline: Duration,
    /// After a failed attempt, connections to that URL use WebSocket without trying
    /// WebTransport for this long. Default 30 s.
    pub retry_after: Duration,
}

#[cfg(feature = "webtransport")]
impl Default for WebTransportOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            port: None,
            deadline: Duration::from_millis(1500),
            retry_after: Duration::from_secs(30),
        }
    }
}

/// What [`Client::connect`] needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The join token (JWT).
    pub token: String,
    /// Versions offered, any order (the highest common one wins). Default: v2, v1.
    pub versions: Vec<ProtocolVersion>,
    /// Resume an earlier session on the first connect.
    pub resume: Option<Resume>,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Reconnect behaviour.
    pub reconnect: ReconnectPolicy,
    /// Redirects followed in a row before giving up.
    pub max_redirects: u32,
    /// PEM CA certificates for `wss://` URLs.
    pub ca_file: Option<PathBuf>,
    /// Capacity of the command and incoming queues (messages).
    pub queue: usize,
    /// W3C trace context sent as the `traceparent` header on every connect (the first, each
    /// Redirect and Migrate, each resume), so the nodes' spans of this session form one trace.
    pub traceparent: Option<TraceParent>,
    /// WebTransport first, WebSocket as the fallback.
    #[cfg(feature = "webtransport")]
    pub webtransport: WebTransportOptions,
}

impl ConnectOptions {
    /// Defaults with `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            versions: vec![ProtocolVersion::V2, ProtocolVersion::V1],
            resume: None,
            timeouts: Timeouts::default(),
            reconnect: ReconnectPolicy::default(),
            max_redirects: 3,
            ca_file: None,
            queue: 256,
            traceparent: None,
            #[cfg(feature = "webtransport")]
            webtransport: WebTransportOptions::default(),
        }
    }
}

/// The current session, as last welcomed by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// URL of the node serving this session now (after redirects and migrations).
    pub url: String,
    /// Session id (use it to resume).
    pub session: String,
    /// Negotiated protocol version.
    pub version: ProtocolVersion,
    /// The serving node's name.
    pub node: String,
    /// Server heartbeat interval in milliseconds.
    pub heartbeat_ms: u32,
    /// Whether the last Welcome resumed an earlier session.
    pub resumed: bool,
    /// Reconnects (including redirects and migrations) since [`Client::connect`].
    pub reconnects: u32,
    /// Our user id (the token's `sub`, read without verification; empty if unreadable).
    pub user: String,
    /// The transport of the current connection.
    pub transport: TransportKind,
    /// WebTransport attempts that failed and fell back to WebSocket since
    /// [`Client::connect`].
    pub webtransport_fallbacks: u32,
}

pub(crate) enum Command {
    Join {
        room: String,
        reply: oneshot::Sender<Result<Joined, ClientError>>,
    },
    Invite {
        room: String,
        to: String,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    Send {
        op: Op,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

pub(crate) enum Op {
    Leave {
        room: String,
    },
    Answer {
        call_id: String,
        accepted: bool,
        reason: String,
    },
    Offer {
        call_id: String,
        sdp: String,
    },
    SdpAnswer {
        call_id: String,
        sdp: String,
    },
    Ice {
        call_id: String,
        candidate: Candidate,
    },
    EndOfCandidates {
        call_id: String,
    },
    Hangup {
        call_id: String,
        reason: String,
    },
    Raw(Message),
}

/// The sending half of a client: cheap to clone, usable from many tasks at once.
#[derive(Clone)]
pub struct ClientSender {
    cmd: mpsc::Sender<Command>,
    info: watch::Receiver<SessionInfo>,
    request_timeout: Duration,
}

impl std::fmt::Debug for ClientSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSender")
            .field("session", &*self.info.borrow())
            .finish()
    }
}

impl ClientSender {
    /// Closes the connection cleanly (WebSocket close 1000) and stops the background task,
    /// for a client that was split; every other handle then sees it closed.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.cmd.send(Command::Close { reply }).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }

    /// The current session (changes after reconnects, redirects and migrations).
    pub fn session(&self) -> SessionInfo {
        self.info.borrow().clone()
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.info.borrow().version
    }

    /// Joins `room` and waits for `Joined` (following a `Redirect` to the room's owner).
    pub async fn join(&self, room: &str) -> Result<Joined, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Join {
            room: room.to_string(),
            reply,
        })
        .await?;
        self.await_reply(rx, "Joined").await
    }

    /// Leaves `room` (the server acknowledges with a `MemberLeft` event for us, delivered
    /// through [`Client::recv`]).
    pub async fn leave(&self, room: &str) -> Result<(), ClientError> {
        self.op(Op::Leave {
            room: room.to_string(),
        })
        .await
    }

    /// Invites `to` into a call in `room`; returns the new call id. The answer arrives through
    /// [`Client::recv`] as an `InviteResult`.
    pub async fn invite(&self, room: &str, to: &str) -> Result<String, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Invite {
            room: room.to_string(),
            to: to.to_string(),
            reply,
        })
        .await?;
        self.await_reply(rx, "invite").await
    }

    /// Accepts an invitation.
    pub async fn accept(&self, call_id: &str) -> Result<(), ClientError> {
        self.op(Op::Answer {
            call_id: call_id.to_string(),
            accepted: true,
            reason: String::new(),
        })
        .await
    }

    /// Rejects an invitation.
    pub async fn reject(&self, call_id: &str, reason: &str) -> Result<(), ClientError> {
        self.op(Op::Answer {
            call_id: call_id.to_string(),
            accepted: false,
            reason: reason.to_string(),
        })
        .await
    }

    /// Sends an SDP offer to the call's other party.
    pub async fn offer(&self, call_id: &str, sdp: &str) -> Result<(), ClientError> {
        self.op(Op::Offer {
            call_id: call_id.to_string(),
            sdp: sdp.to_string(),
        })
        .await
    }

    /// Sends an SDP answer to the call's other party.
    pub async fn answer(&self, call_id: &str, sdp: &str) -> Result<(), ClientError> {
        self.op(Op::SdpAnswer {
            call_id: call_id.to_string(),
            sdp: sdp.to_string(),
        })
        .await
    }

    /// Sends one ICE candidate; on v2, candidates queued back to back for the same call go
    /// out as one `IceBatch`.
    pub async fn ice(&self, call_id: &str, candidate: Candidate) -> Result<(), ClientError> {
        self.op(Op::Ice {
            call_id: call_id.to_string(),
            candidate,
        })
        .await
    }

    /// Signals that no more candidates follow for this call.
    pub async fn end_of_candidates(&self, call_id: &str) -> Result<(), ClientError> {
        self.op(Op::EndOfCandidates {
            call_id: call_id.to_string(),
        })
        .await
    }

    /// Hangs a call up.
    pub async fn hangup(&self, call_id: &str, reason: &str) -> Result<(), ClientError> {
        self.op(Op::Hangup {
            call_id: call_id.to_string(),
            reason: reason.to_string(),
        })
        .await
    }

    /// Sends any message as is (tools and tests; no bookkeeping).
    pub async fn send_raw(&self, msg: Message) -> Result<(), ClientError> {
        self.op(Op::Raw(msg)).await
    }

    async fn op(&self, op: Op) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Send { op, reply }).await?;
        self.await_reply(rx, "send").await
    }

    async fn command(&self, cmd: Command) -> Result<(), ClientError> {
        self.cmd.send(cmd).await.map_err(|_| ClientError::Closed)
    }

    async fn await_reply<T>(
        &self,
        rx: oneshot::Receiver<Result<T, ClientError>>,
        what: &'static str,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout { what }),
        }
    }
}

/// A connected client: the typed calls (through [`ClientSender`], by `Deref`) plus the stream
/// of incoming frames.
pub struct Client {
    sender: ClientSender,
    incoming: mpsc::Receiver<Result<Message, ClientError>>,
    welcome: switchboard_protocol::Welcome,
    hello_rtt: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("sender", &self.sender)
            .finish()
    }
}

impl Deref for Client {
    type Target = ClientSender;

    fn deref(&self) -> &ClientSender {
        &self.sender
    }
}

impl Client {
    /// Connects to `url`, says Hello and waits for Welcome (following redirects).
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Client, ClientError> {
        let request_timeout = options.timeouts.request;
        let queue = options.queue.max(1);
        let (cmd_tx, cmd_rx) = mpsc::channel(queue);
        let (in_tx, in_rx) = mpsc::channel(queue);
        let connected = driver::Driver::connect(url, options, cmd_rx, in_tx).await?;
        // Every log line of the driver names the user (the token's subject) it serves.
        let span = tracing::info_span!("client", user = %connected.info.borrow().user);
        tokio::spawn(tracing::Instrument::instrument(
            connected.driver.run(),
            span,
        ));
        Ok(Client {
            sender: ClientSender {
                cmd: cmd_tx,
                info: connected.info,
                request_timeout,
            },
            incoming: in_rx,
            welcome: connected.welcome,
            hello_rtt: connected.hello_rtt,
        })
    }

    /// The Welcome of the first connect.
    pub fn welcome(&self) -> &switchboard_protocol::Welcome {
        &self.welcome
    }

    /// How long the first connection's Hello took to be answered by Welcome (after the
    /// TCP connect and WebSocket upgrade).
    pub fn hello_rtt(&self) -> Duration {
        self.hello_rtt
    }

    /// A cloneable sending handle.
    pub fn sender(&self) -> ClientSender {
        self.sender.clone()
    }

    /// The next incoming frame: relays (Invite, InviteResult, Offer, Answer, ICE, Hangup),
    /// room Events, Error frames not tied to a pending request, and — after a reconnect —
    /// the new Welcome (and the Joined of rooms re-joined automatically). Heartbeat pings are
    /// answered internally. Fails with the reason once the client has stopped for good.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        match self.incoming.recv().await {
            Some(item) => item,
            None => Err(ClientError::Closed),
        }
    }

    /// Splits into a cloneable sender and the incoming stream.
    pub fn split(self) -> (ClientSender, Incoming) {
        (
            self.sender,
            Incoming {
                incoming: self.incoming,
            },
        )
    }

    /// Closes the connection cleanly (WebSocket close 1000) and stops the background task.
    pub async fn close(self) {
        self.sender.close().await;
    }
}

/// The receiving half of a split client.
#[derive(Debug)]
pub struct Incoming {
    incoming: mpsc::Receiver<Result<Message, ClientError>>,
}

impl Incoming {
    /// See [`Client::recv`].
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        match self.incoming.recv().await {
            Some(item) => item,
            None => Err(ClientError::Closed),
        }
    }
}

/// The `sub` claim of a JWT, read without verifying it (for display and `from` fields).
pub fn token_subject(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = ReconnectPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        let first = policy.backoff(1);
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        let fourth = policy.backoff(4);
        assert!(fourth >= Duration::from_millis(600) && fourth <= Duration::from_millis(1000));
        let late = policy.backoff(40);
        assert!(late <= Duration::from_millis(1250), "{late:?}");
    }

    #[test]
    fn reads_the_token_subject() {
        use base64::Engine as _;
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "{}.{}.sig",
            enc.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            enc.encode(br#"{"sub":"alice","rooms":["*"],"exp":1}"#)
        );
        assert_eq!(token_subject(&token).as_deref(), Some("alice"));
        assert_eq!(token_subject("garbage"), None);
        assert_eq!(token_subject("a.!!!.c"), None);
    }
}

//! The client's background task: owns the socket and the session state, turns commands into
//! frames, correlates answers by request id, answers Ping, follows Redirect and Migrate, and
//! reconnects with backoff and resume when the connection drops.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::conn::{Conn, Received};
use super::retry::{Refusal, Retries};
use super::state::{CallInfo, CallTable, RequestIds, Rooms, new_call_id};
use super::transport::{self, Endpoint, TransportKind};
use super::{ClientError, Command, ConnectOptions, Op, SessionInfo, token_subject};
use switchboard_protocol::{
    self as protocol, Candidate, Encoder, ErrorCode, ErrorFrame, Hangup, Hello, IceBatch,
    IceCandidate, Invite, InviteResult, Join, Joined, Leave, Message, Pong, ProtocolVersion,
    Resume, Sdp, Welcome,
};

/// Most joins awaiting an answer at once.
const MAX_PENDING: usize = 1024;
/// Most candidates merged into one IceBatch.
const MAX_BATCH: usize = 64;
/// Failed reconnect attempts in a row at a moved-to node (after a Redirect or Migrate) before
/// the client goes back to its entry URL, which redirects it to the room's current owner (and
/// at the entry URL before it goes back to the node it was on).
const FAILURES_BEFORE_ENTRY: u32 = 2;
/// A connection that ends sooner than this after its Welcome got the client nowhere: a node
/// closing every resume (its store unavailable) or sending it back and forth would otherwise
/// be reconnected to at the first backoff step, again and again.
const SHORT_LIVED: Duration = Duration::from_secs(2);
/// Most WebTransport URLs remembered as failing at once.
#[cfg(feature = "webtransport")]
const MAX_WT_FAILED: usize = 64;
/// What a connection that fell silent timed out waiting for.
const SILENCE: &str = "any frame from the server (heartbeat)";

type Incoming = mpsc::Sender<Result<Message, ClientError>>;

struct PendingJoin {
    room: String,
    /// `None` for an automatic re-join after the server lost our session.
    reply: Option<oneshot::Sender<Result<Joined, ClientError>>>,
    /// Retryable refusals so far (1006 while the room moves, 1010); bounded by the
    /// reconnect policy's attempts.
    refusals: u32,
}

/// Why a connection's serve loop ended.
enum Exit {
    /// The application closed the client or dropped every handle.
    Closed,
    /// The connection dropped; reconnect with resume.
    Lost(ClientError),
    /// The room is owned elsewhere: move there.
    Redirect(String),
    /// The room is moving: reconnect there and resume.
    Migrate { url: String, resume_token: String },
    /// Stop for good.
    Fatal(ClientError),
}

/// Why a write failed.
enum WriteError {
    /// The message could not be encoded (too large); the connection is fine.
    Encode(ClientError),
    /// The socket failed; the connection is gone.
    Socket(ClientError),
}

/// The server's answer to Hello.
enum Reply {
    Welcome(Welcome),
    Redirect(String),
}

/// What a handshake produced.
enum Handshake {
    Welcome(Conn, Welcome),
    Redirect(String),
}

/// A driver whose first connection was welcomed.
pub(crate) struct Connected {
    pub(crate) driver: Driver,
    pub(crate) welcome: Welcome,
    pub(crate) info: watch::Receiver<SessionInfo>,
    /// Hello sent → Welcome received on the first connection.
    pub(crate) hello_rtt: Duration,
}

pub(crate) struct Driver {
    options: ConnectOptions,
    tls: Option<TlsConnector>,
    endpoint: Endpoint,
    /// The URL the application gave: any node, which redirects to the room's owner. The
    /// client falls back to it when the node it moved to stops answering.
    entry: Endpoint,
    user: String,
    cmd_rx: mpsc::Receiver<Command>,
    incoming: Incoming,
    info: watch::Sender<SessionInfo>,
    session: String,
    version: ProtocolVersion,
    silence: Duration,
    rooms: Rooms,
    calls: CallTable,
    ids: RequestIds,
    pending: HashMap<u32, PendingJoin>,
    retries: Retries,
    encoder: Encoder,
    deferred: Option<Command>,
    redirects_in_a_row: u32,
    reconnects: u32,
    /// The session a resume asked for when a node that does not own its room answered
    /// `resumed: false`: the re-join's `Redirect` leads to the owner, where it is resumed.
    unresumed: Option<Resume>,
    conn: Option<Conn>,
    hello_rtt: Duration,
    /// When the current connection was welcomed.
    welcomed_at: Instant,
    /// Connections in a row that ended within [`SHORT_LIVED`] of their Welcome.
    short_lived: u32,
    /// The transport of the current connection.
    transport: TransportKind,
    /// WebTransport attempts that fell back to WebSocket.
    webtransport_fallbacks: u32,
    /// TLS for WebTransport (HTTP/3 wants TLS 1.3 and ALPN `h3`), when a CA file is given.
    #[cfg(feature = "webtransport")]
    wt_tls: Option<rustls::ClientConfig>,
    /// WebTransport URLs whose last attempt failed, and when: WebSocket only for a while.
    #[cfg(feature = "webtransport")]
    wt_failed: HashMap<String, Instant>,
}

impl Driver {
    /// Connects (following redirects) and builds the driver around the welcomed socket.
    pub(crate) async fn connect(
        url: &str,
        options: ConnectOptions,
        cmd_rx: mpsc::Receiver<Command>,
        incoming: Incoming,
    ) -> Result<Connected, ClientError> {
        let endpoint = Endpoint::parse(url)?;
        let tls = match &options.ca_file {
            Some(path) => Some(transport::tls_connector(path)?),
            None => None,
        };
        #[cfg(feature = "webtransport")]
        let wt_tls = match &options.ca_file {
            Some(path) if options.webtransport.enabled => {
                Some(super::webtransport::tls_config(path)?)
            }
            _ => None,
        };
        let user = token_subject(&options.token).unwrap_or_default();
        let placeholder = SessionInfo {
            url: url.to_string(),
            session: String::new(),
            version: ProtocolVersion::V1,
            node: String::new(),
            heartbeat_ms: 0,
            resumed: false,
            reconnects: 0,
            user: user.clone(),
            transport: TransportKind::WebSocket,
            webtransport_fallbacks: 0,
        };
        let (info, info_rx) = watch::channel(placeholder);
        let mut driver = Driver {
            options,
            tls,
            entry: endpoint.clone(),
            endpoint,
            user,
            cmd_rx,
            incoming,
            info,
            session: String::new(),
            version: ProtocolVersion::V1,
            silence: Duration::from_secs(3600),
            rooms: Rooms::default(),
            calls: CallTable::default(),
            ids: RequestIds::default(),
            pending: HashMap::new(),
            retries: Retries::default(),
            encoder: Encoder::new(),
            deferred: None,
            redirects_in_a_row: 0,
            reconnects: 0,
            unresumed: None,
            conn: None,
            hello_rtt: Duration::ZERO,
            welcomed_at: Instant::now(),
            short_lived: 0,
            transport: TransportKind::WebSocket,
            webtransport_fallbacks: 0,
            #[cfg(feature = "webtransport")]
            wt_tls,
            #[cfg(feature = "webtransport")]
            wt_failed: HashMap::new(),
        };
        let resume = driver.options.resume.clone();
        let welcome = driver.establish(resume).await?;
        let hello_rtt = driver.hello_rtt;
        Ok(Connected {
            driver,
            welcome,
            info: info_rx,
            hello_rtt,
        })
    }

    /// Serves connections until the client closes or gives up.
    pub(crate) async fn run(mut self) {
        loop {
            let Some(conn) = self.conn.take() else {
                return;
            };
            let exit = self.serve(conn).await;
            if self.welcomed_at.elapsed() < SHORT_LIVED {
                self.short_lived += 1;
            } else {
                self.short_lived = 0;
            }
            // Where we were: a reconnect may come back here if the node it is sent to (and
            // the entry URL) do not answer.
            let left = self.endpoint.clone();
            let (resume, immediate) = match exit {
                Exit::Closed => return,
                Exit::Fatal(err) => {
                    self.fail(err).await;
                    return;
                }
                Exit::Lost(err) => {
                    if self.options.reconnect.max_attempts == 0 {
                        self.fail(err).await;
                        return;
                    }
                    tracing::info!(url = %self.endpoint.url, %err, "connection lost; reconnecting");
                    // A node that fell silent (stopped, cut off) would only time out again:
                    // the first attempt goes at once to the next known node, which redirects
                    // the resume to the room's new owner.
                    let silent = matches!(err, ClientError::Timeout { what } if what == SILENCE);
                    let mut immediate = false;
                    if silent && let Some(next) = self.next_candidate(&left) {
                        tracing::info!(silent = %left.url, next = %next.url, "node silent; resuming through the next known node");
                        self.endpoint = next;
                        immediate = true;
                    }
                    (Some(self.rooms.resume(&self.session)), immediate)
                }
                Exit::Redirect(url) => {
                    tracing::info!(%url, "following redirect");
                    match Endpoint::parse(&url) {
                        Ok(endpoint) => self.endpoint = endpoint,
                        Err(err) => {
                            self.fail(err).await;
                            return;
                        }
                    }
                    // The connection moves to the room's owner; rooms on the old node are left.
                    self.rooms.clear();
                    // A resume that reached a node without our room (a `"*"` token is not
                    // routed by its room) continues at the owner the re-join was sent to.
                    let resume = self.unresumed.take();
                    if resume.is_some() {
                        tracing::info!(%url, "resuming the session at the room's owner");
                    }
                    (resume, true)
                }
                Exit::Migrate { url, resume_token } => {
                    tracing::info!(%url, "room migrating; reconnecting and resuming");
                    // An empty URL (a standalone node draining) means: wherever we connected.
                    if !url.is_empty() {
                        match Endpoint::parse(&url) {
                            Ok(endpoint) => self.endpoint = endpoint,
                            Err(err) => {
                                self.fail(err).await;
                                return;
                            }
                        }
                    }
                    let mut resume = self.rooms.resume(&self.session);
                    if !resume_token.is_empty() {
                        resume.session = resume_token;
                    }
                    (Some(resume), !url.is_empty())
                }
            };
            self.reconnects += 1;
            match self.reconnect(resume, immediate, left).await {
                Ok(welcome) => self.deliver(Message::Welcome(welcome)).await,
                Err(err) => {
                    self.fail(err).await;
                    return;
                }
            }
        }
    }

    /// The known node after `from` in reconnect order (the node sent to, the one we were on,
    /// the entry URL), if there is another one.
    fn next_candidate(&self, from: &Endpoint) -> Option<Endpoint> {
        [&self.endpoint, from, &self.entry]
            .into_iter()
            .find(|c| c.url != from.url)
            .cloned()
    }

    /// Retries [`Driver::establish`] with backoff.
    /// `left` is the node whose connection just ended.
    async fn reconnect(
        &mut self,
        resume: Option<Resume>,
        immediate: bool,
        left: Endpoint,
    ) -> Result<Welcome, ClientError> {
        let policy = self.options.reconnect;
        let attempts = policy.max_attempts.max(1);
        let mut last = ClientError::ConnectionLost;
        let mut failures_here = 0;
        // Where a failing attempt goes next, in turn: the node we are sent to (or the one we
        // were on), the one we were on, and the entry URL, so one dead or lease-less node
        // cannot use up every attempt (docs/reliability.md, finding 2).
        let mut candidates: Vec<Endpoint> = Vec::with_capacity(3);
        for endpoint in [&self.endpoint, &left, &self.entry] {
            if candidates.iter().all(|c| c.url != endpoint.url) {
                candidates.push(endpoint.clone());
            }
        }
        // After connections in a row that each ended right after their Welcome, the backoff
        // starts further up, as if those had been failed attempts.
        let earlier = self.short_lived.saturating_sub(1);
        let immediate = immediate && earlier == 0;
        for attempt in 1..=attempts {
            if !(immediate && attempt == 1) {
                tokio::time::sleep(policy.backoff(attempt.saturating_add(earlier))).await;
            }
            if self.cmd_rx.is_closed() && self.incoming.is_closed() {
                return Err(ClientError::Closed);
            }
            match self.establish(resume.clone()).await {
                Ok(welcome) => return Ok(welcome),
                // NotOwner: the node answering our resume lost the room; ask the entry node.
                // TooManyRedirects while resuming: the room is between owners (a handoff or
                // failover in flight, the nodes briefly disagree and bounce the Hello); back off
                // and try again instead of dropping the session.
                // A node URL the proxy no longer routes (404: its node is gone) is no reason to
                // give up while the entry URL is there to ask.
                Err(err)
                    if err.is_retriable()
                        || err.code() == Some(ErrorCode::NotOwner)
                        || matches!(err, ClientError::TooManyRedirects { .. })
                        || (node_gone(&err) && self.endpoint.url != self.entry.url) =>
                {
                    tracing::debug!(attempt, %err, "reconnect attempt failed");
                    failures_here += 1;
                    if should_try_elsewhere(&err, failures_here) {
                        // A node a handshake redirect led to is none of the candidates: the
                        // entry URL redirects a resuming Hello to the room's current owner.
                        let at = candidates.iter().position(|c| c.url == self.endpoint.url);
                        let next = match at {
                            Some(i) => &candidates[(i + 1) % candidates.len()],
                            None => &self.entry,
                        };
                        if next.url != self.endpoint.url {
                            tracing::info!(
                                failing = %self.endpoint.url,
                                next = %next.url,
                                %err,
                                "reconnect target not answering; trying the next known node"
                            );
                            self.endpoint = next.clone();
                            failures_here = 0;
                        }
                    }
                    last = err;
                }
                Err(err) => return Err(err),
            }
        }
        Err(ClientError::ReconnectFailed {
            attempts,
            last: Box::new(last),
        })
    }

    /// Opens a socket, says Hello and waits for Welcome, following handshake redirects; then
    /// re-joins rooms the server forgot and re-sends joins still awaiting an answer.
    async fn establish(&mut self, resume: Option<Resume>) -> Result<Welcome, ClientError> {
        let mut redirects = 0;
        loop {
            match self.handshake(resume.clone()).await? {
                Handshake::Welcome(conn, welcome) => {
                    self.welcomed(conn, &welcome, resume.is_some()).await?;
                    self.welcomed_at = Instant::now();
                    return Ok(welcome);
                }
                Handshake::Redirect(url) => {
                    redirects += 1;
                    if redirects > self.options.max_redirects {
                        return Err(ClientError::TooManyRedirects {
                            limit: self.options.max_redirects,
                        });
                    }
                    tracing::info!(%url, "redirected during handshake");
                    self.endpoint = Endpoint::parse(&url)?;
                    // A resuming Hello keeps its resume: the server routes it by the token's
                    // room, so the room's owner can resume the session (or answer
                    // `resumed: false`, and the client re-joins its rooms there).
                    if resume.is_none() {
                        self.rooms.clear();
                    }
                }
            }
        }
    }

    /// Opens a connection to the current endpoint: WebTransport first when it may answer
    /// (within its deadline), else WebSocket; returns it with the version the WebSocket
    /// upgrade named.
    async fn open(&mut self) -> Result<(Conn, Option<ProtocolVersion>), ClientError> {
        #[cfg(feature = "webtransport")]
        if let Some(conn) = self.open_webtransport().await {
            self.transport = TransportKind::WebTransport;
            return Ok((conn, None));
        }
        let (ws, picked) = transport::open(
            &self.endpoint,
            &self.options.versions,
            self.tls.as_ref(),
            self.options.timeouts.connect,
            self.options.traceparent.as_ref(),
        )
        .await?;
        self.transport = TransportKind::WebSocket;
        tracing::debug!(url = %self.endpoint.url, transport = %self.transport, "connected");
        Ok((Conn::Ws(Box::new(ws)), picked))
    }

    /// A WebTransport connection to the current endpoint, or `None` when there is none to
    /// try (a `ws://` URL, no CA file, disabled, failed lately) or the attempt failed.
    #[cfg(feature = "webtransport")]
    async fn open_webtransport(&mut self) -> Option<Conn> {
        let wt = self.options.webtransport;
        let tls = self.wt_tls.clone()?;
        let url = transport::webtransport_url(&self.endpoint, wt.port)?;
        let now = Instant::now();
        self.wt_failed
            .retain(|_, failed| now.duration_since(*failed) < wt.retry_after);
        if self.wt_failed.contains_key(&url) {
            tracing::debug!(%url, "WebTransport failed lately; using WebSocket");
            return None;
        }
        let started = Instant::now();
        let attempt = super::webtransport::WtConnection::connect(
            &url,
            &self.options.versions,
            tls,
            wt.deadline,
            self.options.traceparent.as_ref(),
        )
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match attempt {
            Ok(conn) => {
                tracing::debug!(%url, elapsed_ms, transport = "webtransport", "connected");
                Some(Conn::Wt(Box::new(conn)))
            }
            Err(err) => {
                self.webtransport_fallbacks += 1;
                // Bounded: the map only holds URLs this client was sent to lately.
                if self.wt_failed.len() < MAX_WT_FAILED {
                    self.wt_failed.insert(url.clone(), Instant::now());
                }
                tracing::info!(%url, %err, elapsed_ms, "WebTransport unavailable; falling back to WebSocket");
                None
            }
        }
    }

    async fn handshake(&mut self, resume: Option<Resume>) -> Result<Handshake, ClientError> {
        let timeouts = self.options.timeouts;
        let (mut conn, picked) = self.open().await?;
        let url = self.endpoint.url.clone();
        let hello = Message::Hello(Hello {
            token: self.options.token.clone(),
            versions: self.options.versions.iter().map(|v| v.as_u8()).collect(),
            resume,
        });
        let frame = self.encode(&hello)?;
        let hello_sent = std::time::Instant::now();
        conn.send(frame, &url).await?;
        let wait = async {
            loop {
                let bytes = match conn.recv(&url).await {
                    Received::Frame(bytes) => bytes,
                    Received::Control => continue,
                    Received::Closed(None) => return Err(ClientError::ConnectionLost),
                    Received::Closed(close) => return Err(conn.closed_in_handshake(close)),
                    Received::Failed(err) => return Err(err),
                };
                match protocol::decode(&bytes)? {
                    Message::Welcome(welcome) => return Ok(Reply::Welcome(welcome)),
                    Message::Redirect(redirect) => return Ok(Reply::Redirect(redirect.url)),
                    Message::Error(error) => return Err(ClientError::from_frame(&error)),
                    Message::Ping(ping) => {
                        let pong = Message::Pong(Pong { nonce: ping.nonce });
                        let frame = Bytes::from(self.encoder.encode_to_vec(&pong)?);
                        conn.send(frame, &url).await?;
                    }
                    other => {
                        return Err(ClientError::Protocol(format!(
                            "expected Welcome, got {:?}",
                            other.frame_type()
                        )));
                    }
                }
            }
        };
        let outcome = tokio::time::timeout(timeouts.handshake, wait).await;
        match outcome {
            Err(_) => Err(ClientError::Timeout { what: "Welcome" }),
            Ok(Ok(Reply::Welcome(welcome))) => {
                self.hello_rtt = hello_sent.elapsed();
                if let Some(picked) = picked
                    && picked.as_u8() != welcome.version
                {
                    tracing::debug!(
                        ?picked,
                        welcome = welcome.version,
                        "version header and Welcome differ; Welcome wins"
                    );
                }
                Ok(Handshake::Welcome(conn, welcome))
            }
            Ok(Ok(Reply::Redirect(url))) => {
                conn.close().await;
                Ok(Handshake::Redirect(url))
            }
            Ok(Err(err)) => Err(err),
        }
    }

    /// Adopts a welcomed socket: session, version, heartbeat; re-joins and re-sends joins.
    async fn welcomed(
        &mut self,
        conn: Conn,
        welcome: &Welcome,
        asked_resume: bool,
    ) -> Result<(), ClientError> {
        let asked = std::mem::replace(&mut self.session, welcome.session.clone());
        self.version = ProtocolVersion::from_u8(welcome.version).ok_or_else(|| {
            ClientError::Protocol(format!(
                "server picked unknown protocol version {}",
                welcome.version
            ))
        })?;
        self.silence = self.options.timeouts.silence.unwrap_or_else(|| {
            if welcome.heartbeat_ms == 0 {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(u64::from(welcome.heartbeat_ms)).mul_f64(2.5)
                    + Duration::from_secs(2)
            }
        });
        self.info.send_replace(SessionInfo {
            url: self.endpoint.url.clone(),
            session: welcome.session.clone(),
            version: self.version,
            node: welcome.node.clone(),
            heartbeat_ms: welcome.heartbeat_ms,
            resumed: welcome.resumed,
            reconnects: self.reconnects,
            user: self.user.clone(),
            transport: self.transport,
            webtransport_fallbacks: self.webtransport_fallbacks,
        });
        self.conn = Some(conn);
        self.unresumed = None;
        if asked_resume && !welcome.resumed {
            // The server no longer knows our session: join our rooms again. If the session
            // lives on at the owner of a room, the join's Redirect leads there.
            if self.rooms.names().next().is_some() {
                self.unresumed = Some(self.rooms.resume(&asked));
            }
            let rooms: Vec<String> = self.rooms.names().map(str::to_string).collect();
            self.rooms.clear();
            for room in rooms {
                let id = self.ids.next_id();
                self.pending.insert(
                    id,
                    PendingJoin {
                        room,
                        reply: None,
                        refusals: 0,
                    },
                );
            }
        }
        // (Re-)send every join awaiting an answer under a fresh request id.
        let pending: Vec<PendingJoin> = self.pending.drain().map(|(_, p)| p).collect();
        for join in pending {
            let id = self.ids.next_id();
            let msg = Message::Join(Join {
                request_id: id,
                room: join.room.clone(),
            });
            self.pending.insert(id, join);
            let frame = self.encode(&msg)?;
            if let Some(conn) = self.conn.as_mut() {
                conn.send(frame, &self.endpoint.url).await?;
            }
        }
        // Requests refused while the room moved go to where the session was resumed.
        for msg in self.retries.take_on_welcome(welcome.resumed) {
            tracing::info!(frame = ?msg.frame_type(), "sending a refused request again");
            let frame = self.encode(&msg)?;
            if let Some(conn) = self.conn.as_mut() {
                conn.send(frame, &self.endpoint.url).await?;
            }
            self.retries.sent(&msg);
        }
        Ok(())
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, mut conn: Conn) -> Exit {
        let url = self.endpoint.url.clone();
        let mut last_heard = Instant::now();
        loop {
            let deadline = last_heard + self.silence;
            tokio::select! {
                biased;
                next = conn.recv(&url) => {
                    let exit = match next {
                        Received::Closed(None) => Some(Exit::Lost(ClientError::ConnectionLost)),
                        Received::Failed(err) => Some(Exit::Lost(err)),
                        Received::Frame(bytes) => {
                            last_heard = Instant::now();
                            self.on_frame(&bytes, &mut conn).await
                        }
                        Received::Closed(Some(close)) => Some(close_exit(close)),
                        Received::Control => {
                            last_heard = Instant::now();
                            None
                        }
                    };
                    if let Some(exit) = exit {
                        return exit;
                    }
                }
                cmd = next_command(&mut self.deferred, &mut self.cmd_rx) => {
                    let Some(cmd) = cmd else {
                        conn.close().await;
                        return Exit::Closed;
                    };
                    if let Some(exit) = self.on_command(cmd, &mut conn).await {
                        return exit;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Exit::Lost(ClientError::Timeout { what: SILENCE });
                }
                () = sleep_until_opt(self.retries.next_due()) => {
                    for msg in self.retries.take_due(Instant::now()) {
                        tracing::info!(frame = ?msg.frame_type(), "retrying a request refused with 1010");
                        if let Err(WriteError::Socket(err)) = self.write(&mut conn, &msg).await {
                            return Exit::Lost(err);
                        }
                    }
                }
            }
        }
    }

    async fn on_frame(&mut self, bytes: &[u8], conn: &mut Conn) -> Option<Exit> {
        let msg = match protocol::decode(bytes) {
            Ok(msg) => msg,
            Err(err) => {
                tracing::warn!(%err, "undecodable frame from server");
                self.deliver_err(ClientError::Frame(err)).await;
                return None;
            }
        };
        match msg {
            Message::Ping(ping) => {
                let pong = Message::Pong(Pong { nonce: ping.nonce });
                match self.write(conn, &pong).await {
                    Ok(()) => {}
                    Err(WriteError::Encode(err) | WriteError::Socket(err)) => {
                        return Some(Exit::Lost(err));
                    }
                }
            }
            Message::Pong(_) | Message::Welcome(_) | Message::Hello(_) => {}
            Message::Joined(joined) => {
                self.redirects_in_a_row = 0;
                match self.pending.remove(&joined.request_id) {
                    Some(PendingJoin { room, reply, .. }) => {
                        let room = if joined.room.is_empty() {
                            room
                        } else {
                            joined.room.clone()
                        };
                        self.rooms.joined(&room, joined.last_seq);
                        match reply {
                            Some(reply) => {
                                let _ = reply.send(Ok(joined));
                            }
                            None => self.deliver(Message::Joined(joined)).await,
                        }
                    }
                    None => {
                        // A resync after a resume whose replay had a gap: the room's log
                        // position moves to the one given.
                        if self.rooms.contains(&joined.room) {
                            self.rooms.joined(&joined.room, joined.last_seq);
                        }
                        self.deliver(Message::Joined(joined)).await;
                    }
                }
            }
            Message::Error(error) => return self.on_error(error).await,
            Message::Redirect(redirect) => {
                self.redirects_in_a_row += 1;
                if self.redirects_in_a_row > self.options.max_redirects {
                    if let Some(PendingJoin {
                        reply: Some(reply), ..
                    }) = self.pending.remove(&redirect.request_id)
                    {
                        let _ = reply.send(Err(ClientError::TooManyRedirects {
                            limit: self.options.max_redirects,
                        }));
                    }
                    self.redirects_in_a_row = 0;
                    return None;
                }
                conn.close().await;
                return Some(Exit::Redirect(redirect.url));
            }
            Message::Migrate(migrate) => {
                conn.close().await;
                return Some(Exit::Migrate {
                    url: migrate.url,
                    resume_token: migrate.resume_token,
                });
            }
            Message::Event(event) => {
                if self.rooms.observe_event(&event) {
                    let msg = Message::Event(event);
                    self.calls.observe(&msg, &self.user);
                    self.deliver(msg).await;
                }
            }
            other => {
                self.calls.observe(&other, &self.user);
                self.deliver(other).await;
            }
        }
        None
    }

    /// An `Error` frame: a retryable refusal of a join or a tracked request is retried by the
    /// library (docs/protocol.md, "Retryable refusals"); anything else goes to its caller or
    /// the application.
    async fn on_error(&mut self, error: ErrorFrame) -> Option<Exit> {
        let policy = self.options.reconnect;
        if error.request_id != 0
            && let Some(mut join) = self.pending.remove(&error.request_id)
        {
            let err = ClientError::from_frame(&error);
            if rejoin_worth_retrying(&error) && join.refusals < policy.max_attempts {
                // The room is between owners (or the node cannot commit now): keep the join
                // and reconnect, so it is sent again where the room lives.
                join.refusals += 1;
                tracing::info!(room = %join.room, %err, "join refused; reconnecting to retry it");
                self.pending.insert(error.request_id, join);
                return Some(Exit::Lost(err));
            }
            match join.reply {
                Some(reply) => {
                    let _ = reply.send(Err(err));
                }
                None => self.deliver(Message::Error(error)).await,
            }
            return None;
        }
        let refusal = self.retries.refused(
            &error,
            Instant::now(),
            |n| policy.backoff(n),
            policy.max_attempts,
        );
        match refusal {
            Refusal::Deliver => {
                if error.request_id == 0
                    && ErrorCode::from_code(error.code) == Some(ErrorCode::AuthFailed)
                {
                    return Some(Exit::Fatal(ClientError::from_frame(&error)));
                }
                self.deliver(Message::Error(error)).await;
            }
            Refusal::AfterMove => {
                tracing::info!(request_id = error.request_id, message = %error.message, "request refused while the room moves; sending it again after the move");
            }
            Refusal::Later(_) => {
                tracing::info!(request_id = error.request_id, message = %error.message, "request refused for now; retrying it after a backoff");
            }
            Refusal::Ignore => {
                tracing::debug!(message = %error.message, "the room moved; following the node's Migrate");
            }
        }
        None
    }

    async fn on_command(&mut self, cmd: Command, conn: &mut Conn) -> Option<Exit> {
        match cmd {
            Command::Join { room, reply } => {
                if self.pending.len() >= MAX_PENDING {
                    self.pending
                        .retain(|_, p| p.reply.as_ref().is_none_or(|r| !r.is_closed()));
                    if self.pending.len() >= MAX_PENDING {
                        let _ = reply.send(Err(ClientError::Limit("pending joins")));
                        return None;
                    }
                }
                let id = self.ids.next_id();
                let msg = Message::Join(Join {
                    request_id: id,
                    room: room.clone(),
                });
                self.pending.insert(
                    id,
                    PendingJoin {
                        room,
                        reply: Some(reply),
                        refusals: 0,
                    },
                );
                // On a socket failure the join stays pending and is re-sent after reconnecting.
                match self.write(conn, &msg).await {
                    Ok(()) => {}
                    Err(WriteError::Encode(err)) => {
                        if let Some(PendingJoin {
                            reply: Some(reply), ..
                        }) = self.pending.remove(&id)
                        {
                            let _ = reply.send(Err(err));
                        }
                    }
                    Err(WriteError::Socket(err)) => return Some(Exit::Lost(err)),
                }
            }
            Command::Invite { room, to, reply } => {
                let call_id = new_call_id();
                self.calls.insert(
                    &call_id,
                    CallInfo {
                        room: room.clone(),
                        peer: to.clone(),
                    },
                );
                let msg = Message::Invite(Invite {
                    request_id: self.ids.next_id(),
                    room,
                    call_id: call_id.clone(),
                    from: self.user.clone(),
                    to,
                });
                match self.write(conn, &msg).await {
                    Ok(()) => {
                        let _ = reply.send(Ok(call_id));
                    }
                    Err(WriteError::Encode(err)) => {
                        self.calls.remove(&call_id);
                        let _ = reply.send(Err(err));
                    }
                    Err(WriteError::Socket(err)) => {
                        let _ = reply.send(Err(ClientError::ConnectionLost));
                        return Some(Exit::Lost(err));
                    }
                }
            }
            Command::Send {
                op: Op::Ice { call_id, candidate },
                reply,
            } => return self.send_ice(call_id, candidate, reply, conn).await,
            Command::Send { op, reply } => {
                let msg = match self.build(op) {
                    Ok(msg) => msg,
                    Err(err) => {
                        let _ = reply.send(Err(err));
                        return None;
                    }
                };
                match self.write(conn, &msg).await {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(WriteError::Encode(err)) => {
                        let _ = reply.send(Err(err));
                    }
                    Err(WriteError::Socket(err)) => {
                        let _ = reply.send(Err(ClientError::ConnectionLost));
                        return Some(Exit::Lost(err));
                    }
                }
            }
            Command::Close { reply } => {
                conn.close().await;
                let _ = reply.send(());
                return Some(Exit::Closed);
            }
        }
        None
    }

    /// Sends one candidate, merging candidates for the same call queued right behind it into
    /// one IceBatch on v2.
    async fn send_ice(
        &mut self,
        call_id: String,
        first: Candidate,
        reply: oneshot::Sender<Result<(), ClientError>>,
        conn: &mut Conn,
    ) -> Option<Exit> {
        let Some(call) = self.calls.get(&call_id).cloned() else {
            let _ = reply.send(Err(ClientError::UnknownCall(call_id)));
            return None;
        };
        let mut candidates = vec![first];
        let mut replies = vec![reply];
        if self.version >= ProtocolVersion::V2 {
            while candidates.len() < MAX_BATCH && self.deferred.is_none() {
                match self.cmd_rx.try_recv() {
                    Ok(Command::Send {
                        op:
                            Op::Ice {
                                call_id: next,
                                candidate,
                            },
                        reply,
                    }) if next == call_id => {
                        candidates.push(candidate);
                        replies.push(reply);
                    }
                    Ok(other) => self.deferred = Some(other),
                    Err(_) => break,
                }
            }
        }
        let msgs: Vec<Message> = if candidates.len() > 1 {
            vec![Message::IceBatch(IceBatch {
                room: call.room,
                call_id,
                from: self.user.clone(),
                to: call.peer,
                candidates,
            })]
        } else {
            candidates
                .into_iter()
                .map(|c| {
                    Message::IceCandidate(IceCandidate {
                        room: call.room.clone(),
                        call_id: call_id.clone(),
                        from: self.user.clone(),
                        to: call.peer.clone(),
                        candidate: c.candidate,
                        sdp_mid: c.sdp_mid,
                        sdp_mline_index: c.sdp_mline_index,
                    })
                })
                .collect()
        };
        for msg in &msgs {
            match self.write(conn, msg).await {
                Ok(()) => {}
                Err(WriteError::Encode(err)) => {
                    let text = err.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(ClientError::Protocol(text.clone())));
                    }
                    return None;
                }
                Err(WriteError::Socket(err)) => {
                    for reply in replies {
                        let _ = reply.send(Err(ClientError::ConnectionLost));
                    }
                    return Some(Exit::Lost(err));
                }
            }
        }
        for reply in replies {
            let _ = reply.send(Ok(()));
        }
        None
    }

    /// The frame for a fire-and-forget operation, addressed through the call table.
    fn build(&mut self, op: Op) -> Result<Message, ClientError> {
        let call = |calls: &CallTable, id: &str| {
            calls
                .get(id)
                .cloned()
                .ok_or_else(|| ClientError::UnknownCall(id.to_string()))
        };
        let from = self.user.clone();
        Ok(match op {
            Op::Leave { room } => {
                self.rooms.left(&room);
                Message::Leave(Leave {
                    request_id: self.ids.next_id(),
                    room,
                })
            }
            Op::Answer {
                call_id,
                accepted,
                reason,
            } => {
                // A rejected call is forgotten on its `ended` event, not here: a rejection
                // lost in a reconnect must stay possible to send again.
                let info = call(&self.calls, &call_id)?;
                Message::InviteResult(InviteResult {
                    request_id: self.ids.next_id(),
                    room: info.room,
                    call_id,
                    from,
                    to: info.peer,
                    accepted,
                    reason,
                })
            }
            Op::Offer { call_id, sdp } => {
                let info = call(&self.calls, &call_id)?;
                Message::Offer(self.sdp(info, call_id, sdp))
            }
            Op::SdpAnswer { call_id, sdp } => {
                let info = call(&self.calls, &call_id)?;
                Message::Answer(self.sdp(info, call_id, sdp))
            }
            Op::Ice { call_id, candidate } => {
                let info = call(&self.calls, &call_id)?;
                Message::IceCandidate(IceCandidate {
                    room: info.room,
                    call_id,
                    from,
                    to: info.peer,
                    candidate: candidate.candidate,
                    sdp_mid: candidate.sdp_mid,
                    sdp_mline_index: candidate.sdp_mline_index,
                })
            }
            Op::EndOfCandidates { call_id } => {
                let info = call(&self.calls, &call_id)?;
                Message::IceCandidate(IceCandidate {
                    room: info.room,
                    call_id,
                    from,
                    to: info.peer,
                    candidate: String::new(),
                    sdp_mid: String::new(),
                    sdp_mline_index: 0,
                })
            }
            Op::Hangup { call_id, reason } => {
                // Forgotten on the call's `ended` event (`CallTable::observe`), not here: a
                // hangup lost in a reconnect or refused must stay possible to send again.
                let info = call(&self.calls, &call_id)?;
                Message::Hangup(Hangup {
                    request_id: self.ids.next_id(),
                    room: info.room,
                    call_id,
                    from,
                    reason,
                })
            }
            Op::Raw(msg) => msg,
        })
    }

    fn sdp(&mut self, info: CallInfo, call_id: String, sdp: String) -> Sdp {
        Sdp {
            request_id: self.ids.next_id(),
            room: info.room,
            call_id,
            from: self.user.clone(),
            to: info.peer,
            sdp,
        }
    }

    fn encode(&mut self, msg: &Message) -> Result<Bytes, ClientError> {
        Ok(Bytes::from(self.encoder.encode_to_vec(msg)?))
    }

    async fn send_frame(&self, conn: &mut Conn, frame: Bytes) -> Result<(), ClientError> {
        conn.send(frame, &self.endpoint.url).await
    }

    /// Encodes and sends; an encode failure is a local error for the caller, a socket
    /// failure ends the connection.
    async fn write(&mut self, conn: &mut Conn, msg: &Message) -> Result<(), WriteError> {
        let frame = self.encode(msg).map_err(WriteError::Encode)?;
        self.send_frame(conn, frame)
            .await
            .map_err(WriteError::Socket)?;
        self.retries.sent(msg);
        Ok(())
    }

    async fn deliver(&mut self, msg: Message) {
        // A dropped receiver just means nobody listens; keep serving the sender.
        let _ = self.incoming.send(Ok(msg)).await;
    }

    async fn deliver_err(&mut self, err: ClientError) {
        let _ = self.incoming.send(Err(err)).await;
    }

    /// Fails every waiting join and ends the incoming stream with `err`.
    async fn fail(&mut self, err: ClientError) {
        tracing::warn!(%err, "client stopped");
        for (_, pending) in self.pending.drain() {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(ClientError::ConnectionLost));
            }
        }
        self.deliver_err(err).await;
    }
}

/// The next command: one deferred by ICE batching first, then the queue.
async fn next_command(
    deferred: &mut Option<Command>,
    rx: &mut mpsc::Receiver<Command>,
) -> Option<Command> {
    match deferred.take() {
        Some(cmd) => Some(cmd),
        None => rx.recv().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a failed reconnect attempt means trying the other known node (the entry URL, or
/// back from the entry to the node we were on): the node refused the connection or did not
/// answer in time, or failed `FAILURES_BEFORE_ENTRY` times in a row in any other retriable
/// way (e.g. 1010 "no owner / handing off").
fn should_try_elsewhere(err: &ClientError, failures_in_a_row: u32) -> bool {
    matches!(
        err,
        ClientError::Connect { .. } | ClientError::Timeout { .. }
    ) || err.code() == Some(ErrorCode::NotOwner)
        || node_gone(err)
        || failures_in_a_row >= FAILURES_BEFORE_ENTRY
}

/// Whether the upgrade was answered 404 or 410: behind a proxy that routes one host or path per
/// node, the node is gone (its route was removed), not merely busy.
fn node_gone(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::Http {
            status: 404 | 410,
            ..
        }
    )
}

/// Whether a refused join should be retried: the room is between owners or the node cannot
/// commit right now (anything else, e.g. a full room, is the application's).
fn rejoin_worth_retrying(error: &ErrorFrame) -> bool {
    let err = ClientError::from_frame(error);
    err.is_retriable() || err.code() == Some(ErrorCode::NotOwner)
}

/// How to react to the node closing the connection (a WebSocket close code, or the same code
/// as a WebTransport session's close): policy and protocol closes are final, everything else
/// (going away, overload 1013, abnormal) is retried.
fn close_exit((code, reason): (u16, String)) -> Exit {
    let reason = format!("server closed the connection: {code} {reason}");
    match code {
        // Policy, protocol error, message too big, unsupported data.
        1008 | 1002 | 1009 | 1003 => Exit::Fatal(ClientError::WebSocket(reason)),
        _ => Exit::Lost(ClientError::WebSocket(reason)),
    }
}

//! One client connection after the WebSocket handshake: a reader (this task) that enforces
//! the protocol order, limits and routing and talks to room actors, and a writer task that
//! drains the connection's bounded outbound queue and sends heartbeats.
//!
//! Close codes the server uses: 1000 idle timeout / redirected; 1001 going away (drain);
//! 1002 too many bad frames or a version mismatch in Hello; 1008 authentication failed, no
//! Hello in time, flooding; 1009 a message or frame length above 64 KiB; 1013 slow consumer
//! or overloaded. Every connection-ending error is preceded by an Error frame when the
//! connection can still carry one.

use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, Stream, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::room::state::{SeatMap, check_id};
use crate::room::{IceMsg, Peer, RegistryError, RoomFrame, RoomHandle, RoomReply};
use crate::routing::Ownership;
use switchboard_contract::shard::shard_of;
use switchboard_protocol::auth::{self, Claims};
use switchboard_protocol::{
    ErrorCode, FrameError, FrameType, FrameView, Hello, Join, Leave, Message, Migrate, Pong,
    ProtocolVersion, Redirect, Welcome, decode_view,
};

use super::NodeShared;
use super::limits::{BadFrames, Rate, TokenBucket};
use super::writer::write_loop;

/// How long the writer may take to flush what is queued after the reader finished.
const WRITER_GRACE: Duration = Duration::from_secs(5);

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed or the socket ended.
    Gone,
    /// A close was queued (or the connection killed); the writer finishes.
    Closing,
    /// The node is draining.
    Shutdown,
}

struct Session {
    id: String,
    user: String,
    claims: Claims,
    /// Rooms joined (a small sorted vector: a hash map's first allocation is ≈ 0.3 KiB).
    rooms: SeatMap<RoomHandle>,
}

struct Reader {
    node: Arc<NodeShared>,
    peer: Peer,
    version: ProtocolVersion,
    bucket: TokenBucket,
    bad: BadFrames,
    session: Option<Session>,
    started: Instant,
    last_seen: Instant,
}

enum Route {
    Local,
    Remote(String),
    Unavailable,
}

/// Serves one upgraded connection, already split into its halves, until it ends. The
/// caller splits: an async fn keeps its arguments for its whole life, so a whole WebSocket
/// stream passed in would stay in every connection's task next to the halves it became.
pub(super) async fn serve<Si, St>(
    sink: Si,
    stream: St,
    version: ProtocolVersion,
    node: Arc<NodeShared>,
) where
    Si: Sink<WsMessage, Error = WsError> + Unpin + Send + 'static,
    St: Stream<Item = Result<WsMessage, WsError>> + Unpin,
{
    let tunables = node.settings.borrow().tunables.clone();
    let (peer, rx) = Peer::new(version, tunables.outbound_queue, node.metrics.clone());
    let mut writer = tokio::spawn(write_loop(sink, rx, peer.clone(), node.clone()));
    let now = Instant::now();
    let mut reader = Reader {
        node: node.clone(),
        peer: peer.clone(),
        version,
        bucket: TokenBucket::new(tunables.rate_burst, now),
        bad: BadFrames::default(),
        session: None,
        started: now,
        last_seen: now,
    };
    let end = reader.run(stream).await;
    Box::pin(reader.detach_all()).await;
    match end {
        End::Gone => peer.kill(1000, ""),
        End::Shutdown => peer.close(1001, "going away"),
        End::Closing => {}
    }
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        peer.kill(1013, "write timeout");
        let _ = writer.await;
    }
}

impl Reader {
    fn tunables(&self) -> crate::config::Tunables {
        self.node.settings.borrow().tunables.clone()
    }

    async fn run<St>(&mut self, mut stream: St) -> End
    where
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        loop {
            let t = self.tunables();
            let idle_at = self.last_seen + t.idle_timeout;
            let hello_at = self.started + t.hello_timeout;
            let wake = if self.session.is_none() {
                idle_at.min(hello_at)
            } else {
                idle_at
            };
            tokio::select! {
                biased;
                () = self.node.shutdown.cancelled() => return End::Shutdown,
                _ = self.peer.killed() => return End::Closing,
                () = tokio::time::sleep_until(wake) => {
                    if self.session.is_none() && Instant::now() >= hello_at {
                        self.node.metrics.disconnect("hello_timeout");
                        self.error(ErrorCode::Timeout, "no Hello within the hello timeout", 0);
                        self.peer.close(1008, "Hello timeout");
                    } else {
                        self.node.metrics.disconnect("idle");
                        tracing::debug!(conn = self.peer.id(), "evicting idle connection");
                        self.peer.kill(1000, "idle timeout");
                    }
                    return End::Closing;
                }
                item = stream.next() => match item {
                    None => return End::Gone,
                    Some(Err(e)) => return self.stream_error(e),
                    Some(Ok(msg)) => {
                        self.last_seen = Instant::now();
                        if let Some(end) = self.on_message(msg, &t).await {
                            return end;
                        }
                    }
                }
            }
        }
    }

    fn stream_error(&mut self, e: WsError) -> End {
        match e {
            WsError::Capacity(e) => {
                self.node.metrics.disconnect("too_large");
                self.error(ErrorCode::BadFrame, format!("message too large: {e}"), 0);
                self.peer.close(1009, "message too large");
                End::Closing
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => End::Gone,
            WsError::Protocol(e) => {
                tracing::debug!(conn = self.peer.id(), error = %e, "websocket protocol error");
                self.node.metrics.disconnect("ws_protocol");
                self.peer.close(1002, "websocket protocol error");
                End::Closing
            }
            other => {
                tracing::debug!(conn = self.peer.id(), error = %other, "connection read error");
                End::Gone
            }
        }
    }

    fn error(&mut self, code: ErrorCode, message: impl Into<String>, request_id: u32) {
        self.peer.send_error(code, message, request_id);
    }

    fn send(&mut self, msg: &Message) {
        self.peer.send_msg(msg);
    }

    /// Reports a bad frame (Error 1008) and closes after too many in a row.
    fn bad_frame(&mut self, message: impl Into<String>, max: u32) -> Option<End> {
        self.error(ErrorCode::BadFrame, message, 0);
        if self.bad.bad(max) {
            self.node.metrics.disconnect("bad_frames");
            self.peer.close(1002, "too many bad frames");
            return Some(End::Closing);
        }
        None
    }

    async fn on_message(&mut self, msg: WsMessage, t: &crate::config::Tunables) -> Option<End> {
        let bytes = match msg {
            WsMessage::Binary(bytes) => bytes,
            WsMessage::Text(_) => {
                if let Some(end) = self.rate(t) {
                    return end;
                }
                return self.bad_frame(
                    "text messages are not part of the protocol; send binary frames",
                    t.max_bad_frames,
                );
            }
            WsMessage::Close(_) => return Some(End::Gone),
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => return None,
        };
        if let Some(end) = self.rate(t) {
            return end;
        }
        let view = match decode_view(&bytes) {
            Ok(view) => view,
            Err(e) => return self.frame_error(&e, t),
        };
        self.bad.good();
        let frame_type = view.frame_type();
        self.node.metrics.frame_in(frame_type);
        if self.session.is_none() {
            return match view {
                FrameView::Hello(_) => match view.to_owned() {
                    // Boxed: once per connection, and its state (settings, claims, resume
                    // awaits) would otherwise sit in every idle connection's task.
                    Message::Hello(hello) => Box::pin(self.hello(hello)).await,
                    _ => None,
                },
                _ => self.bad_frame(
                    format!("expected Hello first, got {}", frame_type.name()),
                    t.max_bad_frames,
                ),
            };
        }
        match view {
            FrameView::Ping(p) => {
                self.send(&Message::Pong(Pong { nonce: p.nonce() }));
                None
            }
            FrameView::Pong(_) => None,
            FrameView::Hello(_) => self.bad_frame("Hello was already received", t.max_bad_frames),
            _ => {
                let msg = view.to_owned();
                self.dispatch(msg, t).await;
                None
            }
        }
    }

    /// Applies the rate limit; Some(..) means stop processing this message.
    fn rate(&mut self, t: &crate::config::Tunables) -> Option<Option<End>> {
        match self.bucket.check(
            Instant::now(),
            t.rate_limit,
            t.rate_burst,
            t.flood_close_after,
        ) {
            Rate::Allow => None,
            Rate::Limited { notify } => {
                if notify {
                    self.error(
                        ErrorCode::RateLimited,
                        "rate limit exceeded; messages dropped",
                        0,
                    );
                }
                Some(None)
            }
            Rate::Flood => {
                self.node.metrics.disconnect("flood");
                self.error(ErrorCode::RateLimited, "persistent flooding; closing", 0);
                self.peer.close(1008, "flooding");
                Some(Some(End::Closing))
            }
        }
    }

    fn frame_error(&mut self, e: &FrameError, t: &crate::config::Tunables) -> Option<End> {
        if matches!(e, FrameError::UnknownType(_)) {
            self.node.metrics.frames_in_unknown.inc();
        }
        if let Some(code) = e.closes_connection() {
            self.error(e.error_code(), e.to_string(), 0);
            self.node.metrics.disconnect("too_large");
            self.peer.close(code, "frame too large");
            return Some(End::Closing);
        }
        self.bad_frame(e.to_string(), t.max_bad_frames)
    }

    fn route(&self, room: &str) -> Route {
        let ownership = self.node.registry.ownership();
        match ownership.owner_of(shard_of(room, ownership.shard_count())) {
            Ownership::Local { .. } => Route::Local,
            Ownership::Remote { url } => Route::Remote(url),
            Ownership::Unavailable => Route::Unavailable,
        }
    }

    async fn hello(&mut self, hello: Hello) -> Option<End> {
        let version = self.version.as_u8();
        if !hello.versions.is_empty() && !hello.versions.contains(&version) {
            self.error(
                ErrorCode::VersionUnsupported,
                format!(
                    "the handshake negotiated {} but Hello offers versions {:?}",
                    self.version, hello.versions
                ),
                0,
            );
            self.peer.close(1002, "version mismatch");
            return Some(End::Closing);
        }
        let settings = self.node.settings.borrow().clone();
        let claims = match auth::verify(&settings.jwt_secret, &hello.token, auth::unix_now()) {
            Ok(claims) => claims,
            Err(e) => {
                self.node
                    .metrics
                    .handshake_failures
                    .with_label_values(&[e.metric_label()])
                    .inc();
                self.node.metrics.disconnect("auth");
                self.error(
                    ErrorCode::AuthFailed,
                    format!("authentication failed: {e}"),
                    0,
                );
                self.peer.close(1008, "authentication failed");
                return Some(End::Closing);
            }
        };
        // The room in the token decides where the client belongs, before anything else.
        if let Some(room) = claims.rooms.first_room() {
            match self.route(room) {
                Route::Local => {}
                Route::Remote(url) => {
                    self.send(&Message::Redirect(Redirect {
                        request_id: 0,
                        room: room.to_owned(),
                        url,
                    }));
                    self.peer.close(1000, "redirected");
                    return Some(End::Closing);
                }
                Route::Unavailable => {
                    self.error(
                        ErrorCode::Draining,
                        "the room's shard has no owner right now; retry",
                        0,
                    );
                    self.peer.close(1013, "retry later");
                    return Some(End::Closing);
                }
            }
        }
        if self.node.health.is_draining() {
            self.error(
                ErrorCode::Draining,
                "node is draining; reconnect elsewhere",
                0,
            );
            self.peer.close(1013, "draining");
            return Some(End::Closing);
        }
        let mut resume = None;
        if let Some(r) = &hello.resume {
            match self.node.registry.session(&r.session) {
                Some(entry) if entry.user == claims.sub => {
                    resume = Some((r.session.clone(), entry.rooms, r.last_seq));
                }
                Some(_) => {
                    self.node
                        .metrics
                        .resumes
                        .with_label_values(&["wrong_user"])
                        .inc();
                    self.error(
                        ErrorCode::AuthFailed,
                        "that session belongs to another user",
                        0,
                    );
                    self.peer.close(1008, "authentication failed");
                    return Some(End::Closing);
                }
                None => {
                    self.node
                        .metrics
                        .resumes
                        .with_label_values(&["unknown"])
                        .inc();
                }
            }
        }
        let session_id = match &resume {
            Some((id, _, _)) => id.clone(),
            None => format!("{:032x}", rand::random::<u128>()),
        };
        let heartbeat_ms =
            u32::try_from(settings.tunables.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        self.send(&Message::Welcome(Welcome {
            session: session_id.clone(),
            version,
            node: settings.node_name.clone(),
            heartbeat_ms,
            resumed: resume.is_some(),
        }));
        self.peer.set_established();
        let user = claims.sub.clone();
        tracing::debug!(
            conn = self.peer.id(),
            user,
            session = session_id,
            resumed = resume.is_some(),
            "hello"
        );
        let mut session = Session {
            id: session_id,
            user,
            claims,
            rooms: SeatMap::new(),
        };
        let mut lost_room = None;
        if let Some((_, rooms, last_seq)) = resume {
            let mut resumed = 0;
            for room in rooms {
                let replied = match self.node.registry.room(&room) {
                    Some(handle) => {
                        let reply = handle
                            .resume(&session.user, &session.id, &self.peer, last_seq)
                            .await;
                        (reply == RoomReply::Done).then_some(handle)
                    }
                    None => None,
                };
                match replied {
                    Some(handle) => {
                        session.rooms.insert(room, handle);
                        resumed += 1;
                    }
                    None => lost_room = lost_room.or(Some(room)),
                }
            }
            let outcome = if resumed > 0 { "resumed" } else { "empty" };
            self.node
                .metrics
                .resumes
                .with_label_values(&[outcome])
                .inc();
        }
        if let Some(room) = lost_room {
            // The room moved (or is stopping) between routing and resuming: the client
            // believes it is in it, so send it on to resume there instead of leaving it in a
            // session without the room (every call frame then answered "join room first").
            self.session = Some(session);
            self.migrate_away(&room);
            return Some(End::Closing);
        }
        self.session = Some(session);
        None
    }

    /// Sends the client to resume `room` elsewhere: `Migrate` to the room's owner (or another
    /// node, which redirects; or back here later when no other node is known), then closes.
    fn migrate_away(&mut self, room: &str) {
        let ownership = self.node.registry.ownership();
        let url = ownership.migrate_url(shard_of(room, ownership.shard_count()));
        let resume_token = self
            .session
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        tracing::info!(
            conn = self.peer.id(),
            room,
            url,
            "room not resumable here; migrating the client"
        );
        self.send(&Message::Migrate(Migrate {
            room: room.to_owned(),
            url,
            resume_token,
        }));
        self.peer.close(1000, "migrated");
    }

    async fn dispatch(&mut self, msg: Message, t: &crate::config::Tunables) {
        match msg {
            // Boxed like Hello: rare, and large next to the relay path's state.
            Message::Join(j) => Box::pin(self.join(j, t)).await,
            Message::Leave(l) => Box::pin(self.leave(l)).await,
            Message::Invite(m) => {
                let room = m.room.clone();
                self.room_frame(&room, m.request_id, RoomFrame::Invite(m))
                    .await;
            }
            Message::InviteResult(m) => {
                let room = m.room.clone();
                self.room_frame(&room, m.request_id, RoomFrame::InviteResult(m))
                    .await;
            }
            Message::Offer(m) => {
                let room = m.room.clone();
                self.room_frame(&room, m.request_id, RoomFrame::Offer(m))
                    .await;
            }
            Message::Answer(m) => {
                let room = m.room.clone();
                self.room_frame(&room, m.request_id, RoomFrame::Answer(m))
                    .await;
            }
            Message::IceCandidate(m) => {
                let room = m.room.clone();
                self.room_frame(&room, 0, RoomFrame::Ice(IceMsg::One(m)))
                    .await;
            }
            Message::IceBatch(m) => {
                if !self.version.supports(FrameType::IceBatch) {
                    self.error(
                        ErrorCode::VersionUnsupported,
                        "IceBatch needs protocol v2; send IceCandidate frames",
                        0,
                    );
                    return;
                }
                let room = m.room.clone();
                self.room_frame(&room, 0, RoomFrame::Ice(IceMsg::Batch(m)))
                    .await;
            }
            Message::Hangup(m) => {
                let room = m.room.clone();
                self.room_frame(&room, m.request_id, RoomFrame::Hangup(m))
                    .await;
            }
            other => {
                let name = other.frame_type().name();
                self.error(
                    ErrorCode::BadFrame,
                    format!("{name} frames are sent by the server, not by clients"),
                    other.request_id().unwrap_or(0),
                );
            }
        }
    }

    async fn join(&mut self, j: Join, t: &crate::config::Tunables) {
        let Some(session) = &self.session else {
            return;
        };
        let rid = j.request_id;
        if let Err(e) = check_id("room", &j.room) {
            return self.error(e.code, e.message, rid);
        }
        if !session.claims.rooms.allows(&j.room) {
            return self.error(
                ErrorCode::AuthFailed,
                format!("the token does not allow room {:?}", j.room),
                rid,
            );
        }
        if session.claims.exp <= auth::unix_now() {
            return self.error(
                ErrorCode::AuthFailed,
                "the token has expired; reconnect",
                rid,
            );
        }
        if !session.rooms.contains_key(&j.room) && session.rooms.len() >= t.max_rooms_per_session {
            return self.error(
                ErrorCode::RoomFull,
                format!(
                    "a session may be in at most {} rooms",
                    t.max_rooms_per_session
                ),
                rid,
            );
        }
        if self.node.health.is_draining() {
            return self.error(
                ErrorCode::Draining,
                "node is draining; reconnect elsewhere",
                rid,
            );
        }
        match self.route(&j.room) {
            Route::Local => {}
            Route::Remote(url) => {
                return self.send(&Message::Redirect(Redirect {
                    request_id: rid,
                    room: j.room,
                    url,
                }));
            }
            Route::Unavailable => {
                return self.error(
                    ErrorCode::Draining,
                    "the room's shard has no owner right now; retry",
                    rid,
                );
            }
        }
        let (user, session_id) = (session.user.clone(), session.id.clone());
        for _attempt in 0..3 {
            let handle = match self.node.registry.open(&j.room) {
                Ok(handle) => handle,
                Err(RegistryError::NotOwner {
                    ownership: Ownership::Remote { url },
                    ..
                }) => {
                    return self.send(&Message::Redirect(Redirect {
                        request_id: rid,
                        room: j.room,
                        url,
                    }));
                }
                Err(e) => return self.error(ErrorCode::Draining, e.to_string(), rid),
            };
            match handle.join(&user, &session_id, &self.peer, rid).await {
                RoomReply::Done => {
                    if let Some(session) = &mut self.session {
                        session.rooms.insert(j.room, handle);
                    }
                    return;
                }
                RoomReply::Refused => return,
                RoomReply::Gone => continue,
            }
        }
        self.error(ErrorCode::Draining, "the room is restarting; retry", rid);
    }

    async fn leave(&mut self, l: Leave) {
        let Some(session) = &mut self.session else {
            return;
        };
        let Some(handle) = session.rooms.remove(&l.room) else {
            return self.error(
                ErrorCode::InvalidTransition,
                format!("not in room {:?}", l.room),
                l.request_id,
            );
        };
        let (user, id) = (session.user.clone(), session.id.clone());
        if handle.leave(&user, &id, &self.peer, l.request_id).await == RoomReply::Gone {
            self.error(
                ErrorCode::InvalidTransition,
                "the room is closed here",
                l.request_id,
            );
        }
    }

    async fn room_frame(&mut self, room: &str, request_id: u32, frame: RoomFrame) {
        let Some(session) = &mut self.session else {
            return;
        };
        let Some(handle) = session.rooms.get(room) else {
            return self.error(
                ErrorCode::InvalidTransition,
                format!("join room {room:?} first"),
                request_id,
            );
        };
        let handle = handle.clone();
        let (user, id) = (session.user.clone(), session.id.clone());
        if !handle.frame(&user, &id, &self.peer, frame).await {
            if let Some(session) = &mut self.session {
                session.rooms.remove(room);
            }
            self.error(
                ErrorCode::InvalidTransition,
                "the room is closed here",
                request_id,
            );
            // It stopped here (released or fenced) and its Migrate may not have reached this
            // connection: send the client on to wherever the room lives now.
            self.migrate_away(room);
        }
    }

    async fn detach_all(&mut self) {
        if let Some(session) = self.session.take() {
            for handle in session.rooms.values() {
                handle
                    .detach(&session.user, &session.id, self.peer.id())
                    .await;
            }
        }
    }
}

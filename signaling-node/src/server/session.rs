//! What a client's requests mean, once the protocol gate (`connection`) decoded and admitted
//! them: Hello (authenticate, route by the token's room, resume), Join and Leave, and the call
//! frames relayed to the session's rooms.
//!
//! The session never decides who owns a room: it asks the registry
//! ([`RoomRegistry::owner_of_room`], [`RoomRegistry::open`]), which asks the ownership view, and
//! the room's commits are fenced by the store (docs/architecture.md, "Who owns a room").

use std::sync::Arc;

use switchboard_protocol::auth::{self, Claims, RoomGrant};
use switchboard_protocol::{
    ErrorCode, Hangup, Hello, IceBatch, IceCandidate, Invite, InviteResult, Join, Leave, Message,
    Migrate, ProtocolVersion, Redirect, Sdp, Welcome,
};
use tracing::Instrument;

use crate::room::{
    IceMsg, Peer, RegistryError, RoomFrame, RoomHandle, RoomRegistry, RoomReply, SeatMap, check_id,
};
use crate::routing::Ownership;

use super::NodeShared;

/// The connection as the session sees it: the node, the client's outbound queue and the
/// negotiated version.
pub(super) struct Conn {
    pub(super) node: Arc<NodeShared>,
    pub(super) peer: Peer,
    pub(super) version: ProtocolVersion,
}

impl Conn {
    fn registry(&self) -> &RoomRegistry {
        &self.node.registry
    }

    fn error(&self, code: ErrorCode, message: impl Into<String>, request_id: u32) {
        self.peer.send_error(code, message, request_id);
    }

    fn send(&self, msg: &Message) {
        self.peer.send_msg(msg);
    }

    /// `span` under the client's trace, when it sent one.
    fn traced(&self, span: tracing::Span) -> tracing::Span {
        switchboard_telemetry::set_parent(&span, self.peer.trace());
        span
    }
}

/// Whether the connection goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Keep reading.
    Continue,
    /// A close was queued; the writer finishes.
    Closing,
}

/// A client request after Hello, as the gate admitted it.
#[derive(Debug)]
pub(super) enum Request {
    /// Join a room.
    Join(Join),
    /// Leave a room.
    Leave(Leave),
    /// Invite a member into a call.
    Invite(Invite),
    /// Accept or reject an invite.
    InviteResult(InviteResult),
    /// SDP offer.
    Offer(Sdp),
    /// SDP answer.
    Answer(Sdp),
    /// One ICE candidate.
    Ice(IceCandidate),
    /// Several ICE candidates (v2).
    IceBatch(IceBatch),
    /// End a call.
    Hangup(Hangup),
}

impl Request {
    /// The request a client frame carries; `None` for frames only the server sends.
    pub(super) fn from_client(msg: Message) -> Option<Self> {
        Some(match msg {
            Message::Join(m) => Self::Join(m),
            Message::Leave(m) => Self::Leave(m),
            Message::Invite(m) => Self::Invite(m),
            Message::InviteResult(m) => Self::InviteResult(m),
            Message::Offer(m) => Self::Offer(m),
            Message::Answer(m) => Self::Answer(m),
            Message::IceCandidate(m) => Self::Ice(m),
            Message::IceBatch(m) => Self::IceBatch(m),
            Message::Hangup(m) => Self::Hangup(m),
            _ => return None,
        })
    }
}

/// Who the client is and which rooms it sits in, once Hello succeeded.
struct Established {
    id: String,
    /// The token's subject.
    user: String,
    /// Rooms the token allows (kept instead of all its claims: this sits in every session).
    allowed: RoomGrant,
    /// When the token expires, seconds since the Unix epoch.
    expires: u64,
    /// Rooms joined (a small sorted vector: a hash map's first allocation is ≈ 0.3 KiB).
    rooms: SeatMap<RoomHandle>,
}

/// One client's session: nothing until Hello succeeds, then its identity and rooms.
#[derive(Default)]
pub(super) struct Session {
    established: Option<Established>,
}

impl Session {
    /// Whether Hello succeeded.
    pub(super) fn is_established(&self) -> bool {
        self.established.is_some()
    }

    /// Authenticates, routes the client by its token's room, and starts or resumes a session.
    pub(super) async fn hello(&mut self, cx: &Conn, hello: Hello) -> Flow {
        let span = cx.traced(tracing::debug_span!(
            "handshake",
            otel.name = if hello.resume.is_some() {
                "resume"
            } else {
                "handshake"
            },
            otel.kind = "server",
            conn = cx.peer.id(),
            user = tracing::field::Empty,
            outcome = tracing::field::Empty,
        ));
        self.hello_in_span(cx, hello).instrument(span).await
    }

    async fn hello_in_span(&mut self, cx: &Conn, hello: Hello) -> Flow {
        let version = cx.version.as_u8();
        if !hello.versions.is_empty() && !hello.versions.contains(&version) {
            cx.error(
                ErrorCode::VersionUnsupported,
                format!(
                    "the handshake negotiated {} but Hello offers versions {:?}",
                    cx.version, hello.versions
                ),
                0,
            );
            cx.peer.close(1002, "version mismatch");
            outcome("version_mismatch");
            return Flow::Closing;
        }
        let settings = cx.node.settings.borrow().clone();
        let claims = match settings.tokens.verify(&hello.token, auth::unix_now()) {
            Ok(claims) => claims,
            Err(e) => {
                let metrics = &cx.node.metrics;
                metrics.handshake_failure(e.metric_label());
                metrics.disconnect("auth");
                cx.error(
                    ErrorCode::AuthFailed,
                    format!("authentication failed: {e}"),
                    0,
                );
                cx.peer.close(1008, "authentication failed");
                outcome("auth_failed");
                return Flow::Closing;
            }
        };
        tracing::Span::current().record("user", claims.sub.as_str());
        // The room in the token decides where the client belongs, before anything else.
        if let Some(room) = claims.rooms.first_room() {
            match cx.registry().owner_of_room(room) {
                Ownership::Local { .. } => {}
                Ownership::Remote { url } => {
                    cx.send(&Message::Redirect(Redirect {
                        request_id: 0,
                        room: room.to_owned(),
                        url,
                    }));
                    cx.peer.close(1000, "redirected");
                    outcome("redirected");
                    return Flow::Closing;
                }
                Ownership::Unavailable => {
                    cx.error(ErrorCode::Draining, NO_OWNER, 0);
                    cx.peer.close(1013, "retry later");
                    outcome("no_owner");
                    return Flow::Closing;
                }
            }
        }
        if cx.node.health.is_draining() {
            cx.error(ErrorCode::Draining, DRAINING, 0);
            cx.peer.close(1013, "draining");
            outcome("draining");
            return Flow::Closing;
        }
        let mut resume = None;
        if let Some(r) = &hello.resume {
            let resumes = &cx.node.metrics.resumes;
            match cx.registry().session(&r.session) {
                Some(entry) if entry.user == claims.sub => {
                    resume = Some((r.session.clone(), entry.rooms, r.last_seq));
                }
                Some(_) => {
                    resumes.with_label_values(&["wrong_user"]).inc();
                    cx.error(
                        ErrorCode::AuthFailed,
                        "that session belongs to another user",
                        0,
                    );
                    cx.peer.close(1008, "authentication failed");
                    outcome("wrong_user");
                    return Flow::Closing;
                }
                None => resumes.with_label_values(&["unknown"]).inc(),
            }
        }
        let session_id = match &resume {
            Some((id, _, _)) => id.clone(),
            None => format!("{:032x}", rand::random::<u128>()),
        };
        let heartbeat_ms =
            u32::try_from(settings.tunables.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        cx.send(&Message::Welcome(Welcome {
            session: session_id.clone(),
            version,
            node: settings.node_name.clone(),
            heartbeat_ms,
            resumed: resume.is_some(),
        }));
        cx.peer.set_established();
        let Claims {
            sub: user,
            rooms: allowed,
            exp: expires,
            ..
        } = claims;
        tracing::debug!(
            conn = cx.peer.id(),
            user,
            session = session_id,
            resumed = resume.is_some(),
            "hello"
        );
        let mut session = Established {
            id: session_id,
            user,
            allowed,
            expires,
            rooms: SeatMap::new(),
        };
        let mut lost_room = None;
        let mut uncommitted = false;
        let resumed_session = resume.is_some();
        if let Some((_, rooms, last_seq)) = resume {
            let mut resumed = 0;
            for room in rooms {
                let replied = match cx.registry().room(&room) {
                    Some(handle) => {
                        let reply = handle
                            .resume(&session.user, &session.id, &cx.peer, last_seq)
                            .await;
                        uncommitted |= reply == RoomReply::Unavailable;
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
            cx.node.metrics.resumes.with_label_values(&[outcome]).inc();
        }
        self.established = Some(session);
        outcome(if resumed_session {
            "resumed"
        } else {
            "welcomed"
        });
        if uncommitted {
            // The room is here but could not commit the resume (etcd unreachable or full): a
            // `Migrate` back here would be followed at once, again and again while etcd is
            // out; a 1013 close is followed after the client's backoff.
            cx.peer.close(1013, STORE_UNAVAILABLE);
            outcome("store_unavailable");
            return Flow::Closing;
        }
        if let Some(room) = lost_room {
            // The room moved (or is stopping) between routing and resuming: the client
            // believes it is in it, so it resumes where the room lives now rather than staying
            // in a session without the room.
            self.migrate_away(cx, &room);
            return Flow::Closing;
        }
        Flow::Continue
    }

    /// Does what an admitted request means.
    pub(super) async fn handle(&mut self, cx: &Conn, request: Request, max_rooms: usize) {
        let (room, request_id, frame) = match request {
            // Boxed like Hello: rare, and large next to the relay path's state.
            Request::Join(j) => {
                let span = cx.traced(tracing::debug_span!(
                    "join",
                    otel.kind = "server",
                    conn = cx.peer.id(),
                    room = j.room.as_str(),
                ));
                return Box::pin(self.join(cx, j, max_rooms).instrument(span)).await;
            }
            Request::Leave(l) => return Box::pin(self.leave(cx, l)).await,
            Request::Invite(m) => (m.room.clone(), m.request_id, RoomFrame::Invite(m)),
            Request::InviteResult(m) => (m.room.clone(), m.request_id, RoomFrame::InviteResult(m)),
            Request::Offer(m) => (m.room.clone(), m.request_id, RoomFrame::Offer(m)),
            Request::Answer(m) => (m.room.clone(), m.request_id, RoomFrame::Answer(m)),
            Request::Ice(m) => (m.room.clone(), 0, RoomFrame::Ice(IceMsg::One(m))),
            Request::IceBatch(m) => (m.room.clone(), 0, RoomFrame::Ice(IceMsg::Batch(m))),
            Request::Hangup(m) => (m.room.clone(), m.request_id, RoomFrame::Hangup(m)),
        };
        // Relayed frames are the hot path: their span exists only while spans are exported.
        if tracing::span_enabled!(tracing::Level::DEBUG) {
            let span = cx.traced(tracing::debug_span!(
                "relay",
                otel.name = frame.span_name(),
                otel.kind = "server",
                conn = cx.peer.id(),
                room = room.as_str(),
            ));
            return Box::pin(
                self.room_frame(cx, &room, request_id, frame)
                    .instrument(span),
            )
            .await;
        }
        self.room_frame(cx, &room, request_id, frame).await;
    }

    /// Sends the client to resume `room` elsewhere: `Migrate` to where the registry says the
    /// room goes (its owner, another node, or back here later), then closes.
    fn migrate_away(&self, cx: &Conn, room: &str) {
        let url = cx.registry().migrate_url(room);
        let resume_token = self
            .established
            .as_ref()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        tracing::info!(
            conn = cx.peer.id(),
            room,
            url,
            "room not resumable here; migrating the client"
        );
        cx.send(&Message::Migrate(Migrate {
            room: room.to_owned(),
            url,
            resume_token,
        }));
        cx.peer.close(1000, "migrated");
    }

    async fn join(&mut self, cx: &Conn, j: Join, max_rooms: usize) {
        let Some(session) = &self.established else {
            return;
        };
        let rid = j.request_id;
        if let Err(e) = check_id("room", &j.room) {
            return cx.error(e.code, e.message, rid);
        }
        if !session.allowed.allows(&j.room) {
            return cx.error(
                ErrorCode::AuthFailed,
                format!("the token does not allow room {:?}", j.room),
                rid,
            );
        }
        if session.expires <= auth::unix_now() {
            return cx.error(
                ErrorCode::AuthFailed,
                "the token has expired; reconnect",
                rid,
            );
        }
        if !session.rooms.contains_key(&j.room) && session.rooms.len() >= max_rooms {
            return cx.error(
                ErrorCode::RoomFull,
                format!("a session may be in at most {max_rooms} rooms"),
                rid,
            );
        }
        if cx.node.health.is_draining() {
            return cx.error(ErrorCode::Draining, DRAINING, rid);
        }
        let (user, session_id) = (session.user.clone(), session.id.clone());
        for _attempt in 0..3 {
            let handle = match cx.registry().open(&j.room) {
                Ok(handle) => handle,
                Err(RegistryError::NotOwner {
                    ownership: Ownership::Remote { url },
                    ..
                }) => {
                    return cx.send(&Message::Redirect(Redirect {
                        request_id: rid,
                        room: j.room,
                        url,
                    }));
                }
                Err(RegistryError::NotOwner { .. }) => {
                    return cx.error(ErrorCode::Draining, NO_OWNER, rid);
                }
                Err(e) => return cx.error(ErrorCode::Draining, e.to_string(), rid),
            };
            match handle.join(&user, &session_id, &cx.peer, rid).await {
                RoomReply::Done => {
                    if let Some(session) = &mut self.established {
                        session.rooms.insert(j.room, handle);
                    }
                    return;
                }
                RoomReply::Refused | RoomReply::Unavailable => return,
                // The shard moved between routing and committing: route the join again
                // (the fenced commit took the shard out of this node's view).
                RoomReply::Moved | RoomReply::Gone => continue,
            }
        }
        cx.error(ErrorCode::Draining, "the room is restarting; retry", rid);
    }

    async fn leave(&mut self, cx: &Conn, l: Leave) {
        let Some(session) = &mut self.established else {
            return;
        };
        let Some(handle) = session.rooms.remove(&l.room) else {
            return cx.error(
                ErrorCode::InvalidTransition,
                format!("not in room {:?}", l.room),
                l.request_id,
            );
        };
        let (user, id) = (session.user.clone(), session.id.clone());
        if handle.leave(&user, &id, &cx.peer, l.request_id).await == RoomReply::Gone {
            // The room stopped here (released or fenced) and the member is still in it
            // where it lives now: retryable there (docs/protocol.md, "Retryable refusals").
            cx.error(ErrorCode::NotOwner, ROOM_CLOSED_HERE, l.request_id);
            self.migrate_away(cx, &l.room);
        }
    }

    async fn room_frame(&mut self, cx: &Conn, room: &str, request_id: u32, frame: RoomFrame) {
        let Some(session) = &mut self.established else {
            return;
        };
        let Some(handle) = session.rooms.get(room) else {
            return cx.error(
                ErrorCode::InvalidTransition,
                format!("join room {room:?} first"),
                request_id,
            );
        };
        let handle = handle.clone();
        let (user, id) = (session.user.clone(), session.id.clone());
        if !handle.frame(&user, &id, &cx.peer, frame).await {
            if let Some(session) = &mut self.established {
                session.rooms.remove(room);
            }
            // It stopped here (released or fenced) and its Migrate may not have reached this
            // connection: the request is retryable where the room lives now, and the client
            // is sent there.
            cx.error(ErrorCode::NotOwner, ROOM_CLOSED_HERE, request_id);
            self.migrate_away(cx, room);
        }
    }

    /// Detaches the session from its rooms (the connection ended); members stay suspended
    /// for the resume window.
    pub(super) async fn detach_all(&mut self, cx: &Conn) {
        if let Some(session) = self.established.take() {
            for handle in session.rooms.values() {
                handle
                    .detach(&session.user, &session.id, cx.peer.id())
                    .await;
            }
        }
    }
}

/// Records how the handshake ended on its span.
fn outcome(what: &'static str) {
    tracing::Span::current().record("outcome", what);
}

const NO_OWNER: &str = "the room's shard has no owner right now; retry";
const ROOM_CLOSED_HERE: &str = "the room is closed here; it moved";
const DRAINING: &str = "node is draining; reconnect elsewhere";
const STORE_UNAVAILABLE: &str = "state store unavailable; resume again later";

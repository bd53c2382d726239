//! One client connection after the WebSocket handshake: the protocol gate. A reader (this
//! task) turns WebSocket messages into admitted requests (binary frames only, Hello first, rate
//! limit, bad-frame budget, idle and Hello timeouts, frames only clients may send, the
//! version's frame set) and hands them to the connection's [`Session`], which does what they
//! mean; a writer task drains the bounded outbound queue and sends heartbeats.
//!
//! Close codes the server uses: 1000 idle timeout / redirected; 1001 going away (drain);
//! 1002 too many bad frames or a version mismatch in Hello; 1008 authentication failed, no
//! Hello in time, flooding; 1009 a message or frame length above 64 KiB; 1013 slow consumer
//! or overloaded. Every connection-ending error is preceded by an Error frame when the
//! connection can still carry one.

use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, Stream, StreamExt};
use switchboard_protocol::{
    ErrorCode, FrameError, FrameView, Message, Pong, ProtocolVersion, decode_view,
};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::config::Tunables;
use crate::room::Peer;

use super::NodeShared;
use super::limits::{BadFrames, Rate, TokenBucket};
use super::session::{Conn, Flow, Request, Session};
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

struct Reader {
    cx: Conn,
    bucket: TokenBucket,
    bad: BadFrames,
    session: Session,
    started: Instant,
    last_seen: Instant,
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
        cx: Conn {
            node,
            peer: peer.clone(),
            version,
        },
        bucket: TokenBucket::new(tunables.rate_burst, now),
        bad: BadFrames::default(),
        session: Session::default(),
        started: now,
        last_seen: now,
    };
    let end = reader.run(stream).await;
    Box::pin(reader.session.detach_all(&reader.cx)).await;
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
    fn tunables(&self) -> Tunables {
        self.cx.node.settings.borrow().tunables.clone()
    }

    async fn run<St>(&mut self, mut stream: St) -> End
    where
        St: Stream<Item = Result<WsMessage, WsError>> + Unpin,
    {
        loop {
            let t = self.tunables();
            let idle_at = self.last_seen + t.idle_timeout;
            let hello_at = self.started + t.hello_timeout;
            let wake = if !self.session.is_established() {
                idle_at.min(hello_at)
            } else {
                idle_at
            };
            tokio::select! {
                biased;
                () = self.cx.node.shutdown.cancelled() => return End::Shutdown,
                _ = self.cx.peer.killed() => return End::Closing,
                () = tokio::time::sleep_until(wake) => {
                    if !self.session.is_established() && Instant::now() >= hello_at {
                        self.cx.node.metrics.disconnect("hello_timeout");
                        self.error(ErrorCode::Timeout, "no Hello within the hello timeout", 0);
                        self.cx.peer.close(1008, "Hello timeout");
                    } else {
                        self.cx.node.metrics.disconnect("idle");
                        tracing::debug!(conn = self.cx.peer.id(), "evicting idle connection");
                        self.cx.peer.kill(1000, "idle timeout");
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
                self.cx.node.metrics.disconnect("too_large");
                self.error(ErrorCode::BadFrame, format!("message too large: {e}"), 0);
                self.cx.peer.close(1009, "message too large");
                End::Closing
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => End::Gone,
            WsError::Protocol(e) => {
                tracing::debug!(conn = self.cx.peer.id(), error = %e, "websocket protocol error");
                self.cx.node.metrics.disconnect("ws_protocol");
                self.cx.peer.close(1002, "websocket protocol error");
                End::Closing
            }
            other => {
                tracing::debug!(conn = self.cx.peer.id(), error = %other, "connection read error");
                End::Gone
            }
        }
    }

    fn error(&mut self, code: ErrorCode, message: impl Into<String>, request_id: u32) {
        self.cx.peer.send_error(code, message, request_id);
    }

    /// Reports a bad frame (Error 1008) and closes after too many in a row.
    fn bad_frame(&mut self, message: impl Into<String>, max: u32) -> Option<End> {
        self.error(ErrorCode::BadFrame, message, 0);
        if self.bad.bad(max) {
            self.cx.node.metrics.disconnect("bad_frames");
            self.cx.peer.close(1002, "too many bad frames");
            return Some(End::Closing);
        }
        None
    }

    async fn on_message(&mut self, msg: WsMessage, t: &Tunables) -> Option<End> {
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
        self.cx.node.metrics.frame_in(frame_type);
        if !self.session.is_established() {
            return match view {
                FrameView::Hello(_) => match view.to_owned() {
                    // Boxed: once per connection, and its state (settings, claims, resume
                    // awaits) would otherwise sit in every idle connection's task.
                    Message::Hello(hello) => {
                        match Box::pin(self.session.hello(&self.cx, hello)).await {
                            Flow::Continue => None,
                            Flow::Closing => Some(End::Closing),
                        }
                    }
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
                self.cx
                    .peer
                    .send_msg(&Message::Pong(Pong { nonce: p.nonce() }));
                None
            }
            FrameView::Pong(_) => None,
            FrameView::Hello(_) => self.bad_frame("Hello was already received", t.max_bad_frames),
            _ => {
                let msg = view.to_owned();
                self.admit(msg, t).await;
                None
            }
        }
    }

    /// Admits a frame a client may send on this connection's version and hands it to the
    /// session; anything else is answered with an Error.
    async fn admit(&mut self, msg: Message, t: &Tunables) {
        if !self.cx.version.supports(msg.frame_type()) {
            // Only IceBatch is version-dependent today.
            return self.error(
                ErrorCode::VersionUnsupported,
                "IceBatch needs protocol v2; send IceCandidate frames",
                0,
            );
        }
        let (frame_type, request_id) = (msg.frame_type(), msg.request_id());
        match Request::from_client(msg) {
            Some(request) => {
                self.session
                    .handle(&self.cx, request, t.max_rooms_per_session)
                    .await
            }
            None => self.error(
                ErrorCode::BadFrame,
                format!(
                    "{} frames are sent by the server, not by clients",
                    frame_type.name()
                ),
                request_id.unwrap_or(0),
            ),
        }
    }

    /// Applies the rate limit; Some(..) means stop processing this message.
    fn rate(&mut self, t: &Tunables) -> Option<Option<End>> {
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
                self.cx.node.metrics.disconnect("flood");
                self.error(ErrorCode::RateLimited, "persistent flooding; closing", 0);
                self.cx.peer.close(1008, "flooding");
                Some(Some(End::Closing))
            }
        }
    }

    fn frame_error(&mut self, e: &FrameError, t: &Tunables) -> Option<End> {
        if matches!(e, FrameError::UnknownType(_)) {
            self.cx.node.metrics.frames_in_unknown.inc();
        }
        if let Some(code) = e.closes_connection() {
            self.error(e.error_code(), e.to_string(), 0);
            self.cx.node.metrics.disconnect("too_large");
            self.cx.peer.close(code, "frame too large");
            return Some(End::Closing);
        }
        self.bad_frame(e.to_string(), t.max_bad_frames)
    }
}

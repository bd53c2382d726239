//! The sending side of one client connection as rooms and the connection see it. On plain
//! TCP a sender writes the whole WebSocket frame to the socket itself when nothing is waiting
//! (no task hop, no buffer); otherwise — the socket is full, or the stream is TLS and only the
//! connection task may write it — frames wait in a bounded queue that the connection task
//! drains. A full queue never grows: the connection is dropped as a slow consumer (close
//! 1013) and counted. An idle peer holds no buffer.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::task::AtomicWaker;
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::ws;
use switchboard_protocol::traceparent::TraceParent;
use switchboard_protocol::{Encoder, ErrorCode, ErrorFrame, FrameType, Message, ProtocolVersion};

/// WebSocket close code for a slow consumer or an overloaded node ("try again later").
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// Why and how a connection was killed out of band, or closed after its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason.
    pub reason: &'static str,
}

/// What the connection task found when it drained the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Everything queued is written.
    Empty,
    /// Everything before a queued close is written: send the close frame and finish.
    Close(Kill),
}

/// Frames waiting for the socket.
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    written: usize,
    /// A close queued behind the frames.
    close: Option<Kill>,
    /// The connection ended: nothing is sent any more.
    gone: bool,
}

impl Queue {
    /// Drops the queue's allocation once it is empty, so an idle connection holds none.
    fn release_if_empty(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
    }
}

#[derive(Debug)]
struct Inner {
    id: u64,
    version: ProtocolVersion,
    capacity: usize,
    /// Plain TCP: senders write here themselves while the queue is empty.
    socket: Option<Arc<TcpStream>>,
    /// A byte stream of protocol frames (WebTransport): frames go out without the WebSocket
    /// header they are encoded with.
    stream: bool,
    queue: Mutex<Queue>,
    /// The connection task, woken when frames wait, a close is queued or a kill happens.
    task: AtomicWaker,
    kill: OnceLock<Kill>,
    slow: AtomicBool,
    established: AtomicBool,
    /// The client's trace context, if it sent one (the parent of spans done for it).
    trace: OnceLock<Box<TraceParent>>,
    metrics: Metrics,
}

/// Handle to a connection's sending side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    // One encoder per worker thread instead of one per connection: an Encoder keeps two
    // 1 KiB buffers, which is a large share of an idle connection's memory.
    static ENCODER: std::cell::RefCell<Encoder> = std::cell::RefCell::new(Encoder::new());
}

/// Encodes `msg` as one whole WebSocket binary frame (header and protocol frame) with this
/// thread's reusable encoder: the bytes every recipient is sent.
pub fn encode_frame(msg: &Message) -> Option<Bytes> {
    let encode = |encoder: &mut Encoder| match encoder.encode(msg) {
        Ok(payload) => {
            let mut out = BytesMut::with_capacity(ws::header_len(payload.len()) + payload.len());
            ws::put_header(&mut out, ws::OP_BINARY, payload.len());
            out.extend_from_slice(payload);
            Some(out.freeze())
        }
        Err(e) => {
            tracing::error!(error = %e, "encoding an outbound frame");
            None
        }
    };
    ENCODER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut encoder) => encode(&mut encoder),
        // Re-entered (cannot happen today: encoding does not call back); stay correct anyway.
        Err(_) => encode(&mut Encoder::new()),
    })
}

/// The protocol frame inside a WebSocket frame made by [`encode_frame`].
pub fn protocol_frame(ws_frame: &[u8]) -> Option<&[u8]> {
    ws::payload_of(ws_frame).map(|(_, payload)| payload)
}

impl Peer {
    /// A peer whose frames all wait in its queue for the connection task (TLS, tests).
    pub fn new(version: ProtocolVersion, capacity: usize, metrics: Metrics) -> Self {
        Self::build(version, capacity, metrics, None, false)
    }

    /// A peer on a stream of protocol frames (WebTransport): the same queue, but its
    /// connection task writes each frame without its WebSocket header. Frames are still
    /// encoded once as WebSocket frames, so a fan-out shares one encoding across transports.
    pub fn on_stream(version: ProtocolVersion, capacity: usize, metrics: Metrics) -> Self {
        Self::build(version, capacity, metrics, None, true)
    }

    /// A peer on plain TCP: senders write to `socket` directly while nothing is queued.
    pub fn with_socket(
        version: ProtocolVersion,
        capacity: usize,
        metrics: Metrics,
        socket: Arc<TcpStream>,
    ) -> Self {
        Self::build(version, capacity, metrics, Some(socket), false)
    }

    fn build(
        version: ProtocolVersion,
        capacity: usize,
        metrics: Metrics,
        socket: Option<Arc<TcpStream>>,
        stream: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                version,
                capacity: capacity.max(1),
                socket,
                stream,
                queue: Mutex::new(Queue::default()),
                task: AtomicWaker::new(),
                kill: OnceLock::new(),
                slow: AtomicBool::new(false),
                established: AtomicBool::new(false),
                trace: OnceLock::new(),
                metrics,
            }),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the client's trace context (once; the upgrade request carried it).
    pub fn set_trace(&self, trace: Box<TraceParent>) {
        let _ = self.inner.trace.set(trace);
    }

    /// The client's trace context, if it sent one.
    pub fn trace(&self) -> Option<&TraceParent> {
        self.inner.trace.get().map(|t| &**t)
    }

    /// Process-unique connection id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Negotiated protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.inner.version
    }

    /// Marks the session as established (Welcome sent): heartbeats start.
    pub fn set_established(&self) {
        self.inner.established.store(true, Ordering::SeqCst);
    }

    /// Whether Welcome was sent.
    pub fn is_established(&self) -> bool {
        self.inner.established.load(Ordering::SeqCst)
    }

    /// Sends one whole WebSocket frame (from [`encode_frame`] or `ws::frame`): written now when
    /// possible, else queued. A full queue kills the connection as a slow consumer; returns
    /// whether the frame was written or queued.
    pub fn send(&self, frame: Bytes) -> bool {
        if self.inner.kill.get().is_some() {
            return false;
        }
        let mut q = self.queue();
        if q.gone || q.close.is_some() {
            return false;
        }
        self.count_out(&frame);
        if q.frames.is_empty()
            && let Some(socket) = &self.inner.socket
        {
            match socket.try_write(&frame) {
                Ok(n) if n == frame.len() => return true,
                Ok(n) => {
                    q.frames.push_back(frame);
                    q.written = n;
                    drop(q);
                    self.inner.task.wake();
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(q);
                    tracing::debug!(conn = self.id(), error = %e, "write failed");
                    self.kill(1011, "write failed");
                    return false;
                }
            }
        }
        if q.frames.len() >= self.inner.capacity {
            drop(q);
            self.inner.metrics.queue_drops.inc();
            if !self.inner.slow.swap(true, Ordering::SeqCst) {
                self.inner.metrics.slow_consumer_disconnects.inc();
                tracing::info!(conn = self.id(), "slow consumer: outbound queue full");
            }
            self.kill(CLOSE_TRY_AGAIN_LATER, "slow consumer");
            return false;
        }
        q.frames.push_back(frame);
        drop(q);
        self.inner.task.wake();
        true
    }

    fn count_out(&self, frame: &[u8]) {
        if let Some(t) = protocol_frame(frame)
            .and_then(|p| p.get(4))
            .and_then(|b| FrameType::try_from(*b).ok())
        {
            self.inner.metrics.frame_out(t);
        }
    }

    /// Encodes and sends `msg`; returns whether it was written or queued.
    pub fn send_msg(&self, msg: &Message) -> bool {
        match encode_frame(msg) {
            Some(frame) => self.send(frame),
            None => false,
        }
    }

    /// Sends an Error frame and counts it.
    pub fn send_error(&self, code: ErrorCode, message: impl Into<String>, request_id: u32) -> bool {
        self.inner.metrics.frame_error(code);
        self.send_msg(&Message::Error(ErrorFrame {
            code: code.code(),
            message: message.into(),
            request_id,
        }))
    }

    /// Closes after everything already sent or queued. The first close or kill wins.
    pub fn close(&self, code: u16, reason: &'static str) {
        let mut q = self.queue();
        if q.gone || q.close.is_some() {
            return;
        }
        q.close = Some(Kill { code, reason });
        drop(q);
        self.inner.task.wake();
    }

    /// Closes the connection now, ahead of queued frames. The first kill wins.
    pub fn kill(&self, code: u16, reason: &'static str) {
        if self.inner.kill.set(Kill { code, reason }).is_ok() {
            self.inner.task.wake();
        }
    }

    /// The kill, if the connection was killed.
    pub fn kill_reason(&self) -> Option<Kill> {
        self.inner.kill.get().copied()
    }

    /// Registers the connection task to be woken by sends, closes and kills.
    pub fn register(&self, cx: &Context<'_>) {
        self.inner.task.register(cx.waker());
    }

    /// Writes queued frames with `write` (which writes some bytes or is pending) until the
    /// queue is empty or a queued close is reached; on a stream peer without their WebSocket
    /// headers. Call [`Peer::register`] first.
    pub fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut Context<'_>, &[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<Drained>> {
        let mut q = self.queue();
        loop {
            let Some(front) = q.frames.front() else {
                q.release_if_empty();
                return Poll::Ready(Ok(match q.close {
                    Some(kill) => Drained::Close(kill),
                    None => Drained::Empty,
                }));
            };
            let header = if self.inner.stream {
                protocol_frame(front).map_or(0, |payload| front.len() - payload.len())
            } else {
                0
            };
            let rest = &front[header + q.written..];
            match write(cx, rest) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) if n == rest.len() => {
                    q.frames.pop_front();
                    q.written = 0;
                }
                Poll::Ready(Ok(n)) => q.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Ends the peer (the connection is closing): later sends are refused, and queued frames
    /// not yet started are dropped. A frame already partly written stays, so the stream can
    /// be finished cleanly before the close frame; returns whether one does.
    pub fn finish(&self) -> bool {
        let mut q = self.queue();
        q.gone = true;
        let keep = usize::from(q.written > 0);
        q.frames.truncate(keep);
        q.close = None;
        q.release_if_empty();
        !q.frames.is_empty()
    }

    /// Takes the whole frames waiting in the queue (tests of room logic, which run without a
    /// connection task).
    pub fn take_queued(&self) -> Vec<Bytes> {
        let mut q = self.queue();
        let frames = q.frames.drain(..).collect();
        q.written = 0;
        q.release_if_empty();
        frames
    }

    /// Frames waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue().frames.len()
    }

    /// The queue's slots held while nothing waits (0: an idle peer keeps no buffer).
    pub fn queue_capacity(&self) -> usize {
        self.queue().frames.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::{Ping, decode};

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn full_queue_kills_as_slow_consumer_once() {
        let metrics = Metrics::new();
        let peer = Peer::new(ProtocolVersion::V2, 2, metrics.clone());
        assert!(peer.send(frame(1)));
        assert!(peer.send(frame(2)));
        assert!(!peer.send(frame(3)));
        assert!(!peer.send(frame(4)));
        assert_eq!(
            peer.kill_reason(),
            Some(Kill {
                code: 1013,
                reason: "slow consumer"
            })
        );
        assert_eq!(metrics.slow_consumer_disconnects.get(), 1);
        assert_eq!(metrics.queue_drops.get(), 1);
        assert_eq!(peer.take_queued(), vec![frame(1), frame(2)]);
    }

    #[test]
    fn drained_in_order_with_partial_writes_then_the_close() {
        let peer = Peer::new(ProtocolVersion::V2, 8, Metrics::new());
        peer.send(Bytes::from_static(b"abc"));
        peer.send(Bytes::from_static(b"de"));
        peer.close(1000, "bye");
        assert!(!peer.send(frame(9)), "nothing after a close");
        let mut wire = Vec::new();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Two bytes at a time.
        let drained = peer.poll_drain(&mut cx, |_, buf| {
            let n = buf.len().min(2);
            wire.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        });
        match drained {
            Poll::Ready(Ok(Drained::Close(kill))) => assert_eq!(
                kill,
                Kill {
                    code: 1000,
                    reason: "bye"
                }
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(wire, b"abcde");
        assert_eq!(peer.queue_capacity(), 0, "an emptied queue keeps no buffer");
    }

    #[test]
    fn finish_keeps_only_a_partly_written_frame() {
        let peer = Peer::new(ProtocolVersion::V2, 8, Metrics::new());
        peer.send(Bytes::from_static(b"abc"));
        peer.send(Bytes::from_static(b"de"));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut calls = 0;
        let _ = peer.poll_drain(&mut cx, |_, _| {
            calls += 1;
            if calls == 1 {
                Poll::Ready(Ok(1))
            } else {
                Poll::Pending
            }
        });
        assert!(peer.finish());
        assert_eq!(peer.queued(), 1);
        assert!(!peer.send(frame(1)), "a finished peer sends nothing");
        let fresh = Peer::new(ProtocolVersion::V2, 8, Metrics::new());
        fresh.send(frame(1));
        assert!(!fresh.finish(), "frames not started are dropped");
        assert_eq!(fresh.queue_capacity(), 0);
    }

    #[test]
    fn a_stream_peer_writes_protocol_frames_without_their_websocket_header() {
        let peer = Peer::on_stream(ProtocolVersion::V2, 8, Metrics::new());
        let small = Message::Ping(Ping { nonce: 7 });
        // Above 125 bytes, so its WebSocket header is longer (4 bytes).
        let large = Message::Error(ErrorFrame {
            code: 1008,
            message: "x".repeat(300),
            request_id: 0,
        });
        assert!(peer.send_msg(&small));
        assert!(peer.send_msg(&large));
        let mut wire = Vec::new();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Three bytes at a time, so a frame is resumed mid-way past its skipped header.
        let drained = peer.poll_drain(&mut cx, |_, buf| {
            let n = buf.len().min(3);
            wire.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        });
        assert!(matches!(drained, Poll::Ready(Ok(Drained::Empty))));
        let mut expected = Encoder::new().encode(&small).unwrap().to_vec();
        expected.extend_from_slice(Encoder::new().encode(&large).unwrap());
        assert_eq!(wire, expected);
    }

    #[test]
    fn encoded_frames_are_whole_websocket_frames() {
        let metrics = Metrics::new();
        let peer = Peer::new(ProtocolVersion::V2, 8, metrics.clone());
        assert!(peer.send_msg(&Message::Ping(Ping { nonce: 7 })));
        let frames = peer.take_queued();
        let (opcode, payload) = ws::payload_of(&frames[0]).unwrap();
        assert_eq!(opcode, ws::OP_BINARY);
        assert_eq!(decode(payload).unwrap(), Message::Ping(Ping { nonce: 7 }));
        assert!(
            metrics
                .render()
                .contains("switchboard_frames_out_total{type=\"ping\"} 1")
        );
    }
}

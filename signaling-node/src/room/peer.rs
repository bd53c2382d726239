//! The sending side of one client connection as rooms and the connection's reader see it: a
//! bounded queue of encoded frames drained by the connection's writer task, plus a kill
//! switch. A full queue never grows: the connection is dropped as a slow consumer (close
//! 1013) and counted.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::metrics::Metrics;
use switchboard_protocol::{Encoder, ErrorCode, ErrorFrame, Message, ProtocolVersion};

/// WebSocket close code for a slow consumer or an overloaded node ("try again later").
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// What the writer task takes from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// One encoded frame (one binary WebSocket message).
    Frame(Bytes),
    /// Close the connection with this code and reason after the frames before it.
    Close(u16, &'static str),
}

/// Why and how a connection was killed out of band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason.
    pub reason: &'static str,
}

#[derive(Debug)]
struct Inner {
    id: u64,
    version: ProtocolVersion,
    tx: mpsc::Sender<Outbound>,
    kill: OnceLock<Kill>,
    killed: Notify,
    slow: AtomicBool,
    established: AtomicBool,
    metrics: Metrics,
}

/// Handle to a connection's outbound queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    // One encoder per worker thread instead of one per connection: an Encoder keeps two
    // 1 KiB buffers, which is a large share of an idle connection's memory.
    static ENCODER: RefCell<Encoder> = RefCell::new(Encoder::new());
}

/// Encodes `msg` as one frame with this thread's reusable encoder.
pub fn encode_frame(msg: &Message) -> Option<Bytes> {
    let encode = |encoder: &mut Encoder| match encoder.encode(msg) {
        Ok(bytes) => Some(Bytes::copy_from_slice(bytes)),
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

impl Peer {
    /// A new peer speaking `version` with a queue of `capacity` frames; the receiver goes to
    /// the writer task.
    pub fn new(
        version: ProtocolVersion,
        capacity: usize,
        metrics: Metrics,
    ) -> (Self, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let peer = Self {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                version,
                tx,
                kill: OnceLock::new(),
                killed: Notify::new(),
                slow: AtomicBool::new(false),
                established: AtomicBool::new(false),
                metrics,
            }),
        };
        (peer, rx)
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

    /// Queues one encoded frame. A full queue kills the connection as a slow consumer;
    /// returns whether the frame was queued.
    pub fn send(&self, frame: Bytes) -> bool {
        if self.inner.kill.get().is_some() {
            return false;
        }
        match self.inner.tx.try_send(Outbound::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.metrics.queue_drops.inc();
                if !self.inner.slow.swap(true, Ordering::SeqCst) {
                    self.inner.metrics.slow_consumer_disconnects.inc();
                    tracing::info!(conn = self.id(), "slow consumer: outbound queue full");
                }
                self.kill(CLOSE_TRY_AGAIN_LATER, "slow consumer");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Encodes and queues `msg`; returns whether it was queued.
    pub fn send_msg(&self, msg: &Message) -> bool {
        match encode_frame(msg) {
            Some(frame) => self.send(frame),
            None => false,
        }
    }

    /// Queues an Error frame and counts it.
    pub fn send_error(&self, code: ErrorCode, message: impl Into<String>, request_id: u32) -> bool {
        self.inner.metrics.frame_error(code);
        self.send_msg(&Message::Error(ErrorFrame {
            code: code.code(),
            message: message.into(),
            request_id,
        }))
    }

    /// Queues a close after everything already queued (a full queue kills at once).
    pub fn close(&self, code: u16, reason: &'static str) {
        if self
            .inner
            .tx
            .try_send(Outbound::Close(code, reason))
            .is_err()
        {
            self.kill(code, reason);
        }
    }

    /// Closes the connection now, ahead of queued frames. The first kill wins.
    pub fn kill(&self, code: u16, reason: &'static str) {
        if self.inner.kill.set(Kill { code, reason }).is_ok() {
            self.inner.killed.notify_one();
        }
    }

    /// The kill, if the connection was killed.
    pub fn kill_reason(&self) -> Option<Kill> {
        self.inner.kill.get().copied()
    }

    /// Resolves when the connection is killed (for the writer task).
    pub async fn killed(&self) -> Kill {
        loop {
            if let Some(kill) = self.kill_reason() {
                return kill;
            }
            self.inner.killed.notified().await;
        }
    }

    /// Whether the writer has gone (the connection is closed).
    pub fn is_closed(&self) -> bool {
        self.inner.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_queue_kills_as_slow_consumer_once() {
        let metrics = Metrics::new();
        let (peer, mut rx) = Peer::new(ProtocolVersion::V2, 2, metrics.clone());
        assert!(peer.send(Bytes::from_static(b"a")));
        assert!(peer.send(Bytes::from_static(b"b")));
        assert!(!peer.send(Bytes::from_static(b"c")));
        assert!(!peer.send(Bytes::from_static(b"d")));
        assert_eq!(
            peer.killed().await,
            Kill {
                code: 1013,
                reason: "slow consumer"
            }
        );
        assert_eq!(metrics.slow_consumer_disconnects.get(), 1);
        assert_eq!(metrics.queue_drops.get(), 1);
        assert_eq!(
            rx.recv().await,
            Some(Outbound::Frame(Bytes::from_static(b"a")))
        );
    }
}

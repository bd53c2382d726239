//! The writer task of a connection: drains its bounded outbound queue into the socket in
//! batches (one flush per batch), sends the heartbeat Pings once the session is established,
//! and closes with the code of a queued close or a kill. A kill interrupts a blocked write,
//! so a peer that stopped reading cannot hold the task.

use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, SinkExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

use crate::room::{Outbound, Peer};
use switchboard_protocol::{FrameType, Message, Ping};

use super::NodeShared;

/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;

/// Drains the outbound queue into the socket, flushing in batches, and sends heartbeat Pings.
pub(super) async fn write_loop<S>(
    mut sink: S,
    mut rx: tokio::sync::mpsc::Receiver<Outbound>,
    peer: Peer,
    node: Arc<NodeShared>,
) where
    S: Sink<WsMessage, Error = WsError> + Unpin,
{
    let mut nonce: u64 = 0;
    let heartbeat = || node.settings.borrow().tunables.heartbeat_interval;
    let mut next_ping = Instant::now() + heartbeat();
    loop {
        tokio::select! {
            biased;
            kill = peer.killed() => {
                Box::pin(close(&mut sink, kill.code, kill.reason)).await;
                break;
            }
            item = rx.recv() => {
                let Some(item) = item else { break };
                match write_batch(&mut sink, &mut rx, item, &peer, &node).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::debug!(conn = peer.id(), error = %e, "write failed");
                        peer.kill(1011, "write failed");
                        break;
                    }
                }
            }
            () = tokio::time::sleep_until(next_ping) => {
                next_ping = Instant::now() + heartbeat();
                if peer.is_established() {
                    nonce = nonce.wrapping_add(1);
                    // Through the queue, so it cannot overtake or interleave a batch.
                    peer.send_msg(&Message::Ping(Ping { nonce }));
                }
            }
        }
    }
    // Make later sends fail fast, and let the reader know if it still runs.
    peer.kill(1000, "");
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes. Returns
/// Ok(false) once a Close was written. Interrupted by a kill.
async fn write_batch<S>(
    sink: &mut S,
    rx: &mut tokio::sync::mpsc::Receiver<Outbound>,
    first: Outbound,
    peer: &Peer,
    node: &NodeShared,
) -> Result<bool, WsError>
where
    S: Sink<WsMessage, Error = WsError> + Unpin,
{
    let work = async {
        let mut item = Some(first);
        let mut written = 0;
        while let Some(next) = item.take() {
            match next {
                Outbound::Frame(frame) => {
                    if let Some(t) = frame.get(4).and_then(|b| FrameType::try_from(*b).ok()) {
                        node.metrics.frame_out(t);
                    }
                    sink.feed(WsMessage::Binary(frame)).await?;
                    written += 1;
                }
                Outbound::Close(code, reason) => {
                    sink.flush().await?;
                    Box::pin(close(sink, code, reason)).await;
                    return Ok(false);
                }
            }
            if written < WRITE_BATCH {
                item = rx.try_recv().ok();
            }
        }
        sink.flush().await?;
        Ok(true)
    };
    let outcome = tokio::select! {
        biased;
        kill = peer.killed() => Err(kill),
        result = work => Ok(result),
    };
    match outcome {
        Ok(result) => result,
        Err(kill) => {
            Box::pin(close(sink, kill.code, kill.reason)).await;
            Ok(false)
        }
    }
}

/// Sends a close frame (best effort, bounded in time). Callers box it: it runs once, and its
/// timer and frame would otherwise sit in every idle connection's writer task.
async fn close<S>(sink: &mut S, code: u16, reason: &'static str)
where
    S: Sink<WsMessage, Error = WsError> + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = sink.send(WsMessage::Close(Some(frame))).await;
        let _ = sink.close().await;
    })
    .await;
}

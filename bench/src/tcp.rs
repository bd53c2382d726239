//! The raw TCP floor's bench adapter: the baseline relay's rooms over length-prefixed TCP
//! frames, carrying the same encoded Switchboard frames as every other target, so the load
//! logic, the open-loop schedule, the histograms and the RSS measurement are shared (`conn`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;

use super::baseline::{JOINED, WELCOME, read_frame, write_frame};
use super::conn::{
    ConnectFailure, JoinTiming, Outgoing, QUEUE, Rx, Tx, dial, failure, forward_inbound, frame_ends,
};
use switchboard_client::ClientError;
use switchboard_protocol as protocol;

/// Connects to the TCP relay, says hello and joins `room`.
pub async fn tcp_connect(
    addr: SocketAddr,
    user: &str,
    room: &str,
) -> Result<(Tx, Rx, JoinTiming), ConnectFailure> {
    let started = Instant::now();
    let tcp = dial(addr).await?;
    let (read, write) = tcp.into_split();
    let mut reader = BufReader::with_capacity(4096, read);
    let mut writer = BufWriter::with_capacity(4096, write);
    let mut exchange = async |payload: &[u8], expect: &[u8]| -> Result<Duration, ConnectFailure> {
        let sent = Instant::now();
        write_frame(&mut writer, payload)
            .await
            .map_err(|e| failure("join_io", e))?;
        writer.flush().await.map_err(|e| failure("join_io", e))?;
        match read_frame(&mut reader).await {
            Ok(Some(reply)) if reply == expect => Ok(sent.elapsed()),
            Ok(Some(other)) => Err(failure("join_refused", format!("relay answered {other:?}"))),
            Ok(None) => Err(failure("join_closed", "relay closed the connection")),
            Err(e) => Err(failure("join_io", e)),
        }
    };
    let hello = exchange(user.as_bytes(), WELCOME).await?;
    let join = exchange(room.as_bytes(), JOINED).await?;
    let timing = JoinTiming {
        join: hello + join,
        setup: started.elapsed(),
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(QUEUE);
    tokio::spawn(async move {
        while let Some(first) = out_rx.recv().await {
            if write_frame(&mut writer, &first.frame).await.is_err() {
                return;
            }
            while let Ok(more) = out_rx.try_recv() {
                if write_frame(&mut writer, &more.frame).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let frames = futures::stream::unfold(reader, |mut reader| async move {
        let item = match read_frame(&mut reader).await {
            Ok(Some(frame)) => protocol::decode(&frame).map_err(ClientError::from),
            Ok(None) => return None,
            Err(e) => Err(ClientError::WebSocket(e.to_string())),
        };
        Some((item, reader))
    });
    let in_rx = forward_inbound(frames);
    let (tx, rx) = frame_ends(out_tx, in_rx, user, room);
    Ok((tx, rx, timing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineConfig, RelayTransport, spawn};
    use switchboard_protocol::Message;

    #[tokio::test]
    async fn tcp_connections_exchange_frames() {
        let config = BaselineConfig {
            transport: RelayTransport::Tcp,
            ..BaselineConfig::default()
        };
        let relay = spawn("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
        let (mut a_tx, _a_rx, timing) = tcp_connect(relay.addr, "a", "r").await.unwrap();
        assert!(timing.setup >= timing.join);
        let (_b_tx, mut b_rx, _) = tcp_connect(relay.addr, "b", "r").await.unwrap();
        let call = a_tx.invite("r", "b").await.unwrap();
        match b_rx.recv().await.unwrap() {
            Message::Invite(invite) => assert_eq!(invite.call_id, call),
            other => panic!("unexpected {other:?}"),
        }
        relay.shutdown.cancel();
    }
}

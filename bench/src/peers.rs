//! Bench adapters for the peers Switchboard is compared with: the raw TCP floor (the baseline
//! relay's rooms over length-prefixed TCP) and Centrifugo (its JSON protocol over WebSocket).
//!
//! Both carry the same encoded Switchboard frames as the baseline, so the load logic, the
//! open-loop schedule, the histograms and the RSS measurement are shared (see `conn`).
//!
//! Centrifugo mapping: connect command with an HS256 token = hello; subscribe to the room's
//! channel = join; a client publication (`{"f": user, "b": base64(frame)}`) = relay; the
//! peer's publication push = receipt. Centrifugo also pushes a publication back to its
//! publisher (the publisher is a subscriber); the adapter drops those by the `f` field.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::baseline::{JOINED, WELCOME, read_frame, write_frame};
use super::conn::{ConnectFailure, JoinTiming, QUEUE, Rx, Tx, failure, frame_ends};
use switchboard_client::ClientError;
use switchboard_protocol::auth::{Claims, JwtSecret, RoomGrant, mint, unix_now};
use switchboard_protocol::{self as protocol, Message};

/// Connects to the TCP relay, says hello and joins `room`.
pub async fn tcp_connect(
    addr: SocketAddr,
    user: &str,
    room: &str,
) -> Result<(Tx, Rx, JoinTiming), ConnectFailure> {
    let started = Instant::now();
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| failure("join_connect", e))?;
    let _ = tcp.set_nodelay(true);
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
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(QUEUE);
    tokio::spawn(async move {
        while let Some(first) = out_rx.recv().await {
            if write_frame(&mut writer, &first).await.is_err() {
                return;
            }
            while let Ok(more) = out_rx.try_recv() {
                if write_frame(&mut writer, &more).await.is_err() {
                    return;
                }
            }
            if writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let (in_tx, in_rx) = mpsc::channel::<Result<Message, ClientError>>(QUEUE);
    tokio::spawn(async move {
        loop {
            let item = match read_frame(&mut reader).await {
                Ok(Some(frame)) => protocol::decode(&frame).map_err(ClientError::from),
                Ok(None) => break,
                Err(e) => Err(ClientError::WebSocket(e.to_string())),
            };
            let fatal = item.is_err();
            if in_tx.send(item).await.is_err() || fatal {
                break;
            }
        }
    });
    let (tx, rx) = frame_ends(out_tx, in_rx, user, room);
    Ok((tx, rx, timing))
}

/// One line of Centrifugo's JSON protocol, as the bench cares about it.
#[derive(Debug, Clone, PartialEq)]
pub enum CentrifugoReply {
    /// A reply to command `id` (connect, subscribe, publish) without error.
    Ok(u32),
    /// A reply to command `id` carrying an error.
    Error(u32, String),
    /// A publication pushed on a channel: its `data` object.
    Publication(Value),
    /// The server's ping (`{}`): answer with `{}`.
    Ping,
    /// Anything else (other pushes, unknown fields).
    Other,
}

/// Parses one line (one JSON object) from Centrifugo.
pub fn parse_centrifugo_line(line: &str) -> Result<CentrifugoReply, serde_json::Error> {
    let value: Value = serde_json::from_str(line)?;
    let Some(object) = value.as_object() else {
        return Ok(CentrifugoReply::Other);
    };
    if object.is_empty() {
        return Ok(CentrifugoReply::Ping);
    }
    if let Some(id) = object.get("id").and_then(Value::as_u64) {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        if let Some(error) = object.get("error") {
            return Ok(CentrifugoReply::Error(id, error.to_string()));
        }
        return Ok(CentrifugoReply::Ok(id));
    }
    if let Some(data) = object
        .get("push")
        .and_then(|push| push.get("pub"))
        .and_then(|publication| publication.get("data"))
    {
        return Ok(CentrifugoReply::Publication(data.clone()));
    }
    Ok(CentrifugoReply::Other)
}

/// The publish command that carries `frame` from `user` on `channel`.
pub fn centrifugo_publish(id: u32, channel: &str, user: &str, frame: &[u8]) -> String {
    json!({
        "id": id,
        "publish": {"channel": channel, "data": {"f": user, "b": STANDARD.encode(frame)}}
    })
    .to_string()
}

/// The Switchboard frame inside a publication's data, unless `me` published it.
pub fn centrifugo_frame(data: &Value, me: &str) -> Option<Result<Bytes, String>> {
    if data.get("f").and_then(Value::as_str) == Some(me) {
        return None;
    }
    let Some(b) = data.get("b").and_then(Value::as_str) else {
        return Some(Err(format!("publication without a frame: {data}")));
    };
    Some(
        STANDARD
            .decode(b)
            .map(Bytes::from)
            .map_err(|e| e.to_string()),
    )
}

type WsStream = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Sends one text message and waits for the reply to `id` (answering pings on the way).
async fn centrifugo_call(
    ws: &mut WsStream,
    id: u32,
    command: String,
) -> Result<Duration, ConnectFailure> {
    let sent = Instant::now();
    ws.send(WsMessage::text(command))
        .await
        .map_err(|e| failure("join_websocket", e))?;
    loop {
        let text = match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(frame))) => {
                return Err(failure("join_closed", format!("closed: {frame:?}")));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(failure("join_websocket", e)),
            None => return Err(failure("join_closed", "server closed the connection")),
        };
        for line in text.as_str().lines().filter(|l| !l.trim().is_empty()) {
            match parse_centrifugo_line(line).map_err(|e| failure("join_protocol", e))? {
                CentrifugoReply::Ok(got) if got == id => return Ok(sent.elapsed()),
                CentrifugoReply::Error(got, error) if got == id => {
                    return Err(failure("join_refused", error));
                }
                CentrifugoReply::Ping => ws
                    .send(WsMessage::text("{}"))
                    .await
                    .map_err(|e| failure("join_websocket", e))?,
                _ => {}
            }
        }
    }
}

/// Connects `user` to Centrifugo at `url` with a token signed by `secret` and subscribes to
/// the channel `room`.
pub async fn centrifugo_connect(
    url: &str,
    secret: &JwtSecret,
    user: &str,
    room: &str,
) -> Result<(Tx, Rx, JoinTiming), ConnectFailure> {
    let started = Instant::now();
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| failure("join_url", format!("not a ws:// URL: {url}")))?;
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| failure("join_connect", e))?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        url,
        tcp,
        Some(switchboard_client::transport::ws_config()),
    )
    .await
    .map_err(|e| failure("join_websocket", e))?;
    let claims = Claims::new(
        user,
        RoomGrant::Rooms(vec![room.to_string()]),
        unix_now(),
        3600,
    );
    let token = mint(secret, &claims);
    let connect = json!({"id": 1, "connect": {"token": token, "name": "switchboard-bench"}});
    let hello = centrifugo_call(&mut ws, 1, connect.to_string()).await?;
    let subscribe = json!({"id": 2, "subscribe": {"channel": room}});
    let join = centrifugo_call(&mut ws, 2, subscribe.to_string()).await?;
    let timing = JoinTiming {
        join: hello + join,
        setup: started.elapsed(),
    };

    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(QUEUE);
    // Pongs go through the writer too (one owner of the sink).
    let (pong_tx, mut pong_rx) = mpsc::channel::<()>(4);
    let channel = room.to_string();
    let me = user.to_string();
    tokio::spawn(async move {
        let mut id = 2u32;
        loop {
            let first = tokio::select! {
                frame = out_rx.recv() => frame,
                Some(()) = pong_rx.recv() => {
                    if sink.send(WsMessage::text("{}")).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(first) = first else { break };
            id = id.wrapping_add(1).max(3);
            if sink
                .feed(WsMessage::text(centrifugo_publish(
                    id, &channel, &me, &first,
                )))
                .await
                .is_err()
            {
                return;
            }
            while let Ok(more) = out_rx.try_recv() {
                id = id.wrapping_add(1).max(3);
                if sink
                    .feed(WsMessage::text(centrifugo_publish(
                        id, &channel, &me, &more,
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let (in_tx, in_rx) = mpsc::channel::<Result<Message, ClientError>>(QUEUE);
    let me = user.to_string();
    tokio::spawn(async move {
        while let Some(next) = stream.next().await {
            let text = match next {
                Ok(WsMessage::Text(text)) => text,
                Ok(WsMessage::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    let _ = in_tx.send(Err(ClientError::WebSocket(e.to_string()))).await;
                    break;
                }
            };
            for line in text.as_str().lines().filter(|l| !l.trim().is_empty()) {
                let item = match parse_centrifugo_line(line) {
                    Ok(CentrifugoReply::Publication(data)) => match centrifugo_frame(&data, &me) {
                        None => continue,
                        Some(Ok(frame)) => protocol::decode(&frame).map_err(ClientError::from),
                        Some(Err(e)) => Err(ClientError::WebSocket(e)),
                    },
                    Ok(CentrifugoReply::Ping) => {
                        let _ = pong_tx.try_send(());
                        continue;
                    }
                    Ok(CentrifugoReply::Error(_, error)) => {
                        Err(ClientError::WebSocket(format!("centrifugo: {error}")))
                    }
                    Ok(_) => continue,
                    Err(e) => Err(ClientError::WebSocket(e.to_string())),
                };
                let fatal = item.is_err();
                if in_tx.send(item).await.is_err() || fatal {
                    return;
                }
            }
        }
    });
    let (tx, rx) = frame_ends(out_tx, in_rx, user, room);
    Ok((tx, rx, timing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineConfig, RelayTransport, spawn};

    #[test]
    fn parses_centrifugo_replies_pushes_and_pings() {
        assert_eq!(
            parse_centrifugo_line(r#"{"id":1,"connect":{"client":"c","version":"6"}}"#).unwrap(),
            CentrifugoReply::Ok(1)
        );
        assert_eq!(
            parse_centrifugo_line(r#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#)
                .unwrap(),
            CentrifugoReply::Error(2, r#"{"code":103,"message":"permission denied"}"#.into())
        );
        assert_eq!(parse_centrifugo_line("{}").unwrap(), CentrifugoReply::Ping);
        assert_eq!(
            parse_centrifugo_line(r#"{"push":{"channel":"r","join":{}}}"#).unwrap(),
            CentrifugoReply::Other
        );
        assert!(parse_centrifugo_line("not json").is_err());
    }

    #[test]
    fn publications_round_trip_and_own_echoes_are_dropped() {
        let command = centrifugo_publish(7, "room", "alice", b"\x01\x02frame");
        let value: Value = serde_json::from_str(&command).unwrap();
        assert_eq!(value["id"], 7);
        assert_eq!(value["publish"]["channel"], "room");
        let push = json!({"push": {"channel": "room", "pub": {"data": value["publish"]["data"]}}});
        let CentrifugoReply::Publication(data) = parse_centrifugo_line(&push.to_string()).unwrap()
        else {
            panic!("not a publication");
        };
        assert!(centrifugo_frame(&data, "alice").is_none());
        assert_eq!(
            centrifugo_frame(&data, "bob").unwrap().unwrap(),
            &b"\x01\x02frame"[..]
        );
        assert!(
            centrifugo_frame(&json!({"f": "x"}), "bob")
                .unwrap()
                .is_err()
        );
        assert!(
            centrifugo_frame(&json!({"f": "x", "b": "!!"}), "bob")
                .unwrap()
                .is_err()
        );
    }

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

    #[tokio::test]
    async fn a_bad_centrifugo_url_is_a_typed_failure() {
        let secret = JwtSecret::new("k").unwrap();
        let err = centrifugo_connect("http://x", &secret, "a", "r")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind, "join_url");
    }
}

//! The Centrifugo v6 adapter: the same encoded Switchboard frames as every other target,
//! carried by Centrifugo's client protocol in its Protobuf encoding (binary WebSocket messages,
//! frames as raw publication bytes) or its JSON encoding (text messages, frames base64 in the
//! publication's JSON data), so the load logic, the schedule and the histograms are shared.
//!
//! Mapping: connect command with an HS256 token = hello; subscribe to the member's own channel
//! `<room>.<user>` = join; a publication into the recipient's channel = relay; the recipient's
//! publication push = receipt. Per-member channels give Centrifugo the same work per relayed
//! message as a Switchboard relay: one delivery, no echo back to the sender (publishing needs
//! `allow_publish_for_client`). Every publish still gets a reply, which Switchboard's relay
//! frames do not.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::conn::{
    ConnectFailure, JoinTiming, Outgoing, QUEUE, Rx, Tx, dial, failure, feed_batch, frame_ends,
};
use switchboard_client::ClientError;
use switchboard_protocol::auth::{Claims, JwtSecret, RoomGrant, mint, unix_now};
use switchboard_protocol::{self as protocol, Message};

/// Which encoding of Centrifugo's client protocol the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Protobuf, varint-delimited, in binary messages (`?format=protobuf`).
    Protobuf,
    /// JSON, one object per line, in text messages.
    Json,
}

/// The member channel `user` subscribes to in `room`.
pub fn inbox(room: &str, user: &str) -> String {
    format!("{room}.{user}")
}

/// One command to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Authenticate.
    Connect {
        /// HS256 connection token.
        token: &'a str,
    },
    /// Subscribe to a channel.
    Subscribe {
        /// The channel.
        channel: &'a str,
    },
    /// Publish `data` into a channel.
    Publish {
        /// The channel.
        channel: &'a str,
        /// The publication's payload (a Switchboard frame).
        data: &'a [u8],
    },
}

/// What one server message held, as the bench cares about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A reply to command `id` without error.
    Ok(u32),
    /// A reply to command `id` carrying an error.
    Error(u32, String),
    /// A publication pushed into one of our channels: the Switchboard frame in it.
    Publication(Bytes),
    /// The server's ping: answer with an empty command.
    Ping,
    /// Anything else.
    Other,
}

/// Protobuf messages of Centrifugo's client protocol (`client.proto` of
/// github.com/centrifugal/protocol), only the fields the bench uses.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Command {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "4")]
        pub connect: Option<ConnectRequest>,
        #[prost(message, optional, tag = "5")]
        pub subscribe: Option<SubscribeRequest>,
        #[prost(message, optional, tag = "7")]
        pub publish: Option<PublishRequest>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ConnectRequest {
        #[prost(string, tag = "1")]
        pub token: String,
        #[prost(string, tag = "4")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubscribeRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PublishRequest {
        #[prost(string, tag = "1")]
        pub channel: String,
        #[prost(bytes = "bytes", tag = "2")]
        pub data: bytes::Bytes,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reply {
        #[prost(uint32, tag = "1")]
        pub id: u32,
        #[prost(message, optional, tag = "2")]
        pub error: Option<Error>,
        #[prost(message, optional, tag = "4")]
        pub push: Option<Push>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Error {
        #[prost(uint32, tag = "1")]
        pub code: u32,
        #[prost(string, tag = "2")]
        pub message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Push {
        #[prost(string, tag = "2")]
        pub channel: String,
        #[prost(message, optional, tag = "4")]
        pub publication: Option<Publication>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Publication {
        #[prost(bytes = "bytes", tag = "4")]
        pub data: bytes::Bytes,
    }
}

/// Encodes command `id` for the wire (a ping answer is [`pong`]).
pub fn encode(codec: Codec, id: u32, command: &Command<'_>) -> WsMessage {
    match codec {
        Codec::Json => {
            let body = match command {
                Command::Connect { token } => {
                    json!({"id": id, "connect": {"token": token, "name": "switchboard-bench"}})
                }
                Command::Subscribe { channel } => {
                    json!({"id": id, "subscribe": {"channel": channel}})
                }
                Command::Publish { channel, data } => json!({
                    "id": id,
                    "publish": {"channel": channel, "data": {"b": STANDARD.encode(data)}}
                }),
            };
            WsMessage::text(body.to_string())
        }
        Codec::Protobuf => {
            let mut cmd = pb::Command {
                id,
                ..pb::Command::default()
            };
            match command {
                Command::Connect { token } => {
                    cmd.connect = Some(pb::ConnectRequest {
                        token: (*token).to_string(),
                        name: "switchboard-bench".into(),
                    })
                }
                Command::Subscribe { channel } => {
                    cmd.subscribe = Some(pb::SubscribeRequest {
                        channel: (*channel).to_string(),
                    })
                }
                Command::Publish { channel, data } => {
                    cmd.publish = Some(pb::PublishRequest {
                        channel: (*channel).to_string(),
                        data: Bytes::copy_from_slice(data),
                    })
                }
            }
            let mut buf = BytesMut::with_capacity(cmd.encoded_len() + 4);
            cmd.encode_length_delimited(&mut buf)
                .expect("a BytesMut grows as needed");
            WsMessage::Binary(buf.freeze())
        }
    }
}

/// The answer to a server ping.
pub fn pong(codec: Codec) -> WsMessage {
    match codec {
        Codec::Json => WsMessage::text("{}"),
        Codec::Protobuf => WsMessage::Binary(Bytes::from_static(&[0])),
    }
}

/// Everything one server message holds (several replies may share one message).
pub fn decode(codec: Codec, msg: &WsMessage) -> Result<Vec<Reply>, String> {
    match (codec, msg) {
        (Codec::Json, WsMessage::Text(text)) => text
            .as_str()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(decode_json_line)
            .collect(),
        (Codec::Protobuf, WsMessage::Binary(bytes)) => {
            let mut buf = bytes.clone();
            let mut out = Vec::new();
            while !buf.is_empty() {
                let reply = pb::Reply::decode_length_delimited(&mut buf)
                    .map_err(|e| format!("bad protobuf reply: {e}"))?;
                out.push(from_pb(reply));
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

fn from_pb(reply: pb::Reply) -> Reply {
    if let Some(error) = reply.error {
        return Reply::Error(reply.id, format!("{} {}", error.code, error.message));
    }
    if reply.id > 0 {
        return Reply::Ok(reply.id);
    }
    match reply.push {
        Some(pb::Push {
            publication: Some(publication),
            ..
        }) => Reply::Publication(publication.data),
        Some(_) => Reply::Other,
        None => Reply::Ping,
    }
}

fn decode_json_line(line: &str) -> Result<Reply, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON reply: {e}"))?;
    let Some(object) = value.as_object() else {
        return Ok(Reply::Other);
    };
    if object.is_empty() {
        return Ok(Reply::Ping);
    }
    if let Some(id) = object.get("id").and_then(Value::as_u64) {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        if let Some(error) = object.get("error") {
            return Ok(Reply::Error(id, error.to_string()));
        }
        return Ok(Reply::Ok(id));
    }
    let Some(data) = object
        .get("push")
        .and_then(|push| push.get("pub"))
        .and_then(|publication| publication.get("data"))
    else {
        return Ok(Reply::Other);
    };
    let b = data
        .get("b")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("publication without a frame: {data}"))?;
    STANDARD
        .decode(b)
        .map(|frame| Reply::Publication(Bytes::from(frame)))
        .map_err(|e| format!("publication frame is not base64: {e}"))
}

type WsStream = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Sends command `id` and waits for its reply (answering pings on the way).
async fn call(
    ws: &mut WsStream,
    codec: Codec,
    id: u32,
    command: Command<'_>,
) -> Result<Duration, ConnectFailure> {
    let sent = Instant::now();
    ws.send(encode(codec, id, &command))
        .await
        .map_err(|e| failure("join_websocket", e))?;
    loop {
        let msg = match ws.next().await {
            Some(Ok(WsMessage::Close(frame))) => {
                return Err(failure("join_closed", format!("closed: {frame:?}")));
            }
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(failure("join_websocket", e)),
            None => return Err(failure("join_closed", "server closed the connection")),
        };
        for reply in decode(codec, &msg).map_err(|e| failure("join_protocol", e))? {
            match reply {
                Reply::Ok(got) if got == id => return Ok(sent.elapsed()),
                Reply::Error(got, error) if got == id => {
                    return Err(failure("join_refused", error));
                }
                Reply::Ping => ws
                    .send(pong(codec))
                    .await
                    .map_err(|e| failure("join_websocket", e))?,
                _ => {}
            }
        }
    }
}

/// Connects `user` to Centrifugo at `url` with a token signed by `secret` and subscribes to
/// its channel in `room`.
pub async fn connect(
    url: &str,
    codec: Codec,
    secret: &JwtSecret,
    user: &str,
    room: &str,
) -> Result<(Tx, Rx, JoinTiming), ConnectFailure> {
    let started = Instant::now();
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| failure("join_url", format!("not a ws:// URL: {url}")))?;
    let tcp = dial(authority).await?;
    let url = match codec {
        Codec::Protobuf => format!("{url}?format=protobuf"),
        Codec::Json => url.to_string(),
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(
        url.as_str(),
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
    let hello = call(&mut ws, codec, 1, Command::Connect { token: &token }).await?;
    let own = inbox(room, user);
    let join = call(&mut ws, codec, 2, Command::Subscribe { channel: &own }).await?;
    let timing = JoinTiming {
        join: hello + join,
        setup: started.elapsed(),
    };

    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(QUEUE);
    // Pongs go through the writer too (one owner of the sink).
    let (pong_tx, mut pong_rx) = mpsc::channel::<()>(4);
    let room_id = room.to_string();
    tokio::spawn(async move {
        let mut id = 2u32;
        let mut next_id = || {
            id = id.wrapping_add(1).max(3);
            id
        };
        loop {
            let first = tokio::select! {
                out = out_rx.recv() => out,
                Some(()) = pong_rx.recv() => {
                    if sink.send(pong(codec)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(first) = first else { break };
            let publish = |out: Outgoing| {
                let channel = inbox(&room_id, &out.to);
                let publish = Command::Publish {
                    channel: &channel,
                    data: &out.frame,
                };
                encode(codec, next_id(), &publish)
            };
            if !feed_batch(&mut sink, first, &mut out_rx, publish).await {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let (in_tx, in_rx) = mpsc::channel::<Result<Message, ClientError>>(QUEUE);
    tokio::spawn(async move {
        while let Some(next) = stream.next().await {
            let msg = match next {
                Ok(WsMessage::Close(_)) => break,
                Ok(msg) => msg,
                Err(e) => {
                    let _ = in_tx.send(Err(ClientError::WebSocket(e.to_string()))).await;
                    break;
                }
            };
            let replies = match decode(codec, &msg) {
                Ok(replies) => replies,
                Err(e) => vec![Reply::Error(0, e)],
            };
            for reply in replies {
                let item = match reply {
                    Reply::Publication(frame) => {
                        protocol::decode(&frame).map_err(ClientError::from)
                    }
                    Reply::Ping => {
                        let _ = pong_tx.try_send(());
                        continue;
                    }
                    Reply::Error(_, error) => {
                        Err(ClientError::WebSocket(format!("centrifugo: {error}")))
                    }
                    Reply::Ok(_) | Reply::Other => continue,
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

    #[test]
    fn json_commands_replies_pushes_and_pings() {
        let WsMessage::Text(text) = encode(
            Codec::Json,
            7,
            &Command::Publish {
                channel: "r.bob",
                data: b"\x01\x02",
            },
        ) else {
            panic!("JSON commands are text");
        };
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        assert_eq!(value["publish"]["channel"], "r.bob");
        let push = json!({"push": {"channel": "r.bob", "pub": {"data": value["publish"]["data"]}}});
        let lines = format!(
            "{}\n{{}}\n{}\n{}",
            json!({"id": 1, "connect": {"client": "c"}}),
            json!({"id": 2, "error": {"code": 103, "message": "permission denied"}}),
            push
        );
        assert_eq!(
            decode(Codec::Json, &WsMessage::text(lines)).unwrap(),
            vec![
                Reply::Ok(1),
                Reply::Ping,
                Reply::Error(2, r#"{"code":103,"message":"permission denied"}"#.into()),
                Reply::Publication(Bytes::from_static(b"\x01\x02")),
            ]
        );
        assert!(decode(Codec::Json, &WsMessage::text("not json")).is_err());
        let bad = json!({"push": {"pub": {"data": {"b": "!!"}}}}).to_string();
        assert!(decode(Codec::Json, &WsMessage::text(bad)).is_err());
    }

    #[test]
    fn protobuf_commands_and_replies_round_trip() {
        let WsMessage::Binary(bytes) = encode(
            Codec::Protobuf,
            9,
            &Command::Publish {
                channel: "r.bob",
                data: b"frame",
            },
        ) else {
            panic!("protobuf commands are binary");
        };
        let mut buf = bytes.clone();
        let cmd = pb::Command::decode_length_delimited(&mut buf).unwrap();
        assert_eq!(cmd.id, 9);
        assert_eq!(cmd.publish.unwrap().data, Bytes::from_static(b"frame"));
        // A publish reply, a ping (empty reply), an error and a push, in one message.
        let mut wire = BytesMut::new();
        let replies = [
            pb::Reply {
                id: 3,
                ..Default::default()
            },
            pb::Reply::default(),
            pb::Reply {
                id: 4,
                error: Some(pb::Error {
                    code: 103,
                    message: "permission denied".into(),
                }),
                ..Default::default()
            },
            pb::Reply {
                push: Some(pb::Push {
                    channel: "r.bob".into(),
                    publication: Some(pb::Publication {
                        data: Bytes::from_static(b"frame"),
                    }),
                }),
                ..Default::default()
            },
        ];
        for r in &replies {
            r.encode_length_delimited(&mut wire).unwrap();
        }
        assert_eq!(
            decode(Codec::Protobuf, &WsMessage::Binary(wire.freeze())).unwrap(),
            vec![
                Reply::Ok(3),
                Reply::Ping,
                Reply::Error(4, "103 permission denied".into()),
                Reply::Publication(Bytes::from_static(b"frame")),
            ]
        );
        assert!(
            decode(
                Codec::Protobuf,
                &WsMessage::Binary(Bytes::from_static(&[5, 1]))
            )
            .is_err()
        );
        assert_eq!(
            pong(Codec::Protobuf),
            WsMessage::Binary(Bytes::from_static(&[0]))
        );
    }

    #[tokio::test]
    async fn a_bad_url_is_a_typed_failure() {
        let secret = JwtSecret::new("k").unwrap();
        let err = connect("http://x", Codec::Json, &secret, "a", "r")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind, "join_url");
    }
}

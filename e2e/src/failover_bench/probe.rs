//! A client that polls like a real one after its node died: connect to an entry node, say
//! Hello, join the room; follow a `Redirect` to the owner and join there. Each attempt is
//! bounded (a frozen node accepts TCP but never answers); a refusal (1010 while the shard is
//! restored, a redirect to a dead node, a closed connection) is simply retried, and attempts
//! overlap so the first success is seen within [`SPAWN_EVERY`].

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use switchboard_protocol::auth::{self, Claims, JwtSecret, RoomGrant};
use switchboard_protocol::{Encoder, Hello, Join, Message, Pong, decode};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Longest single attempt (connect, Hello, Join, one redirect).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// A new attempt starts this often while none succeeded.
pub const SPAWN_EVERY: Duration = Duration::from_millis(10);

/// Most attempts in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// A connection that joined a room (kept open by the caller).
pub struct Joined {
    /// The connection.
    pub ws: Ws,
    /// The URL of the node that answered Joined.
    pub url: String,
    /// The answer: the room's members and its last event seq.
    pub joined: switchboard_protocol::Joined,
}

/// A token for `user` valid for an hour, any room.
pub fn token(secret: &JwtSecret, user: &str) -> String {
    auth::mint(
        secret,
        &Claims::new(user, RoomGrant::Any, auth::unix_now(), 3600),
    )
}

async fn send(ws: &mut Ws, encoder: &mut Encoder, msg: &Message) -> Result<()> {
    let bytes = encoder.encode_to_vec(msg)?;
    ws.send(WsMessage::Binary(bytes.into())).await?;
    Ok(())
}

async fn next(ws: &mut Ws, encoder: &mut Encoder) -> Result<Message> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(b))) => {
                let msg = decode(&b).map_err(|e| anyhow!("bad frame: {e}"))?;
                if let Message::Ping(p) = &msg {
                    send(ws, encoder, &Message::Pong(Pong { nonce: p.nonce })).await?;
                    continue;
                }
                return Ok(msg);
            }
            Some(Ok(WsMessage::Close(_))) | None => bail!("connection closed"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// What one join at one node answered.
enum Answer {
    Joined(Box<Ws>, switchboard_protocol::Joined),
    Redirect(String),
}

async fn join_at(url: &str, token: &str, room: &str) -> Result<Answer> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "switchboard.v2".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let mut encoder = Encoder::new();
    send(
        &mut ws,
        &mut encoder,
        &Message::Hello(Hello {
            token: token.into(),
            versions: vec![],
            resume: None,
        }),
    )
    .await?;
    match next(&mut ws, &mut encoder).await? {
        Message::Welcome(_) => {}
        other => bail!("expected Welcome, got {other:?}"),
    }
    send(
        &mut ws,
        &mut encoder,
        &Message::Join(Join {
            request_id: 1,
            room: room.into(),
        }),
    )
    .await?;
    match next(&mut ws, &mut encoder).await? {
        Message::Joined(joined) => Ok(Answer::Joined(Box::new(ws), joined)),
        Message::Redirect(r) => Ok(Answer::Redirect(r.url)),
        Message::Error(e) => bail!("join refused: {} {}", e.code, e.message),
        other => bail!("unexpected answer to a join: {other:?}"),
    }
}

/// One attempt: join through `entry`, following one redirect.
pub async fn attempt(entry: &str, token: &str, room: &str) -> Result<Joined> {
    let run = async {
        match join_at(entry, token, room).await? {
            Answer::Joined(ws, joined) => Ok(Joined {
                ws: *ws,
                url: entry.to_string(),
                joined,
            }),
            Answer::Redirect(url) => match join_at(&url, token, room).await? {
                Answer::Joined(ws, joined) => Ok(Joined {
                    ws: *ws,
                    url,
                    joined,
                }),
                Answer::Redirect(again) => bail!("redirected twice ({url} → {again})"),
            },
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, run)
        .await
        .context("attempt timed out")?
}

/// Starts an [`attempt`] every [`SPAWN_EVERY`] (at most [`MAX_IN_FLIGHT`] at once), cycling
/// through the entries, until one succeeds or `deadline` passes; returns the connection, when
/// it succeeded and how many attempts failed before. Overlapping attempts keep the
/// resolution at [`SPAWN_EVERY`] even when a redirect points at a frozen node.
pub async fn poll_join(
    entries: &[String],
    token: &str,
    room: &str,
    deadline: Instant,
) -> Result<(Joined, Instant, u32)> {
    poll_join_seeing(entries, token, room, deadline, |_| true).await
}

/// Like [`poll_join`], but a join counts only when its `Joined` passes `sees` (the room's
/// state is there: its members, its last event seq); one that does not counts as failed.
pub async fn poll_join_seeing(
    entries: &[String],
    token: &str,
    room: &str,
    deadline: Instant,
    sees: impl Fn(&switchboard_protocol::Joined) -> bool,
) -> Result<(Joined, Instant, u32)> {
    use futures::stream::FuturesUnordered;
    if entries.is_empty() {
        bail!("no entry node");
    }
    let mut in_flight = FuturesUnordered::new();
    let mut tick = tokio::time::interval(SPAWN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    let mut next_entry = 0usize;
    let mut last = anyhow!("no attempt finished");
    loop {
        tokio::select! {
            _ = tick.tick(), if in_flight.len() < MAX_IN_FLIGHT => {
                if Instant::now() > deadline {
                    return Err(last.context(format!("no join of {room} before the deadline")));
                }
                let entry = entries[next_entry % entries.len()].clone();
                next_entry += 1;
                let (token, room) = (token.to_string(), room.to_string());
                in_flight.push(async move { attempt(&entry, &token, &room).await });
            }
            Some(result) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(joined) if sees(&joined.joined) => {
                    return Ok((joined, Instant::now(), failures));
                }
                Ok(joined) => {
                    last = anyhow!(
                        "joined without the room's state: members {:?}, last seq {}",
                        joined.joined.members,
                        joined.joined.last_seq
                    );
                    failures += 1;
                }
                Err(e) => {
                    last = e;
                    failures += 1;
                }
            },
        }
    }
}

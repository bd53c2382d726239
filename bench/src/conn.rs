//! One bench connection, whatever it talks to: a Switchboard [`Client`] or a transport that
//! carries the same encoded frames (the baseline relay's WebSocket here, the peers in
//! `peers`), behind one sending and one receiving type so the load logic is shared.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::baseline::{JOINED, WELCOME};
use switchboard_client::state::new_call_id;
use switchboard_client::{Client, ClientError, ClientSender, ConnectOptions, Incoming};
use switchboard_protocol::auth::{Claims, JwtSecret, RoomGrant, mint, unix_now};
use switchboard_protocol::{
    self as protocol, Candidate, Encoder, Hangup, IceCandidate, Invite, InviteResult, Message, Sdp,
};

/// Queue capacity of one bench connection (each direction).
pub(super) const QUEUE: usize = 256;

/// How long joining took.
#[derive(Debug, Clone, Copy)]
pub struct JoinTiming {
    /// Hello→Welcome plus Join→Joined.
    pub join: Duration,
    /// From the start of the TCP connect until Joined.
    pub setup: Duration,
}

/// Why a connection could not be set up (an error kind for the counters, and the detail).
#[derive(Debug)]
pub struct ConnectFailure {
    /// Counter label.
    pub kind: String,
    /// What happened.
    pub detail: String,
}

impl From<ClientError> for ConnectFailure {
    fn from(err: ClientError) -> Self {
        Self {
            kind: format!("join_{}", err.kind()),
            detail: err.to_string(),
        }
    }
}

/// A [`ConnectFailure`] of `kind`.
pub(super) fn failure(kind: &str, detail: impl ToString) -> ConnectFailure {
    ConnectFailure {
        kind: kind.to_string(),
        detail: detail.to_string(),
    }
}

/// Connects `user` to `room` on the Switchboard node at `url` and joins.
pub(super) async fn switchboard_connect(
    url: &str,
    secret: &JwtSecret,
    options: &ConnectOptions,
    user: &str,
    room: &str,
) -> Result<(Tx, Rx, JoinTiming), ConnectFailure> {
    let claims = Claims::new(
        user,
        RoomGrant::Rooms(vec![room.to_string()]),
        unix_now(),
        3600,
    );
    let mut options = options.clone();
    options.token = mint(secret, &claims);
    options.queue = QUEUE;
    let started = Instant::now();
    let client = Client::connect(url, options).await?;
    let hello_rtt = client.hello_rtt();
    let join_started = Instant::now();
    client.join(room).await?;
    let joined = Instant::now();
    let timing = JoinTiming {
        join: hello_rtt + (joined - join_started),
        setup: joined - started,
    };
    let (tx, rx) = client.split();
    Ok((Tx::Switchboard(tx), Rx::Switchboard(rx), timing))
}

/// One encoded Switchboard frame to send, with the member it is for (transports that address
/// members, like Centrifugo's per-member channels, need it; the relays ignore it).
#[derive(Debug)]
pub(super) struct Outgoing {
    /// The recipient's user id.
    pub to: String,
    /// The encoded frame.
    pub frame: Bytes,
}

/// The URL of `room`'s owner: where the node at `url` redirects `user`'s Hello (no join).
pub(super) async fn switchboard_owner(
    url: &str,
    secret: &JwtSecret,
    options: &ConnectOptions,
    user: &str,
    room: &str,
) -> Result<String, ConnectFailure> {
    let claims = Claims::new(
        user,
        RoomGrant::Rooms(vec![room.to_string()]),
        unix_now(),
        3600,
    );
    let mut options = options.clone();
    options.token = mint(secret, &claims);
    let client = Client::connect(url, options).await?;
    let owner = client.session().url;
    client.close().await;
    Ok(owner)
}

/// The bench ends of a connection that carries encoded Switchboard frames over some transport:
/// `out` takes frames to send, `incoming` yields decoded frames from the other members.
pub(super) fn frame_ends(
    out: mpsc::Sender<Outgoing>,
    incoming: mpsc::Receiver<Result<Message, ClientError>>,
    user: &str,
    room: &str,
) -> (Tx, Rx) {
    let tx = Tx::Baseline(Box::new(BaselineTx {
        out,
        room: room.to_string(),
        me: user.to_string(),
        calls: HashMap::new(),
        encoder: Encoder::new(),
    }));
    (tx, Rx::Baseline(incoming))
}

/// Opens the TCP connection under a bench connection, with Nagle off so small frames go at once.
pub(super) async fn dial(addr: impl ToSocketAddrs) -> Result<TcpStream, ConnectFailure> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| failure("join_connect", e))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Feeds `first` and whatever else is already queued to `sink` and flushes once, so a burst costs
/// one flush; false once the connection is gone.
pub(super) async fn feed_batch<S, T>(
    sink: &mut S,
    first: Outgoing,
    out_rx: &mut mpsc::Receiver<Outgoing>,
    mut message: impl FnMut(Outgoing) -> T,
) -> bool
where
    S: Sink<T> + Unpin,
{
    let mut next = Some(first);
    while let Some(out) = next.take().or_else(|| out_rx.try_recv().ok()) {
        if sink.feed(message(out)).await.is_err() {
            return false;
        }
    }
    sink.flush().await.is_ok()
}

/// Forwards `items` to the receiver it returns, stopping after the first error (it ends the
/// connection) or once the receiver is dropped.
pub(super) fn forward_inbound(
    items: impl Stream<Item = Result<Message, ClientError>> + Send + 'static,
) -> mpsc::Receiver<Result<Message, ClientError>> {
    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut items = std::pin::pin!(items);
        while let Some(item) = items.next().await {
            let fatal = item.is_err();
            if in_tx.send(item).await.is_err() || fatal {
                break;
            }
        }
    });
    in_rx
}

/// Connects `user` to `room` on the baseline relay at `addr` and joins.
pub(super) async fn baseline_connect(
    addr: SocketAddr,
    user: &str,
    room: &str,
) -> Result<(Tx, Rx, JoinTiming), ConnectFailure> {
    let started = Instant::now();
    let tcp = dial(addr).await?;
    let url = format!("ws://{addr}/");
    let (ws, _) = tokio_tungstenite::client_async_with_config(
        url.as_str(),
        tcp,
        Some(switchboard_client::transport::ws_config()),
    )
    .await
    .map_err(|e| failure("join_websocket", e))?;
    let (mut sink, mut stream) = ws.split();
    let mut exchange = async |payload: Bytes, expect: &[u8]| -> Result<Duration, ConnectFailure> {
        let sent = Instant::now();
        sink.send(WsMessage::Binary(payload))
            .await
            .map_err(|e| failure("join_websocket", e))?;
        loop {
            match stream.next().await {
                Some(Ok(WsMessage::Binary(reply))) if reply == expect => return Ok(sent.elapsed()),
                Some(Ok(WsMessage::Binary(other))) => {
                    return Err(failure("join_refused", format!("relay answered {other:?}")));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(failure("join_websocket", e)),
                None => return Err(failure("join_closed", "relay closed the connection")),
            }
        }
    };
    let hello = exchange(Bytes::copy_from_slice(user.as_bytes()), WELCOME).await?;
    let join = exchange(Bytes::copy_from_slice(room.as_bytes()), JOINED).await?;
    let timing = JoinTiming {
        join: hello + join,
        setup: started.elapsed(),
    };

    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(QUEUE);
    tokio::spawn(async move {
        let binary = |out: Outgoing| WsMessage::Binary(out.frame);
        while let Some(first) = out_rx.recv().await {
            if !feed_batch(&mut sink, first, &mut out_rx, binary).await {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let frames = futures::stream::unfold(stream, |mut stream| async move {
        loop {
            let item = match stream.next().await? {
                Ok(WsMessage::Binary(bytes)) => protocol::decode(&bytes).map_err(ClientError::from),
                Ok(WsMessage::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => Err(ClientError::WebSocket(e.to_string())),
            };
            return Some((item, stream));
        }
    });
    let in_rx = forward_inbound(frames);
    let (tx, rx) = frame_ends(out_tx, in_rx, user, room);
    Ok((tx, rx, timing))
}

/// The sending side of a bench connection.
#[derive(Debug)]
pub enum Tx {
    /// Through the Switchboard client.
    Switchboard(ClientSender),
    /// Raw frames to the baseline relay (or another frame transport: TCP, Centrifugo).
    Baseline(Box<BaselineTx>),
}

/// Frames for the baseline relay, addressed like the client would (the relay ignores them).
#[derive(Debug)]
pub struct BaselineTx {
    out: mpsc::Sender<Outgoing>,
    room: String,
    me: String,
    calls: HashMap<String, String>,
    encoder: Encoder,
}

impl BaselineTx {
    async fn send(&mut self, to: String, msg: &Message) -> Result<(), ClientError> {
        let frame = Bytes::from(self.encoder.encode_to_vec(msg)?);
        self.out
            .send(Outgoing { to, frame })
            .await
            .map_err(|_| ClientError::ConnectionLost)
    }

    fn peer(&self, call_id: &str) -> Result<String, ClientError> {
        self.calls
            .get(call_id)
            .cloned()
            .ok_or_else(|| ClientError::UnknownCall(call_id.to_string()))
    }

    fn sdp(&self, call_id: &str, sdp: &str) -> Result<Sdp, ClientError> {
        Ok(Sdp {
            request_id: 0,
            room: self.room.clone(),
            call_id: call_id.to_string(),
            from: self.me.clone(),
            to: self.peer(call_id)?,
            sdp: sdp.to_string(),
        })
    }

    fn ice(&self, call_id: &str, candidate: Candidate) -> Result<IceCandidate, ClientError> {
        Ok(IceCandidate {
            room: self.room.clone(),
            call_id: call_id.to_string(),
            from: self.me.clone(),
            to: self.peer(call_id)?,
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
        })
    }
}

impl Tx {
    /// Invites `to`; returns the call id.
    pub async fn invite(&mut self, room: &str, to: &str) -> Result<String, ClientError> {
        match self {
            Tx::Switchboard(c) => c.invite(room, to).await,
            Tx::Baseline(b) => {
                let call_id = new_call_id();
                b.calls.insert(call_id.clone(), to.to_string());
                let msg = Message::Invite(Invite {
                    request_id: 0,
                    room: b.room.clone(),
                    call_id: call_id.clone(),
                    from: b.me.clone(),
                    to: to.to_string(),
                });
                b.send(to.to_string(), &msg).await?;
                Ok(call_id)
            }
        }
    }

    /// Learns a call from an incoming Invite (the baseline side has no client bookkeeping).
    pub fn observe_invite(&mut self, call_id: &str, from: &str) {
        if let Tx::Baseline(b) = self {
            b.calls.insert(call_id.to_string(), from.to_string());
        }
    }

    /// Forgets a call (the baseline side).
    pub fn forget(&mut self, call_id: &str) {
        if let Tx::Baseline(b) = self {
            b.calls.remove(call_id);
        }
    }

    /// Accepts an invitation.
    pub async fn accept(&mut self, call_id: &str) -> Result<(), ClientError> {
        match self {
            Tx::Switchboard(c) => c.accept(call_id).await,
            Tx::Baseline(b) => {
                let to = b.peer(call_id)?;
                let msg = Message::InviteResult(InviteResult {
                    request_id: 0,
                    room: b.room.clone(),
                    call_id: call_id.to_string(),
                    from: b.me.clone(),
                    to: to.clone(),
                    accepted: true,
                    reason: String::new(),
                });
                b.send(to, &msg).await
            }
        }
    }

    /// Sends an offer.
    pub async fn offer(&mut self, call_id: &str, sdp: &str) -> Result<(), ClientError> {
        match self {
            Tx::Switchboard(c) => c.offer(call_id, sdp).await,
            Tx::Baseline(b) => {
                let sdp = b.sdp(call_id, sdp)?;
                b.send(sdp.to.clone(), &Message::Offer(sdp)).await
            }
        }
    }

    /// Sends an answer.
    pub async fn answer(&mut self, call_id: &str, sdp: &str) -> Result<(), ClientError> {
        match self {
            Tx::Switchboard(c) => c.answer(call_id, sdp).await,
            Tx::Baseline(b) => {
                let sdp = b.sdp(call_id, sdp)?;
                b.send(sdp.to.clone(), &Message::Answer(sdp)).await
            }
        }
    }

    /// Sends one candidate.
    pub async fn ice(&mut self, call_id: &str, candidate: Candidate) -> Result<(), ClientError> {
        match self {
            Tx::Switchboard(c) => c.ice(call_id, candidate).await,
            Tx::Baseline(b) => {
                let ice = b.ice(call_id, candidate)?;
                b.send(ice.to.clone(), &Message::IceCandidate(ice)).await
            }
        }
    }

    /// Sends end-of-candidates.
    pub async fn end_of_candidates(&mut self, call_id: &str) -> Result<(), ClientError> {
        match self {
            Tx::Switchboard(c) => c.end_of_candidates(call_id).await,
            Tx::Baseline(b) => {
                let ice = b.ice(call_id, Candidate::default())?;
                b.send(ice.to.clone(), &Message::IceCandidate(ice)).await
            }
        }
    }

    /// Hangs up.
    pub async fn hangup(&mut self, call_id: &str) -> Result<(), ClientError> {
        match self {
            Tx::Switchboard(c) => c.hangup(call_id, "bench").await,
            Tx::Baseline(b) => {
                let to = b.peer(call_id)?;
                let msg = Message::Hangup(Hangup {
                    request_id: 0,
                    room: b.room.clone(),
                    call_id: call_id.to_string(),
                    from: b.me.clone(),
                    reason: "bench".into(),
                });
                b.calls.remove(call_id);
                b.send(to, &msg).await
            }
        }
    }
}

/// The receiving side of a bench connection.
#[derive(Debug)]
pub enum Rx {
    /// From the Switchboard client.
    Switchboard(Incoming),
    /// Decoded frames from the baseline relay.
    Baseline(mpsc::Receiver<Result<Message, ClientError>>),
}

impl Rx {
    /// The next incoming message.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        match self {
            Rx::Switchboard(incoming) => incoming.recv().await,
            Rx::Baseline(rx) => rx.recv().await.unwrap_or(Err(ClientError::Closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineConfig, spawn};

    #[tokio::test]
    async fn baseline_connections_exchange_frames() {
        let relay = spawn("127.0.0.1:0".parse().unwrap(), BaselineConfig::default())
            .await
            .unwrap();
        let (mut a_tx, _a_rx, timing) = baseline_connect(relay.addr, "a", "r").await.unwrap();
        assert!(timing.setup >= timing.join);
        let (mut b_tx, mut b_rx, _) = baseline_connect(relay.addr, "b", "r").await.unwrap();
        let call = a_tx.invite("r", "b").await.unwrap();
        match b_rx.recv().await.unwrap() {
            Message::Invite(invite) => {
                assert_eq!(invite.call_id, call);
                assert_eq!(invite.from, "a");
                b_tx.observe_invite(&invite.call_id, &invite.from);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(b_tx.accept(&call).await.is_ok());
        assert!(matches!(
            b_tx.offer("nope", "v=0").await,
            Err(ClientError::UnknownCall(_))
        ));
        relay.shutdown.cancel();
    }
}

//! The baseline relay the bench compares Switchboard against: a plain tokio-tungstenite
//! forwarder with no protocol, no auth, no state machine and no durability.
//!
//! Its wire contract, kept as small as possible while matching Switchboard's round trips:
//! 1. the client sends any binary message ("hello"); the relay answers [`WELCOME`];
//! 2. the client sends the room id as a binary message ("join"); the relay registers the
//!    connection in that room and answers [`JOINED`] (or [`ROOM_FULL`] and closes when the room
//!    already has `room_size` members);
//! 3. every later binary message is forwarded verbatim to every other member of the room.
//!
//! With [`RelayTransport::Tcp`] the same contract runs over plain TCP, each message framed
//! by a 4-byte big-endian length ([`read_frame`], [`write_frame`]): the floor without WebSocket.
//!
//! Like the node it has one reader and one writer task per connection and a bounded outbound
//! queue; a message for a member whose queue is full is dropped and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

/// The relay's answer to the hello message.
pub const WELCOME: &[u8] = &[1];
/// The relay's answer to the join message.
pub const JOINED: &[u8] = &[2];
/// The relay's answer when the room is full (then it closes the connection).
pub const ROOM_FULL: &[u8] = &[0xff];

/// Largest message the relay accepts (the protocol's frame limit plus its length prefix).
const MAX_MESSAGE: usize = 65_536 + 4;

/// What the relay speaks on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayTransport {
    /// WebSocket binary messages (the baseline).
    #[default]
    WebSocket,
    /// Length-prefixed frames on plain TCP (the raw TCP floor).
    Tcp,
}

/// How the baseline relay runs.
#[derive(Debug, Clone, Copy)]
pub struct BaselineConfig {
    /// Members per room.
    pub room_size: usize,
    /// Outbound queue per connection, in messages.
    pub queue: usize,
    /// WebSocket or plain TCP.
    pub transport: RelayTransport,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            room_size: 2,
            queue: 256,
            transport: RelayTransport::WebSocket,
        }
    }
}

/// Reads one length-prefixed frame; `None` at a clean end of stream. A length above the
/// relay's message limit is an `InvalidData` error (never an unbounded allocation).
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_MESSAGE}-byte limit"),
        ));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(Bytes::from(payload)))
}

/// Writes one length-prefixed frame (buffered: the caller flushes).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(payload).await
}

/// Counters the relay keeps.
#[derive(Debug, Default)]
pub struct BaselineStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Messages forwarded (one per receiving member).
    pub forwarded: AtomicU64,
    /// Messages dropped because a member's queue was full.
    pub dropped: AtomicU64,
}

type Outbox = mpsc::Sender<Bytes>;

#[derive(Default)]
struct Room {
    members: Mutex<Vec<(u64, Outbox)>>,
}

struct Shared {
    config: BaselineConfig,
    rooms: Mutex<HashMap<Bytes, Arc<Room>>>,
    next_id: AtomicU64,
    stats: Arc<BaselineStats>,
}

/// A running baseline relay (see [`spawn`]).
#[derive(Debug)]
pub struct BaselineRelay {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<BaselineStats>,
    /// Cancel to stop accepting and close every connection.
    pub shutdown: CancellationToken,
    /// The accept loop.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `listen` and serves the baseline relay on the current runtime.
pub async fn spawn(listen: SocketAddr, config: BaselineConfig) -> std::io::Result<BaselineRelay> {
    let listener = crate::sys::bind_listener(listen)?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(BaselineStats::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, config, stats.clone(), shutdown.clone()));
    Ok(BaselineRelay {
        addr,
        stats,
        shutdown,
        task,
    })
}

/// Accepts connections on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: BaselineConfig,
    stats: Arc<BaselineStats>,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        config,
        rooms: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        stats,
    });
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let serve_one = async {
                        match shared.config.transport {
                            RelayTransport::WebSocket => connection(stream, shared.clone())
                                .await
                                .map_err(|e| e.to_string()),
                            RelayTransport::Tcp => tcp_connection(stream, shared.clone())
                                .await
                                .map_err(|e| e.to_string()),
                        }
                    };
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        result = serve_one => {
                            if let Err(err) = result {
                                tracing::debug!(%err, "baseline connection ended");
                            }
                        }
                    }
                });
            }
            Err(err) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(%err, "baseline relay accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// Same buffer sizes as the node's defaults (4 KiB each way), so memory per connection is
/// compared like for like.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let _ = stream.set_nodelay(true);
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await?;
    let (mut sink, mut stream) = ws.split();

    // Hello → Welcome, then Join(room) → Joined.
    let Some(_hello) = next_binary(&mut stream).await? else {
        return Ok(());
    };
    sink.send(WsMessage::Binary(Bytes::from_static(WELCOME)))
        .await?;
    let Some(room_id) = next_binary(&mut stream).await? else {
        return Ok(());
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Bytes>(shared.config.queue.max(1));
    let Some(room) = shared.register(&room_id, id, tx) else {
        sink.send(WsMessage::Binary(Bytes::from_static(ROOM_FULL)))
            .await?;
        let _ = sink.close().await;
        return Ok(());
    };
    sink.send(WsMessage::Binary(Bytes::from_static(JOINED)))
        .await?;

    let writer = async move {
        while let Some(first) = rx.recv().await {
            sink.feed(WsMessage::Binary(first)).await?;
            while let Ok(more) = rx.try_recv() {
                sink.feed(WsMessage::Binary(more)).await?;
            }
            sink.flush().await?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let reader = async {
        while let Some(payload) = next_binary(&mut stream).await? {
            shared.forward(&room, id, payload);
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let result = tokio::select! {
        result = reader => result,
        result = writer => result,
    };
    shared.unregister(&room_id, &room, id);
    result
}

/// One plain-TCP member: the same hello/join contract and forwarding, length-prefixed frames.
async fn tcp_connection(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = BufReader::with_capacity(4096, read);
    let mut writer = BufWriter::with_capacity(4096, write);
    if read_frame(&mut reader).await?.is_none() {
        return Ok(());
    }
    write_frame(&mut writer, WELCOME).await?;
    writer.flush().await?;
    let Some(room_id) = read_frame(&mut reader).await? else {
        return Ok(());
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Bytes>(shared.config.queue.max(1));
    let Some(room) = shared.register(&room_id, id, tx) else {
        write_frame(&mut writer, ROOM_FULL).await?;
        writer.flush().await?;
        return Ok(());
    };
    write_frame(&mut writer, JOINED).await?;
    writer.flush().await?;
    let writer_task = async move {
        while let Some(first) = rx.recv().await {
            write_frame(&mut writer, &first).await?;
            while let Ok(more) = rx.try_recv() {
                write_frame(&mut writer, &more).await?;
            }
            writer.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let reader_task = async {
        while let Some(payload) = read_frame(&mut reader).await? {
            shared.forward(&room, id, payload);
        }
        Ok::<_, std::io::Error>(())
    };
    let result = tokio::select! {
        result = reader_task => result,
        result = writer_task => result,
    };
    shared.unregister(&room_id, &room, id);
    result
}

/// The next binary (or text, as bytes) message; `None` at close.
async fn next_binary<S>(
    stream: &mut S,
) -> Result<Option<Bytes>, tokio_tungstenite::tungstenite::Error>
where
    S: futures::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(message) = stream.next().await {
        match message? {
            WsMessage::Binary(bytes) => return Ok(Some(bytes)),
            WsMessage::Text(text) => return Ok(Some(Bytes::from(text))),
            WsMessage::Close(_) => return Ok(None),
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
        }
    }
    Ok(None)
}

impl Shared {
    /// Adds a member; map lock then room lock (the only order used), so a room being
    /// removed by its last leaver cannot swallow a new member.
    fn register(&self, room_id: &Bytes, id: u64, outbox: Outbox) -> Option<Arc<Room>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let room = rooms.entry(room_id.clone()).or_default().clone();
        let mut members = room.members.lock().unwrap_or_else(|e| e.into_inner());
        if members.len() >= self.config.room_size {
            return None;
        }
        members.push((id, outbox));
        drop(members);
        Some(room)
    }

    fn unregister(&self, room_id: &Bytes, room: &Arc<Room>, id: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let mut members = room.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|(member, _)| *member != id);
        if members.is_empty() && rooms.get(room_id).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(room_id);
        }
    }

    fn forward(&self, room: &Room, from: u64, payload: Bytes) {
        let members = room.members.lock().unwrap_or_else(|e| e.into_inner());
        for (member, outbox) in members.iter() {
            if *member == from {
                continue;
            }
            match outbox.try_send(payload.clone()) {
                Ok(()) => {
                    self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    async fn join(addr: SocketAddr, room: &str) -> Ws {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        ws.send(WsMessage::Binary(Bytes::from_static(b"hello")))
            .await
            .unwrap();
        assert_eq!(recv(&mut ws).await, WELCOME);
        ws.send(WsMessage::Binary(Bytes::copy_from_slice(room.as_bytes())))
            .await
            .unwrap();
        ws
    }

    async fn recv(ws: &mut Ws) -> Bytes {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("timed out")
            .expect("closed")
            .unwrap();
        match msg {
            WsMessage::Binary(bytes) => bytes,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn forwards_within_a_room_only() {
        let relay = spawn("127.0.0.1:0".parse().unwrap(), BaselineConfig::default())
            .await
            .unwrap();
        let mut a = join(relay.addr, "r1").await;
        assert_eq!(recv(&mut a).await, JOINED);
        let mut b = join(relay.addr, "r1").await;
        assert_eq!(recv(&mut b).await, JOINED);
        let mut c = join(relay.addr, "r2").await;
        assert_eq!(recv(&mut c).await, JOINED);

        a.send(WsMessage::Binary(Bytes::from_static(b"offer")))
            .await
            .unwrap();
        assert_eq!(recv(&mut b).await, &b"offer"[..]);
        b.send(WsMessage::Binary(Bytes::from_static(b"answer")))
            .await
            .unwrap();
        assert_eq!(recv(&mut a).await, &b"answer"[..]);
        // c is in another room and saw nothing: its next message is its own echo-free silence.
        c.send(WsMessage::Binary(Bytes::from_static(b"alone")))
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), c.next())
                .await
                .is_err()
        );
        assert_eq!(relay.stats.forwarded.load(Ordering::Relaxed), 2);
        relay.shutdown.cancel();
    }

    #[tokio::test]
    async fn tcp_relay_forwards_and_refuses_oversized_frames() {
        let config = BaselineConfig {
            transport: RelayTransport::Tcp,
            ..BaselineConfig::default()
        };
        let relay = spawn("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
        let mut members = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(relay.addr).await.unwrap();
            write_frame(&mut s, b"hello").await.unwrap();
            assert_eq!(read_frame(&mut s).await.unwrap().unwrap(), WELCOME);
            write_frame(&mut s, b"room").await.unwrap();
            assert_eq!(read_frame(&mut s).await.unwrap().unwrap(), JOINED);
            members.push(s);
        }
        write_frame(&mut members[0], b"ping").await.unwrap();
        assert_eq!(
            read_frame(&mut members[1]).await.unwrap().unwrap(),
            &b"ping"[..]
        );
        // A length beyond the limit is refused without allocating it.
        let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        let err = read_frame(&mut huge).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).await.unwrap().is_none());
        relay.shutdown.cancel();
    }

    #[tokio::test]
    async fn a_full_room_refuses_the_next_member() {
        let config = BaselineConfig {
            room_size: 1,
            queue: 4,
            transport: RelayTransport::WebSocket,
        };
        let relay = spawn("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
        let mut a = join(relay.addr, "r").await;
        assert_eq!(recv(&mut a).await, JOINED);
        let mut b = join(relay.addr, "r").await;
        assert_eq!(recv(&mut b).await, ROOM_FULL);
        // After a leaves, the room is free again.
        drop(a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = join(relay.addr, "r").await;
        assert_eq!(recv(&mut c).await, JOINED);
        relay.shutdown.cancel();
    }
}

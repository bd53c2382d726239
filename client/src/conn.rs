//! One open connection to a node, on either transport: whole frames out and in, the node's
//! close, and a clean close from our side. The driver speaks only to this, so Hello, resume,
//! Redirect and Migrate are the same whichever transport carries them.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::error::ClientError;
use super::transport::{TransportKind, WsStream};
#[cfg(feature = "webtransport")]
use super::webtransport::WtConnection;

/// How long to wait, after the node ended a WebTransport stream, for the session close that
/// carries its close code (the node closes once the client has read the stream's end).
#[cfg(feature = "webtransport")]
const CLOSE_CODE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The close code and reason of a clean client close.
const CLIENT_CLOSING: (u16, &str) = (1000, "client closing");

/// A connection to a node.
pub(crate) enum Conn {
    /// WebSocket over TCP (+ TLS).
    Ws(Box<WsStream>),
    /// One WebTransport session and its stream.
    #[cfg(feature = "webtransport")]
    Wt(Box<WtConnection>),
}

/// What the node sent next.
pub(crate) enum Received {
    /// One whole frame.
    Frame(Bytes),
    /// A transport-level message with no frame (a WebSocket ping or pong): the node is alive.
    Control,
    /// The node closed the connection, with its close code and reason when it gave one.
    Closed(Option<(u16, String)>),
    /// The connection failed.
    Failed(ClientError),
}

impl Conn {
    /// Which transport this is.
    pub(crate) fn kind(&self) -> TransportKind {
        match self {
            Conn::Ws(_) => TransportKind::WebSocket,
            #[cfg(feature = "webtransport")]
            Conn::Wt(_) => TransportKind::WebTransport,
        }
    }

    /// Sends one encoded frame.
    pub(crate) async fn send(&mut self, frame: Bytes, url: &str) -> Result<(), ClientError> {
        match self {
            Conn::Ws(ws) => ws
                .send(WsMessage::Binary(frame))
                .await
                .map_err(|e| ClientError::from_ws(url, e)),
            #[cfg(feature = "webtransport")]
            Conn::Wt(wt) => wt.send_raw(&frame).await,
        }
    }

    /// The next thing the node sent. Cancel-safe (the driver selects over it).
    pub(crate) async fn recv(&mut self, url: &str) -> Received {
        match self {
            Conn::Ws(ws) => match ws.next().await {
                None => Received::Closed(None),
                Some(Err(err)) => Received::Failed(ClientError::from_ws(url, err)),
                Some(Ok(WsMessage::Binary(bytes))) => Received::Frame(bytes),
                Some(Ok(WsMessage::Close(frame))) => Received::Closed(
                    frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                ),
                Some(Ok(_)) => Received::Control,
            },
            #[cfg(feature = "webtransport")]
            Conn::Wt(wt) => match wt.recv_frame().await {
                Ok(Some(frame)) => Received::Frame(frame),
                // The stream's end comes before the session close that names the code.
                Ok(None) => Received::Closed(wt_close_code(wt, CLOSE_CODE_WAIT).await),
                Err(err) => match wt_close_code(wt, std::time::Duration::ZERO).await {
                    Some(code) => Received::Closed(Some(code)),
                    None => Received::Failed(err),
                },
            },
        }
    }

    /// Closes cleanly (code 1000), so the node sees the client go at once.
    pub(crate) async fn close(&mut self) {
        let (code, reason) = CLIENT_CLOSING;
        match self {
            Conn::Ws(ws) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                let _ = ws.send(WsMessage::Close(Some(frame))).await;
            }
            #[cfg(feature = "webtransport")]
            Conn::Wt(wt) => {
                let _ = wt.finish().await;
                wt.close(u32::from(code), reason);
            }
        }
    }

    /// The error for a connection the node closed before the handshake was over.
    pub(crate) fn closed_in_handshake(&self, close: Option<(u16, String)>) -> ClientError {
        let why = match close {
            Some((code, reason)) => format!("closed during handshake: {code} {reason}"),
            None => "closed during handshake: no reason".to_owned(),
        };
        match self.kind() {
            TransportKind::WebSocket => ClientError::WebSocket(why),
            TransportKind::WebTransport => ClientError::WebTransport(why),
        }
    }
}

/// The node's close code of a WebTransport session, when it fits a WebSocket close code.
#[cfg(feature = "webtransport")]
async fn wt_close_code(wt: &WtConnection, wait: std::time::Duration) -> Option<(u16, String)> {
    let (code, reason) = wt.close_code(wait).await?;
    Some((u16::try_from(code).ok()?, reason))
}

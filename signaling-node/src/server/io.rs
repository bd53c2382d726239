//! A connection's byte stream as its task drives it: plain TCP, shared with the connection's
//! [`Peer`] so senders can write whole frames themselves, TLS, which only the task touches, or
//! (feature `webtransport`) a WebTransport session's one bidirectional stream. The stream
//! decides the [`Framing`]: WebSocket messages, or protocol frames back to back. Reads go
//! through a buffer on the stack of one poll, never one kept in the task: an idle connection
//! holds no read buffer (the decoder keeps only an incomplete frame).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::Tunables;
use crate::metrics::Metrics;
use crate::room::Peer;
use crate::room::peer::Kill;
#[cfg(feature = "webtransport")]
use crate::stream_frames::StreamDecoder;
use crate::ws::{Decoder, Incoming, WsError};
use switchboard_protocol::ProtocolVersion;

use super::handshake::MAX_MESSAGE;

/// Bytes read per poll (on the stack of that poll only).
const READ_CHUNK: usize = 4096;

/// The stream under a WebSocket connection.
pub(super) enum Io {
    /// Plain TCP (the [`Peer`] holds the same socket).
    Tcp(Arc<TcpStream>),
    /// TLS, owned by the connection task.
    Tls(Box<TlsStream<TcpStream>>),
    /// A WebTransport session's bidirectional stream, owned by the connection task.
    #[cfg(feature = "webtransport")]
    WebTransport(Box<super::webtransport::SessionStream>),
}

/// How a connection's bytes are cut into messages.
#[derive(Debug)]
pub(super) enum Framing {
    /// WebSocket frames, one protocol frame per binary message.
    Ws(Decoder),
    /// Protocol frames back to back, each delimited by its `length` (WebTransport).
    #[cfg(feature = "webtransport")]
    Stream(StreamDecoder),
}

impl Framing {
    /// Adds bytes just read.
    pub(super) fn extend(&mut self, bytes: &[u8]) {
        match self {
            Framing::Ws(d) => d.extend(bytes),
            #[cfg(feature = "webtransport")]
            Framing::Stream(d) => d.extend(bytes),
        }
    }

    /// The next complete message in the bytes so far, if any.
    pub(super) fn next_message(&mut self) -> Result<Option<Incoming>, WsError> {
        match self {
            Framing::Ws(d) => d.next_message(),
            #[cfg(feature = "webtransport")]
            Framing::Stream(d) => d.next_message(),
        }
    }
}

impl Io {
    /// The transport's metric label.
    pub(super) fn transport(&self) -> &'static str {
        match self {
            Io::Tcp(_) | Io::Tls(_) => "websocket",
            #[cfg(feature = "webtransport")]
            Io::WebTransport(_) => "webtransport",
        }
    }

    /// The connection's sending side: on TCP it writes to the socket itself.
    pub(super) fn peer(&self, version: ProtocolVersion, t: &Tunables, metrics: Metrics) -> Peer {
        match self {
            Io::Tcp(socket) => {
                Peer::with_socket(version, t.outbound_queue, metrics, Arc::clone(socket))
            }
            Io::Tls(_) => Peer::new(version, t.outbound_queue, metrics),
            #[cfg(feature = "webtransport")]
            Io::WebTransport(_) => Peer::on_stream(version, t.outbound_queue, metrics),
        }
    }

    /// How this stream's bytes are cut into messages (both bounded by [`MAX_MESSAGE`]).
    pub(super) fn framing(&self) -> Framing {
        match self {
            Io::Tcp(_) | Io::Tls(_) => Framing::Ws(Decoder::new(MAX_MESSAGE)),
            #[cfg(feature = "webtransport")]
            Io::WebTransport(_) => Framing::Stream(StreamDecoder::new(MAX_MESSAGE)),
        }
    }

    /// Whether closing takes a WebSocket close frame (WebTransport closes the session instead).
    pub(super) fn is_websocket(&self) -> bool {
        match self {
            Io::Tcp(_) | Io::Tls(_) => true,
            #[cfg(feature = "webtransport")]
            Io::WebTransport(_) => false,
        }
    }

    /// Ends the connection below the stream with `kill`'s code and reason: a WebTransport
    /// session is closed with them (a WebSocket carried them in its close frame already).
    #[cfg_attr(not(feature = "webtransport"), expect(unused_variables))]
    pub(super) fn close_session(&self, kill: Kill) {
        #[cfg(feature = "webtransport")]
        if let Io::WebTransport(stream) = self {
            stream.close(kill);
        }
    }

    /// Waits, after the half-close, for the client to end the connection: reads and drops
    /// until its end of the stream (WebSocket), or until the client acknowledged everything
    /// sent (WebTransport).
    pub(super) async fn wait_closed(&mut self) -> io::Result<()> {
        #[cfg(feature = "webtransport")]
        if let Io::WebTransport(stream) = self {
            stream.sent().await;
            return Ok(());
        }
        while std::future::poll_fn(|cx| self.poll_discard(cx)).await? > 0 {}
        Ok(())
    }

    /// Reads what is available into `framing`; `Ok(0)` at the end of the stream.
    pub(super) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        decoder: &mut Framing,
    ) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = ready!(self.poll_read_chunk(cx, &mut chunk))?;
        decoder.extend(&chunk[..n]);
        Poll::Ready(Ok(n))
    }

    /// Reads and drops what is available (a closing connection waiting for the client's
    /// close); `Ok(0)` at the end of the stream.
    pub(super) fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; READ_CHUNK];
        self.poll_read_chunk(cx, &mut chunk)
    }

    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            Io::Tcp(socket) => loop {
                ready!(socket.poll_read_ready(cx))?;
                match socket.try_read(chunk) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Io::Tls(tls) => {
                let mut buf = ReadBuf::new(chunk);
                ready!(Pin::new(&mut **tls).poll_read(cx, &mut buf))?;
                Poll::Ready(Ok(buf.filled().len()))
            }
            #[cfg(feature = "webtransport")]
            Io::WebTransport(stream) => {
                let mut buf = ReadBuf::new(chunk);
                ready!(Pin::new(&mut stream.recv).poll_read(cx, &mut buf))?;
                Poll::Ready(Ok(buf.filled().len()))
            }
        }
    }

    /// Writes some of `buf`.
    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self {
            Io::Tcp(socket) => loop {
                ready!(socket.poll_write_ready(cx))?;
                match socket.try_write(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    result => return Poll::Ready(result),
                }
            },
            Io::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
            #[cfg(feature = "webtransport")]
            Io::WebTransport(stream) => Pin::new(&mut stream.send).poll_write(cx, buf),
        }
    }

    /// Pushes out what the TLS layer buffered (nothing to do on TCP).
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Tcp(_) => Poll::Ready(Ok(())),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
            #[cfg(feature = "webtransport")]
            Io::WebTransport(stream) => Pin::new(&mut stream.send).poll_flush(cx),
        }
    }

    /// Ends the sending direction (TLS: close_notify, then FIN; WebTransport: the stream's FIN).
    pub(super) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Tcp(socket) => Poll::Ready(socket_shutdown(socket)),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
            #[cfg(feature = "webtransport")]
            Io::WebTransport(stream) => Pin::new(&mut stream.send).poll_shutdown(cx),
        }
    }
}

/// The upgrade reads and writes the stream as any byte stream; the connection task uses the
/// methods above instead, so it keeps no read buffer.
impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this {
            Io::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
            _ => {
                let n = ready!(this.poll_read_chunk(cx, buf.initialize_unfilled()))?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Io::poll_write(self.get_mut(), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Io::poll_flush(self.get_mut(), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Io::poll_shutdown(self.get_mut(), cx)
    }
}

/// Half-closes a shared TCP socket (`shutdown(SHUT_WR)`): the FIN follows what was written.
fn socket_shutdown(socket: &TcpStream) -> io::Result<()> {
    socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write)
}

//! A connection's byte stream as its task drives it: plain TCP, shared with the connection's
//! [`Peer`] so senders can write whole frames themselves, or TLS, which only the task touches.
//! Reads go through a buffer on the stack of one poll, never one kept in the task: an idle
//! connection holds no read buffer (the decoder keeps only an incomplete frame).

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
use crate::ws::Decoder;
use switchboard_protocol::ProtocolVersion;

/// Bytes read per poll (on the stack of that poll only).
const READ_CHUNK: usize = 4096;

/// The stream under a WebSocket connection.
pub(super) enum Io {
    /// Plain TCP (the [`Peer`] holds the same socket).
    Tcp(Arc<TcpStream>),
    /// TLS, owned by the connection task.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// The connection's sending side: on TCP it writes to the socket itself.
    pub(super) fn peer(&self, version: ProtocolVersion, t: &Tunables, metrics: Metrics) -> Peer {
        match self {
            Io::Tcp(socket) => {
                Peer::with_socket(version, t.outbound_queue, metrics, Arc::clone(socket))
            }
            Io::Tls(_) => Peer::new(version, t.outbound_queue, metrics),
        }
    }

    /// Reads what is available into `decoder`; `Ok(0)` at the end of the stream.
    pub(super) fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        decoder: &mut Decoder,
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
        }
    }

    /// Pushes out what the TLS layer buffered (nothing to do on TCP).
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Tcp(_) => Poll::Ready(Ok(())),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    /// Ends the sending direction (TLS: close_notify, then FIN).
    pub(super) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Io::Tcp(socket) => Poll::Ready(socket_shutdown(socket)),
            Io::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
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
            Io::Tcp(_) => {
                let n = ready!(this.poll_read_chunk(cx, buf.initialize_unfilled()))?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Io::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
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

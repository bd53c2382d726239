"""A minimal RFC 6455 WebSocket client on stdlib sockets: handshake, masked frames, close codes.

Hand-written rather than a library so the tests can send what a well-behaved library refuses
to (text messages, oversized messages) and see the raw handshake answer (status, headers, body).
"""

import base64
import hashlib
import os
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass, field

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Far above the protocol's 65536-byte frame limit: the tests want to see what the server does
# with big messages, so the client itself never refuses what a server sends.
MAX_MESSAGE = 16 * 1024 * 1024


class WsError(Exception):
    """The peer broke the WebSocket protocol or the socket failed."""


@dataclass
class HandshakeRefused(Exception):
    """The server answered the upgrade request with something other than 101."""

    status: int
    reason: str
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    def __str__(self):
        return f"HTTP {self.status} {self.reason}: {self.body[:200]!r}"


@dataclass
class Closed(Exception):
    """The connection is closed: `code` is the peer's close code (None for a bare EOF)."""

    code: int | None
    reason: str = ""

    def __str__(self):
        return f"closed (code {self.code}, reason {self.reason!r})"


def parse_url(url):
    """Splits ws://host:port/path into (host, port, path)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"only ws:// URLs are supported, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


class WebSocket:
    """One client WebSocket. `recv` is for one reader thread; `send` may be called from any."""

    def __init__(self, sock, subprotocol, headers):
        self.sock = sock
        self.subprotocol = subprotocol
        self.headers = headers
        self._send_lock = threading.Lock()
        self._buf = b""
        self.close_sent = False

    @classmethod
    def connect(cls, url, subprotocols=(), headers=None, timeout=5.0):
        """Opens a TCP connection and performs the opening handshake; raises HandshakeRefused."""
        host, port, path = parse_url(url)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: {host}:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            ]
            if subprotocols:
                lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
            for name, value in (headers or {}).items():
                lines.append(f"{name}: {value}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            status, reason, resp_headers, rest = _read_http_head(sock)
            if status != 101:
                body = _read_http_body(sock, resp_headers, rest)
                raise HandshakeRefused(status, reason, resp_headers, body)
            expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            if resp_headers.get("sec-websocket-accept") != expected:
                raise WsError("bad Sec-WebSocket-Accept in the 101 answer")
            ws = cls(sock, resp_headers.get("sec-websocket-protocol"), resp_headers)
            ws._buf = rest
            sock.settimeout(None)
            return ws
        except BaseException:
            sock.close()
            raise

    def send(self, opcode, payload, fin=True):
        """Sends one masked frame (clients must mask, RFC 6455 section 5.3)."""
        header = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = _mask(payload, mask)
        with self._send_lock:
            if self.close_sent:
                raise Closed(None, "close already sent")
            if opcode == OP_CLOSE:
                self.close_sent = True
            try:
                self.sock.sendall(header + mask + masked)
            except OSError as e:
                raise Closed(None, f"send failed: {e}") from e

    def send_binary(self, data):
        """Sends one binary message."""
        self.send(OP_BINARY, data)

    def send_text(self, text):
        """Sends one text message."""
        self.send(OP_TEXT, text.encode())

    def close(self, code=1000, reason=""):
        """Sends a close frame (if none was sent yet) and closes the socket."""
        try:
            self.send(OP_CLOSE, struct.pack(">H", code) + reason.encode())
        except Closed:
            pass
        self.abort()

    def abort(self):
        """Closes the socket without a close handshake (what a crashed client does)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def recv(self):
        """Returns the next data message as (opcode, payload); answers pings; raises Closed."""
        message, message_op = b"", None
        while True:
            fin, opcode, payload = self._read_frame()
            if opcode == OP_PING:
                try:
                    self.send(OP_PONG, payload)
                except Closed:
                    pass
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                reason = payload[2:].decode(errors="replace")
                try:
                    self.send(OP_CLOSE, payload[:2])
                except Closed:
                    pass
                self.abort()
                raise Closed(code, reason)
            if opcode in (OP_TEXT, OP_BINARY):
                message_op, message = opcode, payload
            elif opcode == OP_CONT and message_op is not None:
                message += payload
            else:
                raise WsError(f"unexpected opcode {opcode}")
            if len(message) > MAX_MESSAGE:
                raise WsError("message too large")
            if fin:
                return message_op, message

    def _read_frame(self):
        head = self._read_exact(2)
        fin = bool(head[0] & 0x80)
        opcode = head[0] & 0x0F
        masked = bool(head[1] & 0x80)
        n = head[1] & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read_exact(8))[0]
        if n > MAX_MESSAGE:
            raise WsError(f"frame of {n} bytes")
        mask = self._read_exact(4) if masked else None
        payload = self._read_exact(n)
        if mask:
            payload = _mask(payload, mask)
        return fin, opcode, payload

    def _read_exact(self, n):
        while len(self._buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except OSError as e:
                raise Closed(None, f"recv failed: {e}") from e
            if not chunk:
                raise Closed(None, "EOF")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _mask(data, mask):
    # XOR with the repeated 4-byte key, done on integers for speed.
    if not data:
        return b""
    key = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(len(data), "big")


def _read_http_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise WsError(f"connection closed during the handshake after {buf[:200]!r}")
        buf += chunk
        if len(buf) > 65536:
            raise WsError("handshake answer head too large")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    version_status = lines[0].split(" ", 2)
    status = int(version_status[1])
    reason = version_status[2] if len(version_status) > 2 else ""
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, reason, headers, rest


def _read_http_body(sock, headers, rest):
    length = headers.get("content-length")
    body = rest
    try:
        if length is not None:
            while len(body) < int(length):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
        else:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                body += chunk
    except OSError:
        pass
    return body

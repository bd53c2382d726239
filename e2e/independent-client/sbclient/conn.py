"""One WebSocket to one node speaking frames: a reader thread, Ping answered with Pong."""

import queue
import threading
import time

from . import wire, ws

SUBPROTOCOLS = ("switchboard.v2", "switchboard.v1")


class Timeout(Exception):
    """Nothing matching arrived in time."""


class Text:
    """A text message the server sent (the protocol has none; kept to report it)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return f"Text({self.text!r})"


def version_of(socket):
    """The negotiated version: the selected subprotocol switchboard.vN, else X-Proto-Version."""
    if socket.subprotocol and socket.subprotocol.startswith("switchboard.v"):
        return int(socket.subprotocol.removeprefix("switchboard.v"))
    header = socket.headers.get("x-proto-version")
    return int(header) if header and header.isdigit() else None


class Connection:
    """A framed connection. Items (Frame, Text, wire.FrameError, finally ws.Closed) go to
    `sink(conn, item)`, or to an internal queue read by `recv`/`wait_for` when no sink is given.
    """

    def __init__(self, socket, url, sink=None, auto_pong=True):
        self.ws = socket
        self.url = url
        self.version = version_of(socket)
        self.auto_pong = auto_pong
        self.last_rx = time.monotonic()
        self.closed = None
        self._queue = queue.Queue()
        self._backlog = []
        self._sink = sink or (lambda _conn, item: self._queue.put(item))
        self._reader = threading.Thread(target=self._read, name=f"reader {url}", daemon=True)
        self._reader.start()

    @classmethod
    def open(cls, url, subprotocols=SUBPROTOCOLS, headers=None, sink=None, auto_pong=True, timeout=5.0):
        """Connects and upgrades; raises ws.HandshakeRefused or OSError."""
        socket = ws.WebSocket.connect(url, subprotocols, headers, timeout)
        return cls(socket, url, sink, auto_pong)

    def _read(self):
        while True:
            try:
                opcode, message = self.ws.recv()
            except ws.Closed as closed:
                self.closed = closed
                self._sink(self, closed)
                return
            except (ws.WsError, OSError) as e:
                self.closed = ws.Closed(None, str(e))
                self.ws.abort()
                self._sink(self, self.closed)
                return
            self.last_rx = time.monotonic()
            if opcode == ws.OP_TEXT:
                self._sink(self, Text(message.decode(errors="replace")))
                continue
            try:
                frame = wire.decode(message)
            except wire.FrameError as e:
                self._sink(self, e)
                continue
            if frame.name == "Ping" and self.auto_pong:
                try:
                    self.send("Pong", nonce=frame.nonce)
                except ws.Closed:
                    pass
            self._sink(self, frame)

    def send(self, name, **fields):
        """Sends one frame of table `name`."""
        self.ws.send_binary(wire.encode(name, **fields))

    def send_bytes(self, data):
        """Sends raw bytes as one binary message (for bad-input tests)."""
        self.ws.send_binary(data)

    def close(self, code=1000):
        """Closes cleanly (close frame, then the socket)."""
        self.ws.close(code)

    def abort(self):
        """Drops the TCP connection without a close frame, as a crashed client would."""
        self.ws.abort()

    def recv(self, timeout=5.0):
        """The next item (only without a sink); raises Timeout."""
        if self._backlog:
            return self._backlog.pop(0)
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            raise Timeout(f"nothing from {self.url} within {timeout} s") from None

    def wait_for(self, pred, timeout=5.0, what="a matching frame"):
        """The first item satisfying `pred`; keeps the others for later calls. Raises ws.Closed
        when the connection closes first (unless `pred` accepts the Closed)."""
        for i, item in enumerate(self._backlog):
            if pred(item):
                return self._backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no {what} from {self.url} within {timeout} s; got {self._backlog}")
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if pred(item):
                return item
            if isinstance(item, ws.Closed):
                self._backlog.append(item)
                raise item
            self._backlog.append(item)

    def expect(self, name, timeout=5.0, **match):
        """The first frame of table `name` whose fields equal `match`."""

        def pred(item):
            return (
                isinstance(item, wire.Frame)
                and item.name == name
                and all(item.fields.get(k) == v for k, v in match.items())
            )

        return self.wait_for(pred, timeout, what=f"{name} {match or ''}")

    def expect_closed(self, timeout=5.0):
        """Waits for the close and returns it (ws.Closed with the close code)."""
        return self.wait_for(lambda item: isinstance(item, ws.Closed), timeout, what="close")

    def pending(self):
        """Everything received and not yet consumed (drains the queue into the backlog)."""
        while True:
            try:
                self._backlog.append(self._queue.get_nowait())
            except queue.Empty:
                return list(self._backlog)

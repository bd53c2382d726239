"""A signaling client as docs/protocol.md describes one: Hello, rooms, calls, heartbeats,
Redirect and Migrate followed, reconnect with backoff and resume from the last event seq.

One supervisor thread owns the session; it reads one queue that carries both what the current
connection received and the commands of the caller's thread, so no state is shared unlocked.
The caller sees application frames (relays, events, Joined, errors) through `wait_for`.
"""

import itertools
import queue
import threading
import time

from . import wire, ws
from .conn import Connection, Timeout

# Frames the supervisor consumes itself; everything else goes to the application inbox.
CONTROL = {"Welcome", "Ping", "Pong", "Redirect", "Migrate"}


class Fatal(Exception):
    """The client cannot go on: its token was refused or no node would take it in time."""


class _Redirected(Exception):
    """The Hello was answered with a Redirect; the target is set to its URL."""


class Client:
    """One user's signaling session across reconnects.

    `urls` are the nodes to try when connecting fresh or after the current node failed; a
    Redirect or Migrate URL is tried first when the server names one.
    """

    def __init__(self, urls, token, name=None, versions=(2, 1), subprotocols=None, ping=True,
                 connect_timeout=30.0, log=None):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.token = token
        self.name = name or "client"
        self.versions = list(versions)
        self.subprotocols = subprotocols or tuple(f"switchboard.v{v}" for v in self.versions)
        self.ping = ping
        self.connect_timeout = connect_timeout
        self._log = log
        self.session = None
        self.welcome = None
        self.version = None
        self.heartbeat_ms = None
        self.conn = None
        self.connected = threading.Event()
        self.fatal = None
        # room -> last event seq seen; wanted rooms are re-joined after a fresh (not resumed) Hello.
        self.last_seq = {}
        self.wanted = set()
        # Every event seq per room in arrival order; each gap (a seq skipped) and each repeat
        # (a seq already seen, dropped) found there.
        self.seqs = {}
        self.gaps = []
        self.repeats = []
        self.welcomes, self.redirects, self.migrates, self.drops = [], [], [], []
        self._target = None
        self._ids = itertools.count(1)
        self._q = queue.Queue()
        self._inbox = queue.Queue()
        self._backlog = []
        self._outbox = []
        self._stop = False
        self._next_ping = None
        self._nonce = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name=f"client {self.name}", daemon=True)

    # --- caller's side -------------------------------------------------------------------

    def start(self, timeout=None):
        """Connects (Hello, Welcome) and returns once the session is up."""
        self._thread.start()
        self.wait_connected(timeout or self.connect_timeout)
        return self

    def wait_connected(self, timeout=30.0):
        """Waits until a connection has its Welcome; raises Fatal or Timeout."""
        deadline = time.monotonic() + timeout
        while not self.connected.wait(0.05):
            if self.fatal:
                raise Fatal(self.fatal)
            if time.monotonic() > deadline:
                raise Timeout(f"{self.name}: not connected within {timeout} s")

    def request_id(self):
        """A fresh request id."""
        return next(self._ids)

    def send(self, name, **fields):
        """Sends a frame now, or right after the next Welcome when disconnected."""
        self._q.put(("cmd", None, ("send", name, fields)))

    def join(self, room, timeout=10.0):
        """Joins `room` (following a Redirect if the node is not the owner); returns Joined."""
        rid = self.request_id()
        self._q.put(("cmd", None, ("join", room, rid)))
        return self.wait_for(
            lambda f: f.name in ("Joined", "Error") and f.fields.get("request_id") == rid
            or f.name == "Joined" and f.room == room,
            timeout, f"Joined {room}",
        )

    def leave(self, room):
        """Leaves `room`."""
        rid = self.request_id()
        self._q.put(("cmd", None, ("leave", room, rid)))
        return rid

    def wait_for(self, pred, timeout=10.0, what="a matching frame"):
        """The first application frame satisfying `pred`; others stay for later calls."""
        for i, item in enumerate(self._backlog):
            if pred(item):
                return self._backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self.fatal:
                raise Fatal(self.fatal)
            if left <= 0:
                raise Timeout(f"{self.name}: no {what} within {timeout} s; unconsumed {self._backlog}")
            try:
                item = self._inbox.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            if pred(item):
                return item
            self._backlog.append(item)

    def expect(self, name, timeout=10.0, **match):
        """The first application frame of table `name` whose fields equal `match`."""
        return self.wait_for(
            lambda f: f.name == name and all(f.fields.get(k) == v for k, v in match.items()),
            timeout, f"{name} {match or ''}",
        )

    def expect_state(self, call_id, state, timeout=10.0, after_seq=0):
        """The CallState event taking `call_id` to `state` (with a seq above `after_seq`)."""
        return self.wait_for(
            lambda f: f.name == "Event" and f.kind == wire.CALL_STATE and f.call_id == call_id
            and f.state == state and f.seq > after_seq,
            timeout, f"CallState {state} of {call_id}",
        )

    def drain(self):
        """Every application frame received and not yet consumed."""
        while True:
            try:
                self._backlog.append(self._inbox.get_nowait())
            except queue.Empty:
                return list(self._backlog)

    def crash(self):
        """Drops the current TCP connection without a close frame; the client then resumes."""
        self._q.put(("cmd", None, ("crash",)))

    def close(self):
        """Stops the client and closes its connection cleanly."""
        self._stop = True
        self._q.put(("cmd", None, ("stop",)))
        if self._thread.is_alive():
            self._thread.join(5)

    def log(self, msg):
        """Writes one line of the client's story to the log callback, if any."""
        if self._log:
            self._log(f"{self.name}: {msg}")

    # --- supervisor ----------------------------------------------------------------------

    def _run(self):
        backoff, redirects = 0.1, 0
        while not self._stop:
            if self.conn is None:
                try:
                    self._connect()
                    backoff, redirects = 0.1, 0
                except _Redirected:
                    # Several redirects in a row mean the nodes disagree for now (an
                    # assignment view catching up): slow down instead of spinning.
                    redirects += 1
                    if redirects > 3:
                        self._sleep(backoff)
                        backoff = min(backoff * 2, 2.0)
                    continue
                except Fatal as e:
                    self.fatal = str(e)
                    self.log(f"fatal: {e}")
                    return
                except (OSError, ws.HandshakeRefused, ws.WsError, ws.Closed, Timeout) as e:
                    self.log(f"connect failed ({e}); retry in {backoff:.1f} s")
                    self._sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    if self._stop:
                        return
                    # A named target that failed is given up for the seed nodes, in turn.
                    if self._target is None:
                        self._rotate()
                    self._target = None
                    continue
            self._pump_once()
        if self.conn:
            self.conn.close()

    def _sleep(self, seconds):
        # Commands arriving while waiting are kept in order for after the reconnect.
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, conn, item = self._q.get(timeout=left)
            except queue.Empty:
                return
            if kind == "cmd":
                self._command(item)

    def _rotate(self):
        # After a failure try the next seed node, so a dead node is not retried forever.
        self.urls.append(self.urls.pop(0))

    def _connect(self):
        url = self._target or self.urls[0]
        resume = None
        if self.session and self.last_seq:
            # One last_seq covers every room of the session (events above it are replayed in
            # each room), so send the smallest and drop the repeats it brings.
            resume = {"session": self.session, "last_seq": min(self.last_seq.values())}
        self.log(f"connecting to {url} resume={resume}")
        conn = Connection.open(url, self.subprotocols, sink=self._sink)
        hello = {"token": self.token, "versions": self.versions}
        if resume:
            hello["resume"] = resume
        conn.send("Hello", **hello)
        deadline = time.monotonic() + 10
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                conn.abort()
                raise Timeout("no Welcome within 10 s")
            try:
                kind, src, item = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if kind == "cmd":
                self._command(item)
                continue
            if src is not conn:
                continue
            if isinstance(item, ws.Closed):
                self._target = None
                raise item
            if not isinstance(item, wire.Frame):
                self.log(f"ignored during Hello: {item!r}")
                continue
            if item.name == "Welcome":
                break
            if item.name == "Redirect":
                # A resume is redirected to the room's owner (docs/protocol.md "Resume").
                self.redirects.append(item)
                self.log(f"Hello redirected to {item.url}")
                self._target = item.url
                conn.close()
                raise _Redirected()
            if item.name == "Error":
                conn.close()
                if item.code == 1003:
                    raise Fatal(f"auth failed: {item.message}")
                self._target = None
                raise Timeout(f"Hello refused: {item.code} {item.message}")
            self._deliver(item)
        self.conn = conn
        self._target = url
        self.welcome = item
        self.welcomes.append(item)
        self.version = item.version
        self.heartbeat_ms = item.heartbeat_ms
        self._schedule_ping()
        self.log(f"welcome {item}")
        if not item.resumed:
            # A new session: the old seats are gone, so join again what the caller wants.
            self.session = item.session
            self.last_seq.clear()
            for room in sorted(self.wanted):
                self._send("Join", request_id=self.request_id(), room=room)
        outbox, self._outbox = self._outbox, []
        for name, fields in outbox:
            self._send(name, **fields)
        self.connected.set()

    def _sink(self, conn, item):
        self._q.put(("rx", conn, item))

    def _schedule_ping(self):
        if self.ping and self.heartbeat_ms:
            self._next_ping = time.monotonic() + self.heartbeat_ms / 1000

    def _pump_once(self):
        timeout = 0.5
        if self._next_ping is not None:
            timeout = max(0.0, min(timeout, self._next_ping - time.monotonic()))
        try:
            kind, src, item = self._q.get(timeout=timeout)
        except queue.Empty:
            self._heartbeat()
            return
        if kind == "cmd":
            self._command(item)
        elif src is self.conn:
            if isinstance(item, ws.Closed):
                self._dropped(item)
            elif isinstance(item, wire.Frame):
                self._frame(item)
            else:
                self.log(f"bad item from the server: {item!r}")
                self._inbox.put(item)
        self._heartbeat()

    def _heartbeat(self):
        # Our own Ping each heartbeat; a node silent for three heartbeats is treated as dead
        # (a stopped process keeps its TCP connection open and never answers).
        if self.conn is None or self._next_ping is None:
            return
        now = time.monotonic()
        if now - self.conn.last_rx > 3 * self.heartbeat_ms / 1000:
            self.log("node silent for three heartbeats: reconnecting")
            self.conn.abort()
            self._dropped(ws.Closed(None, "heartbeat timeout"))
            return
        if now >= self._next_ping:
            self._send("Ping", nonce=next(self._nonce))
            self._schedule_ping()

    def _dropped(self, closed):
        self.log(f"connection dropped: {closed}")
        self.drops.append(closed)
        self.conn = None
        self.connected.clear()
        self._next_ping = None
        self._target = None

    def _command(self, cmd):
        op = cmd[0]
        if op == "send":
            _, name, fields = cmd
            if self.conn is None:
                self._outbox.append((name, fields))
            else:
                self._send(name, **fields)
        elif op == "join":
            _, room, rid = cmd
            self.wanted.add(room)
            if self.conn is not None:
                self._send("Join", request_id=rid, room=room)
        elif op == "leave":
            _, room, rid = cmd
            self.wanted.discard(room)
            self.last_seq.pop(room, None)
            if self.conn is not None:
                self._send("Leave", request_id=rid, room=room)
        elif op == "crash":
            if self.conn is not None:
                self.conn.abort()
        elif op == "stop":
            self._stop = True

    def _send(self, name, **fields):
        try:
            self.conn.send(name, **fields)
        except ws.Closed:
            self._outbox.append((name, fields))

    def _frame(self, frame):
        name = frame.name
        if name == "Redirect":
            # The room's shard is owned by another node: reconnect there and join again.
            self.redirects.append(frame)
            self.log(f"redirect {frame}")
            self._target = frame.url
            self.wanted.add(frame.room)
            self.session = None
            self.last_seq.clear()
            self._reconnect()
            return
        if name == "Migrate":
            # The room moves: reconnect to url and resume with the token (docs/protocol.md).
            self.migrates.append(frame)
            self.log(f"migrate {frame}")
            # A node with no successor (standalone) names no URL: any node will do.
            self._target = frame.url or None
            self.session = frame.resume_token
            self._reconnect()
            return
        if name in ("Ping", "Pong", "Welcome"):
            return
        if name == "Joined":
            self.last_seq[frame.room] = frame.last_seq
            self.seqs.setdefault(frame.room, []).append(("joined", frame.last_seq))
        elif name == "Event" and not self._event(frame):
            return
        self._inbox.put(frame)

    def _event(self, ev):
        """Tracks the room's seq; False for a repeat, which the application never sees."""
        last = self.last_seq.get(ev.room)
        self.seqs.setdefault(ev.room, []).append(ev.seq)
        if last is not None and ev.seq <= last:
            self.repeats.append((ev.room, last, ev.seq))
            return False
        if last is not None and ev.seq != last + 1:
            self.gaps.append((ev.room, last, ev.seq))
            self.log(f"seq gap in {ev.room}: {last} -> {ev.seq}")
        self.last_seq[ev.room] = ev.seq
        return True

    def _reconnect(self):
        conn, self.conn = self.conn, None
        self.connected.clear()
        self._next_ping = None
        conn.close()

    def _deliver(self, frame):
        if frame.name not in CONTROL:
            self._inbox.put(frame)

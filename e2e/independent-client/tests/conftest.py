"""Fixtures: standalone `signaling-node serve` processes on free loopback ports, tokens."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbclient import token  # noqa: E402
from sbclient.client import Client  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SECRET = b"independent-client-test-secret-0123456789"


def node_binary():
    """The cargo-built signaling-node: SBCLIENT_NODE_BIN, else the release build."""
    explicit = os.environ.get("SBCLIENT_NODE_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "signaling-node"


class Node:
    """One standalone node process; `url` is its WebSocket URL."""

    def __init__(self, binary, secret_file, log_path, args):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        cmd = [
            str(binary), "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--jwt-secret-file", str(secret_file), "--node-name", "indie", *args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = self._wait_serving()

    def _wait_serving(self):
        # The node logs the address it bound; port 0 means the kernel picked a free one.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            m = re.search(r"serving addr=(\S+)", text)
            if m:
                return f"ws://{m.group(1)}/ws"
            if self.proc.poll() is not None:
                raise RuntimeError(f"signaling-node exited {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"signaling-node did not start within 20 s:\n{text}")

    def terminate(self):
        """SIGTERM: the node drains."""
        self.proc.terminate()

    def stop(self):
        """Stops the process (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def secret_file(tmp_path_factory):
    """The HS256 key file the standalone nodes verify tokens with."""
    path = tmp_path_factory.mktemp("key") / "jwt.key"
    path.write_bytes(SECRET)
    return path


@pytest.fixture(scope="session")
def binary():
    """The signaling-node binary under test."""
    path = node_binary()
    if not path.exists():
        pytest.fail(f"{path} not built: cargo build --release --bin signaling-node")
    return path


@pytest.fixture
def start_node(binary, secret_file, tmp_path):
    """Starts standalone nodes with extra `serve` flags; all stopped after the test."""
    nodes = []

    def start(*args):
        node = Node(binary, secret_file, tmp_path / f"node-{len(nodes)}.log", args)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture(scope="module")
def node(binary, secret_file, tmp_path_factory):
    """One standalone node with short timers, shared by a module's tests."""
    n = Node(binary, secret_file, tmp_path_factory.mktemp("node") / "node.log",
             ["--heartbeat-interval", "1s"])
    yield n
    n.stop()


def mint(user, rooms=("studio",), ttl=3600, **extra):
    """A join token as `signaling-node token` mints it (claims sub, rooms, exp, iat)."""
    now = int(time.time())
    claims = {"sub": user, "rooms": rooms if rooms == "*" else list(rooms), "exp": now + ttl, "iat": now}
    claims.update(extra)
    return token.mint(SECRET, claims)


@pytest.fixture
def clients():
    """Makes Clients that are closed after the test."""
    made = []

    def make(urls, user, rooms=("studio",), **kw):
        c = Client(urls, mint(user, rooms), name=user, log=print, **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.close()

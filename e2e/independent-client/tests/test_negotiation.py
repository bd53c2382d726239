"""docs/protocol.md "Transport and negotiation" and the Hello, against a standalone node."""

import subprocess
import time
import urllib.parse

import pytest
from conftest import SECRET, mint

from sbclient import token, ws
from sbclient.conn import Connection


def refused(url, **kw):
    with pytest.raises(ws.HandshakeRefused) as info:
        Connection.open(url, **kw)
    return info.value


def test_highest_common_subprotocol_wins(node):
    c = Connection.open(node.url, subprotocols=("switchboard.v1", "switchboard.v2"))
    assert c.ws.subprotocol == "switchboard.v2"
    # The 101 answer also names the version in X-Proto-Version (undocumented before).
    assert c.ws.headers["x-proto-version"] == "2"
    c.send("Hello", token=mint("alice"), versions=[2, 1])
    assert c.expect("Welcome").version == 2
    c.close()


def test_v1_only_offer_gets_v1(node):
    c = Connection.open(node.url, subprotocols=("switchboard.v1",))
    assert (c.ws.subprotocol, c.version) == ("switchboard.v1", 1)
    c.send("Hello", token=mint("alice"), versions=[1])
    assert c.expect("Welcome").version == 1
    c.close()


@pytest.mark.parametrize("value,version", [("1", 1), ("2", 2)])
def test_x_proto_version_header(node, value, version):
    c = Connection.open(node.url, subprotocols=(), headers={"X-Proto-Version": value})
    assert c.ws.subprotocol is None
    assert c.version == version
    c.send("Hello", token=mint("alice"), versions=[version])
    assert c.expect("Welcome").version == version
    c.close()


@pytest.mark.parametrize(
    "offer",
    [
        {"subprotocols": ("switchboard.v3",)},
        {"subprotocols": ()},
        {"subprotocols": (), "headers": {"X-Proto-Version": "3"}},
    ],
    ids=["v3", "nothing", "x-proto-version-3"],
)
def test_no_common_version_is_426(node, offer):
    e = refused(node.url, **offer)
    assert e.status == 426
    assert e.headers["x-supported-protocols"] == "switchboard.v2, switchboard.v1"
    assert b"switchboard.v2, switchboard.v1" in e.body


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    "where,value",
    [
        ("header", TRACEPARENT),
        ("query", TRACEPARENT),
        ("header", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("header", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ("header", TRACEPARENT.upper()),
        ("query", "junk"),
        ("header", "00-" + "a" * 300),
    ],
    ids=["header", "query", "version-ff", "zero-trace-id", "uppercase", "junk", "too-long"],
)
def test_traceparent_valid_or_not_never_refuses(node, where, value):
    # "Trace context": a traceparent names the connection's trace; an invalid one is ignored
    # and the connection is served as if there were none.
    if where == "header":
        c = Connection.open(node.url, headers={"traceparent": value})
    else:
        sep = "&" if "?" in node.url else "?"
        c = Connection.open(f"{node.url}{sep}traceparent={urllib.parse.quote(value)}")
    c.send("Hello", token=mint("alice"), versions=[2, 1])
    assert c.expect("Welcome").version == 2
    c.close()


def test_other_paths_are_404(node):
    parts = urllib.parse.urlsplit(node.url)
    for path in ("/", "/wss", "/ws/x"):
        e = refused(f"ws://{parts.netloc}{path}")
        assert e.status == 404, path


def test_v1_node_only_negotiates_v1(start_node):
    v1 = start_node("--protocols", "v1")
    c = Connection.open(v1.url)  # offers switchboard.v2, switchboard.v1
    assert c.version == 1
    c.send("Hello", token=mint("alice"), versions=[2, 1])
    assert c.expect("Welcome").version == 1
    c.close()
    for offer in ({"subprotocols": ("switchboard.v2",)}, {"subprotocols": (), "headers": {"X-Proto-Version": "2"}}):
        e = refused(v1.url, **offer)
        assert e.status == 426
        assert e.headers["x-supported-protocols"] == "switchboard.v1"


@pytest.mark.parametrize("subprotocol,versions", [("switchboard.v2", [1]), ("switchboard.v1", [2]), ("switchboard.v2", [3])])
def test_hello_versions_must_include_the_negotiated_one(node, subprotocol, versions):
    c = Connection.open(node.url, subprotocols=(subprotocol,))
    c.send("Hello", token=mint("alice"), versions=versions)
    assert c.expect("Error").code == 1009
    assert c.expect_closed().code == 1002


def test_hello_with_no_versions_takes_the_handshakes(node):
    c = Connection.open(node.url)
    c.send("Hello", token=mint("alice"), versions=[])
    assert c.expect("Welcome").version == 2
    c.close()


def test_token_minted_by_signaling_node(node, binary, secret_file):
    t = token.node_token(binary, secret_file, "alice", "studio")
    assert token.header_of(t) == {"alg": "HS256", "typ": "JWT"}
    claims = token.claims_of(t)
    assert set(claims) == {"sub", "rooms", "exp", "iat"}
    assert (claims["sub"], claims["rooms"]) == ("alice", ["studio"])
    assert claims["exp"] - claims["iat"] == 3600
    any_room = subprocess.run(
        [str(binary), "token", "--jwt-secret-file", str(secret_file), "--user", "x", "--any-room"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert token.claims_of(any_room)["rooms"] == "*"
    c = Connection.open(node.url)
    c.send("Hello", token=t, versions=[2, 1])
    welcome = c.expect("Welcome")
    assert welcome.session and welcome.node == "indie" and welcome.heartbeat_ms == 1000
    assert not welcome.resumed
    c.send("Join", request_id=7, room="studio")
    joined = c.expect("Joined")
    assert (joined.request_id, joined.room, joined.members) == (7, "studio", ["alice"])
    c.close()


def test_iat_is_optional(node):
    c = Connection.open(node.url)
    c.send("Hello", token=token.mint(SECRET, {"sub": "a", "rooms": ["studio"], "exp": int(time.time()) + 60}),
           versions=[2, 1])
    c.expect("Welcome")
    c.close()


def claims(**kw):
    return {"sub": "alice", "rooms": ["studio"], "exp": int(time.time()) + 60, **kw}


# The node's default clock-skew leeway for exp and nbf (docs/protocol.md, Join tokens).
LEEWAY = 30


BAD_TOKENS = {
    "garbage": lambda: "not-a-jwt",
    "missing": lambda: None,
    "forged": lambda: token.mint(b"another-key", token.claims_of(mint("alice"))),
    "expired": lambda: mint("alice", ttl=-(LEEWAY + 60)),
    "no exp": lambda: token.mint(SECRET, {"sub": "alice", "rooms": ["studio"]}),
    "no rooms": lambda: token.mint(SECRET, {"sub": "alice", "exp": int(time.time()) + 60}),
    "empty sub": lambda: token.mint(SECRET, claims(sub="")),
    "not yet valid": lambda: token.mint(SECRET, claims(nbf=int(time.time()) + LEEWAY + 60)),
    "alg none": lambda: token.mint(SECRET, claims(), alg="none"),
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_bad_token_is_1003_then_close_1008(node, kind):
    c = Connection.open(node.url)
    t = BAD_TOKENS[kind]()
    c.send("Hello", versions=[2, 1], **({"token": t} if t else {}))
    err = c.expect("Error")
    assert (err.code, err.request_id) == (1003, 0)
    assert c.expect_closed().code == 1008


def test_clock_skew_inside_the_leeway_is_accepted(node):
    now = int(time.time())
    for skewed in (claims(exp=now - 10), claims(nbf=now + 10)):
        c = Connection.open(node.url)
        c.send("Hello", token=token.mint(SECRET, skewed), versions=[2, 1])
        c.expect("Welcome")
        c.close()


def test_room_not_in_token_is_1003_and_keeps_the_connection(node):
    c = Connection.open(node.url)
    c.send("Hello", token=mint("alice", rooms=["studio"]), versions=[2, 1])
    c.expect("Welcome")
    c.send("Join", request_id=9, room="backstage")
    err = c.expect("Error")
    assert (err.code, err.request_id) == (1003, 9)
    c.send("Ping", nonce=77)
    assert c.expect("Pong").nonce == 77
    c.close()


def test_any_room_token(node):
    c = Connection.open(node.url)
    c.send("Hello", token=mint("alice", rooms="*"), versions=[2, 1])
    c.expect("Welcome")
    c.send("Join", request_id=1, room="whatever-room")
    assert c.expect("Joined").room == "whatever-room"
    c.close()


def test_frame_before_hello_is_1008_and_hello_still_works(node):
    c = Connection.open(node.url)
    c.send("Join", request_id=3, room="studio")
    assert c.expect("Error").code == 1008
    c.send("Hello", token=mint("alice"), versions=[2, 1])
    c.expect("Welcome")
    c.close()


def test_second_hello_is_1008(node):
    c = Connection.open(node.url)
    c.send("Hello", token=mint("alice"), versions=[2, 1])
    c.expect("Welcome")
    c.send("Hello", token=mint("alice"), versions=[2, 1])
    assert c.expect("Error").code == 1008
    c.close()


def test_no_hello_in_time(start_node):
    n = start_node("--hello-timeout", "1s")
    c = Connection.open(n.url)
    # The Error's code is 1002 ("timeout"); docs/protocol.md listed only call deadlines there.
    assert c.expect("Error", timeout=5).code == 1002
    closed = c.expect_closed()
    assert closed.code == 1008


def test_subprotocol_wins_over_x_proto_version(node):
    c = Connection.open(node.url, subprotocols=("switchboard.v1",), headers={"X-Proto-Version": "2"})
    assert (c.ws.subprotocol, c.version) == ("switchboard.v1", 1)
    c.close()


def test_x_proto_version_takes_a_list(node):
    c = Connection.open(node.url, subprotocols=(), headers={"X-Proto-Version": "1, 2"})
    assert c.ws.headers["x-proto-version"] == "2"
    c.close()

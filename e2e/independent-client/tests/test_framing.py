"""docs/protocol.md "Frame layout" and the bad inputs: each answered with its documented code."""

import struct

import pytest
from conftest import mint

from sbclient import wire
from sbclient.conn import Connection

PING = wire.encode("Ping", nonce=1)
PING_BODY = wire.body("Ping", nonce=1)
BAD_CRC = wire.frame_bytes(14, PING_BODY, crc=0)


def hello(node):
    c = Connection.open(node.url)
    c.send("Hello", token=mint("alice"), versions=[2, 1])
    c.expect("Welcome")
    return c


def still_alive(c):
    c.send("Ping", nonce=4242)
    c.expect("Pong", nonce=4242)


BAD_FRAMES = {
    "bad crc": BAD_CRC,
    "unknown type 99": wire.frame_bytes(99, PING_BODY),
    "type byte 0": wire.frame_bytes(0, b""),
    "server-only Welcome": wire.encode("Welcome", session="x"),
    "server-only Joined": wire.encode("Joined", request_id=1, room="studio"),
    "server-only Event": wire.encode("Event", room="studio", seq=1),
    "server-only Redirect": wire.encode("Redirect", room="studio", url="ws://x/ws"),
    "server-only Migrate": wire.encode("Migrate", room="studio", url="ws://x/ws"),
    "server-only Error": wire.encode("Error", code=1011),
    "length below 5": struct.pack(">I", 4) + b"\x0e\x00\x00\x00",
    "length beyond the message": wire.frame_bytes(14, PING_BODY, length=100),
    "length short of the message": wire.frame_bytes(14, PING_BODY, length=8),
    "two frames in one message": PING + PING,
    "shorter than a header": b"\x00\x00\x00",
    "empty body": wire.frame_bytes(14, b""),
    "unverifiable body": wire.frame_bytes(3, b"\xff" * 12),
}


@pytest.mark.parametrize("kind", BAD_FRAMES)
def test_bad_frame_is_1008_and_keeps_the_connection(node, kind):
    c = hello(node)
    c.send_bytes(BAD_FRAMES[kind])
    err = c.expect("Error")
    assert err.code == 1008, err
    still_alive(c)
    c.close()


def test_text_message_is_1008(node):
    c = hello(node)
    c.ws.send_text("hello")
    assert c.expect("Error").code == 1008
    still_alive(c)
    c.close()


def test_client_pong_is_accepted_silently(node):
    # Ping/Pong go both ways (docs/protocol.md): an unsolicited Pong is no error.
    c = hello(node)
    c.send("Pong", nonce=3)
    still_alive(c)
    assert not [f for f in c.pending() if getattr(f, "name", None) == "Error"]
    c.close()


def test_length_field_above_65536_closes_1009(node):
    c = hello(node)
    c.send_bytes(wire.frame_bytes(14, PING_BODY, length=65537))
    assert c.expect("Error").code == 1008
    assert c.expect_closed().code == 1009


def padded_ping(length):
    # A Ping body with trailing padding: FlatBuffers ignores bytes after the root table.
    body = PING_BODY + b"\x00" * (length - 5 - len(PING_BODY))
    frame = wire.frame_bytes(14, body)
    assert struct.unpack(">I", frame[:4])[0] == length
    return frame


def test_frame_of_exactly_65536_is_accepted(node):
    c = hello(node)
    c.send_bytes(padded_ping(65536))
    assert c.expect("Pong").nonce == 1
    c.close()


def test_message_above_the_frame_limit_closes_1009(node):
    c = hello(node)
    c.send_bytes(padded_ping(65536) + b"\x00")
    assert c.expect("Error").code == 1008
    assert c.expect_closed().code == 1009


def test_oversized_consistent_frame_closes_1009(node):
    c = hello(node)
    c.send_bytes(wire.frame_bytes(14, PING_BODY + b"\x00" * 70000))
    assert c.expect("Error").code == 1008
    assert c.expect_closed().code == 1009


def test_five_bad_frames_in_a_row_close_1002(node):
    c = hello(node)
    for _ in range(5):
        c.send_bytes(BAD_CRC)
    for _ in range(5):
        assert c.expect("Error").code == 1008
    assert c.expect_closed().code == 1002


def test_a_good_frame_resets_the_bad_frame_count(node):
    c = hello(node)
    for _ in range(4):
        c.send_bytes(BAD_CRC)
    c.send_bytes(PING)
    for _ in range(4):
        c.send_bytes(BAD_CRC)
    still_alive(c)
    c.close()


def test_bad_frames_before_hello_also_close_1002(node):
    c = Connection.open(node.url)
    for _ in range(5):
        c.send_bytes(BAD_CRC)
    assert c.expect_closed().code == 1002

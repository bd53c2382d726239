"""The client's own framing, checked against the layout of docs/protocol.md (no server)."""

import struct
import zlib

import pytest

from sbclient import wire


def test_layout_is_length_type_body_crc():
    frame = wire.encode("Ping", nonce=7)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert frame[4] == 14
    (crc,) = struct.unpack(">I", frame[-4:])
    assert crc == zlib.crc32(frame[4:-4])
    assert wire.decode(frame).fields == {"nonce": 7}


def test_crc_is_ieee():
    # The IEEE CRC-32 check value.
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_every_table_round_trips():
    for name in wire.TYPES.values():
        assert wire.decode(wire.encode(name)).name == name


def test_nested_fields_round_trip():
    hello = wire.decode(wire.encode("Hello", token="t", versions=[2, 1], resume={"session": "s", "last_seq": 9}))
    assert hello.fields == {"token": "t", "versions": [2, 1], "resume": {"session": "s", "last_seq": 9}}
    batch = wire.decode(wire.encode("IceBatch", room="r", candidates=[{"candidate": "c", "sdp_mid": "0"}]))
    assert batch.candidates == [{"candidate": "c", "sdp_mid": "0", "sdp_mline_index": 0}]


@pytest.mark.parametrize(
    "data,why",
    [
        (wire.frame_bytes(14, wire.body("Ping"), crc=0), "CRC"),
        (wire.frame_bytes(99, b""), "unknown frame type"),
        (wire.frame_bytes(14, wire.body("Ping"), length=70000), "outside"),
        (wire.encode("Ping") + b"\x00", "holds"),
    ],
)
def test_decode_refuses_what_the_node_refuses(data, why):
    with pytest.raises(wire.FrameError, match=why):
        wire.decode(data)


def test_unknown_field_is_a_caller_error():
    with pytest.raises(KeyError):
        wire.encode("Ping", nonse=1)
